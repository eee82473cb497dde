import { randomUUID } from 'node:crypto';
import { loadConfig } from '../../src/config';
import { AppError } from '../../src/errors';
import { openJetStreamEventStore, type JetStreamEventStore } from '../../src/jetstream/jetstream-event-store';
import { createKvSubscriptionStore } from '../../src/jetstream/subscriptions-kv';
import { createLogger } from '../../src/logger';
import type { SubscriptionRecord } from '../../src/subscriptions/record';
import { RevisionConflict, type RecordChange, type SubscriptionStore } from '../../src/subscriptions/record-store';
import { subscriptionRecord } from '../helpers/subscription-record';
import { describeWithNats, startNatsCluster, uniquePrefix, waitUntil, type NatsCluster } from '../helpers/nats-cluster';

/**
 * The subscriptions bucket of the JetStream engine, through two stores on two connections (two
 * nodes): atomic create, updates at a revision, reads of the leader, and the watch every node keeps.
 */

// Fixed times and secret: a record read back must equal the one built again for the comparison.
const record = (id: string, changes: Partial<SubscriptionRecord> = {}): SubscriptionRecord =>
  subscriptionRecord({ id, secret: 'whsec_x', createdAt: 1, updatedAt: 1, ...changes });

describeWithNats('the subscriptions bucket shared by two nodes', () => {
  let cluster: NatsCluster;
  const eventStores: JetStreamEventStore[] = [];
  let a: SubscriptionStore;
  let b: SubscriptionStore;
  const seenByB: RecordChange[] = [];

  beforeAll(async () => {
    cluster = await startNatsCluster();
    const config = loadConfig({
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: cluster.serversEnv,
      HERALD_NATS_PREFIX: uniquePrefix('subskv'),
    });
    const log = createLogger('silent');
    for (let i = 0; i < 2; i++)
      eventStores.push(await openJetStreamEventStore({ nats: config.nats!, partitions: 2, idempotencyWindowMs: 60_000, log }));
    a = createKvSubscriptionStore({ kv: eventStores[0]!.subscriptionsBucket, log });
    b = createKvSubscriptionStore({ kv: eventStores[1]!.subscriptionsBucket, log });
    await a.open(() => undefined);
    await b.open((change) => seenByB.push(change));
  }, 120_000);

  afterAll(async () => {
    await a?.close();
    await b?.close();
    for (const store of eventStores) await store.close();
    await cluster?.stop();
  }, 60_000);

  it('finds a record created through one node at once through the other, and refuses a second create of its id', async () => {
    const id = randomUUID();
    const revision = await a.insert(record(id));
    expect(await b.get(id)).toEqual({ record: record(id), revision });
    await expect(b.insert(record(id, { sink: 'http://127.0.0.1:2/other' }))).rejects.toMatchObject({ code: 'conflict' });
    expect((await a.get(id))?.record.sink).toBe('http://127.0.0.1:1/hook');
  });

  it("reads a record written before the sink's grant was kept apart as one without a grant, and refuses a grant that is no rate", async () => {
    const id = randomUUID();
    const { allowedRate: _none, ...older } = record(id);
    await eventStores[0]!.subscriptionsBucket.put(id, JSON.stringify(older));
    expect((await b.get(id))?.record).toEqual(record(id, { allowedRate: null }));
    const damaged = randomUUID();
    for (const allowedRate of [3, { perSecond: -1 }, { perSecond: '2' }]) {
      await eventStores[0]!.subscriptionsBucket.put(damaged, JSON.stringify({ ...record(damaged), allowedRate }));
      await expect(b.get(damaged)).rejects.toMatchObject({ code: 'corrupt_record' });
    }
    await eventStores[0]!.subscriptionsBucket.delete(damaged);
  });

  it('refuses an update from a revision another node has written past, so neither change is lost silently', async () => {
    const id = randomUUID();
    const first = await a.insert(record(id));
    const byB = await b.update(record(id, { state: 'paused', stateReason: 'user' }), first);
    expect(byB).toBeGreaterThan(first);
    await expect(a.update(record(id, { sink: 'http://127.0.0.1:3/new' }), first)).rejects.toBeInstanceOf(RevisionConflict);
    const stored = await a.get(id);
    expect([stored?.record.state, stored?.record.sink, stored?.revision]).toEqual(['paused', 'http://127.0.0.1:1/hook', byB]);
    // Read again, decided again: the second change goes in on top of the first.
    await a.update({ ...stored!.record, sink: 'http://127.0.0.1:3/new' }, stored!.revision);
    expect((await b.get(id))?.record).toMatchObject({ state: 'paused', sink: 'http://127.0.0.1:3/new' });
  });

  it('stores one of two updates made from one revision through both nodes at the same moment, and refuses the other', async () => {
    const id = randomUUID();
    let revision = await a.insert(record(id));
    for (let round = 1; round <= 20; round++) {
      const [byA, byB] = await Promise.allSettled([
        a.update(record(id, { delivery: { ...record(id).delivery, maxInFlight: round } }), revision),
        b.update(record(id, { sink: `http://127.0.0.1:${round}/b` }), revision),
      ]);
      const won = [byA, byB].filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<number>[];
      const lost = [byA, byB].filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
      expect({ round, stored: won.length }).toEqual({ round, stored: 1 });
      expect(lost[0]!.reason).toBeInstanceOf(RevisionConflict);
      const stored = await b.get(id);
      expect(stored?.revision).toBe(won[0]!.value);
      expect(stored?.record).toEqual(
        byA.status === 'fulfilled'
          ? record(id, { delivery: { ...record(id).delivery, maxInFlight: round } })
          : record(id, { sink: `http://127.0.0.1:${round}/b` }),
      );
      revision = stored!.revision;
    }
  });

  it('keeps a record deleted through one node while the other updates it at the same moment', async () => {
    for (let round = 1; round <= 20; round++) {
      const id = randomUUID();
      const revision = await a.insert(record(id));
      const [, updated] = await Promise.allSettled([a.remove(id), b.update(record(id, { sink: 'http://127.0.0.1:9/late' }), revision)]);
      expect({ round, stored: await b.get(id) }).toEqual({ round, stored: undefined });
      if (updated.status === 'rejected') expect(updated.reason).toBeInstanceOf(RevisionConflict);
    }
  });

  it('refuses an update of a deleted record, and reads it as absent', async () => {
    const id = randomUUID();
    const revision = await a.insert(record(id));
    await b.remove(id);
    expect(await a.get(id)).toBeUndefined();
    await expect(a.update(record(id), revision)).rejects.toBeInstanceOf(RevisionConflict);
  });

  it("sends every node each write of every node, in the bucket's order", async () => {
    // The bucket keeps one revision per record (history 1): a watcher that falls behind by two writes of
    // one record gets only the later (a CI run saw the update skipped). What lists and delivery need is
    // the latest, so each write here waits until node B has it before the next is made.
    const id = randomUUID();
    const seen = (what: string, revision: number) =>
      waitUntil(`node B to see the ${what}`, () => seenByB.some((c) => c.revision === revision), 10_000, 20);
    const created = await a.insert(record(id));
    await seen('insert', created);
    const updated = await a.update(record(id, { state: 'paused', stateReason: 'user' }), created);
    await seen('update', updated);
    await a.remove(id);
    await waitUntil('node B to see the deletion', () => seenByB.some((c) => c.kind === 'delete' && c.id === id), 10_000, 20);
    const mine = seenByB.filter((c) => (c.kind === 'put' ? c.record.id : c.id) === id);
    expect(mine.map((c) => [c.kind, c.revision])).toEqual([
      ['put', created],
      ['put', updated],
      ['delete', expect.any(Number)],
    ]);
    expect(mine[1]).toMatchObject({ record: { state: 'paused' } });
  });

  it('gives a node that opens later every stored record and no deleted one, by the time its open resolves', async () => {
    // The watch's consumer may sit on a replica that has not applied the deletion yet: it then sends the
    // record and its deletion after. What counts is the node's view once `open` resolves (a CI run saw the
    // deleted record still in it).
    for (let round = 0; round < 5; round++) {
      const kept = randomUUID();
      const gone = randomUUID();
      await a.insert(record(kept));
      await a.insert(record(gone));
      await a.remove(gone);
      const late = createKvSubscriptionStore({ kv: eventStores[round % 2]!.subscriptionsBucket, log: createLogger('silent') });
      const view = new Map<string, SubscriptionRecord>();
      await late.open((c) => (c.kind === 'put' ? view.set(c.record.id, c.record) : view.delete(c.id)));
      const atOpen = { round, kept: view.has(kept), gone: view.has(gone) };
      await late.close();
      expect(atOpen).toEqual({ round, kept: true, gone: false });
    }
  });

  it('answers 503 unavailable, not a crash, when the cluster cannot take the write', async () => {
    const closed = await openJetStreamEventStore({
      nats: loadConfig({ HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: cluster.serversEnv, HERALD_NATS_PREFIX: uniquePrefix('subskv') })
        .nats!,
      partitions: 1,
      idempotencyWindowMs: 60_000,
      log: createLogger('silent'),
    });
    const store = createKvSubscriptionStore({ kv: closed.subscriptionsBucket, log: createLogger('silent') });
    await closed.close();
    const err = await store.insert(record(randomUUID())).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe('unavailable');
  });
});
