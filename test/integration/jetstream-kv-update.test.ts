import { connect, StorageType, type KV, type NatsConnection } from 'nats';
import { removeCurrent, withSafeUpdate } from '../../src/jetstream/kv-update';
import { isWrongLastSequence } from '../../src/jetstream/nats-errors';
import { describeWithNats, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster';

/**
 * Compare-and-set on a replicated KV bucket, written through each of three servers at the same
 * moment. Debian's nats-server (2.9.10) stores two or three of such writes from one revision in most
 * rounds when they are plain `kv.update`s (nats-server#4320), and an update racing a delete is
 * often stored after it; through `withSafeUpdate` one write from a revision is stored.
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

  it('stores one of a delete and an update made from one revision at once, so a deleted key never comes back', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const key = `del-${round}`;
      const revision = await buckets[0]!.create(key, 'start');
      const [deleted, updated] = await Promise.allSettled([
        buckets[1]!.delete(key, { previousSeq: revision }),
        buckets[2]!.update(key, 'changed', revision),
      ]);
      const stored = await buckets[0]!.get(key);
      expect({ round, stored: [deleted.status, updated.status].filter((s) => s === 'fulfilled').length }).toEqual({ round, stored: 1 });
      expect({ round, operation: stored?.operation }).toEqual({ round, operation: deleted.status === 'fulfilled' ? 'DEL' : 'PUT' });
    }
  });

  it('removes a key for good with removeCurrent while other servers update it', async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const key = `rm-${round}`;
      const revision = await buckets[0]!.create(key, 'start');
      const [removed] = await Promise.allSettled([
        removeCurrent(buckets[1]!, key, round % 2 ? 'purge' : 'delete'),
        buckets[2]!.update(key, 'changed', revision),
        buckets[0]!.update(key, 'changed too', revision),
      ]);
      expect({ round, removed: removed.status === 'fulfilled' && removed.value }).toEqual({ round, removed: true });
      expect({ round, operation: (await buckets[2]!.get(key))?.operation }).toEqual({ round, operation: round % 2 ? 'PURGE' : 'DEL' });
    }
    expect(await removeCurrent(buckets[0]!, 'rm-0')).toBe(false);
    expect(await removeCurrent(buckets[0]!, 'never-there')).toBe(false);
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
