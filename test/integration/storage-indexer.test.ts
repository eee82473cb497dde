import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import {
  eventKey,
  getJson,
  lookupEvent,
  postBinary,
  readAllEvents,
  startTestGateway,
  useChildGateways,
  type AppendResultBody,
} from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

/**
 * Holds index.db's write lock from another connection (what a backup tool or an operator's shell can
 * do): the indexer thread cannot write, so acknowledged events pile up in its tail, unindexed.
 */
function holdWriteLock(dataDir: string): { release(): void } {
  const db = new Database(path.join(dataDir, 'index.db'));
  db.pragma('busy_timeout = 5000');
  db.exec('BEGIN IMMEDIATE');
  return {
    release() {
      db.exec('ROLLBACK');
      db.close();
    },
  };
}

function indexedThrough(dataDir: string): number {
  const db = new Database(path.join(dataDir, 'index.db'), { readonly: true });
  try {
    return Number(
      (db.prepare("SELECT value FROM meta WHERE key = 'log_indexed_through'").get() as { value: string } | undefined)?.value ?? 0,
    );
  } finally {
    db.close();
  }
}

function walBytes(dataDir: string): number {
  const dir = path.join(dataDir, 'wal');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.seg'))
    .reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
}

/** Bounded concurrent producers of unique events; returns every acknowledged one. */
async function produce(
  url: string,
  opts: { loops: number; perLoop: number; source: string; check?: (r: AppendResultBody) => Promise<void> },
) {
  const acked: AppendResultBody[] = [];
  await Promise.all(
    Array.from({ length: opts.loops }, async (_, loop) => {
      for (let i = 0; i < opts.perLoop; i++) {
        const res = await postBinary(url, { source: opts.source, id: `${loop}-${i}` });
        expect(res.status).toBe(202);
        const result = res.body.results[0] as AppendResultBody;
        acked.push(result);
        await opts.check?.(result);
      }
    }),
  );
  return acked;
}

describe('storage engine v2: the index is built behind the log', () => {
  const spawn = useChildGateways();

  it('after a SIGKILL with the indexer behind, every acknowledged event is readable once and a resend is a duplicate with its original place', async () => {
    const dataDir = tmpDir();
    const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4', HERALD_FSYNC: 'always' };
    const gw = await spawn(env);
    const warm = await produce(gw.url, { loops: 4, perLoop: 10, source: '/indexer/warm' });
    const lock = holdWriteLock(dataDir);
    let acked: AppendResultBody[];
    try {
      acked = await produce(gw.url, { loops: 16, perLoop: 40, source: '/indexer/behind' });
      gw.child.kill('SIGKILL');
      await new Promise((resolve) => gw.child.once('exit', resolve));
    } finally {
      lock.release();
    }
    // The indexer really was behind: SQLite's mark is short of the log's end.
    expect(indexedThrough(dataDir)).toBeLessThan(walBytes(dataDir));

    const again = await spawn(env);
    const all = [...warm, ...acked];
    const stored = await readAllEvents(again.url);
    const byKey = new Map<string, number>();
    for (const e of stored) byKey.set(eventKey(e.event), (byKey.get(eventKey(e.event)) ?? 0) + 1);
    for (const r of all) expect(byKey.get(eventKey(r))).toBe(1);
    expect(stored).toHaveLength(all.length);
    for (const r of acked.filter((_, i) => i % 10 === 0)) {
      const resend = await postBinary(again.url, { source: r.source, id: r.id });
      expect(resend.status).toBe(200);
      expect(resend.body.results[0]).toMatchObject({ partition: r.partition, offset: r.offset, duplicate: true });
      const found = await lookupEvent(again.url, r);
      expect(found.status).toBe(200);
      expect(found.body).toMatchObject({ partition: r.partition, offset: r.offset });
    }
  });
});

describe('storage engine v2: the indexer thread dies', () => {
  const spawn = useChildGateways();

  it('is restarted, given the unindexed tail again, and nothing acknowledged is lost or doubled', async () => {
    const dataDir = tmpDir();
    const gw = await spawn({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    const lock = holdWriteLock(dataDir);
    let acked: AppendResultBody[] = [];
    try {
      acked = await produce(gw.url, { loops: 4, perLoop: 25, source: '/indexer/dies' });
      // Past its busy timeout (5 s) the indexer's write fails and its thread exits.
      const deadline = Date.now() + 15_000;
      while (!gw.output().includes('indexer: worker exited') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(gw.output()).toContain('indexer: worker exited');
      // Meanwhile the events stay readable and resends stay duplicates (the tail answers).
      const r = acked[acked.length - 1]!;
      expect((await lookupEvent(gw.url, r)).status).toBe(200);
      expect((await postBinary(gw.url, { source: r.source, id: r.id })).status).toBe(200);
    } finally {
      lock.release();
    }
    for (let i = 0; i < 100 && indexedThrough(dataDir) < walBytes(dataDir); i++) await new Promise((r) => setTimeout(r, 50));
    expect(indexedThrough(dataDir)).toBe(walBytes(dataDir));
    gw.child.kill('SIGKILL');
    await gw.exited;
    const again = await spawn({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    const stored = await readAllEvents(again.url);
    expect(stored.map((e) => eventKey(e.event)).sort()).toEqual(acked.map(eventKey).sort());
  });
});

describe('storage engine v2: read-your-writes', () => {
  it('finds each event by source+id, in its partition page and below the head right after its 2xx, while the indexer cannot write', async () => {
    const gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
    const lock = holdWriteLock(gw.dataDir);
    let released = false;
    try {
      let checked = 0;
      const acked = await produce(gw.url, {
        loops: 12,
        perLoop: 40,
        source: '/ryw',
        check: async (r) => {
          // Halfway through, the indexer may write again: reads must hold across the hand-over too.
          if (++checked === 240) {
            lock.release();
            released = true;
          }
          const found = await lookupEvent(gw.url, r);
          expect(found.status).toBe(200);
          expect(found.body).toMatchObject({ partition: r.partition, offset: r.offset, event: { id: r.id, source: r.source } });
          const page = await getJson(`${gw.url}/partitions/${r.partition}/events?from=${r.offset}&limit=1`);
          expect(page.body.events[0]).toMatchObject({ offset: r.offset, event: { id: r.id } });
          const partitions = await getJson(`${gw.url}/partitions`);
          expect(partitions.body.partitions[r.partition].headOffset).toBeGreaterThan(r.offset);
          const again = await postBinary(gw.url, { source: r.source, id: r.id });
          expect(again.body.results[0]).toMatchObject({ partition: r.partition, offset: r.offset, duplicate: true });
        },
      });
      expect(acked).toHaveLength(480);
      // Once it can write again, the indexer catches up with the log.
      for (let i = 0; i < 100 && indexedThrough(gw.dataDir) < walBytes(gw.dataDir); i++) await new Promise((r) => setTimeout(r, 50));
      expect(indexedThrough(gw.dataDir)).toBe(walBytes(gw.dataDir));
    } finally {
      if (!released) lock.release();
      await gw.close();
    }
  });
});
