import request from 'supertest';
import { getSubscription, publishOfType, requestsForSubscription, waitForLagZero } from '../helpers/delivery';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type ReceivedRequest, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * A receiver's `Retry-After` (on 429 or 503) holds every request of its subscription until it has passed,
 * whichever event it answered (http-webhook §2.2), and a restart of the gateway does not end it: it was
 * kept in memory only, so a restart sent the backlog at once to a receiver that had asked for quiet.
 */

const HOLD_S = 4;
let receiver: Receiver;
let gw: TestGateway | undefined;

beforeAll(async () => {
  let refused = false;
  receiver = await startReceiver((req: ReceivedRequest) => {
    if (req.headers['ce-id'] !== 'h1' || refused) return { status: 204 };
    refused = true;
    return { status: 429, headers: { 'retry-after': String(HOLD_S) } };
  });
});
afterAll(async () => {
  await gw?.close();
  await receiver?.close();
  cleanupTmpDirs();
});

it('keeps holding the subscription through a restart until the Retry-After has passed', async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
  const { dataDir } = gw;
  const sub = (
    await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ordering: 'none', maxInFlight: 8 } })
      .expect(201)
  ).body as { id: string };
  await publishOfType(gw.url, '/hold', 'hold.t', ['h1']);
  const refused = await waitFor(() => requestsForSubscription(receiver, sub.id, 'h1')[0], { what: 'the refused request' });
  await new Promise((r) => setTimeout(r, 200)); // the answer is read and its hold written behind
  await gw.close();
  gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });

  const others = ['h2', 'h3', 'h4', 'h5'];
  await publishOfType(gw.url, '/hold', 'hold.t', others);
  expect((await getSubscription(gw.url, sub.id)).stats.throttled).toBe(true);
  await waitForLagZero(gw.url, sub.id, { timeoutMs: 20_000 });
  const after = requestsForSubscription(receiver, sub.id).filter((q) => q !== refused);
  expect(after.map((q) => q.headers['ce-id']).sort()).toEqual(['h1', ...others]);
  for (const q of after) expect(q.receivedAt - refused.receivedAt).toBeGreaterThanOrEqual(HOLD_S * 1000 - 100);
  expect((await getSubscription(gw.url, sub.id)).stats.throttled).toBe(false);
});

it('ends a stored hold on resume after a pause, and on a new sink, restarts included (re-probe: nothing ended a day-long hold)', async () => {
  await gw?.close();
  let answered = 0;
  const holding = await startReceiver(() => (answered++ === 0 ? { status: 503, headers: { 'retry-after': '86400' } } : { status: 204 }));
  const other = await startReceiver();
  const throttled = async (id: string) => (await getSubscription(gw!.url, id)).stats.throttled as boolean;
  try {
    gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
    const { dataDir } = gw;
    const created = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: holding.url, delivery: { ordering: 'none' } });
    const sub = created.body as { id: string };
    await publishOfType(gw.url, '/hold-end', 'hold.end', ['e1']);
    await waitFor(async () => (await throttled(sub.id)) || undefined, { what: 'held by the 503' });
    await new Promise((r) => setTimeout(r, 200)); // its hold written behind
    await gw.close();
    gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    await publishOfType(gw.url, '/hold-end', 'hold.end', ['e2']);
    expect(await throttled(sub.id)).toBe(true);

    // A pause and a resume end the hold: e2 goes at once (e1's own retry keeps the time its answer asked for).
    await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
    await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
    await waitFor(() => requestsForSubscription(holding, sub.id, 'e2')[0], { what: 'e2 sent after the resume', timeoutMs: 10_000 });
    expect(await throttled(sub.id)).toBe(false);

    // Held again, then moved to another sink: the new receiver gets the backlog at once.
    answered = 0;
    await publishOfType(gw.url, '/hold-end', 'hold.end', ['e3']);
    await waitFor(async () => (await throttled(sub.id)) || undefined, { what: 'held again' });
    await publishOfType(gw.url, '/hold-end', 'hold.end', ['e4']);
    await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink: other.url }).expect(200);
    await waitFor(() => requestsForSubscription(other, sub.id, 'e4')[0], { what: 'e4 sent to the new sink', timeoutMs: 10_000 });
    expect(await throttled(sub.id)).toBe(false);
    await gw.close();
    // Ended for good: the restart does not bring it back.
    gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(await throttled(sub.id)).toBe(false);
  } finally {
    await holding.close();
    await other.close();
  }
});

it('takes no hold from a late answer of a sink a PATCH moved away from (re-probe: the new receiver was held for an hour)', async () => {
  await gw?.close();
  const old = await startReceiver(async () => {
    await new Promise((r) => setTimeout(r, 1500));
    return { status: 503, headers: { 'retry-after': '3600' } };
  });
  const moved = await startReceiver();
  try {
    gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
    const sub = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: old.url, delivery: { ordering: 'none' } })
        .expect(201)
    ).body as { id: string };
    await publishOfType(gw.url, '/hold-late', 'hold.late', ['l1']);
    await waitFor(() => requestsForSubscription(old, sub.id, 'l1')[0], { what: 'the request to the old sink' });
    await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink: moved.url }).expect(200);
    await new Promise((r) => setTimeout(r, 1800)); // the old sink's 503 has come back
    await publishOfType(gw.url, '/hold-late', 'hold.late', ['l2']);
    await waitFor(() => requestsForSubscription(moved, sub.id, 'l2')[0], { what: 'l2 sent to the new sink', timeoutMs: 5000 });
    expect((await getSubscription(gw.url, sub.id)).stats.throttled).toBe(false);
  } finally {
    await old.close();
    await moved.close();
  }
});
