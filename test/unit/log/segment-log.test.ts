import fs from 'node:fs';
import path from 'node:path';
import { decodeRecord, encodeRecord, frameKey } from '../../../src/wal/record';

/** Every test log gets this key (written before the log is opened), so frames can be made before and after. */
const KEY_HEX = '07'.repeat(16);
const KEY = frameKey(Buffer.from(KEY_HEX, 'hex'));
import { CorruptLogError, MAX_READ_FDS, openSegmentLog, openSegmentReader, type SegmentLog } from '../../../src/wal/segment-log';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

function frame(offset: number, data: unknown = { n: offset }): Buffer {
  const event = {
    attributes: { specversion: '1.0', id: `e${offset}`, source: '/seg', type: 't' },
    data: { kind: 'json' as const, value: data },
  };
  return encodeRecord({ partition: 0, offset, storedAt: 1_700_000_000_000 + offset, event }, KEY);
}

interface Opened {
  log: SegmentLog;
  dir: string;
  warnings: string[];
}

const open: SegmentLog[] = [];
afterEach(() => {
  for (const log of open.splice(0)) log.close();
});

function openLog(dir: string, segmentBytes = 1 << 20, durable = true): Opened {
  const warnings: string[] = [];
  fs.mkdirSync(dir, { recursive: true });
  if (!fs.existsSync(path.join(dir, 'frame.key'))) fs.writeFileSync(path.join(dir, 'frame.key'), KEY_HEX);
  const log = openSegmentLog({ dir, segmentBytes, durable, warn: (msg) => warnings.push(msg) });
  open.push(log);
  return { log, dir, warnings };
}

function reopen(o: Opened, segmentBytes?: number, durable?: boolean): Opened {
  o.log.close();
  open.splice(open.indexOf(o.log), 1);
  return openLog(o.dir, segmentBytes, durable);
}

async function appendAll(log: SegmentLog, frames: Buffer[]): Promise<number[]> {
  const positions: number[] = [];
  for (const f of frames) positions.push(await log.append([f], f.length));
  return positions;
}

function scanAll(log: SegmentLog, from = 0, skipCorrupt = false) {
  const seen: { position: number; offset: number; length: number }[] = [];
  const result = log.scan(from, (position, f) => seen.push({ position, offset: decodeRecord(f).offset, length: f.length }), {
    skipCorrupt,
  });
  return { ...result, seen };
}

function recordEndsOf(file: string): number[] {
  const buf = fs.readFileSync(file);
  const ends: number[] = [];
  for (let at = 0; at < buf.length; at += 8 + buf.readUInt32LE(at)) ends.push(at + 8 + buf.readUInt32LE(at));
  return ends;
}

const segName = (base: number) => `${String(base).padStart(20, '0')}.seg`;

describe('segment log', () => {
  it('starts an empty dir with one empty segment at position 0', () => {
    const { log, dir } = openLog(path.join(tmpDir(), 'wal'));
    expect(fs.readdirSync(dir).sort()).toEqual([segName(0), 'frame.key']);
    expect(log.end()).toBe(0);
    expect(scanAll(log)).toEqual({ end: 0, truncatedBytes: 0, scannedBytes: 0, seen: [], lost: [] });
  });

  it('appends a group of frames in one write and scans every record back at its position', async () => {
    const { log } = openLog(tmpDir());
    const frames = [frame(0), frame(1), frame(2)];
    const total = frames.reduce((n, f) => n + f.length, 0);
    expect(await log.append(frames, total)).toBe(0);
    const more = await log.append([frame(3)], frame(3).length);
    expect(more).toBe(total);
    const { seen, end, scannedBytes } = scanAll(log);
    expect(seen.map((r) => r.offset)).toEqual([0, 1, 2, 3]);
    expect(seen.map((r) => r.position)).toEqual([0, frames[0]!.length, frames[0]!.length + frames[1]!.length, total]);
    expect(end).toBe(total + frame(3).length);
    expect(scannedBytes).toBe(end);
    for (const r of seen) expect(decodeRecord(log.read(r.position, r.length)).offset).toBe(r.offset);
  });

  it('scans from a record boundary past the start, reporting only later records', async () => {
    const { log } = openLog(tmpDir());
    const positions = await appendAll(log, [frame(0), frame(1), frame(2)]);
    expect(scanAll(log, positions[1]!).seen.map((r) => r.offset)).toEqual([1, 2]);
  });

  it('rolls to a new segment named by its global base position and reads across segments', async () => {
    const o = openLog(tmpDir(), 1000);
    const frames = Array.from({ length: 40 }, (_, i) => frame(i, 'x'.repeat(100)));
    const positions = await appendAll(o.log, frames);
    const files = o.log.segmentFiles();
    expect(files.length).toBeGreaterThan(3);
    for (const file of files) {
      const base = Number(path.basename(file).slice(0, 20));
      expect(positions).toContain(base); // every segment starts at a record
      expect(fs.statSync(file).size).toBeLessThanOrEqual(1000);
    }
    frames.forEach((f, i) => expect(o.log.read(positions[i]!, f.length).equals(f)).toBe(true));
    const again = reopen(o, 1000);
    const { seen, truncatedBytes } = scanAll(again.log);
    expect(truncatedBytes).toBe(0);
    expect(seen.map((r) => r.position)).toEqual(positions);
    expect(await again.log.append([frame(40)], frame(40).length)).toBe(again.log.end() - frame(40).length);
    expect(scanAll(again.log).seen).toHaveLength(41);
  });

  it('scans a record larger than its read chunk', async () => {
    const { log } = openLog(tmpDir(), 64 << 20);
    const big = frame(1, 'y'.repeat(9 * 1024 * 1024));
    await appendAll(log, [frame(0), big, frame(2)]);
    const { seen, truncatedBytes } = scanAll(log);
    expect(truncatedBytes).toBe(0);
    expect(seen.map((r) => [r.offset, r.length])).toEqual([
      [0, frame(0).length],
      [1, big.length],
      [2, frame(2).length],
    ]);
  });

  it.each([
    ['a partial frame', (next: Buffer) => next.subarray(0, next.length - 5)],
    ['a lone partial length field', () => Buffer.from([0x20, 0x00])],
    [
      'a whole frame with a bad checksum',
      (next: Buffer) => Buffer.concat([next.subarray(0, 10), Buffer.from([next[10]! ^ 0xff]), next.subarray(11)]),
    ],
    ['an implausible length', () => Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8])],
    ['zeros', () => Buffer.alloc(4096)],
  ])('cuts a tail of %s back to the last intact record, then appends after it', async (_name, tail) => {
    const o = openLog(tmpDir());
    await appendAll(o.log, [frame(0), frame(1)]);
    const good = o.log.end();
    const file = o.log.segmentFiles()[0]!;
    const garbage = tail(frame(2));
    const again = reopen(o);
    fs.appendFileSync(file, garbage);
    const after = reopen(again);
    const { seen, end, truncatedBytes } = scanAll(after.log);
    expect(seen.map((r) => r.offset)).toEqual([0, 1]);
    expect(end).toBe(good);
    expect(truncatedBytes).toBe(garbage.length);
    expect(fs.statSync(file).size).toBe(good);
    expect(after.warnings).toEqual(['log: cutting torn tail']);
    expect(await after.log.append([frame(2)], frame(2).length)).toBe(good);
    expect(scanAll(after.log).seen.map((r) => r.offset)).toEqual([0, 1, 2]);
  });

  it('refuses a corrupt record with intact records after it, changing nothing; skip-corrupt pads over it and keeps the rest', async () => {
    const o = openLog(tmpDir(), 1000);
    const positions = await appendAll(
      o.log,
      Array.from({ length: 30 }, (_, i) => frame(i, 'z'.repeat(100))),
    );
    const files = o.log.segmentFiles();
    expect(files.length).toBeGreaterThan(2);
    const firstFile = files[0]!;
    const secondRecord = positions[1]!;
    const fd = fs.openSync(firstFile, 'r+');
    fs.writeSync(fd, Buffer.from([0xaa]), 0, 1, secondRecord + 20); // flip a body byte of record 1
    fs.closeSync(fd);
    const damaged = fs.readFileSync(firstFile);
    const after = reopen(o, 1000);
    expect(() => scanAll(after.log)).toThrow(CorruptLogError);
    expect(() => scanAll(after.log)).toThrow(`${firstFile} at byte ${secondRecord} (checksum mismatch), and 28 intact record(s) follow`);
    expect(fs.readFileSync(firstFile).equals(damaged)).toBe(true);
    expect(after.log.segmentFiles()).toEqual(files);

    const { seen, lost } = scanAll(after.log, 0, true);
    expect(seen.map((r) => r.offset)).toEqual(Array.from({ length: 30 }, (_, i) => i).filter((i) => i !== 1));
    expect(lost).toEqual([{ from: secondRecord, to: positions[2], reason: 'checksum mismatch' }]);
    expect(after.log.segmentFiles()).toEqual(files);
    const side = fs.readdirSync(o.dir).filter((f) => f.includes('.corrupt-'));
    expect(side).toEqual([`${path.basename(firstFile)}.corrupt-${secondRecord}`]);
    expect(fs.readFileSync(path.join(o.dir, side[0]!)).equals(damaged.subarray(secondRecord, positions[2]))).toBe(true);
    // The padding is a valid frame: a plain scan now passes.
    expect(scanAll(reopen(after, 1000).log).seen).toHaveLength(29);
  });

  it('cuts a torn tail whose later segments hold only garbage, setting them aside without deleting them', async () => {
    const o = openLog(tmpDir(), 1000);
    const positions = await appendAll(
      o.log,
      Array.from({ length: 30 }, (_, i) => frame(i, 'z'.repeat(100))),
    );
    const files = o.log.segmentFiles();
    for (const later of files.slice(1)) fs.writeFileSync(later, Buffer.alloc(fs.statSync(later).size, 0xab));
    const garbageAfter = files.slice(1).reduce((n, f) => n + fs.statSync(f).size, 0);
    fs.truncateSync(files[0]!, positions[1]! + 7);
    const after = reopen(o, 1000);
    const { seen, end, truncatedBytes } = scanAll(after.log);
    expect(seen.map((r) => r.offset)).toEqual([0]);
    expect(end).toBe(positions[1]);
    expect(truncatedBytes).toBe(7 + garbageAfter);
    expect(after.log.segmentFiles()).toEqual([files[0]]);
    // The later segments renamed aside, and the 7 bytes cut from the first copied aside before the cut.
    expect(fs.readdirSync(o.dir).filter((f) => f.includes('.corrupt-'))).toHaveLength(files.length);
    expect(fs.statSync(`${files[0]}.corrupt-${positions[1]! - Number(path.basename(files[0]!, '.seg'))}`).size).toBe(7);
  });

  it('keeps later segments when an older one lost its unsynced tail on a record boundary (fsync=never), reporting the hole', async () => {
    const o = openLog(tmpDir(), 1000, false);
    await appendAll(
      o.log,
      Array.from({ length: 30 }, (_, i) => frame(i, 'v'.repeat(100))),
    );
    const files = o.log.segmentFiles();
    expect(files.length).toBeGreaterThan(2);
    const ends = recordEndsOf(files[0]!);
    fs.truncateSync(files[0]!, ends.at(-2)!); // a power cut took the last record of the first segment
    const after = reopen(o, 1000, false);
    const { seen, lost } = scanAll(after.log, after.log.activeSegmentBase());
    expect(lost).toEqual([{ from: ends.at(-2), to: ends.at(-1), reason: expect.stringContaining('short') }]);
    expect(after.log.segmentFiles()).toEqual(files);
    expect(seen.length).toBeGreaterThan(0);
  });

  it('refuses a segment that ends short of the next, or a lost middle segment, when segments are synced before the next begins (fsync always/interval), unless skip-corrupt', async () => {
    const o = openLog(tmpDir(), 1000);
    await appendAll(
      o.log,
      Array.from({ length: 30 }, (_, i) => frame(i, 'v'.repeat(100))),
    );
    const files = o.log.segmentFiles();
    expect(files.length).toBeGreaterThan(3);
    const ends = recordEndsOf(files[0]!);
    fs.truncateSync(files[0]!, ends.at(-2)!); // cut on a record boundary: no power cut does this after a synced roll
    let after = reopen(o, 1000);
    expect(() => scanAll(after.log, after.log.activeSegmentBase())).toThrow(/the log is missing \d+ bytes: .* ends at log byte/);
    expect(after.log.segmentFiles()).toEqual(files);
    // A whole segment in the middle gone: the same.
    const second = fs.readFileSync(files[1]!);
    fs.rmSync(files[1]!);
    after = reopen(after, 1000);
    expect(() => scanAll(after.log, after.log.activeSegmentBase())).toThrow(
      new RegExp(`missing ${second.length + ends.at(-1)! - ends.at(-2)!} bytes`),
    );
    expect(after.log.segmentFiles()).toEqual(files.filter((f) => f !== files[1]));
    // skip-corrupt goes on without them, reporting the hole.
    const { lost } = scanAll(after.log, after.log.activeSegmentBase(), true);
    expect(lost.map((r) => [r.from, r.to])).toEqual([[ends.at(-2), Number(path.basename(files[2]!, '.seg'))]]);
  });

  it('refuses an older segment that lost its tail inside a record (intact records follow), unless skip-corrupt', async () => {
    const o = openLog(tmpDir(), 1000);
    await appendAll(
      o.log,
      Array.from({ length: 30 }, (_, i) => frame(i, 'v'.repeat(100))),
    );
    const files = o.log.segmentFiles();
    const ends = recordEndsOf(files[0]!);
    fs.truncateSync(files[0]!, ends.at(-2)! + 5);
    const after = reopen(o, 1000);
    expect(() => scanAll(after.log, after.log.activeSegmentBase())).toThrow(CorruptLogError);
    const { lost } = scanAll(after.log, after.log.activeSegmentBase(), true);
    expect(lost.map((r) => [r.from, r.to])).toEqual([[ends.at(-2), ends.at(-1)]]); // the partial record and the hole after it
    expect(fs.statSync(files[0]!).size).toBe(ends.at(-2));
    expect(after.log.segmentFiles()).toEqual(files);
    expect(fs.readdirSync(o.dir).filter((f) => f.includes('.corrupt-'))).toEqual([`${path.basename(files[0]!)}.corrupt-${ends.at(-2)}`]);
  });

  it('truncate undoes an append so the next append takes its position', async () => {
    const { log } = openLog(tmpDir());
    await appendAll(log, [frame(0)]);
    const before = log.end();
    await log.append([frame(1), frame(2)], frame(1).length + frame(2).length);
    log.truncate(before);
    expect(log.end()).toBe(before);
    expect(await log.append([frame(1)], frame(1).length)).toBe(before);
    expect(scanAll(log).seen.map((r) => r.offset)).toEqual([0, 1]);
  });

  it('refuses to truncate into an older segment', async () => {
    const { log } = openLog(tmpDir(), 1000);
    await appendAll(
      log,
      Array.from({ length: 20 }, (_, i) => frame(i, 'w'.repeat(100))),
    );
    expect(() => log.truncate(0)).toThrow(/older segment/);
  });

  it('refuses to read past the end of the log', async () => {
    const { log } = openLog(tmpDir());
    await appendAll(log, [frame(0)]);
    expect(() => log.read(0, log.end() + 10)).toThrow(/past end/);
  });

  it('retries an undo that failed before writing again, so a repaired disk takes the next append', async () => {
    const dir = tmpDir();
    const file = path.join(dir, segName(0));
    fs.symlinkSync('/dev/full', file);
    const { log } = openLog(dir);
    await expect(log.append([frame(0)], frame(0).length)).rejects.toMatchObject({ code: 'ENOSPC' });
    expect(() => log.truncate(0)).toThrow(/EINVAL/); // /dev/full cannot be truncated: the undo is still owed
    await expect(log.append([frame(0)], frame(0).length)).rejects.toMatchObject({ code: 'EINVAL' }); // the owed undo first, still failing
    expect(() => log.truncate(0)).toThrow(/EINVAL/);
    fs.unlinkSync(file);
    fs.writeFileSync(file, '');
    expect(await log.append([frame(0)], frame(0).length)).toBe(0);
    expect(fs.statSync(file).size).toBe(frame(0).length);
    expect(scanAll(log).seen.map((r) => r.offset)).toEqual([0]);
  });

  it('a roll that cannot make the next segment leaves no descriptor behind: the next append never lands in another file', async () => {
    const dir = tmpDir();
    const { log } = openLog(dir);
    const first = await log.append([frame(0)], frame(0).length);
    // The next segment's file cannot be made (a directory holds its name), as on a full disk or with no descriptors left.
    const blocker = path.join(dir, segName(log.end()));
    fs.mkdirSync(blocker);
    expect(() => log.roll()).toThrow(/EISDIR/);
    // The process opens another file meanwhile: it gets the lowest free descriptor number, the one the roll closed.
    const other = path.join(dir, 'other-file');
    const otherFd = fs.openSync(other, 'w');
    try {
      fs.rmdirSync(blocker);
      const second = await log.append([frame(1)], frame(1).length);
      await log.sync();
      expect(fs.statSync(other).size).toBe(0);
      expect(second).toBe(first + frame(0).length);
      expect(scanAll(log).seen.map((r) => r.offset)).toEqual([0, 1]);
      expect(decodeRecord(log.read(second, frame(1).length)).offset).toBe(1);
    } finally {
      fs.closeSync(otherFd);
    }
  });
});

describe('read descriptors', () => {
  /** Descriptors this process holds open on segment files of `dir`. */
  const segmentFds = (dir: string) =>
    fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir + path.sep) && /\.seg$/.test(fs.readlinkSync(`/proc/self/fd/${fd}`));
      } catch {
        return false;
      }
    }).length;

  it('reading a long log through holds a bounded number of segment descriptors (was one per segment read, until retention)', async () => {
    const { log, dir } = openLog(tmpDir(), 512);
    const frames = Array.from({ length: 3 * MAX_READ_FDS }, (_, i) => frame(i, { pad: 'x'.repeat(400) }));
    const positions = await appendAll(log, frames);
    const bases = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.seg'))
      .map((f) => Number(f.slice(0, 20)));
    expect(bases.length).toBeGreaterThan(2 * MAX_READ_FDS);
    const reader = openSegmentReader({ dir, bases, key: KEY });
    try {
      for (let round = 0; round < 2; round++) {
        positions.forEach((p, i) => {
          expect(decodeRecord(log.read(p, frames[i]!.length)).offset).toBe(i);
          expect(decodeRecord(reader.read(p, frames[i]!.length)).offset).toBe(i);
        });
      }
      // The log's own reads and the reader's, each bounded, plus the write descriptor.
      expect(segmentFds(dir)).toBeLessThanOrEqual(2 * MAX_READ_FDS + 1);
    } finally {
      reader.close();
    }
  });
});
