import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import {
  getJson,
  lookupEvent,
  postBatch,
  postBinary,
  startTestGateway,
  useChildGateways,
  type AppendResultBody,
  type TestGateway,
} from '../helpers/gateway';
import { mountTmpfs } from '../helpers/disk-faults';
import { useReceivers } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const data = (id: string) => ({ id, padding: 'x'.repeat(1000) });

function walFiles(dataDir: string): string[] {
  return fs
    .readdirSync(path.join(dataDir, 'wal'))
    .filter((f) => f.endsWith('.seg'))
    .sort();
}
// A segment retention deletes between the listing and its stat counts as gone (CI: ENOENT while waiting for it to go).
const walBytes = (dataDir: string) =>
  walFiles(dataDir).reduce((n, f) => n + (fs.statSync(path.join(dataDir, 'wal', f), { throwIfNoEntry: false })?.size ?? 0), 0);

async function partitions(url: string): Promise<{ partition: number; firstOffset: number; headOffset: number }[]> {
  return (await getJson(`${url}/partitions`)).body.partitions;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function publish(url: string, source: string, n: number): Promise<AppendResultBody[]> {
  const acked: AppendResultBody[] = [];
  for (let i = 0; i < n; i++) {
    const res = await postBinary(url, { source, id: `e${i}`, data: data(`e${i}`) });
    expect(res.status).toBe(202);
    acked.push(res.body.results[0]);
  }
  return acked;
}

describe('retention by size (HERALD_MAX_LOG_BYTES)', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  it('deletes the oldest segments, frees disk, moves firstOffset, and forgets the deleted events', async () => {
    const env = { HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: '64KiB', HERALD_MAX_LOG_BYTES: '256KiB' };
    gw = await startTestGateway(env);
    const acked = await publish(gw.url, '/retention/size', 700);
    await waitFor('retention to delete segments', async () => (await partitions(gw!.url)).some((p) => p.firstOffset > 0));
    await waitFor('the log to be under its limit', async () => walBytes(gw!.dataDir) <= 256 * 1024);
    expect(walFiles(gw.dataDir)[0]).not.toBe('00000000000000000000.seg');

    const parts = await partitions(gw.url);
    for (const p of parts) {
      const page = await getJson(`${gw.url}/partitions/${p.partition}/events?from=0&limit=5`);
      expect(page.body.firstOffset).toBe(p.firstOffset);
      expect(page.body.events[0].offset).toBe(p.firstOffset);
    }
    const first = acked[0]!;
    expect((await lookupEvent(gw.url, first)).status).toBe(404);
    expect((await lookupEvent(gw.url, acked[acked.length - 1]!)).status).toBe(200);
    // Its idempotency record went with it: a resend is stored again, at a new offset.
    const resend = await postBinary(gw.url, { source: first.source, id: first.id, data: data(first.id) });
    expect(resend.status).toBe(202);
    expect(resend.body.results[0].duplicate).toBe(false);
    expect(resend.body.results[0].offset).toBeGreaterThanOrEqual(parts[resend.body.results[0].partition]!.headOffset);

    // Across a restart the deletion holds and first offsets stay.
    const { dataDir } = gw;
    await gw.close();
    gw = await startTestGateway({ ...env, HERALD_DATA_DIR: dataDir });
    const after = await partitions(gw.url);
    for (const p of parts) expect(after[p.partition]!.firstOffset).toBeGreaterThanOrEqual(p.firstOffset);
    expect((await lookupEvent(gw.url, acked[1]!)).status).toBe(404);
    // And with index.db lost: herald.db knows where retention deleted up to, so the log's start is not a lost segment.
    await gw.close();
    for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('index.db'))) fs.rmSync(path.join(dataDir, f));
    gw = await startTestGateway({ ...env, HERALD_DATA_DIR: dataDir });
    const rebuilt = await partitions(gw.url);
    for (const p of parts) expect(rebuilt[p.partition]!.firstOffset).toBeGreaterThanOrEqual(p.firstOffset);
    expect((await lookupEvent(gw.url, acked[acked.length - 1]!)).status).toBe(200);
    // And with herald.db lost too, rebuilt from the log: that start records where the log starts, so later
    // plain starts go on (was: refused at every start as a lost oldest segment).
    await gw.close();
    for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('index.db') || f.startsWith('herald.db')))
      fs.rmSync(path.join(dataDir, f));
    gw = await startTestGateway({ ...env, HERALD_DATA_DIR: dataDir, HERALD_RECOVERY: 'rebuild-events-only' });
    await gw.close();
    gw = await startTestGateway({ ...env, HERALD_DATA_DIR: dataDir });
    expect((await lookupEvent(gw.url, acked[acked.length - 1]!)).status).toBe(200);
  });
});

describe('a data dir whose retention an older version recorded in index.db alone', () => {
  it('is refused when index.db is lost, saying why, even under skip-corrupt, and starts once index.db is back (upgrade probe: "a segment was lost", and skip-corrupt handed out deleted offsets again)', async () => {
    const env = { HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: '64KiB', HERALD_MAX_LOG_BYTES: '256KiB' };
    let gw = await startTestGateway(env);
    const acked = await publish(gw.url, '/retention/older', 700);
    await waitFor('retention to delete segments', async () => (await partitions(gw.url)).some((p) => p.firstOffset > 0));
    const parts = await partitions(gw.url);
    const { dataDir } = gw;
    await gw.close();
    // As an older version left it: retention's record in index.db only, none in herald.db.
    const db = new Database(path.join(dataDir, 'herald.db'));
    db.prepare("DELETE FROM meta WHERE key IN ('retention_floors', 'retention_log_start', 'retention_recorded')").run();
    db.close();
    const indexFiles = fs.readdirSync(dataDir).filter((f) => f.startsWith('index.db'));
    const aside = tmpDir();
    for (const f of indexFiles) fs.renameSync(path.join(dataDir, f), path.join(aside, f));
    for (const recovery of [{}, { HERALD_RECOVERY: 'skip-corrupt' }]) {
      await expect(startTestGateway({ ...env, ...recovery, HERALD_DATA_DIR: dataDir })).rejects.toThrow(
        /herald\.db has no record of retention before it: the older version that made this data dir kept that record in index\.db alone/,
      );
    }
    // index.db back: the start copies its record into herald.db, after which index.db may go.
    for (const f of indexFiles) fs.renameSync(path.join(aside, f), path.join(dataDir, f));
    gw = await startTestGateway({ ...env, HERALD_DATA_DIR: dataDir });
    await gw.close();
    for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('index.db'))) fs.rmSync(path.join(dataDir, f));
    gw = await startTestGateway({ ...env, HERALD_DATA_DIR: dataDir });
    try {
      const after = await partitions(gw.url);
      for (const p of parts) {
        expect(after[p.partition]!.firstOffset).toBeGreaterThanOrEqual(p.firstOffset);
        expect(after[p.partition]!.headOffset).toBe(p.headOffset);
      }
      expect((await lookupEvent(gw.url, acked[acked.length - 1]!)).status).toBe(200);
    } finally {
      await gw.close();
    }
  });
});

describe('retention by age (HERALD_RETENTION)', () => {
  it('deletes every segment whose newest event is older than the retention, the active one rolled first', async () => {
    const gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: '64KiB', HERALD_RETENTION: '2s' });
    try {
      const acked = await publish(gw.url, '/retention/age', 150);
      expect(walFiles(gw.dataDir).length).toBeGreaterThan(1);
      await waitFor(
        'every event to expire',
        async () => (await partitions(gw.url)).every((p) => p.firstOffset === p.headOffset && p.headOffset > 0),
        15_000,
      );
      await waitFor('the files to go', async () => walBytes(gw.dataDir) === 0);
      expect((await lookupEvent(gw.url, acked[acked.length - 1]!)).status).toBe(404);
      const page = await getJson(`${gw.url}/partitions/0/events?from=0`);
      expect(page.body.events).toEqual([]);
      // The log goes on after it.
      const next = await postBinary(gw.url, { source: '/retention/age', id: 'after', data: data('after') });
      expect(next.status).toBe(202);
      expect((await lookupEvent(gw.url, { source: '/retention/age', id: 'after' })).status).toBe(200);
    } finally {
      await gw.close();
    }
  });
});

describe("index.db's WAL after retention", () => {
  it('is emptied once retention has deleted the rows, with no write to come (hostile probe: 81 MB kept on the full disk, ingest refused for good)', async () => {
    const gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: '64KiB', HERALD_RETENTION: '2s' });
    try {
      for (let b = 0; b < 30; b++) {
        const batch = Array.from({ length: 100 }, (_, i) => ({ id: `w${b}-${i}`, source: '/retention/wal', type: 't', data: { b, i } }));
        expect((await postBatch(gw.url, batch)).status).toBe(202);
      }
      const wal = path.join(gw.dataDir, 'index.db-wal');
      expect(fs.statSync(wal).size).toBeGreaterThan(0);
      await waitFor('every event to expire', async () => (await partitions(gw.url)).every((p) => p.firstOffset === p.headOffset), 15_000);
      await waitFor('the WAL to be emptied', async () => fs.statSync(wal).size === 0);
    } finally {
      await gw.close();
    }
  });
});

describe('retention while delivery writes herald.db', () => {
  const spawnGateway = useChildGateways();
  const startReceiver = useReceivers();

  it('records its floors at once, without an error line (hostile probe: SQLITE_BUSY about once a second)', async () => {
    const receiver = await startReceiver();
    const gw = await spawnGateway({
      HERALD_DATA_DIR: tmpDir(),
      HERALD_PARTITIONS: '2',
      HERALD_SEGMENT_BYTES: '64KiB',
      HERALD_MAX_LOG_BYTES: '256KiB',
    });
    await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201);
    const deadline = Date.now() + 8000;
    for (let b = 0; b < 300 && Date.now() < deadline; b++) {
      const batch = Array.from({ length: 20 }, (_, i) => ({
        id: `r${b}-${i}`,
        source: '/retention/busy',
        type: 't',
        data: { pad: 'x'.repeat(500) },
      }));
      expect((await postBatch(gw.url, batch)).status).toBe(202);
    }
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    expect(gw.output()).toContain('retention deleted the oldest log segments');
    expect(gw.output()).not.toContain('could not record its offsets');
  });
});

describe('an index rebuilt after retention emptied the log', () => {
  const spawnGateway = useChildGateways();
  const startReceiver = useReceivers();

  it('keeps the heads and reports no loss, with a subscription that had delivered everything (hostile probe: every deleted event logged as an acknowledged event lost)', async () => {
    const receiver = await startReceiver();
    const dataDir = tmpDir();
    const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: '64KiB', HERALD_RETENTION: '2s' };
    let gw = await spawnGateway(env);
    const sub = await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201);
    await publish(gw.url, '/retention/rebuilt', 60);
    await waitFor(
      'every event delivered and expired',
      async () => {
        const lag = (await getJson(`${gw.url}/subscriptions/${sub.body.id}`)).body.stats.partitions.every(
          (p: { lag: number }) => p.lag === 0,
        );
        return lag && (await partitions(gw.url)).every((p) => p.firstOffset === p.headOffset && p.headOffset > 0);
      },
      15_000,
    );
    const heads = (await partitions(gw.url)).map((p) => p.headOffset);
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('index.db'))) fs.rmSync(path.join(dataDir, f));

    gw = await spawnGateway(env);
    expect((await partitions(gw.url)).map((p) => p.headOffset)).toEqual(heads);
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    expect(gw.output()).not.toContain('no longer in the log');
    expect(gw.output()).toContain('"lostOffsets":0');
  });
});

/** A small file system of its own: tmpfs where the test may mount (CI runs as root), else a filler on the temp dir's. */
function smallFileSystem(): { dir: string; cleanup(): void } {
  const mounted = mountTmpfs(48 * 1024 * 1024);
  return mounted ? { dir: mounted.dir, cleanup: mounted.unmount } : { dir: tmpDir('herald-tmpfs-'), cleanup: () => undefined };
}

function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

type Layout = 'data dir' | 'wal/ only' | 'data dir, its wal/ unreadable';

/**
 * The data dir on the small file system; or only its `wal/`, linked there from a data dir on the temp
 * dir's (ops probe: not watched); or the data dir there with `wal/` linked elsewhere, whose target
 * `hideWal` renames away (re-probe: the data dir was not watched either then).
 */
function dataDirOn(small: string, where: Layout): { dataDir: string; hideWal(): void; restoreWal(): void } {
  const none = { hideWal: () => undefined, restoreWal: () => undefined };
  if (where === 'data dir') return { dataDir: path.join(small, 'data'), ...none };
  if (where === 'wal/ only') {
    const dataDir = tmpDir();
    fs.mkdirSync(path.join(small, 'wal'));
    fs.symlinkSync(path.join(small, 'wal'), path.join(dataDir, 'wal'));
    return { dataDir, ...none };
  }
  const dataDir = path.join(small, 'data');
  const wal = path.join(tmpDir(), 'wal');
  fs.mkdirSync(dataDir);
  fs.mkdirSync(wal);
  fs.symlinkSync(wal, path.join(dataDir, 'wal'));
  let away = false;
  return {
    dataDir,
    hideWal: () => {
      fs.renameSync(wal, `${wal}-away`);
      away = true;
    },
    restoreWal: () => {
      if (away) fs.renameSync(`${wal}-away`, wal);
      away = false;
    },
  };
}

describe('a wal/ whose link target cannot be reached for a while', () => {
  const startReceiver = useReceivers();

  it('holds delivery of the events in it (new, retried and redelivered ones) and delivers them once it is back, dead-lettering none (re-probe: read as corrupt; the thread died on a redelivery)', async () => {
    // d1 fails once (a dead letter, its event no longer in memory); everything after is taken.
    const receiver = await startReceiver((req) => ({
      status: req.headers['ce-id'] === 'd1' && !req.headers['herald-redelivery'] ? 500 : 204,
    }));
    const dataDir = tmpDir();
    const wal = path.join(tmpDir(), 'wal');
    fs.mkdirSync(wal);
    fs.symlinkSync(wal, path.join(dataDir, 'wal'));
    const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' };
    const first = await startTestGateway(env);
    let id: string;
    try {
      const sub = await request(first.url)
        .post('/subscriptions')
        .send({ sink: receiver.url, delivery: { retry: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 10 } } })
        .expect(201);
      id = sub.body.id;
      expect((await postBinary(first.url, { source: '/unreachable', id: 'd1' })).status).toBe(202);
      await waitFor(
        'd1 dead-lettered',
        async () => (await getJson(`${first.url}/subscriptions/${id}/dead-letters`)).body.deadLetters.length === 1,
      );
    } finally {
      await first.close();
    }
    // Started again, nothing of the log is in memory: delivery must read d1 back from its file.
    const gw = await startTestGateway(env);
    const deadLetters = async () => (await getJson(`${gw.url}/subscriptions/${id}/dead-letters`)).body.deadLetters as unknown[];
    const redelivered = () => receiver.requests.filter((q) => q.headers['herald-redelivery'] === 'true');
    try {
      fs.renameSync(wal, `${wal}-away`);
      // The log's open descriptor still takes the append.
      expect((await postBinary(gw.url, { source: '/unreachable', id: 'u1' })).status).toBe(202);
      await request(gw.url).post(`/subscriptions/${id}/dead-letters/redeliver`).expect(202);
      await request(gw.url).post(`/subscriptions/${id}/pause`).expect(200);
      await request(gw.url).post(`/subscriptions/${id}/resume`).expect(200);
      await new Promise((r) => setTimeout(r, 1500));
      // Its stats leave the oldest event's age out rather than failing the read.
      expect((await getJson(`${gw.url}/subscriptions/${id}`)).status).toBe(200);
      expect(await deadLetters()).toEqual([]);
      expect(redelivered()).toEqual([]);
      // Unready while reads of the log fail (ops probe: the log check said ok).
      const away = await getJson(`${gw.url}/readyz`);
      expect({ status: away.status, log: away.body.checks.log }).toEqual({
        status: 503,
        log: expect.stringContaining('is not the directory the gateway opened'),
      });
      fs.renameSync(`${wal}-away`, wal);
      expect((await getJson(`${gw.url}/readyz`)).status).toBe(200);
      await waitFor(
        'u1 and the redelivered d1',
        async () => redelivered().length === 1 && receiver.requests.some((q) => q.headers['ce-id'] === 'u1'),
        35_000,
      );
      expect(redelivered()[0]!.headers['ce-id']).toBe('d1');
      expect(await deadLetters()).toEqual([]);
      expect((await getJson(`${gw.url}/subscriptions/${id}`)).body.stats.deadLetters).toBe(0);
    } finally {
      if (fs.existsSync(`${wal}-away`)) fs.renameSync(`${wal}-away`, wal);
      await gw.close();
    }
  }, 60_000);
});

describe('HERALD_MIN_FREE_BYTES', () => {
  it.each<Layout>(['data dir', 'wal/ only', 'data dir, its wal/ unreadable'])(
    'on a small file system holding the %s: answers 503 storage_full with Retry-After and is unready while free space is low, touches nothing, and recovers by itself',
    async (where) => {
      const fsys = smallFileSystem();
      const MiB = 1024 * 1024;
      // 16 MiB under what is free now, so that a filler of 24 MiB (bounded) takes it 8 MiB below, whatever the file system.
      const minFree = freeBytes(fsys.dir) - 16 * MiB;
      let gw: TestGateway | undefined;
      const layout = dataDirOn(fsys.dir, where);
      try {
        gw = await startTestGateway({ HERALD_DATA_DIR: layout.dataDir, HERALD_MIN_FREE_BYTES: String(minFree) });
        const before = await postBinary(gw.url, { source: '/full', id: 'before' });
        expect(before.status).toBe(202);
        layout.hideWal();
        const filler = path.join(fsys.dir, 'filler');
        const fd = fs.openSync(filler, 'w');
        const chunk = Buffer.alloc(MiB, 1);
        for (let i = 0; i < 24; i++) fs.writeSync(fd, chunk);
        fs.fsyncSync(fd);
        fs.closeSync(fd);
        expect(freeBytes(fsys.dir)).toBeLessThan(minFree);

        // Free space is read at most every 100 ms under ingest (and every second otherwise).
        let refusedId = 'refused';
        let refused = await postBinary(gw.url, { source: '/full', id: refusedId });
        for (let i = 0; i < 30 && refused.status !== 503; i++) {
          await new Promise((r) => setTimeout(r, 100));
          refusedId = `refused-${i}`;
          refused = await postBinary(gw.url, { source: '/full', id: refusedId });
        }
        expect(refused.status).toBe(503);
        expect(refused.headers.get('content-type')).toMatch(/^application\/problem\+json/);
        expect(refused.body.code).toBe('storage_full');
        expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
        const ready = await getJson(`${gw.url}/readyz`);
        expect(ready.status).toBe(503);
        expect(ready.body.checks.log).toMatch(/storage_full/);
        // A wal/ that cannot be reached is a 503 for reads of it, not a corrupt record (re-probe: a 500 corrupt_record).
        const unreachable = where === 'data dir, its wal/ unreadable';
        expect((await lookupEvent(gw.url, { source: '/full', id: 'before' })).status).toBe(unreachable ? 503 : 200);
        expect((await lookupEvent(gw.url, { source: '/full', id: refusedId })).status).toBe(404);

        fs.rmSync(filler);
        layout.restoreWal();
        await waitFor('ingest to resume', async () => (await postBinary(gw!.url, { source: '/full', id: 'after' })).status === 202);
        expect((await getJson(`${gw.url}/readyz`)).status).toBe(200);
        expect((await lookupEvent(gw.url, { source: '/full', id: 'before' })).status).toBe(200);
      } finally {
        layout.restoreWal();
        await gw?.close();
        fsys.cleanup();
      }
    },
  );

  it('larger than the whole file system: says so in the 503 and in /readyz (ops probe: storage_full for good, nothing said why)', async () => {
    const fsys = smallFileSystem();
    const size = ((s) => Number(s.blocks) * Number(s.bsize))(fs.statfsSync(fsys.dir));
    const gw = await startTestGateway({ HERALD_DATA_DIR: path.join(fsys.dir, 'data'), HERALD_MIN_FREE_BYTES: String(size + 1) });
    try {
      const refused = await postBinary(gw.url, { source: '/full', id: 'x' });
      expect(refused.status).toBe(503);
      expect(refused.body.detail).toContain(`more than the whole file system (${size} bytes)`);
      expect((await getJson(`${gw.url}/readyz`)).body.checks.log).toContain('more than the whole file system');
    } finally {
      await gw.close();
      fsys.cleanup();
    }
  });
});
