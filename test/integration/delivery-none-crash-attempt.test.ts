import { postBinary, useChildGateways, type ChildGateway } from '../helpers/gateway';
import { useReceivers, waitFor, type ReceivedRequest } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * Ordering `none`: an event whose in-flight row was written (an attempt open past a flush) and which
 * then finishes above the committed offset must not lose its attempt count to a crash. Its row's
 * delete and its finished row used to go in different flushes (the finished row waits a whole
 * interval), so a SIGKILL between them left neither: after the restart the event went again as a
 * new one, `herald-attempt: 1` after attempt 2 (crash-and-chaos soak: 3, then 1, same webhook-id).
 * README: a crash sends an event again as the next attempt, or under the same `herald-attempt`.
 */

afterAll(cleanupTmpDirs);

const spawnGateway = useChildGateways();
const startReceiver = useReceivers();

const attemptOf = (r: ReceivedRequest) => Number(r.headers['herald-attempt']);
const offsetOf = (r: ReceivedRequest) => Number(r.headers['herald-offset']);

test('an event finished above the committed offset keeps its attempt count across a SIGKILL', async () => {
  const dataDir = tmpDir();
  const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' };
  let gw: ChildGateway = await spawnGateway(env);
  /** Offsets whose second attempt was answered 200, and when. */
  const answered = new Map<number, number>();
  const receiver = await startReceiver((req) => {
    const offset = offsetOf(req);
    // Offset 0 keeps failing: the committed offset stays at 0, so every other event finishes above it.
    if (offset === 0) return { status: 500 };
    if (attemptOf(req) === 1 && !answered.has(offset)) return { status: 500 };
    if (!answered.has(offset)) {
      answered.set(offset, -1);
      // Held past a flush, so the attempt's in-flight row is written before it finishes.
      return { status: 200, delayMs: 200 };
    }
    return { status: 200 };
  });
  await postBinary(gw.url, { source: '/none-crash', id: 'held' });
  const created = await fetch(`${gw.url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      sink: receiver.url,
      startAt: 'earliest',
      delivery: { ordering: 'none', retry: { maxAttempts: 1000, initialDelayMs: 30, maxDelayMs: 100 } },
    }),
  });
  expect(created.status).toBe(201);

  // Each trial: one more event, its second attempt answered 200 after 200 ms, then a SIGKILL a flush
  // interval or so after the answer (the window between the row's delete and the finished row's write).
  const decreases: string[] = [];
  for (let trial = 1; trial <= 8 && decreases.length === 0; trial++) {
    expect((await postBinary(gw.url, { source: '/none-crash', id: `e${trial}` })).status).toBe(202);
    const seen = receiver.requests.length;
    const second = await waitFor(() => receiver.requests.slice(seen).find((r) => offsetOf(r) === trial && attemptOf(r) === 2), {
      timeoutMs: 10_000,
      what: `attempt 2 of offset ${trial}`,
    });
    // The answer goes 200 ms after the request came; kill 40 to 110 ms after it.
    await new Promise((r) => setTimeout(r, second.receivedAt + 200 + 40 + trial * 10 - Date.now()));
    gw.child.kill('SIGKILL');
    await gw.exited;
    const restartedAt = Date.now();
    gw = await spawnGateway(env);
    await new Promise((r) => setTimeout(r, 2000));
    for (const r of receiver.requests)
      if (r.receivedAt >= restartedAt && offsetOf(r) === trial && attemptOf(r) < 2)
        decreases.push(`offset ${trial}: herald-attempt ${attemptOf(r)} after attempt 2, same webhook-id ${r.headers['webhook-id']}`);
  }
  expect(decreases).toEqual([]);
}, 90_000);
