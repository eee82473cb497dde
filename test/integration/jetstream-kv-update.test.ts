import { connect, StorageType, type KV, type NatsConnection } from 'nats';
import { withSafeUpdate } from '../../src/jetstream/kv-update';
import { isWrongLastSequence } from '../../src/jetstream/nats-errors';
import { describeWithNats, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster';

/**
 * Compare-and-set on a replicated KV bucket, written through each of three servers at the same
 * moment. Debian's nats-server (2.9.10) stores two or three of such writes from one revision in most
 * rounds when they are plain `kv.update`s (nats-server#4320); through `withSafeUpdate` one is stored.
 */

const ROUNDS = 40;

describeWithNats('compare-and-set on a replicated bucket', () => {
  let cluster: NatsCluster;
  let connections: NatsConnection[];
  let buckets: KV[];

  beforeAll(async () => {
    cluster = await startNatsCluster();
    connections = await Promise.all(cluster.urls.map((servers) => connect({ servers })));
    const config = { replicas: 3, history: 1, storage: StorageType.File, allow_direct: false };
    buckets = [];
    for (const nc of connections) {
      const js = nc.jetstream();
      buckets.push(withSafeUpdate(await js.views.kv('cas', config), js, 'cas'));
    }
  }, 120_000);

  afterAll(async () => {
    for (const nc of connections ?? []) await nc.close();
    await cluster?.stop();
  }, 60_000);

  /** Each bucket (one per server) writes its own value from `revision` at once; what each got. */
  const raceFrom = (key: string, revision: number) => Promise.allSettled(buckets.map((kv, i) => kv.update(key, `server-${i}`, revision)));

  it('stores exactly one of the updates made from one revision through three servers at once, and tells the others they lost', async () => {
    let revision = await buckets[0]!.put('k', 'start');
    for (let round = 0; round < ROUNDS; round++) {
      const results = await raceFrom('k', revision);
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ i, revision: r.value }] : []));
      const lost = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      expect({ round, won: won.length }).toEqual({ round, won: 1 });
      expect(lost.every(isWrongLastSequence)).toBe(true);
      const stored = await buckets[1]!.get('k');
      expect([stored?.revision, stored?.string()]).toEqual([won[0]!.revision, `server-${won[0]!.i}`]);
      revision = won[0]!.revision;
    }
  });

  it('still refuses an update from a revision written past, and takes one from the current revision', async () => {
    const first = await buckets[0]!.create('old', 'a');
    const second = await buckets[1]!.update('old', 'b', first);
    const stale = await buckets[2]!.update('old', 'c', first).catch((err: unknown) => err);
    expect(isWrongLastSequence(stale)).toBe(true);
    expect(await buckets[2]!.update('old', 'c', second)).toBeGreaterThan(second);
    expect((await buckets[0]!.get('old'))?.string()).toBe('c');
  });

  it('lets one of three creates of a deleted key through, at once', async () => {
    for (let round = 0; round < 10; round++) {
      const key = `gone-${round}`;
      await buckets[0]!.create(key, 'first');
      await buckets[0]!.delete(key);
      const results = await Promise.allSettled(buckets.map((kv, i) => kv.create(key, `server-${i}`)));
      expect({ round, won: results.filter((r) => r.status === 'fulfilled').length }).toEqual({ round, won: 1 });
    }
  });
});
