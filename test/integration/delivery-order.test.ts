import request from 'supertest';
import { publishBatch, useDeliveryFixture, waitForLagZero } from '../helpers/delivery';
import { seededRandom } from '../helpers/random';
import { waitFor, type ReceivedRequest } from '../helpers/receiver';

/** Ordering: one event in flight per (subscription, partition) with `partition`; up to maxInFlight with `none`. */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });

async function publish(type: string, keys: string[], perKey: number) {
  const batch = [];
  for (let i = 0; i < perKey; i++)
    for (const key of keys)
      batch.push({ specversion: '1.0', id: `${type}-${key}-${i}`, source: '/order', type, partitionkey: key, data: { i } });
  return publishBatch(gw.url, batch);
}

const waitLagZero = (id: string, timeoutMs = 20_000) => waitForLagZero(gw.url, id, { timeoutMs });

interface Seen {
  req: ReceivedRequest;
  status: number;
}

describe('ordering partition', () => {
  it('with a receiver failing 30% at random: per partition, first successes come in offset order and previous offsets chain without a gap', async () => {
    const random = seededRandom(20240607);
    const seen: Seen[] = [];
    const open = new Map<string, number>();
    let maxOpenPerPartition = 0;
    receiver.setResponder(async (req) => {
      const partition = req.headers['herald-partition'] as string;
      open.set(partition, (open.get(partition) ?? 0) + 1);
      maxOpenPerPartition = Math.max(maxOpenPerPartition, open.get(partition)!);
      await new Promise((r) => setTimeout(r, random() * 3));
      const status = random() < 0.3 ? 500 : 204;
      seen.push({ req, status });
      open.set(partition, open.get(partition)! - 1);
      return { status };
    });
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({
        sink: receiver.url,
        filters: [{ exact: { type: 'order.random' } }],
        delivery: { retry: { maxAttempts: 100, initialDelayMs: 5, maxDelayMs: 20 } },
      })
      .expect(201);
    const stored = await publish('order.random', ['k0', 'k1', 'k2', 'k3', 'k4', 'k5'], 25);
    const final = await waitLagZero(sub.body.id);
    expect(final.stats.deadLetters).toBe(0);
    expect(seen.some((s) => s.status === 500)).toBe(true);

    const partitions = [...new Set(stored.map((s) => s.partition))];
    expect(partitions.length).toBeGreaterThan(1);
    for (const partition of partitions) {
      const offsets = stored.filter((s) => s.partition === partition).map((s) => s.offset);
      const inPartition = seen.filter((s) => s.req.headers['herald-partition'] === String(partition));
      const firstSuccesses = inPartition.filter((s) => s.status === 204).map((s) => Number(s.req.headers['herald-offset']));
      expect(firstSuccesses).toEqual(offsets);
      // Every attempt, failed or not, is for the oldest unfinished offset: offsets never go back.
      const attempted = inPartition.map((s) => Number(s.req.headers['herald-offset']));
      expect(attempted).toEqual([...attempted].sort((a, b) => a - b));
      // herald-previous-offset chains: absent for the first, then the offset before, on every attempt.
      for (const s of inPartition) {
        const offset = Number(s.req.headers['herald-offset']);
        const i = offsets.indexOf(offset);
        expect(s.req.headers['herald-previous-offset']).toBe(i === 0 ? undefined : String(offsets[i - 1]));
      }
      // Attempts of one event count up from 1 and keep one webhook-id.
      for (const offset of offsets) {
        const attempts = inPartition.filter((s) => Number(s.req.headers['herald-offset']) === offset);
        expect(attempts.map((s) => s.req.headers['herald-attempt'])).toEqual(attempts.map((_, i) => String(i + 1)));
        expect(new Set(attempts.map((s) => s.req.headers['webhook-id'])).size).toBe(1);
      }
    }
    expect(maxOpenPerPartition).toBe(1);
  });

  it('only starts the next event of a partition after the previous one is done, even when other partitions move on', async () => {
    const seen: ReceivedRequest[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    receiver.setResponder(async (req) => {
      seen.push(req);
      if (req.headers['ce-id'] === 'order.hold-k0-0') await held;
      return { status: 204 };
    });
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, filters: [{ exact: { type: 'order.hold' } }] })
      .expect(201);
    const stored = await publish('order.hold', ['k0', 'k1'], 3);
    const p0 = stored.find((s) => s.id === 'order.hold-k0-0')!.partition;
    const p1 = stored.find((s) => s.id === 'order.hold-k1-0')!.partition;
    expect(p0).not.toBe(p1);
    // k1's events all arrive while k0's first is still open; k0's second has not been sent.
    await waitFor(() => seen.filter((q) => String(q.headers['ce-id']).includes('-k1-')).length === 3);
    expect(seen.filter((q) => String(q.headers['ce-id']).includes('-k0-')).map((q) => q.headers['ce-id'])).toEqual(['order.hold-k0-0']);
    release();
    await waitLagZero(sub.body.id);
    expect(seen.filter((q) => String(q.headers['ce-id']).includes('-k0-')).map((q) => q.headers['ce-id'])).toEqual([
      'order.hold-k0-0',
      'order.hold-k0-1',
      'order.hold-k0-2',
    ]);
  });
});

describe('ordering none', () => {
  it('runs up to maxInFlight deliveries at once within one partition, never more', async () => {
    let open = 0;
    let maxOpen = 0;
    receiver.setResponder(async () => {
      open++;
      maxOpen = Math.max(maxOpen, open);
      await new Promise((r) => setTimeout(r, 40));
      open--;
      return { status: 204 };
    });
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, filters: [{ exact: { type: 'order.none' } }], delivery: { ordering: 'none', maxInFlight: 4 } })
      .expect(201);
    const stored = await publish('order.none', ['only-key'], 24);
    expect(new Set(stored.map((s) => s.partition)).size).toBe(1);
    await waitLagZero(sub.body.id);
    const got = receiver.requests.filter((q) => q.headers['herald-subscription-id'] === sub.body.id);
    expect(got.map((q) => Number(q.headers['herald-offset'])).sort((a, b) => a - b)).toEqual(stored.map((s) => s.offset));
    expect(maxOpen).toBeLessThanOrEqual(4);
    expect(maxOpen).toBeGreaterThan(1);
  });
});
