import request from 'supertest';
import { publishBatch, publishOfType, requestsForSubscription, useDeliveryFixture, waitForLagZero } from '../helpers/delivery';
import { waitFor } from '../helpers/receiver';

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
afterEach(() => receiver.setResponder(() => ({ status: 204 })));

/**
 * Issue 11 §1: deleting a subscription forgets its series, and the answer of a request that was
 * open at the deletion (aborted by it) must not bring them back: one histogram per deleted
 * subscription would grow without bound with churn.
 */
it('a deleted subscription leaves no series behind, even with a request open at the deletion', async () => {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  receiver.setResponder(async () => {
    await held;
    return { status: 204 };
  });
  const type = 'hostile.metrics';
  const res = await request(gw.url)
    .post('/subscriptions')
    .send({ sink: receiver.url, filters: [{ exact: { type } }] })
    .expect(201);
  const id = res.body.id as string;
  await publishOfType(gw.url, '/r2', type, ['m0']);
  await waitFor(() => requestsForSubscription(receiver, id).length === 1, { what: 'the request to be open' });
  await request(gw.url).delete(`/subscriptions/${id}`).expect(204);
  await sleep(200); // the aborted request's answer comes back
  release();
  const text = await (await fetch(`${gw.url}/metrics`)).text();
  expect(text.split('\n').filter((l) => l.includes(id))).toEqual([]);
});

/**
 * Issue 12 §3: "on 429, 503 and timeouts a subscription's in-flight limit halves ... A struggling
 * receiver gets less traffic, not more". The limit bounds the requests open at once, retries
 * included: after a round of 503s the receiver must not see as many concurrent requests as before.
 */
it('after 503s the retries respect the reduced in-flight limit', async () => {
  let open = 0;
  let maxOpenOnRetries = 0;
  receiver.setResponder(async (q) => {
    const attempt = Number(q.headers['herald-attempt']);
    open++;
    if (attempt >= 2) maxOpenOnRetries = Math.max(maxOpenOnRetries, open);
    await sleep(50);
    open--;
    return attempt <= 2 ? { status: 503 } : { status: 204 };
  });
  const type = 'hostile.aimd';
  const res = await request(gw.url)
    .post('/subscriptions')
    .send({
      sink: receiver.url,
      filters: [{ exact: { type } }],
      delivery: {
        ordering: 'none',
        maxInFlight: 16,
        retry: { maxAttempts: 10, initialDelayMs: 200, maxDelayMs: 200, multiplier: 1, jitter: 0 },
      },
    })
    .expect(201);
  const id = res.body.id as string;
  await publishBatch(
    gw.url,
    Array.from({ length: 16 }, (_, i) => ({ specversion: '1.0', id: `a${i}`, source: '/r2', type, partitionkey: 'k', data: {} })),
  );
  await waitForLagZero(gw.url, id, { timeoutMs: 10_000 });
  // The first round's 503s halve the limit to 8 (one decrease per window), the second's to 4.
  expect(maxOpenOnRetries).toBeLessThanOrEqual(8);
  await request(gw.url).delete(`/subscriptions/${id}`).expect(204);
});
