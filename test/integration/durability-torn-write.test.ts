import crypto from 'node:crypto';
import fs from 'node:fs';
import { encodeRecord, frameKey } from '../../src/wal/record';
import {
  eventKey,
  killIfRunning,
  lookupEvent,
  lookupEvents,
  partitionHeads,
  postBatch,
  postBinary,
  readAllEvents,
  recordEnds,
  segmentFiles,
  spawnGateway,
  startTestGateway,
  type AppendResultBody,
  type ChildGateway,
} from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';

afterAll(cleanupTmpDirs);

const ENV = { HERALD_PARTITIONS: '4' };

let child: ChildGateway | undefined;
afterEach(() => killIfRunning(child));

/** Stores 20 events (binary and batch) and returns their acks. */
async function storeEvents(url: string, source: string): Promise<AppendResultBody[]> {
  const acked: AppendResultBody[] = [];
  for (let i = 0; i < 10; i++) {
    const res = await postBinary(url, { source, id: `b${i}` });
    expect(res.status).toBe(202);
    acked.push(...res.body.results);
  }
  const batch = await postBatch(
    url,
    Array.from({ length: 10 }, (_, i) => ({ source, id: `batch${i}` })),
  );
  expect(batch.status).toBe(202);
  return [...acked, ...batch.body.results];
}

/** A frame that looks like the next record (valid length and header) but stops half way. */
function partialFrame(): Buffer {
  const event = {
    attributes: { specversion: '1.0', id: 'torn', source: '/torn', type: 'torn' },
    data: { kind: 'json' as const, value: { pad: 'x'.repeat(200) } },
  };
  const frame = encodeRecord({ partition: 0, offset: 10, storedAt: Date.now(), event }, frameKey(crypto.randomBytes(16)));
  return frame.subarray(0, Math.floor(frame.length / 2));
}

function badChecksumFrame(): Buffer {
  const event = { attributes: { specversion: '1.0', id: 'bad', source: '/torn', type: 'torn' }, data: { kind: 'none' as const } };
  const frame = Buffer.from(encodeRecord({ partition: 0, offset: 10, storedAt: Date.now(), event }, frameKey(crypto.randomBytes(16))));
  frame[frame.length - 1]! ^= 0x01;
  return frame;
}

const tails: [string, () => Buffer][] = [
  ['random bytes', () => crypto.randomBytes(1000)],
  ['a plausible partial frame', partialFrame],
  ['a whole frame with a bad checksum', badChecksumFrame],
  ['three stray bytes', () => Buffer.from([1, 2, 3])],
];

describe('torn writes at the end of the log', () => {
  it.each(tails)('cuts %s after a graceful stop, keeps every acknowledged event and continues the offsets', async (_name, tail) => {
    const gw = await startTestGateway(ENV);
    const acked = await storeEvents(gw.url, '/torn');
    const headsBefore = await partitionHeads(gw.url);
    await gw.close();
    await expectTornTailRepaired(gw.dataDir, tail(), acked, headsBefore);
  });

  it.each(tails)('cuts %s after a SIGKILL, keeps every acknowledged event and continues the offsets', async (_name, tail) => {
    const dataDir = tmpDir();
    child = await spawnGateway({ ...ENV, HERALD_DATA_DIR: dataDir });
    const acked = await storeEvents(child.url, '/torn-kill');
    const headsBefore = await partitionHeads(child.url);
    child.child.kill('SIGKILL');
    expect(await child.exited).toBe('SIGKILL');
    await expectTornTailRepaired(dataDir, tail(), acked, headsBefore);
  });
});

async function expectTornTailRepaired(dataDir: string, garbage: Buffer, acked: AppendResultBody[], headsBefore: number[]) {
  const newest = segmentFiles(dataDir).at(-1)!;
  const goodSize = fs.statSync(newest).size;
  expect(recordEnds(newest).at(-1)).toBe(goodSize); // the log ended on a record before the damage
  fs.appendFileSync(newest, garbage);

  const gw = await startTestGateway({ ...ENV, HERALD_DATA_DIR: dataDir });
  try {
    expect(fs.statSync(newest).size).toBe(goodSize);
    expect(await partitionHeads(gw.url)).toEqual(headsBefore);
    for (const { ev: r, ...found } of await lookupEvents(gw.url, acked)) {
      expect(found.status).toBe(200);
      expect(found.body).toMatchObject({ partition: r.partition, offset: r.offset });
    }
    const more = await storeEvents(gw.url, '/after-repair');
    // New offsets pick up exactly at the old heads: no gap, no reuse.
    for (let p = 0; p < headsBefore.length; p++) {
      const offsets = more.filter((r) => r.partition === p).map((r) => r.offset);
      expect(offsets).toEqual(offsets.map((_, i) => headsBefore[p]! + i));
    }
    const all = await readAllEvents(gw.url);
    expect(all).toHaveLength(acked.length + more.length);
    expect(new Set(all.map((e) => eventKey(e.event))).size).toBe(all.length);
    for (const r of more) expect((await lookupEvent(gw.url, r)).body).toMatchObject({ partition: r.partition, offset: r.offset });
    expect(recordEnds(newest).at(-1)).toBe(fs.statSync(newest).size);
  } finally {
    await gw.close();
  }
}

describe('SQLite ahead of the log (power cut that lost unsynced log bytes)', () => {
  it.each([
    ['on a record boundary', 0],
    ['inside a record', 5],
  ])('forgets events cut from the log (%s), never reuses their offsets, and stores them again at new ones', async (_name, extra) => {
    const gw = await startTestGateway({ ...ENV, HERALD_FSYNC: 'interval' });
    const acked: AppendResultBody[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await postBinary(gw.url, { source: '/ahead', id: `a${i}` });
      expect(res.status).toBe(202);
      acked.push(...res.body.results);
    }
    const headsBefore = await partitionHeads(gw.url);
    await gw.close();

    const [file] = segmentFiles(gw.dataDir);
    const ends = recordEnds(file!);
    expect(ends).toHaveLength(10);
    fs.truncateSync(file!, ends[6]! + extra); // the last 3 records are lost; SQLite still has their rows
    const kept = acked.slice(0, 7);
    const lost = acked.slice(7);

    const again = await startTestGateway({ ...ENV, HERALD_FSYNC: 'interval', HERALD_DATA_DIR: gw.dataDir });
    try {
      for (const r of lost) expect((await lookupEvent(again.url, r)).status).toBe(404);
      for (const r of kept) expect((await lookupEvent(again.url, r)).status).toBe(200);
      // The lost offsets stay a gap: a subscription or receiver may have seen them already.
      expect(await partitionHeads(again.url)).toEqual(headsBefore);
      expect(await readAllEvents(again.url)).toHaveLength(7);

      const next = headsBefore.slice();
      for (const r of lost) {
        const res = await postBinary(again.url, { source: r.source, id: r.id });
        expect(res.status).toBe(202);
        expect(res.body.results).toEqual([{ ...r, offset: next[r.partition]!++, duplicate: false }]);
      }
      for (const r of kept) expect((await postBinary(again.url, { source: r.source, id: r.id })).status).toBe(200);
      expect(await partitionHeads(again.url)).toEqual(next);
    } finally {
      await again.close();
    }
  });
});

describe('a power cut under fsync=interval that took acknowledged events before anything indexed them', () => {
  // Simulated: SIGKILL, then the log cut back on a record boundary and index.db gone, so nothing on
  // disk remembers the lost offsets but the reservation (wal/offsets.reserved).
  it.each(['interval', 'never'])(
    'HERALD_FSYNC=%s: the lost offsets are skipped, never handed out again; a clean restart leaves no gap',
    async (fsync) => {
      const dataDir = tmpDir();
      const env = { HERALD_PARTITIONS: '1', HERALD_FSYNC: fsync, HERALD_DATA_DIR: dataDir };
      child = await spawnGateway(env);
      const acked: AppendResultBody[] = [];
      for (let i = 0; i < 10; i++) {
        const res = await postBinary(child.url, { source: '/power-cut', id: `p${i}` });
        expect(res.status).toBe(202);
        acked.push(...res.body.results);
      }
      child.child.kill('SIGKILL');
      expect(await child.exited).toBe('SIGKILL');
      const [file] = segmentFiles(dataDir);
      fs.truncateSync(file!, recordEnds(file!)[5]!); // offsets 6..9 acknowledged, then lost
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${dataDir}/index.db${suffix}`, { force: true });

      child = await spawnGateway(env);
      const res = await postBinary(child.url, { source: '/power-cut', id: 'after' });
      // Was: offset 6, the offset p6 had been acknowledged at: two events behind one offset.
      expect(res.body.results[0].offset).toBeGreaterThan(9);
      expect(child.output()).toMatch(/offsets that may have been handed out before this start .* are skipped, never reused/);
      for (const r of acked.slice(6)) expect((await lookupEvent(child.url, r)).status).toBe(404);

      // A clean stop records the exact heads: the next start continues them.
      const head = res.body.results[0].offset + 1;
      child.child.kill('SIGTERM');
      expect(await child.exited).toBe(0);
      child = await spawnGateway(env);
      expect((await postBinary(child.url, { source: '/power-cut', id: 'after-clean' })).body.results[0].offset).toBe(head);

      // And keeps them when index.db, the other place that knew them, is lost: the log alone says 6.
      child.child.kill('SIGTERM');
      expect(await child.exited).toBe(0);
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${dataDir}/index.db${suffix}`, { force: true });
      child = await spawnGateway(env);
      expect((await postBinary(child.url, { source: '/power-cut', id: 'after-lost-index' })).body.results[0].offset).toBe(head + 1);
    },
  );
});

describe('a SIGKILL under fsync=interval with a subscription caught up', () => {
  // Upgrade probe: after every unclean stop each subscription logged, per partition, an error calling the
  // reserved offsets the start skipped "events missing from the log (lost…)", though they never held an event.
  it('passes over the offsets the start skipped without an error line per subscription, and delivers every event', async () => {
    const receiver = await startReceiver();
    try {
      const dataDir = tmpDir();
      const env = { HERALD_PARTITIONS: '2', HERALD_FSYNC: 'interval', HERALD_DATA_DIR: dataDir };
      child = await spawnGateway(env);
      const created = await fetch(`${child.url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sink: receiver.url, startAt: 'earliest' }),
      });
      expect(created.status).toBe(201);
      for (let i = 0; i < 6; i++) expect((await postBinary(child.url, { source: `/skip-${i % 2}`, id: `k${i}` })).status).toBe(202);
      await waitFor(() => receiver.requests.length >= 6, { timeoutMs: 10_000, what: 'the first 6 delivered' });
      child.child.kill('SIGKILL');
      expect(await child.exited).toBe('SIGKILL');

      child = await spawnGateway(env);
      for (let i = 6; i < 10; i++) expect((await postBinary(child.url, { source: `/skip-${i % 2}`, id: `k${i}` })).status).toBe(202);
      await waitFor(() => new Set(receiver.requests.map((q) => q.headers['ce-id'])).size === 10, {
        timeoutMs: 10_000,
        what: 'all 10 delivered',
      });
      const output = child.output();
      expect(output).toMatch(/offsets that may have been handed out before this start .* are skipped, never reused/);
      expect(output).not.toMatch(/events missing from the log/);
    } finally {
      await receiver.close();
    }
  });
});

describe('a SIGKILL under fsync=interval with a subscription paused', () => {
  // The lag counted the up to 4,096 offsets per partition a start skips as events waiting, for as long as the
  // subscription stayed paused: an alert on `herald_subscription_lag_events` fired for events that never were.
  it('counts in its lag the events waiting, not the offsets the start skipped', async () => {
    const dataDir = tmpDir();
    const env = { HERALD_PARTITIONS: '2', HERALD_FSYNC: 'interval', HERALD_DATA_DIR: dataDir };
    child = await spawnGateway(env);
    const created = await fetch(`${child.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: 'http://127.0.0.1:9/never', startAt: 'earliest' }),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    expect((await fetch(`${child.url}/subscriptions/${id}/pause`, { method: 'POST' })).status).toBe(200);
    for (let i = 0; i < 6; i++) expect((await postBinary(child.url, { source: `/lag-${i % 2}`, id: `l${i}` })).status).toBe(202);
    child.child.kill('SIGKILL');
    expect(await child.exited).toBe('SIGKILL');

    child = await spawnGateway(env);
    for (let i = 6; i < 10; i++) expect((await postBinary(child.url, { source: `/lag-${i % 2}`, id: `l${i}` })).status).toBe(202);
    expect(child.output()).toMatch(/are skipped, never reused/);
    const sub = (await (await fetch(`${child.url}/subscriptions/${id}`)).json()) as {
      stats: { partitions: { lag: number; headOffset: number; committedOffset: number }[] };
    };
    const parts = sub.stats.partitions;
    expect(parts.reduce((n, p) => n + p.lag, 0)).toBe(10);
    // The heads moved past the skipped offsets all the same (none is ever reused).
    expect(parts.reduce((n, p) => n + p.headOffset - p.committedOffset, 0)).toBeGreaterThan(10);
    const metrics = await (await fetch(`${child.url}/metrics`)).text();
    const lagSeries = [
      ...metrics.matchAll(new RegExp(`herald_subscription_lag_events\\{subscription="${id}",partition="\\d+"\\} (\\d+)`, 'g')),
    ];
    expect(lagSeries.reduce((n, m) => n + Number(m[1]), 0)).toBe(10);
  });
});

describe('acknowledged events lost under fsync=interval beside the offsets a start skipped', () => {
  // Re-probe of the skipped offsets: events an earlier start found lost became "skipped" once index.db was lost,
  // and with index.db kept, 4 lost events were one error line counting 4,091.
  const lines = (out: string) =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; msg: string; subscription?: string; fromOffset?: number; count?: number });
  const delivery = (out: string, subscription: string) =>
    lines(out)
      .filter((l) => l.subscription === subscription && /events missing|a start skipped/.test(l.msg))
      .map((l) => [l.level, l.fromOffset, l.count]);
  const api = (url: string, path: string, body?: unknown) =>
    fetch(url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });

  /** A paused subscription; 10 events indexed; SIGKILL; the log cut after 6 (4 acknowledged events lost); started again. */
  async function lostAfterSix(receiver: Receiver) {
    const dataDir = tmpDir();
    const env = { HERALD_PARTITIONS: '1', HERALD_FSYNC: 'interval', HERALD_DATA_DIR: dataDir, HERALD_LOG_LEVEL: 'debug' };
    child = await spawnGateway(env);
    const sub = (await (await api(child.url, '/subscriptions', { sink: receiver.url, startAt: 'earliest' })).json()) as { id: string };
    expect((await api(child.url, `/subscriptions/${sub.id}/pause`)).status).toBe(200);
    for (let i = 0; i < 10; i++) expect((await postBinary(child.url, { source: '/lost', id: `l${i}` })).status).toBe(202);
    await new Promise((resolve) => setTimeout(resolve, 500)); // indexed
    child.child.kill('SIGKILL');
    expect(await child.exited).toBe('SIGKILL');
    const [file] = segmentFiles(dataDir);
    fs.truncateSync(file!, recordEnds(file!)[5]!);
    child = await spawnGateway(env);
    return { dataDir, env, sub };
  }

  /** Resumes the subscription: its 6 events arrive; its lines for the rest are the lost 4 at error, then the skipped at debug. */
  async function expectLinesAfterResume(receiver: Receiver, sub: { id: string }) {
    expect((await api(child!.url, `/subscriptions/${sub.id}/resume`)).status).toBe(200);
    await waitFor(() => receiver.requests.length === 6, { what: '6 delivered' });
    await waitFor(() => delivery(child!.output(), sub.id).length === 2, { what: 'the lines of the gap' });
    expect(delivery(child!.output(), sub.id)).toEqual([
      [50, 6, 4],
      [20, 10, expect.any(Number)],
    ]);
  }

  it('names the lost ones at error, exactly, and passes over the offsets the start skipped at debug (was: one error line counting 4,091)', async () => {
    const receiver = await startReceiver();
    try {
      const { sub } = await lostAfterSix(receiver);
      await expectLinesAfterResume(receiver, sub);
    } finally {
      await receiver.close();
    }
  });

  it('still names the lost ones once index.db is lost too, whose rebuilt head lies below them (was: all passed over at debug)', async () => {
    const receiver = await startReceiver();
    try {
      const { dataDir, env, sub } = await lostAfterSix(receiver);
      child!.child.kill('SIGTERM');
      expect(await child!.exited).toBe(0);
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${dataDir}/index.db${suffix}`, { force: true });
      child = await spawnGateway(env);
      expect(child.output()).toMatch(/offsets that may have been handed out before this start .* are skipped, never reused/);
      await expectLinesAfterResume(receiver, sub);
    } finally {
      await receiver.close();
    }
  });
});
