import request from 'supertest';
import { Webhook } from 'standardwebhooks';
import { publishBatch } from '../helpers/delivery';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * Requests that wait for a connection to the sink's host (all it may have busy) are built,
 * signed and timed only once one is free. Was (a hostile probe): built and counted as started at
 * once and queued in the HTTP client, so they went out after a pause had answered 200, signed with a
 * secret a rotation had retired, and other subscriptions of that host timed out (and dead-lettered)
 * while they only waited.
 */

let gw: TestGateway;
let receiver: Receiver;
afterEach(async () => {
  await gw?.close();
  await receiver?.close();
});
afterAll(cleanupTmpDirs);

const events = (type: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({
    specversion: '1.0',
    id: `${type}-${i}`,
    source: '/queue',
    type,
    partitionkey: `k${i}`,
    data: { i },
  }));

/** A subscription of `type` events on `path` of the receiver's host. */
async function subscribe(type: string, path: string, delivery: Record<string, unknown>): Promise<{ id: string; secret: string }> {
  const res = await request(gw.url)
    .post('/subscriptions')
    .send({ sink: receiver.url.replace('/hook', path), filters: [{ exact: { type } }], delivery })
    .expect(201);
  return { id: res.body.id as string, secret: res.body.secret as string };
}

const onPath = (path: string) => receiver.requests.filter((r) => r.url === path);

/** One subscription on `path` of a receiver answering in 1.5 s, 100 events: 56 requests open (the host's 64 connections less 8 kept for others), 44 waiting for one. */
async function saturated(type: string, path: string) {
  receiver = await startReceiver(() => ({ status: 204, delayMs: 1500 }));
  gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
  const sub = await subscribe(type, path, { ordering: 'none', maxInFlight: 128 });
  await publishBatch(gw.url, events(type, 100));
  await waitFor(() => onPath(path).length === 56, { what: '56 requests open' });
  return sub;
}

it('sends nothing that waited for a connection once a pause has answered, and sends it after the resume under the same attempt number', async () => {
  const sub = await saturated('q.pause', '/p');
  await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
  const answeredAt = Date.now();
  // The 56 open requests are answered (their attempts logged); the 44 that waited were not sent.
  const answered = async () => (await request(gw.url).get(`/subscriptions/${sub.id}/attempts?limit=1000`)).body.attempts.length;
  await waitFor(async () => (await answered()) === 56, { what: 'the open requests answered' });
  expect(onPath('/p').filter((r) => r.receivedAt > answeredAt + 20)).toEqual([]);
  await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
  await waitFor(() => onPath('/p').length === 100, { what: 'the other 44 after the resume' });
  expect(onPath('/p').map((r) => r.headers['herald-attempt'])).toEqual(Array(100).fill('1'));
});

it('signs a request that waited for a connection with the secret of when it goes out: nothing after a rotation without overlap carries the old one only', async () => {
  const sub = await saturated('q.rotate', '/r');
  const rotated = await request(gw.url).post(`/subscriptions/${sub.id}/rotate-secret`).send({ overlapSeconds: 0 }).expect(200);
  const answeredAt = Date.now();
  await waitFor(() => onPath('/r').length === 100, { what: 'every event sent' });
  const after = onPath('/r').filter((r) => r.receivedAt > answeredAt + 20);
  expect(after.length).toBe(44);
  const fresh = new Webhook(rotated.body.secret as string);
  for (const r of after) expect(() => fresh.verify(r.body, r.headers as Record<string, string>)).not.toThrow();
});

it("does not time out another subscription's requests while they wait for a connection behind a slow one (was: dead-lettered as timeouts never sent)", async () => {
  receiver = await startReceiver((req) => (req.url === '/slow' ? { status: 204, delayMs: 3000 } : { status: 204 }));
  gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
  await subscribe('q.slow', '/slow', { ordering: 'none', maxInFlight: 64 });
  const fast = await subscribe('q.fast', '/fast', { ordering: 'none', timeoutMs: 1000, retry: { maxAttempts: 1 } });
  await publishBatch(gw.url, events('q.slow', 64));
  await waitFor(() => onPath('/slow').length === 56, { what: 'every connection it may take busy' });
  await publishBatch(gw.url, events('q.fast', 16));
  await waitFor(() => onPath('/fast').length === 16, { what: 'the fast subscription served', timeoutMs: 15_000 });
  const stats = (await request(gw.url).get(`/subscriptions/${fast.id}`)).body.stats;
  expect(stats.deadLetters).toBe(0);
  const attempts = (await request(gw.url).get(`/subscriptions/${fast.id}/attempts?limit=100`)).body.attempts;
  expect(attempts.map((a: { status: number | null }) => a.status)).toEqual(Array(16).fill(204));
});

it('sends what waited for a connection to the old sink to the new one after a PATCH of the sink, never with the new sink’s headers to the old (re-probe)', async () => {
  const sub = await saturated('q.patch', '/old');
  const other = await startReceiver();
  try {
    await request(gw.url)
      .patch(`/subscriptions/${sub.id}`)
      .send({ sink: other.url, delivery: { headers: { authorization: 'Bearer for-new-sink' } } })
      .expect(200);
    const answeredAt = Date.now();
    await waitFor(() => other.requests.length === 44, { what: 'the 44 that waited, at the new sink' });
    expect(other.requests.every((r) => r.headers.authorization === 'Bearer for-new-sink')).toBe(true);
    expect(onPath('/old').filter((r) => r.receivedAt > answeredAt + 20)).toEqual([]);
    expect(onPath('/old').some((r) => r.headers.authorization === 'Bearer for-new-sink')).toBe(false);
  } finally {
    await other.close();
  }
});

it('keeps the attempt number of what waited for a connection when a shutdown cuts it: sent as attempt 1 after the restart (was: 2, a number spent on nothing)', async () => {
  receiver = await startReceiver(() => ({ status: 204, delayMs: 30_000 }));
  gw = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_SHUTDOWN_TIMEOUT_MS: '200' });
  await subscribe('q.stop', '/s', { ordering: 'none', maxInFlight: 128 });
  await publishBatch(gw.url, events('q.stop', 100));
  await waitFor(() => onPath('/s').length === 56, { what: '56 requests open' });
  await gw.close();
  const before = onPath('/s').length;
  receiver.setResponder(() => ({ status: 204 }));
  gw = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_DATA_DIR: gw.dataDir });
  await waitFor(
    () =>
      new Set(
        onPath('/s')
          .slice(before)
          .map((r) => r.headers['webhook-id']),
      ).size === 100,
    {
      what: 'every event sent again after the restart',
    },
  );
  const firstAttempts = onPath('/s')
    .slice(before)
    .filter((r) => r.headers['herald-attempt'] === '1');
  // The 44 never sent go as attempt 1; the 56 cut by the shutdown were sent, so they go as attempt 2.
  expect(firstAttempts.length).toBe(44);
  expect(
    firstAttempts.every(
      (r) =>
        !onPath('/s')
          .slice(0, before)
          .some((o) => o.headers['webhook-id'] === r.headers['webhook-id']),
    ),
  ).toBe(true);
});

it('sends nothing that waited for a connection once a 410 has paused the subscription (was: one request after the 410)', async () => {
  receiver = await startReceiver(() => ({ status: 410, delayMs: 1500 }));
  gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
  const sub = await subscribe('q.gone', '/g', { ordering: 'none', maxInFlight: 128 });
  await publishBatch(gw.url, events('q.gone', 100));
  await waitFor(() => onPath('/g').length === 56, { what: '56 requests open' });
  await waitFor(async () => (await request(gw.url).get(`/subscriptions/${sub.id}`)).body.state === 'paused', { what: 'paused by the 410' });
  const answered = async () => (await request(gw.url).get(`/subscriptions/${sub.id}/attempts?limit=1000`)).body.attempts.length;
  await waitFor(async () => (await answered()) === 56, { what: 'the open requests answered' });
  expect(onPath('/g').length).toBe(56);
});

it('gives a freed connection to the subscription of that host holding the fewest, not to the oldest waiter (delivery probe: a healthy subscription waited behind every request of stalled ones)', async () => {
  receiver = await startReceiver((req) => (req.url === '/slow' ? { status: 204, delayMs: 1500 } : { status: 204 }));
  gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
  // Sixteen subscriptions of a slow path want 16 × 16 requests: 64 hold the host's connections (the last 8 taken by
  // subscriptions that held none), 192 wait.
  for (let i = 0; i < 16; i++) await subscribe('q.slow', '/slow', { ordering: 'none', maxInFlight: 16 });
  await subscribe('q.fast', '/fast', { ordering: 'none', maxInFlight: 16 });
  await publishBatch(gw.url, events('q.slow', 16));
  await waitFor(() => onPath('/slow').length === 64, { what: '64 requests open' });
  await publishBatch(gw.url, events('q.fast', 10));
  await waitFor(() => onPath('/fast').length === 10, { what: 'the healthy subscription’s 10 events', timeoutMs: 20_000 });
  // It got connections as the first ones were freed, beside the slow ones, not after all 64 slow requests that had
  // waited before it (was: first in, first out, so it waited for the next round of slow answers, 1.5 s more).
  const lastFast = Math.max(...onPath('/fast').map((r) => r.receivedAt));
  expect(onPath('/slow').filter((r) => r.receivedAt <= lastFast).length).toBeLessThan(128);
});

it('keeps connections of a host for other subscriptions when one holds them all with a receiver that hangs (re-probe: a healthy one waited out the full timeout)', async () => {
  receiver = await startReceiver((req) => (req.url === '/hang' ? { status: 204, delayMs: 20_000 } : { status: 204 }));
  // Shut down at once at the end: the hanging requests are not waited for.
  gw = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_SHUTDOWN_TIMEOUT_MS: '200' });
  await subscribe('q.hang', '/hang', { ordering: 'none', maxInFlight: 64, timeoutMs: 30_000 });
  await publishBatch(gw.url, events('q.hang', 100));
  await waitFor(() => onPath('/hang').length === 56, { what: '56 requests open (64 less the 8 kept for others)' });
  await subscribe('q.ok', '/ok', { ordering: 'none', maxInFlight: 16 });
  await publishBatch(gw.url, events('q.ok', 20));
  await waitFor(() => onPath('/ok').length === 20, { what: 'the healthy subscription’s 20 events, while the others hang' });
  expect(onPath('/hang').length).toBe(56);
});

it('keeps connections of a host for a subscription that holds none when two others hang (probe: the second took the 8 the first left, and a healthy one waited 7 s)', async () => {
  receiver = await startReceiver((req) => (req.url!.startsWith('/hang') ? { status: 204, delayMs: 20_000 } : { status: 204 }));
  // Shut down at once at the end: the hanging requests are not waited for.
  gw = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_SHUTDOWN_TIMEOUT_MS: '200' });
  await subscribe('q.hang1', '/hang1', { ordering: 'none', maxInFlight: 1024, timeoutMs: 30_000 });
  await publishBatch(gw.url, events('q.hang1', 100));
  await waitFor(() => onPath('/hang1').length === 56, { what: '56 requests open (64 less the 8 kept for others)' });
  await subscribe('q.hang2', '/hang2', { ordering: 'none', maxInFlight: 1024, timeoutMs: 30_000 });
  await publishBatch(gw.url, events('q.hang2', 100));
  await waitFor(() => onPath('/hang2').length === 1, { what: 'the second hanging subscription’s first request' });
  await subscribe('q.ok2', '/ok2', { ordering: 'none', maxInFlight: 16 });
  await publishBatch(gw.url, events('q.ok2', 20));
  await waitFor(() => onPath('/ok2').length === 20, { what: 'the healthy subscription’s 20 events, while two others hang' });
  // Each hanging subscription kept what it had: the one connection it took did not come out of the reserve.
  expect([onPath('/hang1').length, onPath('/hang2').length]).toEqual([56, 1]);
});

// Delivery probe: after a PATCH moved the sink off a host that hangs, the 34 requests waiting for one of its
// connections stayed queued there (none reached the new sink in 5 s), until the old host freed one.
it('sends what waited for a connection to a hanging sink to the new sink at once when a PATCH moves it, under the same attempt number', async () => {
  receiver = await startReceiver(() => ({ status: 204, delayMs: 20_000 }));
  const moved = await startReceiver();
  try {
    gw = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_SHUTDOWN_TIMEOUT_MS: '200' });
    const sub = await subscribe('q.move', '/old', { ordering: 'none', maxInFlight: 128, timeoutMs: 30_000 });
    await publishBatch(gw.url, events('q.move', 100));
    await waitFor(() => onPath('/old').length === 56, { what: '56 requests open (64 less the 8 kept for others)' });
    await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink: moved.url }).expect(200);
    await waitFor(() => moved.requests.length === 44, { what: 'the 44 that waited, at the new sink', timeoutMs: 5000 });
    expect(moved.requests.map((r) => r.headers['herald-attempt'])).toEqual(Array(44).fill('1'));
    expect(onPath('/old').length).toBe(56);
  } finally {
    await moved.close();
  }
});
