import { connect, StorageType, type KV, type NatsConnection } from 'nats';
import pino from 'pino';
import type { EngineContext } from '../../src/jetstream/delivery/context';
import { markMatched, positionRecord } from '../../src/jetstream/delivery/positions';
import { withSafeUpdate } from '../../src/jetstream/kv-update';
import { describeWithNats, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster';

/**
 * A partition's mark (`<prefix>_dpos`, the next event's `herald-previous-offset`) that cannot be moved.
 * A chaos run (three servers SIGKILLed, SIGSTOPped and restarted one at a time under load, Debian's
 * nats-server 2.9.10) saw every compare-and-set on one subscription's mark refused for over a minute:
 * the record stayed at offset 41 while offsets 42 to 166 of its partition were delivered, each with
 * `herald-previous-offset: 41`, and `markMatched` gave up after its five tries without a word. Its
 * give-up assumes the writes it lost to marked as far; when the record it reads again is still behind
 * its own offset, that is not so, and the broken chain must at least be logged.
 *
 * The refusal is made here the way `withSafeUpdate` reports a lost race: a write carrying the id
 * `<key>@<revision>` is already in the bucket's de-duplication window (as one whose message a
 * diverged replica lost would be), so each update from that revision is answered as a duplicate.
 */

describeWithNats('a partition mark whose compare-and-set keeps losing', () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;
  let kv: KV;

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    nc = await connect({ servers: cluster.serversEnv });
    const js = nc.jetstream();
    kv = withSafeUpdate(await js.views.kv('dpos', { replicas: 1, history: 1, storage: StorageType.File, allow_direct: false }), js, 'dpos');
  }, 120_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
  }, 60_000);

  it('logs a warning naming the offset when it gives up with the record still behind it', async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
    const key = 'sub1.2.0';
    const ctx = { positions: kv, names: { positionKey: () => key }, log } as unknown as EngineContext;
    const revision = await kv.put(key, '41 40 p');
    // Another message already carries the id an update from this revision would carry.
    await nc.jetstream().publish('$KV.dpos.other', 'x', { msgID: `${key}@${revision}` });

    const target = {
      reply: '',
      subscriptionId: 'sub1',
      partition: 2,
      offset: 42,
      generation: 0,
      redrive: false,
      ordered: true,
      previousOffset: 41,
    };
    await markMatched(ctx, target);

    expect(await positionRecord(ctx, target)).toBe('41 40 p'); // the mark did not move (the server's doing)
    // …and the node says so, rather than sending the partition's next events with herald-previous-offset 41.
    const warned = lines.find(
      (l) => l.msg === "a partition's mark could not be moved past this event: the next events' herald-previous-offset is stale",
    );
    expect(warned).toMatchObject({ level: 40, subscription: 'sub1', partition: 2, offset: 42, marked: '41 40 p' });
  });
});
