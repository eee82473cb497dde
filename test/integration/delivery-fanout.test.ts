import request from 'supertest';
import { publishBatch, useDeliveryFixture, waitForLagZero } from '../helpers/delivery';
import { waitFor } from '../helpers/receiver';

/** Fan-out: every subscription gets exactly the events its filters match; the others still advance its offsets. */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });

const FAST = { retry: { initialDelayMs: 10, maxDelayMs: 50 } };

const events = [
  { id: 'f1', source: '/fan/shop', type: 'fan.order.created', tenant: 'acme' },
  { id: 'f2', source: '/fan/shop/eu', type: 'fan.order.deleted', subject: 'skip' },
  { id: 'f3', source: '/fan/warehouse', type: 'fan.stock.updated', priority: 5 },
  { id: 'f4', source: '/fan/warehouse', type: 'fan.order.created', subject: 'skip', tenant: 'globex' },
  { id: 'f5', source: '/fan/shop', type: 'fan.invoice.sent', priority: 6 },
  { id: 'f6', source: '/other', type: 'fan.user.deleted', tenant: 'acme', urgent: true },
];
const noise = Array.from({ length: 40 }, (_, i) => ({ id: `n${i}`, source: `/noise/${i}`, type: 'fan.noise' }));

/** Each subscription's filters and the events they must get, worked out by hand. */
const cases: { name: string; filters: unknown[]; expected: string[] }[] = [
  { name: 'exact type', filters: [{ exact: { type: 'fan.order.created' } }], expected: ['f1', 'f4'] },
  { name: 'prefix source', filters: [{ prefix: { source: '/fan/shop' } }], expected: ['f1', 'f2', 'f5'] },
  { name: 'suffix type', filters: [{ suffix: { type: '.deleted' } }], expected: ['f2', 'f6'] },
  { name: 'any', filters: [{ any: [{ exact: { tenant: 'acme' } }, { suffix: { type: '.deleted' } }] }], expected: ['f1', 'f2', 'f6'] },
  {
    name: 'all + not',
    filters: [{ all: [{ prefix: { type: 'fan.order.' } }, { not: { exact: { subject: 'skip' } } }] }],
    expected: ['f1'],
  },
  { name: 'list ANDed', filters: [{ prefix: { type: 'fan.order.' } }, { exact: { tenant: 'globex' } }], expected: ['f4'] },
  { name: 'integer extension', filters: [{ exact: { priority: '5' } }], expected: ['f3'] },
  { name: 'boolean extension', filters: [{ exact: { urgent: 'true' } }], expected: ['f6'] },
  { name: 'not noise', filters: [{ not: { exact: { type: 'fan.noise' } } }], expected: ['f1', 'f2', 'f3', 'f4', 'f5', 'f6'] },
  { name: 'matches nothing', filters: [{ exact: { type: 'fan.never' } }], expected: [] },
];

const publishStructured = (batch: Record<string, unknown>[]) =>
  publishBatch(
    gw.url,
    batch.map((e) => ({ specversion: '1.0', ...e, datacontenttype: 'application/json', data: { id: e.id } })),
  );

describe('fan-out', () => {
  it('delivers each event to exactly the subscriptions whose filters match it, and filtered-out events leave lag 0', async () => {
    const subs: { id: string; expected: string[] }[] = [];
    for (const c of cases) {
      const res = await request(gw.url).post('/subscriptions').send({ sink: receiver.url, filters: c.filters, delivery: FAST }).expect(201);
      subs.push({ id: res.body.id, expected: c.expected });
    }
    const all = await publishStructured([...noise.slice(0, 20), ...events, ...noise.slice(20)]);
    const heads = [0, 0, 0, 0];
    for (const r of all) heads[r.partition] = Math.max(heads[r.partition]!, r.offset + 1);

    // Lag 0 everywhere means every event was delivered or filtered out; every request has been received by then.
    for (const sub of subs) {
      const { stats } = await waitForLagZero(gw.url, sub.id, { what: `lag 0 for ${sub.id}` });
      expect(stats.partitions.map((p: { committedOffset: number }) => p.committedOffset)).toEqual(heads);
      expect(stats.partitions.every((p: { inFlight: number }) => p.inFlight === 0)).toBe(true);
      expect(stats.deadLetters).toBe(0);
    }

    for (const [i, sub] of subs.entries()) {
      const got = receiver.requests.filter((q) => q.headers['herald-subscription-id'] === sub.id).map((q) => q.headers['ce-id']);
      expect({ filter: cases[i]!.name, ids: [...got].sort() }).toEqual({ filter: cases[i]!.name, ids: sub.expected });
    }
    // herald-previous-offset names the previous *matching* event of the partition: filtered-out ones are skipped.
    for (const sub of subs) {
      const byPartition = new Map<string, number[]>();
      for (const q of receiver.requests.filter((r) => r.headers['herald-subscription-id'] === sub.id)) {
        const partition = q.headers['herald-partition'] as string;
        const seen = byPartition.get(partition) ?? [];
        const previous = seen.length > 0 ? String(seen[seen.length - 1]) : undefined;
        expect(q.headers['herald-previous-offset']).toBe(previous);
        seen.push(Number(q.headers['herald-offset']));
        byPartition.set(partition, seen);
      }
    }
    // No request for a subscription that does not exist, and each delivery was a first attempt.
    const known = new Set(subs.map((s) => s.id));
    expect(receiver.requests.every((q) => known.has(q.headers['herald-subscription-id'] as string))).toBe(true);
    expect(receiver.requests.every((q) => q.headers['herald-attempt'] === '1')).toBe(true);
  });

  it('gives one event a different webhook-id in each subscription, and the same partition and offset', async () => {
    const a = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, filters: [{ exact: { type: 'fan.twice' } }], delivery: FAST })
      .expect(201);
    const b = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, filters: [{ exact: { type: 'fan.twice' } }], delivery: FAST })
      .expect(201);
    const [stored] = await publishStructured([{ id: 't1', source: '/fan', type: 'fan.twice' }]);
    const [ra, rb] = await waitFor(() => {
      const ra = receiver.requests.find((q) => q.headers['herald-subscription-id'] === a.body.id);
      const rb = receiver.requests.find((q) => q.headers['herald-subscription-id'] === b.body.id);
      return ra && rb ? [ra, rb] : undefined;
    });
    expect(ra!.headers['webhook-id']).not.toBe(rb!.headers['webhook-id']);
    for (const q of [ra!, rb!]) {
      expect(q.headers['herald-partition']).toBe(String(stored!.partition));
      expect(q.headers['herald-offset']).toBe(String(stored!.offset));
    }
  });
});
