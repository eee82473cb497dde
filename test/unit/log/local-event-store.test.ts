import fs from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import path from 'node:path';
import pino from 'pino';
import type { CloudEvent } from '../../../src/cloudevents/event';
import type { AppendResult } from '../../../src/wal/event-store';
import { createIndexer } from '../../../src/wal/indexer';
import { idempotencyKey, keyFilterFrom } from '../../../src/wal/key-filter';
import { openLocalEventStore, StartupError, type LocalEventStoreOptions } from '../../../src/wal/local-event-store';
import type { PendingEntry } from '../../../src/wal/sequencer';
import { createLogger } from '../../../src/logger';
import { openDatabase, type Db } from '../../../src/store/db';
import { openIndexDatabase } from '../../../src/store/index-db';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

const WINDOW_MS = 1000;
const T0 = 1_700_000_000_000;

function ev(id: string, source = '/store'): CloudEvent {
  return { attributes: { specversion: '1.0', id, source, type: 'store.test' }, data: { kind: 'json', value: { id } } };
}

type Store = ReturnType<typeof openLocalEventStore>;
interface Opened {
  store: Store;
  db: Db;
  dir: string;
  clock: { now: number };
  close(): Promise<void>;
}

const opened: Opened[] = [];
afterEach(async () => {
  for (const o of opened.splice(0)) await o.close();
});

function openStore(dir = tmpDir(), overrides: Partial<LocalEventStoreOptions> = {}, clock = { now: T0 }): Opened {
  const db = openDatabase(path.join(dir, 'herald.db'));
  let store: Store;
  try {
    store = openLocalEventStore({
      dataDir: dir,
      db,
      log: createLogger('silent'),
      partitions: 4,
      fsync: 'always',
      fsyncIntervalMs: 50,
      segmentBytes: 1 << 20,
      idempotencyWindowMs: WINDOW_MS,
      clock: () => clock.now,
      ...overrides,
    });
  } catch (err) {
    db.close();
    throw err;
  }
  let closed = false;
  const o: Opened = {
    store,
    db,
    dir,
    clock,
    async close() {
      if (closed) return;
      closed = true;
      await store.close();
      db.close();
    },
  };
  opened.push(o);
  return o;
}

const total = (heads: readonly number[]) => heads.reduce((a, b) => a + b, 0);
/** Offsets within each partition are dense: 0..head-1, each given once. */
function expectDenseOffsets(results: { partition: number; offset: number }[], heads: readonly number[]): void {
  heads.forEach((head, p) => {
    const offsets = results
      .filter((r) => r.partition === p)
      .map((r) => r.offset)
      .sort((a, b) => a - b);
    expect(offsets).toEqual(Array.from({ length: head }, (_, i) => i));
  });
}

// Local rather than from helpers/gateway, so this unit test does not load the whole gateway.
function segmentFiles(dataDir: string): string[] {
  const dir = path.join(dataDir, 'wal');
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d{20}\.seg$/.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

/** Byte offsets just past each record of an intact segment file. */
function recordEnds(file: string): number[] {
  const buf = fs.readFileSync(file);
  const ends: number[] = [];
  for (let at = 0; at < buf.length; at += 8 + buf.readUInt32LE(at)) ends.push(at + 8 + buf.readUInt32LE(at));
  return ends;
}

/** SQLite holds only what the log implies: losing it entirely (herald.db and index.db) must be recoverable. */
function removeDatabase(dir: string): void {
  for (const db of ['herald.db', 'index.db'])
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(dir, db + suffix), { force: true });
}

/** A connection to the data dir's index database (the indexer's tables). */
const indexDbOf = (dir: string): Db => openIndexDatabase(path.join(dir, 'index.db'));

const countRows = (db: Db, table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;

describe('local event store: group commit', () => {
  it('serves appends from many callers in the same tick with one group', async () => {
    const { store } = openStore();
    const groups: number[] = [];
    store.onAppend((partitions) => groups.push(partitions.size));
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.append([ev(`c${i}`)])));
    expect(groups).toHaveLength(1);
    expect(results.flat().every((r) => !r.duplicate)).toBe(true);
    expect(total(store.heads())).toBe(50);
    expectDenseOffsets(results.flat(), store.heads());
  });

  it('stores a source+id sent by concurrent callers in the same tick once', async () => {
    const { store } = openStore();
    const results = (await Promise.all(Array.from({ length: 5 }, () => store.append([ev('same')])))).flat();
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(new Set(results.map((r) => `${r.partition}/${r.offset}`)).size).toBe(1);
    expect(total(store.heads())).toBe(1);
    expect(store.read(results[0]!.partition, 0, 10).events).toHaveLength(1);
  });

  it('makes a resend wait for the first send still committing, then answers with its offset', async () => {
    const { store } = openStore();
    const first = store.append([ev('racing'), ev('other')]);
    await new Promise((r) => setImmediate(r)); // the group is now being written
    const second = await store.append([ev('racing')]);
    // The resend only resolves once the original is durable and visible.
    expect(store.lookup('/store', 'racing')).toBeDefined();
    const [original] = await first;
    expect(second).toEqual([{ ...original, duplicate: true }]);
    expect(total(store.heads())).toBe(2);
  });

  it('stores a source+id repeated within one batch once', async () => {
    const { store } = openStore();
    const results = await store.append([ev('a'), ev('b'), ev('a')]);
    expect(results.map((r) => r.duplicate)).toEqual([false, false, true]);
    expect(results[2]).toMatchObject({ partition: results[0]!.partition, offset: results[0]!.offset });
    expect(total(store.heads())).toBe(2);
  });

  it('keeps a committed group when an append listener throws', async () => {
    const o = openStore();
    let calls = 0;
    o.store.onAppend(() => {
      calls++;
      throw new Error('listener bug');
    });
    const [first] = await o.store.append([ev('l1')]);
    const [second] = await o.store.append([ev('l2')]);
    expect(calls).toBe(2);
    expect(second!.duplicate).toBe(false);
    expect(o.store.health()).toEqual({ writable: true });
    expect(o.store.lookup('/store', 'l1')).toMatchObject({ offset: first!.offset });
    expect(o.store.lookup('/store', 'l2')).toMatchObject({ offset: second!.offset });
    await o.close();
    const again = openStore(o.dir);
    expect(again.store.recovery).toMatchObject({ rolledBackRecords: 0, truncatedBytes: 0 });
    expect(again.store.lookup('/store', 'l2')).toMatchObject({ offset: second!.offset });
  });

  it('flushes queued appends on close, and refuses appends after it', async () => {
    const o = openStore();
    const pending = o.store.append([ev('late')]);
    await o.close();
    await expect(pending).resolves.toMatchObject([{ duplicate: false }]);
    await expect(o.store.append([ev('after')])).rejects.toMatchObject({ code: 'unavailable' });
    const again = openStore(o.dir);
    expect(again.store.lookup('/store', 'late')).toBeDefined();
  });
});

describe('local event store: failed appends', () => {
  it('makes nothing of a failed group or the groups queued behind it visible, and recovers once the disk does', async () => {
    const dir = tmpDir();
    fs.mkdirSync(path.join(dir, 'wal'));
    const file = path.join(dir, 'wal', '00000000000000000000.seg');
    fs.symlinkSync('/dev/full', file);
    const { store } = openStore(dir);
    const first = store.append([ev('f1'), ev('f2')]);
    await new Promise((r) => setImmediate(r));
    const queued = store.append([ev('f3')]);
    await expect(first).rejects.toMatchObject({ code: 'unavailable', retryAfter: expect.any(Number) });
    await expect(queued).rejects.toMatchObject({ code: 'unavailable' });
    expect(store.heads()).toEqual([0, 0, 0, 0]);
    expect(store.lookup('/store', 'f1')).toBeUndefined();
    expect(store.health()).toMatchObject({ writable: false, reason: expect.stringContaining('ENOSPC') });

    fs.unlinkSync(file);
    fs.writeFileSync(file, '');
    const results = await store.append([ev('f1'), ev('f3')]);
    expect(results.every((r) => !r.duplicate)).toBe(true);
    expectDenseOffsets(results, store.heads()); // the failed groups left no gap
    expect(total(store.heads())).toBe(2);
    expect(store.health()).toEqual({ writable: true });
    expect(store.lookup('/store', 'f3')).toMatchObject({ offset: results[1]!.offset });
  });
});

describe('local event store: events that cannot be encoded', () => {
  it('leaves every head where it was and stores nothing of the request, so no offset is burnt', async () => {
    const { store } = openStore();
    // One partition key for every event, so a burnt offset would show as a gap after e0.
    const sameKey = (e: CloudEvent): CloudEvent => ({ ...e, attributes: { ...e.attributes, partitionkey: 'k' } });
    const [before] = await store.append([sameKey(ev('e0'))]);
    const unencodable: CloudEvent = { ...ev('bad'), data: { kind: 'json', value: { n: 1n } } }; // JSON.stringify throws on a BigInt
    const heads = store.heads().slice();
    await expect(store.append([sameKey(ev('e1')), sameKey(unencodable), sameKey(ev('e2'))])).rejects.toMatchObject({
      code: 'invalid_event',
    });
    expect(store.heads()).toEqual(heads);
    expect(store.lookup('/store', 'e1')).toBeUndefined();
    const after = await store.append([sameKey(ev('e1')), sameKey(ev('e2'))]);
    const p = after[0]!.partition;
    expect(p).toBe(before!.partition);
    expect(after.map((r) => r.offset)).toEqual([before!.offset + 1, before!.offset + 2]);
  });
});

describe('local event store: reads of a page', () => {
  const k = (id: string): CloudEvent => ({ ...ev(id), attributes: { ...ev(id).attributes, partitionkey: 'k' } });

  it('serves the intact records before bytes lost at the end of a segment, and reports the first damaged one', async () => {
    const o = openStore();
    const stored = await o.store.append([k('r0'), k('r1'), k('r2'), k('r3')]);
    const p = stored[0]!.partition;
    const [file] = segmentFiles(o.dir);
    const ends = recordEnds(file!);
    fs.truncateSync(file!, ends.at(-1)! - 10); // the last record's tail is gone (a lost range), the rest is intact
    // The four records lie side by side: one read would cover them all and run into the missing bytes.
    const page = o.store.read(p, 0, 10);
    expect(page.events.map((e) => e.event.attributes.id)).toEqual(['r0', 'r1', 'r2']);
    expect(page.corruptOffset).toBe(3);
  });

  it("reads records of one partition among other partitions' records, wherever they lie", async () => {
    const o = openStore();
    const other = (id: string): CloudEvent => ({ ...ev(id), attributes: { ...ev(id).attributes, partitionkey: `other-${id}` } });
    const big = (id: string): CloudEvent => ({ ...other(id), data: { kind: 'json', value: { pad: 'x'.repeat(20_000) } } });
    const stored: { id: string; partition: number }[] = [];
    for (let i = 0; i < 12; i++) {
      // Gaps of other records between this partition's: small ones (read across) and wide ones (not).
      const events = [k(`m${i}`), i % 3 === 0 ? big(`b${i}`) : other(`o${i}`)];
      const results = await o.store.append(events);
      results.forEach((r, j) => stored.push({ id: String(events[j]!.attributes.id), partition: r.partition }));
    }
    const p = stored[0]!.partition;
    const mine = stored.filter((r) => r.partition === p).map((r) => r.id);
    expect(mine.length).toBeLessThan(24); // the other records lie between this partition's
    const page = o.store.read(p, 0, 100);
    expect(page.corruptOffset).toBeUndefined();
    expect(page.events.map((e) => e.event.attributes.id)).toEqual(mine);
    expect(page.events.map((e) => e.offset)).toEqual(mine.map((_, i) => i));
  });
});

describe('local event store: time index', () => {
  it('finds the first offset stored at or after a time from the idempotency records, and defers to the log before pruned ones', async () => {
    const clock = { now: T0 };
    const o = openStore(tmpDir(), {}, clock);
    const k = (id: string): CloudEvent => ({ ...ev(id), attributes: { ...ev(id).attributes, partitionkey: 'k' } });
    const stored = [];
    for (let i = 0; i < 5; i++) {
      clock.now = T0 + i * 100;
      stored.push(...(await o.store.append([k(`t${i}`)])));
    }
    const p = stored[0]!.partition;
    expect(o.store.offsetAtTime!(p, T0 + 250)).toBe(3);
    expect(o.store.offsetAtTime!(p, T0 + 200)).toBe(2);
    expect(o.store.offsetAtTime!(p, T0 - 1)).toBe(0); // before the first record: nothing was pruned
    expect(o.store.offsetAtTime!(p, T0 + 10_000)).toBe(5); // after the last: the head
    clock.now = T0 + 200 + WINDOW_MS + 1;
    await o.store.pruneIdempotency(); // records t0..t2 go; the log keeps them
    expect(o.store.offsetAtTime!(p, T0 + 50)).toBeUndefined(); // before the oldest kept: the caller searches the log
    expect(o.store.offsetAtTime!(p, T0 + 350)).toBe(4);
  });
});

describe('local event store: idempotency window', () => {
  it('answers duplicate within the window and stores again once the window has been pruned', async () => {
    const { store, dir, clock } = openStore();
    const db = indexDbOf(dir);
    const [stored] = await store.append([ev('w1')]);
    clock.now += WINDOW_MS - 1;
    expect(await store.append([ev('w1')])).toEqual([{ ...stored, duplicate: true }]);
    await store.pruneIdempotency();
    expect(countRows(db, 'idempotency')).toBe(1); // still inside the window
    clock.now += 2;
    await store.pruneIdempotency();
    expect(countRows(db, 'idempotency')).toBe(0);
    db.close();
    expect(store.lookup('/store', 'w1')).toBeUndefined();
    const [again] = await store.append([ev('w1')]);
    expect(again).toMatchObject({ duplicate: false, partition: stored!.partition, offset: stored!.offset + 1 });
    expect(store.lookup('/store', 'w1')).toMatchObject({ offset: stored!.offset + 1 });
  });

  it('rebuilds SQLite from the log alone, skipping idempotency rows older than the window', async () => {
    const o = openStore();
    const [old] = await o.store.append([ev('old')]);
    o.clock.now += 600;
    const [recent] = await o.store.append([ev('recent')]);
    const heads = o.store.heads().slice();
    await o.close();
    removeDatabase(o.dir);

    const again = openStore(o.dir, { recovery: new Set(['rebuild-events-only']) }, { now: T0 + WINDOW_MS + 300 }); // "old" is past the window, "recent" is not
    expect(again.store.recovery).toMatchObject({ rebuiltRecords: 2, truncatedBytes: 0, rolledBackRecords: 0 });
    expect(again.store.heads()).toEqual(heads);
    expect(again.store.lookup('/store', 'old')).toBeUndefined();
    expect(again.store.lookup('/store', 'recent')).toMatchObject({ offset: recent!.offset });
    expect(again.store.read(old!.partition, old!.offset, 1).events[0]!.event.attributes.id).toBe('old');
    const results = await again.store.append([ev('old'), ev('recent')]);
    expect(results.map((r) => r.duplicate)).toEqual([false, true]);
  });
});

describe('local event store: a lookup checks the record it reads', () => {
  it('does not serve another event when the index points at its record (storage probe: was 200 with the other event), and a restart rebuilds the index', async () => {
    const k = (id: string): CloudEvent => ({ ...ev(id), attributes: { ...ev(id).attributes, partitionkey: 'k' } });
    const o = openStore();
    const [a] = await o.store.append([k('a')]);
    const [b] = await o.store.append([k('b')]);
    await o.close();
    // The disk lies: index.db's row for `a` names `b`'s offset.
    const index = indexDbOf(o.dir);
    index.prepare('UPDATE idempotency SET "offset" = ? WHERE source = ? AND id = ?').run(b!.offset, '/store', 'a');
    index.close();
    const again = openStore(o.dir);
    // The index is wrong, not the log: reads stop until a restart rebuilds it (was 500 corrupt_record, reads went on).
    const damaged = expect.objectContaining({ code: 'unavailable', message: expect.stringMatching(/^index\.db is damaged/) });
    expect(() => again.store.lookup(a!.source, 'a')).toThrow(damaged);
    expect(() => again.store.lookup(b!.source, 'b')).toThrow(damaged);
    expect(again.store.health()).toMatchObject({ writable: false });
    await again.close();
    const rebuilt = openStore(o.dir);
    expect(rebuilt.store.lookup(a!.source, 'a')).toMatchObject({ offset: a!.offset });
    expect(rebuilt.store.lookup(b!.source, 'b')).toMatchObject({ offset: b!.offset });
    await rebuilt.close();
  });
});

describe('local event store: recovery', () => {
  it('rebuilds the rows of a group written to the log but not yet to SQLite', async () => {
    const o = openStore();
    await o.store.append([ev('r1')]);
    await o.store.indexed();
    const probe = indexDbOf(o.dir);
    const indexedThrough = (probe.prepare("SELECT value FROM meta WHERE key = 'log_indexed_through'").get() as { value: string }).value;
    probe.close();
    const later = await o.store.append([ev('r2'), ev('r3')]);
    const heads = o.store.heads().slice();
    await o.close();
    // What a crash between the log write and the SQLite transaction leaves behind.
    const db = indexDbOf(o.dir);
    db.transaction(() => {
      for (const r of later) {
        db.prepare('DELETE FROM idempotency WHERE source = ? AND id = ?').run(r.source, r.id);
        db.prepare('DELETE FROM log_index WHERE partition = ? AND "offset" = ?').run(r.partition, r.offset);
        db.prepare('UPDATE partition_heads SET head_offset = ? WHERE partition = ?').run(r.offset, r.partition);
      }
      db.prepare("UPDATE meta SET value = ? WHERE key = 'log_indexed_through'").run(indexedThrough);
    })();
    db.close();

    const again = openStore(o.dir);
    expect(again.store.recovery).toMatchObject({ rebuiltRecords: 2, rolledBackRecords: 0, truncatedBytes: 0 });
    expect(again.store.heads()).toEqual(heads);
    for (const r of later) expect(again.store.lookup(r.source, r.id)).toMatchObject({ partition: r.partition, offset: r.offset });
    expect((await again.store.append([ev('r2')]))[0]!.duplicate).toBe(true);
  });

  it.each([
    ['on a record boundary', 0],
    ['in the middle of a record', 7],
  ])(
    'forgets rows the log no longer has when SQLite is ahead of it (cut %s; fsync=interval), never reusing their offsets',
    async (_name, extra) => {
      // Possible only where a sync may come after the acknowledgement: under fsync=always it is refused (below).
      const o = openStore(tmpDir(), { fsync: 'interval' });
      const stored = [];
      for (let i = 0; i < 6; i++) stored.push(...(await o.store.append([ev(`s${i}`)])));
      const headsBefore = o.store.heads().slice();
      await o.close();
      const [file] = segmentFiles(o.dir);
      const ends = recordEnds(file!);
      expect(ends).toHaveLength(6);
      fs.truncateSync(file!, ends[3]! + extra); // keep 4 records (plus a torn fragment of the 5th)

      const again = openStore(o.dir, { fsync: 'interval' });
      expect(again.store.recovery).toMatchObject({ rolledBackRecords: 2, truncatedBytes: extra });
      const lost = stored.slice(4);
      for (const r of lost) expect(again.store.lookup(r.source, r.id)).toBeUndefined();
      expect(again.store.recovery.lostOffsets).toBe(2);
      expect(again.store.heads()).toEqual(headsBefore);
      for (const r of stored.slice(0, 4)) expect(again.store.lookup(r.source, r.id)).toMatchObject({ offset: r.offset });
      const next = headsBefore.slice();
      for (const r of lost)
        expect(await again.store.append([ev(r.id)])).toEqual([{ ...r, offset: next[r.partition]!++, duplicate: false }]);
      expect(again.store.heads()).toEqual(next);
    },
  );

  it('refuses a log that ends short of its index when the last run synced before acknowledging (fsync=always), changing nothing', async () => {
    const o = openStore();
    for (let i = 0; i < 6; i++) await o.store.append([ev(`a${i}`)]);
    await o.close();
    const [file] = segmentFiles(o.dir);
    const ends = recordEnds(file!);
    fs.truncateSync(file!, ends[3]! + 7);
    expect(() => openStore(o.dir)).toThrow(/under HERALD_FSYNC=always those bytes were synced/);
    expect(fs.statSync(file!).size).toBe(ends[3]! + 7);
  });

  it('keeps the records after a hole left by an older segment that lost its unsynced tail (fsync=never), and reuses no offset', async () => {
    const o = openStore(tmpDir(), { fsync: 'never', segmentBytes: 2048 });
    const stored = [];
    for (let i = 0; i < 40; i++) stored.push(...(await o.store.append([ev(`h${i}`)])));
    const headsBefore = o.store.heads().slice();
    await o.close();
    const files = segmentFiles(o.dir);
    expect(files.length).toBeGreaterThan(2);
    const ends = recordEnds(files[0]!);
    fs.truncateSync(files[0]!, ends.at(-2)!); // the first segment's last record never reached the disk
    const lostIndex = ends.length - 1;

    const again = openStore(o.dir, { fsync: 'never', segmentBytes: 2048 });
    expect(again.store.recovery.lostOffsets).toBe(1);
    expect(again.store.heads()).toEqual(headsBefore);
    stored.forEach((r, i) => {
      if (i === lostIndex) expect(again.store.lookup(r.source, r.id)).toBeUndefined();
      else expect(again.store.lookup(r.source, r.id)).toMatchObject({ offset: r.offset });
    });
    const lost = stored[lostIndex]!;
    expect(await again.store.append([ev(lost.id)])).toEqual([{ ...lost, offset: headsBefore[lost.partition], duplicate: false }]);
    await again.close();
    // The hole is remembered: the next start neither reports it again nor rescans from it.
    const third = openStore(o.dir, { fsync: 'never', segmentBytes: 2048 });
    expect(third.store.recovery.lostOffsets).toBe(0);
    expect(third.store.recovery.scannedBytes).toBeLessThan(fs.statSync(files.at(-1)!).size + 2048);
    expect(third.store.lookup(lost.source, lost.id)).toMatchObject({ offset: headsBefore[lost.partition] });
  });

  it('rebuilds a lost SQLite database from a log spread over many segments', async () => {
    const o = openStore(tmpDir(), { segmentBytes: 4096 });
    const stored = [];
    for (let i = 0; i < 10; i++) stored.push(...(await o.store.append(Array.from({ length: 10 }, (_, j) => ev(`m${i}-${j}`)))));
    const heads = o.store.heads().slice();
    await o.close();
    expect(segmentFiles(o.dir).length).toBeGreaterThan(3);
    removeDatabase(o.dir);

    expect(() => openStore(o.dir, { segmentBytes: 4096 })).toThrow(/herald\.db is missing or empty/);
    removeDatabase(o.dir);
    const again = openStore(o.dir, { segmentBytes: 4096, recovery: new Set(['rebuild-events-only']) });
    expect(again.store.recovery).toMatchObject({ rebuiltRecords: 100, truncatedBytes: 0 });
    expect(again.store.heads()).toEqual(heads);
    for (const r of stored) expect(again.store.lookup(r.source, r.id)).toMatchObject({ partition: r.partition, offset: r.offset });
  });

  it('refuses too few partitions for the log when SQLite was lost, without recording them', async () => {
    const o = openStore(tmpDir(), { partitions: 16 });
    const stored = await o.store.append(Array.from({ length: 40 }, (_, i) => ev(`p${i}`)));
    expect(Math.max(...stored.map((r) => r.partition))).toBeGreaterThanOrEqual(4);
    await o.close();
    removeDatabase(o.dir);
    expect(() => openStore(o.dir, { partitions: 4 })).toThrow(StartupError);
    expect(() => openStore(o.dir, { partitions: 4 })).toThrow(/HERALD_PARTITIONS=4/);
    // Without herald.json either (a data dir from before it existed), the log itself still guards the count.
    fs.rmSync(path.join(o.dir, 'herald.json'));
    removeDatabase(o.dir);
    expect(() => openStore(o.dir, { partitions: 4, recovery: new Set(['rebuild-events-only']) })).toThrow(/holds events of partition/);
    removeDatabase(o.dir);
    const again = openStore(o.dir, { partitions: 16, recovery: new Set(['rebuild-events-only']) });
    expect(again.store.lookup('/store', 'p0')).toMatchObject({ offset: stored[0]!.offset });
  });

  it('refuses a data dir created with another partition count', async () => {
    const o = openStore();
    await o.close();
    expect(() => openStore(o.dir, { partitions: 8 })).toThrow(StartupError);
    expect(() => openStore(o.dir, { partitions: 8 })).toThrow(/created with 4 partitions.*HERALD_PARTITIONS=4/);
  });
});

describe('local event store: retention', () => {
  const segmentFilesOf = (dir: string) =>
    fs
      .readdirSync(path.join(dir, 'wal'))
      .filter((f) => f.endsWith('.seg'))
      .sort();

  it('finishes at the next start a deletion a crash interrupted after log_start moved', async () => {
    const o = openStore(tmpDir(), { segmentBytes: 4096 });
    const results = [];
    for (let i = 0; i < 200; i++) results.push(...(await o.store.append([ev(`k${i}`)])));
    await o.store.indexed();
    const files = segmentFilesOf(o.dir);
    expect(files.length).toBeGreaterThan(4);
    await o.close();
    // What a crash right after the indexer recorded the new start of the log leaves: files and rows still there.
    const keepFrom = Number(files[3]!.slice(0, 20));
    const db = indexDbOf(o.dir);
    db.prepare("INSERT INTO meta (key, value) VALUES ('log_start', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(
      String(keepFrom),
    );
    db.close();

    const again = openStore(o.dir, { segmentBytes: 4096 });
    expect(segmentFilesOf(o.dir)).toEqual(files.slice(3));
    expect(again.store.lookup(results[0]!.source, results[0]!.id)).toBeUndefined();
    expect(again.store.lookup(results[199]!.source, results[199]!.id)).toMatchObject({ offset: results[199]!.offset });
    const probe = indexDbOf(o.dir);
    const rows = probe.prepare('SELECT COUNT(*) AS n FROM log_index WHERE position < ?').get(keepFrom) as { n: number };
    probe.close();
    expect(rows.n).toBe(0);
    const firsts = again.store.firstOffsets();
    expect(firsts.some((f) => f > 0)).toBe(true);
    firsts.forEach((first, p) => {
      const page = again.store.read(p, 0, 1);
      if (first < again.store.heads()[p]!) expect(page.events[0]!.offset).toBe(first);
    });
    // The deleted events' idempotency records went too: a resend is new.
    expect((await again.store.append([ev('k0')]))[0]!.duplicate).toBe(false);
  });

  it('stores a resend of an event retention just deleted as new, while the indexer is still deleting its rows', async () => {
    const o = openStore(tmpDir(), { segmentBytes: 64 * 1024, maxLogBytes: 128 * 1024 });
    const idAt = new Map<string, string>();
    // Sent the moment the first offsets move, at every deletion: the deleted events' idempotency rows are
    // still being deleted then (the indexer's thread deletes the highest offsets last).
    // Each answer is looked up the moment it comes, before a later deletion can take the new copy too.
    const resends: Promise<{ answer: AppendResult; found: number | undefined }[]>[] = [];
    o.store.onRetire((firsts) => {
      const ids = firsts.map((first, p) => idAt.get(`${p}:${first - 1}`)).filter((id) => id !== undefined);
      if (ids.length === 0) return;
      const sent = o.store.append(ids.map((id) => ev(id)));
      resends.push(sent.then((answers) => answers.map((answer) => ({ answer, found: o.store.lookup(answer.source, answer.id)?.offset }))));
    });
    for (let i = 0; i < 60_000; i += 1000) {
      const results = await o.store.append(Array.from({ length: 1000 }, (_, j) => ev(`d${i + j}`)));
      for (const r of results) idAt.set(`${r.partition}:${r.offset}`, r.id);
    }
    await o.store.indexed();
    await o.store.runRetention();
    expect(resends.length).toBeGreaterThan(0);
    const answers = (await Promise.all(resends)).flat();
    expect(answers.length).toBeGreaterThan(0);
    expect(
      answers.filter(({ answer: a }) => a.duplicate).map(({ answer: a }) => `${a.id}: duplicate at ${a.partition}/${a.offset}`),
    ).toEqual([]);
    // Each resend was stored again, and found there.
    for (const { answer, found } of answers) expect({ id: answer.id, found }).toEqual({ id: answer.id, found: answer.offset });
  });

  const removeIndexDb = (dir: string) => {
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(dir, `index.db${suffix}`), { force: true });
  };

  it('keeps the heads of partitions retention emptied when index.db is lost, so no offset is reused', async () => {
    const clock = { now: T0 };
    const o = openStore(tmpDir(), { segmentBytes: 4096, retentionMs: 60_000 }, clock);
    for (let i = 0; i < 200; i++) await o.store.append([ev(`r${i}`)]);
    await o.store.indexed();
    const heads = [...o.store.heads()];
    expect(heads.every((h) => h > 0)).toBe(true);
    clock.now += 120_000; // every event is past the retention now, the active segment's too
    await o.store.runRetention();
    expect([...o.store.firstOffsets()]).toEqual(heads);
    await o.close();
    removeIndexDb(o.dir);

    const again = openStore(o.dir, { segmentBytes: 4096, retentionMs: 60_000 }, clock);
    expect({ heads: [...again.store.heads()], firsts: [...again.store.firstOffsets()] }).toEqual({ heads, firsts: heads });
    const [next] = await again.store.append([ev('after')]);
    expect(next!.offset).toBe(heads[next!.partition]);
  });

  it('says once a minute, not at every round, that retention cannot record its offsets in herald.db, and deletes no file meanwhile', async () => {
    const lines: { msg: string; suppressed?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    // The wall clock: segments left on disk by a failed round are dated by their files' times at the next.
    const clock = { now: Date.now() };
    const o = openStore(tmpDir(), { segmentBytes: 4096, retentionMs: 1000, log }, clock);
    for (let i = 0; i < 100; i++) await o.store.append([ev(`f${i}`)]);
    await o.store.indexed();
    // herald.db refuses retention's write (a real SQLite error, as a failing disk gives one: syscall probe, 35 lines in 4 s).
    o.db.exec("CREATE TRIGGER refuse_floors BEFORE INSERT ON meta BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END");
    o.db.exec("CREATE TRIGGER refuse_floors_update BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END");
    // Each round has newer events past the retention to delete (the rounds that write nothing new retire nothing).
    const round = async (r: number) => {
      for (let i = 0; i < 30; i++) await o.store.append([ev(`f${r}-${i}`)]);
      await o.store.indexed();
      clock.now += 2000;
      await o.store.runRetention();
    };
    for (let r = 0; r < 5; r++) await round(r);
    expect(lines.filter((l) => /could not record its offsets/.test(l.msg))).toHaveLength(1);
    expect(lines.filter((l) => /retention deleted/.test(l.msg))).toHaveLength(0);
    clock.now += 60_000;
    await round(5);
    const said = lines.filter((l) => /could not record its offsets/.test(l.msg));
    expect(said).toHaveLength(2);
    expect(said[1]!.suppressed).toBeGreaterThanOrEqual(4);
    o.db.exec('DROP TRIGGER refuse_floors; DROP TRIGGER refuse_floors_update');
    await round(6);
    expect(lines.filter((l) => /retention deleted/.test(l.msg)).length).toBeGreaterThan(0);
    await o.close();
  });

  it('keeps the heads a retention a crash interrupted empties at the next start, when index.db is lost after it', async () => {
    const o = openStore(tmpDir(), { segmentBytes: 4096 });
    for (let i = 0; i < 200; i++) await o.store.append([ev(`c${i}`)]);
    await o.store.indexed();
    const heads = [...o.store.heads()];
    const files = segmentFilesOf(o.dir);
    await o.close();
    // A crash right after the indexer moved the start of the log past every record (a new, empty active segment).
    fs.writeFileSync(path.join(o.dir, 'wal', `${String(Number(files.at(-1)!.slice(0, 20)) + 1_000_000).padStart(20, '0')}.seg`), '');
    const end = Number(files.at(-1)!.slice(0, 20)) + 1_000_000;
    const db = indexDbOf(o.dir);
    db.prepare("INSERT INTO meta (key, value) VALUES ('log_start', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(
      String(end),
    );
    db.close();
    const finished = openStore(o.dir, { segmentBytes: 4096 });
    expect([...finished.store.heads()]).toEqual(heads);
    await finished.close();
    removeIndexDb(o.dir);

    const again = openStore(o.dir, { segmentBytes: 4096 });
    expect([...again.store.heads()]).toEqual(heads);
  });

  it('never deletes the active segment for size, and tells listeners the new first offsets before reads see them', async () => {
    const o = openStore(tmpDir(), { segmentBytes: 4096, maxLogBytes: 8192 });
    const told: number[][] = [];
    o.store.onRetire((firsts) => told.push([...firsts]));
    for (let i = 0; i < 120; i++) await o.store.append([ev(`s${i}`)]);
    await o.store.indexed();
    await o.store.runRetention();
    const sizes = segmentFilesOf(o.dir).map((f) => fs.statSync(path.join(o.dir, 'wal', f)).size);
    expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(8192);
    expect(sizes.length).toBeGreaterThanOrEqual(1);
    expect(told.length).toBeGreaterThan(0);
    expect(told[told.length - 1]).toEqual([...o.store.firstOffsets()]);
  });
});

describe('local event store: key filter built by the indexer thread', () => {
  it('detects duplicates right after a restart, before and after the filter arrives, and keeps a key appended while it is built', async () => {
    const o = openStore();
    const stored: AppendResult[] = [];
    for (let i = 0; i < 2000; i += 500) stored.push(...(await o.store.append(Array.from({ length: 500 }, (_, j) => ev(`f${i + j}`)))));
    await o.close();

    const again = openStore(o.dir);
    // No turn of the event loop yet, so no answer from the worker: these checks go to SQLite.
    expect(again.store.keyFilter.ready()).toBe(false);
    const early = again.store.append(stored.filter((_, i) => i % 7 === 0).map((r) => ev(r.id)));
    const during = again.store.append([ev('during')]); // added while the build is outstanding
    expect(again.store.keyFilter.ready()).toBe(false);
    expect(await early).toEqual(stored.filter((_, i) => i % 7 === 0).map((r) => ({ ...r, duplicate: true })));
    const [first] = await during;
    expect(first).toMatchObject({ duplicate: false });

    await expect(again.store.keyFilter.built()).resolves.toBe(true);
    expect(again.store.keyFilter.ready()).toBe(true);
    // Out of the tail and into SQLite after the worker's scan: only the "added since asked" keys put it in the filter.
    await again.store.indexed();
    expect(await again.store.append([ev('during')])).toEqual([{ ...first, duplicate: true }]);
    // Every key the worker's scan read is in the filter (a miss there would store the event again).
    expect(await again.store.append(stored.map((r) => ev(r.id)))).toEqual(stored.map((r) => ({ ...r, duplicate: true })));
    const fresh = await again.store.append([ev('fresh-1'), ev('fresh-2')]);
    expect(fresh.map((r) => r.duplicate)).toEqual([false, false]);
    expect(await again.store.append([ev('fresh-2')])).toEqual([{ ...fresh[1]!, duplicate: true }]);
    expect(total(again.store.heads())).toBe(2003);
  });

  it('answers a build the worker died with as abandoned, and builds again on the restarted worker', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'index.db');
    const db = openIndexDatabase(file);
    const indexer = createIndexer({
      dbFile: file,
      partitions: 1,
      log: createLogger('silent'),
      indexedThrough: 0,
      onRetired: () => undefined,
    });
    const entry: PendingEntry = {
      source: '/restart',
      id: 'r1',
      key: idempotencyKey('/restart', 'r1'),
      partition: 0,
      offset: 0,
      storedAt: T0,
      frame: Buffer.alloc(16),
    };
    try {
      // The worker's write waits for this lock past its busy timeout (5 s), fails, and the worker exits.
      db.exec('BEGIN IMMEDIATE');
      indexer.add(16, [entry], [0]);
      const abandoned = indexer.buildKeyFilter(12, 7); // queued behind that write
      await expect(abandoned).resolves.toBeUndefined();
      db.exec('ROLLBACK');
      const built = await indexer.buildKeyFilter(12, 7); // the restarted worker wrote the tail again first
      expect(built).toMatchObject({ log2Bits: 12, hashes: 7, count: 1 });
      const filter = keyFilterFrom(built!.words, built!.log2Bits, built!.hashes, built!.count);
      expect(filter.mightContain(entry.key)).toBe(true);
      expect(filter.mightContain(idempotencyKey('/restart', 'other'))).toBe(false);
    } finally {
      if (db.inTransaction) db.exec('ROLLBACK');
      await indexer.close();
      db.close();
    }
    // Once closed, a request is answered at once (abandoned), never left hanging.
    await expect(indexer.buildKeyFilter(12, 7)).resolves.toBeUndefined();
  }, 30_000);
});

describe('local event store: index.db', () => {
  it('moves the index tables of a data dir from before index.db out of herald.db, without re-indexing the log', async () => {
    const o = openStore();
    const results = await o.store.append([ev('old-1'), ev('old-2'), ev('old-3')]);
    await o.store.indexed();
    await o.close();
    // The layout before index.db: the indexer's tables and marks lived in herald.db.
    const herald = openDatabase(path.join(o.dir, 'herald.db'));
    herald.prepare('ATTACH DATABASE ? AS idx').run(path.join(o.dir, 'index.db'));
    herald.exec(`CREATE TABLE main.idempotency AS SELECT * FROM idx.idempotency;
      CREATE TABLE main.log_index AS SELECT * FROM idx.log_index;
      CREATE TABLE main.partition_heads AS SELECT * FROM idx.partition_heads;
      INSERT INTO main.meta (key, value) SELECT key, value FROM idx.meta WHERE key = 'log_indexed_through';`);
    herald.exec('DETACH DATABASE idx');
    herald.close();
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(o.dir, `index.db${suffix}`), { force: true });

    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const again = openStore(o.dir, { log });
    expect(again.store.recovery.rebuiltRecords).toBe(0);
    // An upgrade moves the tables; it does not announce a missing index.db and a full scan (upgrade probe).
    expect(lines.filter((l) => l.level >= 40).map((l) => l.msg)).toEqual([]);
    for (const r of results) expect(again.store.lookup(r.source, r.id)).toMatchObject({ partition: r.partition, offset: r.offset });
    expect((await again.store.append([ev('old-2')]))[0]!.duplicate).toBe(true);
    const tables = again.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'log_index'").all();
    expect(tables).toEqual([]);
  });

  it('rebuilds an index.db written for another data dir from the log instead of trusting it', async () => {
    const mine = openStore();
    const stored = await mine.store.append([ev('mine-1')]);
    await mine.close();
    const other = openStore();
    await other.store.append([ev('theirs-1'), ev('theirs-2')]);
    await other.store.indexed();
    await other.close();
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(mine.dir, `index.db${suffix}`), { force: true });
    fs.copyFileSync(path.join(other.dir, 'index.db'), path.join(mine.dir, 'index.db'));

    const again = openStore(mine.dir);
    expect(again.store.recovery.rebuiltRecords).toBe(1);
    expect(again.store.lookup('/store', 'mine-1')).toMatchObject({ offset: stored[0]!.offset });
    // The other log's keys are not this one's duplicates.
    expect((await again.store.append([ev('theirs-1')]))[0]!.duplicate).toBe(false);
  });
});

describe('local event store: the indexer tail', () => {
  it('lets go of each group once the worker has written it (large batch groups were kept until 1,024 of them had been written)', async () => {
    // A forced full collection shows what is still reachable: the tail must hold nothing of written groups.
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const dir = tmpDir();
    const indexer = createIndexer({
      dbFile: path.join(dir, 'index.db'),
      partitions: 2,
      log: createLogger('silent'),
      indexedThrough: 0,
      onRetired: () => undefined,
    });
    const db = openIndexDatabase(path.join(dir, 'index.db'));
    db.close();
    const refs: WeakRef<object>[] = [];
    try {
      let end = 0;
      for (let g = 0; g < 20; g++) {
        const committed: PendingEntry[] = Array.from({ length: 50 }, (_, i) => {
          const id = `g${g}-${i}`;
          return {
            source: '/tail',
            id,
            key: idempotencyKey('/tail', id),
            partition: i % 2,
            offset: g * 25 + Math.floor(i / 2),
            storedAt: T0,
            frame: Buffer.alloc(16),
          };
        });
        const positions = committed.map((_, i) => end + i * 16);
        end += committed.length * 16;
        indexer.add(end, committed, positions);
        refs.push(new WeakRef(indexer.find(committed[0]!.key)!));
      }
      await indexer.drained();
      expect(indexer.lag()).toBe(0);
      for (let i = 0; i < 3 && refs.some((r) => r.deref()); i++) {
        await new Promise((resolve) => setImmediate(resolve));
        gc();
      }
      expect(refs.filter((r) => r.deref() !== undefined)).toHaveLength(0);
    } finally {
      await indexer.close();
    }
  }, 30_000);
});
