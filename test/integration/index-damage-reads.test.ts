import fs from 'node:fs';
import path from 'node:path';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';
import Database from 'better-sqlite3';

/**
 * A bit flipped in an offset key of index.db (storage probe): the row of offset 21 read as 17, out of
 * key order. Pages served from it looped (`nextOffset` back to 18), named intact event 17 corrupt, and
 * passed over event 21 as a gap, which delivery would skip for good. Reads now refuse such an index
 * (503) until a restart rebuilds it from the log, and nothing is skipped.
 */

const EVENTS = 40;
let receiver: Receiver;
let gw: TestGateway | undefined;

beforeAll(async () => {
  receiver = await startReceiver();
});
afterAll(async () => {
  await gw?.close();
  await receiver?.close();
  cleanupTmpDirs();
});

/** SQLite's serial type and big-endian bytes of a small non-negative integer (record format, schema format 4). */
function intField(n: number): { type: number; bytes: number[] } {
  if (n === 0 || n === 1) return { type: 8 + n, bytes: [] };
  const widths: [number, number][] = [
    [1, 1],
    [2, 2],
    [3, 3],
    [4, 4],
    [6, 5],
  ];
  for (const [width, type] of widths) {
    if (n < 2 ** (8 * width - 1)) return { type, bytes: [...Buffer.from(n.toString(16).padStart(2 * width, '0'), 'hex')] };
  }
  throw new Error(`${n} is too large for this test`);
}

/** The stored record of a log_index row (partition, offset, position, length). */
function rowRecord(values: number[]): Buffer {
  const fields = values.map(intField);
  return Buffer.from([1 + fields.length, ...fields.map((f) => f.type), ...fields.flatMap((f) => f.bytes)]);
}

type Row = { offset: number; position: number; length: number };

/** A log_index row as stored. */
function indexRow(indexFile: string, partition: number, offset: number): Row {
  const db = new Database(indexFile, { readonly: true });
  try {
    return db
      .prepare('SELECT "offset", position, length FROM log_index WHERE partition = ? AND "offset" = ?')
      .get(partition, offset) as Row;
  } finally {
    db.close();
  }
}

/** Changes one log_index row in index.db's bytes, as a flipped bit would (the new values must be as long). */
function rewriteRow(indexFile: string, partition: number, offset: number, change: Partial<Row>): void {
  const row = indexRow(indexFile, partition, offset);
  const next = { ...row, ...change };
  const bytes = fs.readFileSync(indexFile);
  const before = rowRecord([partition, row.offset, row.position, row.length]);
  const after = rowRecord([partition, next.offset, next.position, next.length]);
  expect(after.length).toBe(before.length);
  const at = bytes.indexOf(before);
  expect(at).toBeGreaterThan(0);
  expect(bytes.indexOf(before, at + 1)).toBe(-1);
  after.copy(bytes, at);
  fs.writeFileSync(indexFile, bytes);
}

const page = async (from: number) => {
  const res = await fetch(`${gw!.url}/partitions/0/events?from=${from}&limit=1000`);
  return { status: res.status, body: (await res.json()) as { events?: { offset: number }[]; nextOffset?: number; detail?: string } };
};

/** A gateway (1 partition) whose paused subscription has not read the stored events yet, stopped; its data dir and subscription. */
async function storedAndStopped(): Promise<{ dataDir: string; sub: string }> {
  gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
  const { dataDir } = gw;
  const created = await fetch(`${gw.url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink: receiver.url, startAt: 'earliest' }),
  });
  expect(created.status).toBe(201);
  const sub = ((await created.json()) as { id: string }).id;
  // Paused: delivery first reads these events from the damaged index.
  expect((await fetch(`${gw.url}/subscriptions/${sub}/pause`, { method: 'POST' })).status).toBe(200);
  const batch = Array.from({ length: EVENTS }, (_, i) => ({ specversion: '1.0', id: `e${i}`, source: '/damage', type: 't', data: i }));
  const published = await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents-batch+json' },
    body: JSON.stringify(batch),
  });
  expect(published.status).toBe(202);
  await published.arrayBuffer();
  await gw.close();
  gw = undefined;
  return { dataDir, sub };
}

const offsetsSeen = (sub: string) =>
  receiver.requests.filter((q) => q.headers['herald-subscription-id'] === sub).map((q) => Number(q.headers['herald-offset']));

/** After a restart every event is read, looked up and delivered, in order. */
async function servedWholeAfterRestart(dataDir: string, sub: string): Promise<void> {
  gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' });
  expect(fs.existsSync(path.join(dataDir, 'index.db.damaged'))).toBe(false);
  const all = await page(0);
  expect(all.status).toBe(200);
  expect(all.body.events!.map((e) => e.offset)).toEqual(Array.from({ length: EVENTS }, (_, i) => i));
  expect(all.body.nextOffset).toBe(EVENTS);
  expect((await fetch(`${gw.url}/events?source=%2Fdamage&id=e21`)).status).toBe(200);
  await waitFor(() => new Set(offsetsSeen(sub)).size === EVENTS, { what: 'every event delivered' });
  expect([...new Set(offsetsSeen(sub))].sort((a, b) => a - b)).toEqual(Array.from({ length: EVENTS }, (_, i) => i));
  await gw.close();
  gw = undefined;
}

it('refuses reads from an index with a row out of key order, skips no event in delivery, and serves all after a restart', async () => {
  const { dataDir, sub } = await storedAndStopped();
  rewriteRow(path.join(dataDir, 'index.db'), 0, 21, { offset: 17 });
  gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' });
  expect((await fetch(`${gw.url}/subscriptions/${sub}/resume`, { method: 'POST' })).status).toBe(200);
  // The delivery thread meets the row out of order and stops reading (it does not pass over event 21).
  await waitFor(() => fs.existsSync(path.join(dataDir, 'index.db.damaged')), { what: 'the damaged-index marker' });
  await waitFor(async () => (await fetch(`${gw!.url}/readyz`)).status === 503, { what: '/readyz unready' });
  for (const from of [0, 18, 21]) {
    const got = await page(from);
    expect(got.status).toBe(503);
    expect(got.body.detail).toMatch(/^index\.db is damaged/);
  }
  expect((await fetch(`${gw.url}/events?source=%2Fdamage&id=e21`)).status).toBe(503);
  await new Promise((r) => setTimeout(r, 500));
  expect(offsetsSeen(sub).filter((o) => o >= 21)).toEqual([]);
  await gw.close();
  gw = undefined;
  await servedWholeAfterRestart(dataDir, sub);
});

it('stops ingest and reads when only delivery finds the damage: a row pointing at another intact record, which integrity_check cannot see', async () => {
  const { dataDir, sub } = await storedAndStopped();
  const file = path.join(dataDir, 'index.db');
  const { position, length } = indexRow(file, 0, 22);
  rewriteRow(file, 0, 21, { position, length });
  gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' });
  expect((await fetch(`${gw.url}/readyz`)).status).toBe(200); // nothing a check of the file finds
  expect((await fetch(`${gw.url}/subscriptions/${sub}/resume`, { method: 'POST' })).status).toBe(200);
  // The delivery thread reads record 22 where 21 should be, tells the main thread, and stops there.
  await waitFor(async () => (await fetch(`${gw!.url}/readyz`)).status === 503, { what: '/readyz unready' });
  expect(fs.existsSync(path.join(dataDir, 'index.db.damaged'))).toBe(true);
  const refused = await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { 'ce-specversion': '1.0', 'ce-id': 'after', 'ce-source': '/damage', 'ce-type': 't', 'content-type': 'text/plain' },
    body: 'x',
  });
  expect(refused.status).toBe(503);
  expect((await page(0)).status).toBe(503);
  expect(offsetsSeen(sub).filter((o) => o >= 21)).toEqual([]);
  await gw.close();
  gw = undefined;
  await servedWholeAfterRestart(dataDir, sub);
});

const resend = (id: string) =>
  fetch(`${gw!.url}/events`, {
    method: 'POST',
    headers: { 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/sqlite', 'ce-type': 't', 'content-type': 'text/plain' },
    body: 'x',
  });

/**
 * A running gateway (1 partition, restarted once) over 2,000 indexed events, enough rows for pages its
 * connection has to read from the file; its data dir.
 */
async function runningOverIndexedEvents(): Promise<string> {
  gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
  const { dataDir } = gw;
  for (let start = 0; start < 2_000; start += 500) {
    const batch = Array.from({ length: 500 }, (_, i) => ({
      specversion: '1.0',
      id: `m${start + i}`,
      source: '/sqlite',
      type: 't',
      data: i,
    }));
    const res = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify(batch),
    });
    expect(res.status).toBe(202);
    await res.arrayBuffer();
  }
  await gw.close();
  gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' });
  expect((await fetch(`${gw.url}/readyz`)).status).toBe(200);
  return dataDir;
}

/** Every page of index.db but the first (the header and schema) overwritten, as a disk that lies would. */
function overwritePages(dataDir: string): void {
  const file = path.join(dataDir, 'index.db');
  const size = fs.statSync(file).size;
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(size - 4096, 0x5a), 0, size - 4096, 4096);
  fs.closeSync(fd);
}

/** Ingest and reads answer 503 naming the damage, `/readyz` says it, and the marker is left for the next start. */
async function refusedAsDamaged(dataDir: string): Promise<void> {
  await waitFor(async () => (await fetch(`${gw!.url}/readyz`)).status === 503, { what: '/readyz unready' });
  const ready = await fetch(`${gw!.url}/readyz`);
  expect(((await ready.json()) as { checks: { log: string } }).checks.log).toMatch(/^index\.db is damaged/);
  expect(fs.existsSync(path.join(dataDir, 'index.db.damaged'))).toBe(true);
  const again = await resend('m1500');
  expect([again.status, again.headers.get('retry-after')]).toEqual([503, '5']);
  expect(((await again.json()) as { detail: string }).detail).toMatch(/^index\.db is damaged/);
  expect((await fetch(`${gw!.url}/events?source=%2Fsqlite&id=m1700`)).status).toBe(503);
}

/** After a restart (which rebuilds index.db from the log) every event is there and a resend is a duplicate of its first store. */
async function rebuiltWhole(dataDir: string, events: number): Promise<void> {
  await gw!.close();
  gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' });
  expect((await fetch(`${gw.url}/readyz`)).status).toBe(200);
  const again = await resend('m1500');
  expect([again.status, ((await again.json()) as { results: unknown[] }).results[0]]).toEqual([
    200,
    expect.objectContaining({ offset: 1500, duplicate: true }),
  ]);
  const last = await fetch(`${gw.url}/partitions/0/events?from=${events - 1}&limit=10`);
  expect(((await last.json()) as { events: { offset: number }[] }).events.map((e) => e.offset)).toEqual([events - 1]);
  expect((await fetch(`${gw.url}/events?source=%2Fsqlite&id=m1999`)).status).toBe(200);
  await gw.close();
  gw = undefined;
}

describe('index.db damaged while the gateway runs, found by SQLite itself (was: every duplicate check and lookup a 500, /readyz ready, no rebuild)', () => {
  it('a duplicate check that reads a damaged page answers 503 and stops ingest and reads until a restart rebuilds the index', async () => {
    const dataDir = await runningOverIndexedEvents();
    // A write by another connection has the gateway's connection read pages from the file again, not its cache.
    const other = new Database(path.join(dataDir, 'index.db'));
    other.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('test', 'x')").run();
    other.close();
    overwritePages(dataDir);
    const first = await resend('m1500');
    expect(first.status).toBe(503);
    expect(((await first.json()) as { detail: string }).detail).toMatch(/^index\.db is damaged \(SQLite found it damaged/);
    await refusedAsDamaged(dataDir);
    await rebuiltWhole(dataDir, 2_000);
  });

  it('the indexer dying on a damaged page stops ingest and reads until a restart rebuilds the index; the event it could not index is kept', async () => {
    const dataDir = await runningOverIndexedEvents();
    // After the start's background integrity_check (milliseconds for 2,000 rows), which would find it first.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    overwritePages(dataDir);
    const fresh = await resend('fresh');
    expect(fresh.status).toBe(202);
    await refusedAsDamaged(dataDir);
    await rebuiltWhole(dataDir, 2_001);
  });
});
