import fs from 'node:fs';
import path from 'node:path';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { createLogger } from '../../../src/logger';
import { openConnection, openDatabase } from '../../../src/store/db';
import { openLocalEventStore } from '../../../src/wal/local-event-store';
import { openLogReader, type LogReaderView } from '../../../src/wal/log-reader';
import { createLogWindows } from '../../../src/wal/log-windows';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/**
 * The delivery thread's view of the log (`openLogReader`): its own descriptors and index.db
 * connection, told of committed groups, the indexer's progress and retention by the store's feed.
 * Here both sides run in one thread, the feed wired straight through.
 */

afterAll(cleanupTmpDirs);

const log = createLogger('silent');
const ev = (id: string): CloudEvent => ({
  attributes: { specversion: '1.0', id, source: '/reader', type: 'reader.t' },
  data: { kind: 'json', value: { id } },
});

function open(opts: { segmentBytes?: number; maxLogBytes?: number; partitions?: number } = {}) {
  const dir = tmpDir();
  const db = openDatabase(path.join(dir, 'herald.db'));
  const store = openLocalEventStore({
    dataDir: dir,
    db,
    log,
    partitions: opts.partitions ?? 3,
    fsync: 'always',
    fsyncIntervalMs: 50,
    segmentBytes: opts.segmentBytes ?? 1 << 20,
    maxLogBytes: opts.maxLogBytes,
    idempotencyWindowMs: 60_000,
  });
  const readers: LogReaderView[] = [];
  return {
    dir,
    store,
    /** A reader started now (from the store's snapshot) and fed from then on. */
    reader(onRetiring?: (through: number) => void): LogReaderView {
      const reader = openLogReader(store.feed.snapshot(), log);
      readers.push(reader);
      store.feed.listen({
        committed: (group) => reader.committed(group),
        indexed: (through) => reader.indexed(through),
        retiring: (through, firsts) => {
          onRetiring?.(through);
          reader.retire(through, firsts);
          return Promise.resolve();
        },
      });
      return reader;
    },
    async close() {
      for (const r of readers) r.close();
      await store.close();
      db.close();
    },
  };
}

const everything = (r: { read: LogReaderView['read']; partitions: number }) =>
  Array.from({ length: r.partitions }, (_, p) => r.read(p, 0, 10_000).events);

describe('log reader (the delivery thread view of the log)', () => {
  it('reads committed events at once from the tail it is sent, and from index.db once indexed, as the store reads them', async () => {
    const o = open();
    try {
      await o.store.append(Array.from({ length: 30 }, (_, i) => ev(`a${i}`)));
      const reader = o.reader(); // started with an unindexed tail
      const grown: number[][] = [];
      reader.onAppend((partitions) => grown.push([...partitions]));
      await o.store.append(Array.from({ length: 30 }, (_, i) => ev(`b${i}`)));
      expect(grown.length).toBeGreaterThan(0);
      expect(reader.heads()).toEqual(o.store.heads());
      expect(everything(reader)).toEqual(everything(o.store));
      await o.store.indexed();
      await o.store.append([ev('c0')]);
      expect(everything(reader)).toEqual(everything(o.store));
      expect(everything(reader).flat()).toHaveLength(61);
    } finally {
      await o.close();
    }
  });

  it('hands several subscriptions the same decoded events (one decode per event), and one subscription fresh ones', async () => {
    const o = open();
    try {
      const reader = o.reader();
      await o.store.append(Array.from({ length: 40 }, (_, i) => ev(`d${i}`)));
      const alone = [everything(reader), everything(reader)];
      alone[0]!.forEach((page, p) => page.forEach((stored, i) => expect(alone[1]![p]![i]!.event).not.toBe(stored.event)));

      reader.readers(2);
      const first = everything(reader);
      const second = everything(reader);
      expect(second).toEqual(everything(o.store));
      expect(first.flat()).toHaveLength(40);
      first.forEach((page, p) => page.forEach((stored, i) => expect(second[p]![i]!.event).toBe(stored.event)));
      // Pages that start elsewhere still hit the shared records.
      const p0 = first.findIndex((page) => page.length > 2);
      expect(reader.read(p0, first[p0]![1]!.offset, 1).events[0]!.event).toBe(first[p0]![1]!.event);

      reader.readers(1);
      const after = everything(reader);
      expect(after).toEqual(first);
      after.forEach((page, p) => page.forEach((stored, i) => expect(first[p]![i]!.event).not.toBe(stored.event)));
    } finally {
      await o.close();
    }
  });

  it('is told of retention before anything is deleted, then reads nothing below the new first offsets', async () => {
    const o = open({ segmentBytes: 4096, maxLogBytes: 8192 });
    try {
      const files = () => fs.readdirSync(path.join(o.dir, 'wal')).filter((f) => f.endsWith('.seg'));
      /** Per announcement, the segment files it will delete that were still there when the reader was told. */
      const told: { through: number; doomed: string[] }[] = [];
      const reader = o.reader((through) => told.push({ through, doomed: files().filter((f) => Number(f.slice(0, 20)) < through) }));
      const retired: number[][] = [];
      reader.onRetire((firsts) => retired.push([...firsts]));
      for (let i = 0; i < 120; i++) {
        await o.store.append([ev(`s${i}`)]);
        // Reading as it goes, the reader holds descriptors on segments retention deletes meanwhile. A round
        // may be between telling the reader and moving the store's first offsets: compare above both.
        const from = reader.firstOffsets().map((first, p) => Math.max(first, o.store.firstOffsets()[p]!));
        const above = (r: typeof reader | typeof o.store) => from.map((f, p) => r.read(p, f, 10_000).events);
        expect(above(reader)).toEqual(above(o.store));
      }
      await o.store.indexed();
      await o.store.runRetention();
      expect(told.length).toBeGreaterThan(0);
      for (const { through, doomed } of told) {
        // When the reader was told, what retention deletes was still there; afterwards it is gone.
        expect(doomed.length).toBeGreaterThan(0);
        expect(files().filter((f) => Number(f.slice(0, 20)) < through)).toEqual([]);
      }
      expect(reader.firstOffsets()).toEqual(o.store.firstOffsets());
      expect(reader.firstOffsets().some((first) => first > 0)).toBe(true);
      expect(retired[retired.length - 1]).toEqual([...o.store.firstOffsets()]);
      expect(everything(reader)).toEqual(everything(o.store));
      reader.firstOffsets().forEach((first, p) => expect(reader.read(p, 0, 1).events[0]?.offset ?? first).toBe(first));
    } finally {
      await o.close();
    }
  });
});

describe('log reader: the newest indexed records', () => {
  it('keeps their positions past the indexer confirming them: reads of fresh events need no index.db', async () => {
    const o = open();
    try {
      const reader = o.reader();
      const stored = await o.store.append(Array.from({ length: 24 }, (_, i) => ev(`fresh${i}`)));
      await o.store.indexed(); // every group confirmed
      // index.db loses its rows: the reader still finds every fresh event (and reads it from the file).
      const indexDb = openConnection(o.store.feed.snapshot().indexDbFile);
      indexDb.prepare('DELETE FROM log_index').run();
      indexDb.close();
      const read = everything(reader).flat();
      expect(read.map((e) => e.event.attributes.id).sort()).toEqual(stored.map((s) => s.id).sort());
    } finally {
      await o.close();
    }
  });

  it('keeps at most 32,768 of them, and its arrays shrink with it', async () => {
    const o = open();
    try {
      const reader = o.reader();
      for (let round = 0; round < 400; round++) await o.store.append(Array.from({ length: 100 }, (_, i) => ev(`m${round}-${i}`)));
      await o.store.indexed();
      const sizes = reader.tailSizes();
      expect(sizes.records).toBeLessThanOrEqual(32_768);
      expect(sizes.records).toBeGreaterThan(32_000);
      // Entries cut off the front go in halves: never more than twice what is kept.
      expect(sizes.arrays).toBeLessThanOrEqual(2 * (sizes.records + 400));
      const read = Array.from({ length: reader.partitions }, (_, p) => reader.read(p, 0, 40_000).events.length);
      expect(read.reduce((a, b) => a + b, 0)).toBe(40_000);
    } finally {
      await o.close();
    }
  });
});

describe('log reader: windows over interleaved partitions', () => {
  /** 1 KiB events spread over 16 partitions: a partition's records lie ~16 KiB apart, too far for one read across. */
  const spread = (n: number, tag: string): CloudEvent[] =>
    Array.from({ length: n }, (_, i) => ({
      attributes: { specversion: '1.0', id: `${tag}${i}`, source: '/reader', type: 'reader.t', partitionkey: `k${i % 64}` },
      data: { kind: 'json', value: { pad: 'x'.repeat(1000) } },
    }));

  it('reads a page a window at a time, not a record at a time, and serves what the store serves', async () => {
    const o = open({ partitions: 16 });
    const reads = jest.spyOn(fs, 'readSync');
    try {
      const reader = o.reader();
      for (let round = 0; round < 8; round++) await o.store.append(spread(200, `w${round}-`));
      const counts: number[] = [];
      const pages = Array.from({ length: 16 }, (_, p) => {
        reads.mockClear();
        const page = reader.read(p, 0, 64);
        counts.push(reads.mock.calls.length);
        return page;
      });
      expect(pages).toEqual(Array.from({ length: 16 }, (_, p) => o.store.read(p, 0, 64)));
      const served = pages.reduce((n, page) => n + page.events.length, 0);
      expect(served).toBeGreaterThan(16 * 40);
      // A record at a time was one read per event (the gaps are wider than a read spans).
      expect(counts.reduce((a, b) => a + b, 0)).toBeLessThan(served / 8);
    } finally {
      reads.mockRestore();
      await o.close();
    }
  });

  it('reports a damaged record inside a window as the store does, and serves the records before it', async () => {
    const o = open({ partitions: 16 });
    try {
      const reader = o.reader();
      const stored = await o.store.append(spread(1600, 'x'));
      const victim = stored.find((s) => s.offset === 20)!;
      const [file] = fs.readdirSync(path.join(o.dir, 'wal')).filter((f) => f.endsWith('.seg'));
      const full = path.join(o.dir, 'wal', file!);
      const bytes = fs.readFileSync(full);
      const at = bytes.indexOf(Buffer.from(`"${victim.id}"`));
      expect(at).toBeGreaterThan(0);
      bytes.writeUInt8(bytes.readUInt8(at + 2) ^ 0x01, at + 2); // one flipped bit in the id of offset 20
      fs.writeFileSync(full, bytes);
      const page = reader.read(victim.partition, 0, 64);
      expect(page.corruptOffset).toBe(20);
      expect(page.events.map((e) => e.offset)).toEqual(Array.from({ length: 20 }, (_, i) => i));
      expect(page).toEqual(o.store.read(victim.partition, 0, 64));
    } finally {
      await o.close();
    }
  });
});

describe('log reader: windows and a failing disk', () => {
  const spread = (n: number): CloudEvent[] =>
    Array.from({ length: n }, (_, i) => ({
      attributes: { specversion: '1.0', id: `f${i}`, source: '/reader', type: 'reader.t', partitionkey: `k${i % 64}` },
      data: { kind: 'json', value: { pad: 'x'.repeat(1000) } },
    }));

  it('serves a window for a second at most: a record damaged on disk later is found by the next read', async () => {
    const o = open({ partitions: 16 });
    try {
      const reader = o.reader();
      const stored = await o.store.append(spread(1600));
      const victim = stored.find((s) => s.offset === 20)!;
      expect(reader.read(victim.partition, 0, 64).corruptOffset).toBeUndefined(); // its windows are read
      const [file] = fs.readdirSync(path.join(o.dir, 'wal')).filter((f) => f.endsWith('.seg'));
      const full = path.join(o.dir, 'wal', file!);
      const bytes = fs.readFileSync(full);
      const at = bytes.indexOf(Buffer.from(`"${victim.id}"`));
      bytes.writeUInt8(bytes.readUInt8(at + 2) ^ 0x01, at + 2);
      fs.writeFileSync(full, bytes);
      await new Promise((r) => setTimeout(r, 1100));
      expect(reader.read(victim.partition, 20, 1).corruptOffset).toBe(20);
      expect(reader.read(victim.partition, 0, 64).corruptOffset).toBe(20);
    } finally {
      await o.close();
    }
  });

  it('tries an unreadable stretch of the log once, not once per record, and serves every record around it', async () => {
    const o = open({ partitions: 16 });
    const realRead = fs.readSync;
    let bad = -1;
    let failures = 0;
    // An unreadable sector inside one record (EIO), as a failing disk gives it.
    const reads = jest.spyOn(fs, 'readSync').mockImplementation(((fd: number, buf: Buffer, off: number, len: number, pos: number) => {
      if (bad >= 0 && typeof pos === 'number' && pos <= bad && bad < pos + len) {
        failures++;
        throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
      }
      return realRead(fd, buf, off, len, pos);
    }) as unknown as typeof fs.readSync);
    try {
      const reader = o.reader();
      const stored = await o.store.append(spread(1600));
      const victim = stored[800]!;
      const [file] = fs.readdirSync(path.join(o.dir, 'wal')).filter((f) => f.endsWith('.seg'));
      bad = fs.readFileSync(path.join(o.dir, 'wal', file!)).indexOf(Buffer.from(`"${victim.id}"`));
      let served = 0;
      const corrupt: { partition: number; offset: number }[] = [];
      for (let p = 0; p < 16; p++) {
        for (let from = 0; ;) {
          const page = reader.read(p, from, 64);
          served += page.events.length;
          if (page.corruptOffset !== undefined) corrupt.push({ partition: p, offset: page.corruptOffset });
          const next = page.corruptOffset ?? page.events.at(-1)?.offset;
          if (next === undefined) break;
          from = next + 1;
        }
      }
      expect(corrupt).toEqual([{ partition: victim.partition, offset: victim.offset }]);
      expect(served).toBe(1599);
      // One window over the sector, then the record itself: every other page near it reads around it.
      expect(failures).toBeLessThanOrEqual(3);
    } finally {
      reads.mockRestore();
      await o.close();
    }
  });
});

describe('log windows', () => {
  it('never read past the committed end: bytes written behind it and then replaced are read again', () => {
    const file = path.join(tmpDir(), 'seg');
    // 0..100 committed; 100..300 a group written but not committed yet (it may be undone and rewritten).
    fs.writeFileSync(file, Buffer.concat([Buffer.alloc(100, 'c'), Buffer.alloc(200, 'u')]));
    const fd = fs.openSync(file, 'r+');
    try {
      let committedEnd = 100;
      const windows = createLogWindows({
        readInto: (position, buf, length) => fs.readSync(fd, buf, 0, length, position),
        readableEnd: () => committedEnd,
        windowBytes: 1024,
      });
      const first = windows.load(10, 20);
      expect(first).toMatchObject({ from: 10, to: 100 });
      expect(windows.load(90, 20)).toBeUndefined(); // the record runs past the committed end
      // The group is undone and another one committed in its place.
      fs.writeSync(fd, Buffer.alloc(200, 'n'), 0, 200, 100);
      committedEnd = 300;
      expect(windows.holding(150, 10)).toBeUndefined();
      const next = windows.load(150, 10);
      expect(next !== 'failed' && next?.buf.subarray(0, 10).toString()).toBe('n'.repeat(10));
      expect(windows.holding(20, 10)).toBe(first);
      // Read-ahead, not a cache: a second later a window is read again.
      let clock = 0;
      const aging = createLogWindows({
        readInto: (position, buf, length) => fs.readSync(fd, buf, 0, length, position),
        readableEnd: () => committedEnd,
        now: () => clock,
      });
      const young = aging.load(0, 10);
      clock = 999;
      expect(aging.holding(0, 10)).toBe(young);
      clock = 1001;
      expect(aging.holding(0, 10)).toBeUndefined();
      windows.dropBefore(100);
      expect(windows.holding(20, 10)).toBeUndefined();
      expect(windows.holding(150, 10)).toBe(next);
    } finally {
      fs.closeSync(fd);
    }
  });
});
