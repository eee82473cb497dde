/**
 * index.db write-locked by another process (an operator's `sqlite3 index.db` shell, a backup tool):
 * the indexer thread cannot write, so the in-memory tail fills. Ingest must then answer a bounded
 * 503 (nothing stored, no offset used) rather than hang, `/readyz` must say why, and once the lock
 * goes everything acknowledged is there and ingest goes on. Was: the request hung with no answer
 * while `/readyz` answered 200.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { waitFor } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
});
afterAll(async () => {
  await gw.close();
  cleanupTmpDirs();
});

const BATCH = 1000;
const batch = (b: number) =>
  JSON.stringify(Array.from({ length: BATCH }, (_, i) => ({ specversion: '1.0', id: `e${b}-${i}`, source: '/lock', type: 't' })));

async function post(b: number): Promise<{ status: number; retryAfter: string | null; type: string | null; body: any }> {
  const res = await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents-batch+json' },
    body: batch(b),
    signal: AbortSignal.timeout(15_000), // the tail's wait is 5 s: a hang fails here
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), type: res.headers.get('content-type'), body: await res.json() };
}

it('with index.db locked, a full tail answers 503 with Retry-After, /readyz says why, and all recovers once the lock goes', async () => {
  const lock = new Database(path.join(gw.dataDir, 'index.db'));
  lock.exec('BEGIN EXCLUSIVE');
  let acknowledged = 0;
  let refused: Awaited<ReturnType<typeof post>> | undefined;
  let refusedBatch = -1;
  try {
    // 100 batches of 1,000 small events: past the tail's 65,536-event bound (bounded loop).
    for (let b = 0; b < 100 && !refused; b++) {
      const res = await post(b);
      if (res.status === 202) acknowledged += BATCH;
      else [refused, refusedBatch] = [res, b];
    }
    expect(refused).toMatchObject({ status: 503, retryAfter: '1', type: expect.stringMatching(/problem\+json/) });
    expect(refused!.body.detail).toMatch(/index is behind: \d+ events wait in memory to be written to index\.db/);
    // A prune asked of a worker that dies answers (nothing pruned) rather than waiting for ever.
    const pruned = (gw.store as unknown as { pruneIdempotency(): Promise<number> }).pruneIdempotency();
    let timer: NodeJS.Timeout | undefined;
    const noAnswer = new Promise((r) => (timer = setTimeout(() => r('no answer'), 15_000)));
    await expect(Promise.race([pruned, noAnswer]).finally(() => clearTimeout(timer))).resolves.toBe(0);
    const ready = await fetch(`${gw.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { checks: { log: string } }).checks.log).toMatch(/index is behind/);
  } finally {
    lock.exec('ROLLBACK');
    lock.close();
  }
  await waitFor(async () => (await fetch(`${gw.url}/readyz`)).status === 200, { what: 'ready again', timeoutMs: 30_000 });
  const retried = await post(refusedBatch);
  expect([retried.status, retried.body.results.filter((r: { duplicate: boolean }) => r.duplicate).length]).toEqual([202, 0]);
  const head = (await (await fetch(`${gw.url}/partitions`)).json()) as { partitions: { headOffset: number }[] };
  expect(head.partitions[0]!.headOffset).toBe(acknowledged + BATCH);
  const first = await fetch(`${gw.url}/events?source=/lock&id=e0-0`);
  expect(first.status).toBe(200);
});

it('stops within HERALD_SHUTDOWN_TIMEOUT_MS while index.db is locked, and the next start indexes what was left (was about 5 s whatever the setting)', async () => {
  const own = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_SHUTDOWN_TIMEOUT_MS: '1000' });
  const lock = new Database(path.join(own.dataDir, 'index.db'));
  lock.exec('BEGIN EXCLUSIVE');
  let tookMs: number;
  try {
    const res = await fetch(`${own.url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: batch(0),
    });
    expect(res.status).toBe(202);
    await res.arrayBuffer(); // read: an answer left unread holds its connection open past the test
    const started = Date.now();
    await own.close();
    tookMs = Date.now() - started;
  } finally {
    lock.exec('ROLLBACK');
    lock.close();
  }
  // Was 4.6-5 s (the worker's own 5 s lock wait), and a worker terminated inside SQLite aborted the process.
  expect(tookMs).toBeLessThan(3500);
  const again = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_DATA_DIR: own.dataDir });
  try {
    expect((await fetch(`${again.url}/events?source=/lock&id=e0-999`)).status).toBe(200);
  } finally {
    await again.close();
  }
}, 60_000);

it('while the indexer keeps failing and the tail still has room, /readyz is 503 but ingest answers and herald_log_writable stays 1 (was 0: it said ingest answered 503)', async () => {
  const own = await startTestGateway({ HERALD_PARTITIONS: '1' });
  const lock = new Database(path.join(own.dataDir, 'index.db'));
  lock.exec('BEGIN EXCLUSIVE');
  const publish = (id: string) =>
    fetch(`${own.url}/events`, {
      method: 'POST',
      headers: { 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/lock', 'ce-type': 't', 'content-type': 'text/plain' },
      body: 'x',
    });
  try {
    expect((await publish('before')).status).toBe(202);
    // Two worker deaths (5 s of busy waiting each) with the event still unwritten.
    await waitFor(async () => (await fetch(`${own.url}/readyz`)).status === 503, { what: '/readyz unready', timeoutMs: 30_000 });
    const ready = (await (await fetch(`${own.url}/readyz`)).json()) as { checks: { log: string } };
    expect(ready.checks.log).toMatch(/^the index is behind: 1 events wait in memory .*its writer failed \d+ time/);
    expect(await (await fetch(`${own.url}/metrics`)).text()).toMatch(/^herald_log_writable 1$/m);
    expect((await publish('during')).status).toBe(202);
  } finally {
    lock.exec('ROLLBACK');
    lock.close();
  }
  await waitFor(async () => (await fetch(`${own.url}/readyz`)).status === 200, { what: 'ready again', timeoutMs: 30_000 });
  expect((await fetch(`${own.url}/events?source=/lock&id=during`)).status).toBe(200);
  await own.close();
});
