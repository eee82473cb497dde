import fs from 'node:fs';
import path from 'node:path';
import { checkFrame } from './record';

const SEGMENT_SUFFIX = '.seg';
const SCAN_CHUNK_BYTES = 8 * 1024 * 1024;

export interface SegmentLogOptions {
  dir: string;
  segmentBytes: number;
  /** Whether rolled segments and new directory entries are fsynced (false for `HERALD_FSYNC=never`). */
  durable: boolean;
  warn: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface ScanResult {
  /** Global position just past the last intact record. */
  end: number;
  /** Bytes of torn or corrupt tail that were cut off. */
  truncatedBytes: number;
  scannedBytes: number;
}

interface Segment {
  base: number;
  file: string;
  size: number;
  readFd?: number;
}

/**
 * The write-ahead log: one sequence of checksummed records across segment
 * files named by the global byte position of their first record
 * (`00000000000067108864.seg`). Segments are only appended to and rolled, never
 * rewritten; the only shrink is cutting a torn tail at recovery or undoing a
 * failed append.
 */
export function openSegmentLog(opts: SegmentLogOptions) {
  const created = !fs.existsSync(opts.dir);
  fs.mkdirSync(opts.dir, { recursive: true });
  // A new wal/ directory must itself survive a power cut: sync the entry in its parent.
  if (created && opts.durable) fsyncPath(path.dirname(opts.dir));
  const segments: Segment[] = fs
    .readdirSync(opts.dir)
    .filter((f) => /^\d{20}\.seg$/.test(f))
    .sort()
    .map((f) => {
      const file = path.join(opts.dir, f);
      return { base: Number(f.slice(0, 20)), file, size: fs.statSync(file).size };
    });
  if (segments.length === 0) segments.push(createSegment(0));
  let writeFd = fs.openSync(active().file, 'a');
  /** A failed append's bytes may still be in the active segment: cut them before the next write. */
  let undoOwed = false;

  function active(): Segment {
    return segments[segments.length - 1]!;
  }

  function createSegment(base: number): Segment {
    const file = path.join(opts.dir, `${String(base).padStart(20, '0')}${SEGMENT_SUFFIX}`);
    fs.closeSync(fs.openSync(file, 'a'));
    if (opts.durable) fsyncPath(opts.dir);
    return { base, file, size: fs.statSync(file).size };
  }

  function segmentAt(position: number): Segment {
    let lo = 0;
    let hi = segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (segments[mid]!.base <= position) lo = mid;
      else hi = mid - 1;
    }
    return segments[lo]!;
  }

  function end(): number {
    const last = active();
    return last.base + last.size;
  }

  /**
   * Checks every record from `from` (a record boundary) to the end, calling
   * `onRecord` for each intact one. The frame is a view into a reused buffer:
   * copy it to keep it. At the first torn or corrupt record the log
   * is cut there; later segments (possible only after a corrupt middle, or an older segment that lost its unsynced tail) are
   * set aside as `.corrupt` files, never deleted.
   */
  function scan(from: number, onRecord: (position: number, frame: Buffer) => void): ScanResult {
    let scannedBytes = 0;
    let startIndex = segments.indexOf(segmentAt(from));
    // An older segment ending short of the next one's base lost its unsynced tail (fsync=never: rolls are
    // not synced): the log ends there, so scanning starts no later than that segment.
    const short = segments.findIndex((s, i) => i + 1 < segments.length && s.base + s.size !== segments[i + 1]!.base);
    if (short !== -1 && short < startIndex) {
      startIndex = short;
      from = segments[short]!.base; // from its start: its lost tail may have been cut mid-record
    }
    for (let i = startIndex; i < segments.length; i++) {
      const seg = segments[i]!;
      const startInFile = i === startIndex ? Math.max(0, from - seg.base) : 0;
      let cut = scanSegment(seg, startInFile, onRecord);
      scannedBytes += cut.scanned;
      const next = segments[i + 1];
      if (cut.badAt === undefined && next !== undefined && seg.base + seg.size !== next.base) {
        cut = { badAt: seg.size, reason: `segment ends at ${seg.base + seg.size}, short of the next segment at ${next.base}`, scanned: cut.scanned };
      }
      if (cut.badAt !== undefined) {
        const truncatedBytes = seg.size - cut.badAt + segments.slice(i + 1).reduce((n, s) => n + s.size, 0);
        opts.warn('log: cutting torn or corrupt tail', { segment: seg.file, at: cut.badAt, reason: cut.reason, truncatedBytes });
        fs.truncateSync(seg.file, cut.badAt);
        seg.size = cut.badAt;
        for (const later of segments.splice(i + 1)) {
          fs.renameSync(later.file, `${later.file}.corrupt-${Date.now()}`);
        }
        if (opts.durable) fsyncPath(seg.file);
        fs.closeSync(writeFd);
        writeFd = fs.openSync(active().file, 'a');
        return { end: end(), truncatedBytes, scannedBytes };
      }
    }
    return { end: end(), truncatedBytes: 0, scannedBytes };
  }

  function scanSegment(seg: Segment, startInFile: number, onRecord: (position: number, frame: Buffer) => void) {
    const fd = fs.openSync(seg.file, 'r');
    try {
      let bufStart = startInFile;
      let buf = Buffer.alloc(0);
      let work = Buffer.alloc(0);
      let at = 0;
      let scanned = 0;
      for (;;) {
        const check = checkFrame(buf, at);
        if (check.status === 'ok') {
          onRecord(seg.base + bufStart + at, buf.subarray(at, at + check.length));
          at += check.length;
          scanned += check.length;
          continue;
        }
        if (check.status === 'corrupt') return { badAt: bufStart + at, reason: check.reason, scanned };
        // Incomplete: read more, or stop at end of file.
        const remaining = buf.subarray(at);
        const fileLeft = seg.size - (bufStart + buf.length);
        if (fileLeft <= 0) {
          return remaining.length === 0 ? { scanned } : { badAt: bufStart + at, reason: 'incomplete record at end of segment', scanned };
        }
        const needed = remaining.length >= 4 ? remaining.readUInt32LE(0) + 8 : 0;
        const want = Math.min(fileLeft, Math.max(SCAN_CHUNK_BYTES, needed));
        // One work buffer for the whole scan: the unread tail moves to its front and the file is read in after it.
        if (work.length < remaining.length + want) {
          const grown = Buffer.allocUnsafe(remaining.length + want);
          remaining.copy(grown, 0);
          work = grown;
        } else {
          remaining.copy(work, 0); // Buffer#copy allows the overlap
        }
        const read = fs.readSync(fd, work, remaining.length, want, bufStart + buf.length);
        bufStart += at;
        buf = work.subarray(0, remaining.length + read);
        at = 0;
        if (read === 0) return { badAt: bufStart, reason: 'unexpected end of file', scanned };
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Appends frames after rolling to a new segment if the active one is full. Does not fsync. */
  async function append(frames: Buffer[], totalBytes: number): Promise<number> {
    if (undoOwed) reopenActive(); // a failed undo is retried before anything lands after its garbage
    if (active().size > 0 && active().size + totalBytes > opts.segmentBytes) roll();
    const seg = active();
    const position = seg.base + seg.size;
    const data = frames.length === 1 ? frames[0]! : Buffer.concat(frames, totalBytes);
    const written = await new Promise<number>((resolve, reject) =>
      fs.write(writeFd, data, 0, data.length, null, (err, n) => (err ? reject(err) : resolve(n))),
    );
    seg.size += written;
    if (written !== data.length) throw Object.assign(new Error(`short write: ${written} of ${data.length} bytes`), { code: 'EIO' });
    return position;
  }

  function roll(): void {
    if (opts.durable) fs.fdatasyncSync(writeFd);
    fs.closeSync(writeFd);
    segments.push(createSegment(end()));
    writeFd = fs.openSync(active().file, 'a');
  }

  function sync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(writeFd, (err) => (err ? reject(err) : resolve())));
  }

  /**
   * Undoes a failed append: cuts the active segment back and reopens it so a bad descriptor is not reused.
   * If the reopen or the cut fails (the disk is still failing) it throws and stays owed: the next
   * `append` retries it first, so new records never land after the failed group's bytes, and a
   * segment file that was replaced meanwhile (operator repair) is the one written.
   */
  function truncate(to: number): void {
    const seg = active();
    if (to < seg.base) throw new Error(`cannot truncate into an older segment (${to} < ${seg.base})`);
    seg.size = to - seg.base;
    undoOwed = true;
    reopenActive();
  }

  function reopenActive(): void {
    if (writeFd >= 0) {
      try {
        fs.closeSync(writeFd);
      } catch {
        // Already unusable; reopening below is what matters.
      }
      writeFd = -1; // never write through (or close) a descriptor number the process may have reused
    }
    writeFd = fs.openSync(active().file, 'a');
    fs.ftruncateSync(writeFd, active().size);
    undoOwed = false;
  }

  function sameSegment(a: number, b: number): boolean {
    return segmentAt(a) === segmentAt(b);
  }

  /** Reads one record's bytes. Synchronous: the records are recent and in the page cache. */
  function read(position: number, length: number): Buffer {
    const seg = segmentAt(position);
    if (seg.readFd === undefined) seg.readFd = fs.openSync(seg.file, 'r');
    const buf = Buffer.allocUnsafe(length);
    const n = fs.readSync(seg.readFd, buf, 0, length, position - seg.base);
    if (n !== length) throw new Error(`log read past end at ${position}`);
    return buf;
  }

  function close(): void {
    try {
      if (opts.durable && writeFd >= 0) fs.fdatasyncSync(writeFd);
    } finally {
      if (writeFd >= 0) fs.closeSync(writeFd);
      writeFd = -1;
      for (const seg of segments) {
        if (seg.readFd !== undefined) fs.closeSync(seg.readFd);
        seg.readFd = undefined;
      }
    }
  }

  return {
    end,
    scan,
    append,
    sync,
    truncate,
    read,
    sameSegment,
    close,
    activeSegmentBase: () => active().base,
    segmentFiles: () => segments.map((s) => s.file),
  };
}

export type SegmentLog = ReturnType<typeof openSegmentLog>;

/** fsync through a read-only descriptor: enough on Linux for files and directory entries alike. */
function fsyncPath(target: string): void {
  const fd = fs.openSync(target, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
