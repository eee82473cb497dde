/**
 * A node whose claims are answered late (it was frozen meanwhile: a GC pause, a stopped VM), after
 * another node completed them and past their publish's de-duplication window, must not publish its
 * events again: it reads the records again and answers the settled offsets. Was (a probe froze a node
 * for 2 minutes mid-batch): 784 of 1,000 events stored twice and delivered under two webhook-ids.
 * One real nats-server; the other node's completion is made with the NATS client, in the claim's answer.
 */
import { connect, type KV, type NatsConnection } from 'nats';
import { createAppender } from '../../src/jetstream/appender';
import { encodeEventMessage } from '../../src/jetstream/codec';
import { openJetStreamEventStore, type JetStreamEventStore } from '../../src/jetstream/jetstream-event-store';
import { idempotencyKey, jetStreamNames } from '../../src/jetstream/names';
import { createLogger } from '../../src/logger';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';

jest.setTimeout(60_000);

describeWithNats('jetstream: claims answered late', () => {
  let cluster: NatsCluster;
  let store: JetStreamEventStore;
  let nc: NatsConnection;
  const prefix = uniquePrefix('late');
  const names = jetStreamNames(prefix);

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    store = await openJetStreamEventStore({
      nats: { servers: cluster.urls, replicas: 1, prefix },
      partitions: 1,
      idempotencyWindowMs: 3_600_000,
      log: createLogger('silent'),
    });
    nc = await connect({ servers: cluster.urls });
  });
  afterAll(async () => {
    await nc?.close();
    await store?.close();
    await cluster?.stop();
  });

  const ev = (id: string) =>
    ({ attributes: { specversion: '1.0', id, source: '/late', type: 't' }, data: { kind: 'json', value: {} } }) as never;
  const stored = async () => (await (await nc.jetstreamManager()).streams.info(names.stream(0))).state.messages;

  /**
   * An appender on partition 0 whose claim of `id` succeeds, but by the time its answer is read another node
   * has published the event (under an id the stream no longer remembers: the window passed) and settled the
   * record. `clock` times the claims. Resolves the other node's offset once that is done.
   */
  async function appenderWithLateClaim(id: string, clock: () => number) {
    const js = nc.jetstream();
    const kv = await js.views.kv(names.idempotencyBucket, { bindOnly: true });
    let othersOffset = -1;
    const lateKv = new Proxy(kv, {
      get(target, prop) {
        if (prop === 'create')
          return async (k: string, value: string) => {
            const revision = await target.create(k, value);
            if (k !== idempotencyKey('/late', id)) return revision;
            const ack = await js.publish(names.subject(0), encodeEventMessage(ev(id)), { msgID: `${k}.other-node` });
            othersOffset = ack.seq - 1;
            await target.update(k, JSON.stringify({ p: 0, o: othersOffset }), revision);
            return revision;
          };
        const value = Reflect.get(target, prop) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    }) as KV;
    const appender = createAppender({
      js,
      kv: lateKv,
      names,
      partitions: 1,
      maxPayload: () => undefined,
      knownGoneBelow: () => 0,
      knownHead: () => 0,
      wentBack: () => undefined,
      clock,
    });
    return { appender, othersOffset: () => othersOffset };
  }

  it('are read again before publishing: an event another node completed meanwhile is answered as stored, not stored again', async () => {
    const before = await stored();
    // Read when the claims start, then a minute later (the freeze) before the publish.
    const times = [0];
    const { appender, othersOffset } = await appenderWithLateClaim('late-1', () => times.shift() ?? 61_000);
    const [result] = await appender.append([ev('late-1')]);
    expect(result).toMatchObject({ partition: 0, offset: othersOffset(), duplicate: true });
    expect((await stored()) - before).toBe(1); // was 2: stored again
  });

  it('are read again from wherever a freeze stops the publishing of a batch: the events after it are not stored twice', async () => {
    const before = await stored();
    // Read when the claims start and before each publish: the freeze falls between the two publishes.
    const times = [0, 0];
    const { appender, othersOffset } = await appenderWithLateClaim('mid-2', () => times.shift() ?? 61_000);
    const [first, second] = await appender.append([ev('mid-1'), ev('mid-2')]);
    expect(first).toMatchObject({ duplicate: false });
    expect(second).toMatchObject({ partition: 0, offset: othersOffset(), duplicate: true });
    expect((await stored()) - before).toBe(2); // mid-1, and mid-2 once (was 3: mid-2 again)
  });
});
