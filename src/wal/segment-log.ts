import fs from 'node:fs';
import path from 'node:path';
import { aboutFile, fsyncPath, makeDirs, writeFileAtomically } from '../durable-fs';
import { isKnownGap } from './log-holes';
import { AppError, StartupError } from '../errors';
import { HERALD_VERSION } from '../version';
import { randomBytes } from 'node:crypto';
import {
  FRAME_HEADER_BYTES,
  LEGACY_FRAME_KEY,
  MAX_RECORD_BYTES,
  MIN_FRAME_BYTES,
  checkFrame,
  encodePadding,
  frameKey,
  type FrameKey,
} from './record';

const SEGMENT_SUFFIX = '.seg';
/** The log's checksum key file in its directory. */
export const KEY_FILE = 'frame.key';
/** A segment file's name: the global byte position of its first record, 20 digits. */
export const SEGMENT_FILE = /^\d{20}\.seg$/;
/**
 * Bytes of records the check of `frame.key` walks at most (newest segment first) to tell a foreign key
 * from damage: a start never reads more for it. Large enough for several damaged records of the
 * largest bodies HERALD_MAX_BODY_BYTES commonly allows before an intact one.
 */
const KEY_CHECK_TOTAL_BYTES = 64 * 1024 * 1024;
/** The version byte of a keyed (version-2) record. */
const KEYED_VERSION = 2;
/**
 * Bytes the search for the next intact record after damage may checksum. Data inside a damaged
 * record can make many positions look like plausible lengths; past this the damage cannot be
 * classified cheaply and start-up refuses (or, with skip-corrupt, sets the segment's rest aside).
 */
export const RESYNC_BUDGET_BYTES = 256 * 1024 * 1024;
const SCAN_CHUNK_BYTES = 8 * 1024 * 1024;
/** The file a write probe writes, syncs and deletes beside the segments (never a segment name). */
const PROBE_FILE = '.write-probe';
const PROBE_BYTES = 64 * 1024;
/** A probe asks for room for the write refused, up to this much (and half the file system): see `probeWrite`. */
const PROBE_NEED_MAX_BYTES = 16 * 1024 * 1024;

export interface SegmentLogOptions {
  dir: string;
  segmentBytes: number;
  /** Whether rolled segments and new directory entries are fsynced (false for `HERALD_FSYNC=never`). */
  durable: boolean;
  warn: (msg: string, fields?: Record<string, unknown>) => void;
  /** Damage that loses or sets aside bytes; defaults to `warn`. */
  error?: (msg: string, fields?: Record<string, unknown>) => void;
}

/** What recovery may do beyond cutting a torn tail (`HERALD_RECOVERY`). */
export interface ScanPolicy {
  /** Set unreadable bytes in the middle of the log aside (copied to a side file) and keep what follows. */
  skipCorrupt: boolean;
  /**
   * Where earlier starts set bytes aside (`from` → `to`, see log-holes.ts): a segment ending short of
   * the next one there is already handled, so not rescanned nor reported again.
   */
  knownHoles?: ReadonlyMap<number, number | undefined>;
}

/** Global position range `[from, to)` that holds no readable record any more. */
export interface LostRange {
  from: number;
  to: number;
  reason: string;
}

export interface ScanResult {
  /** Global position just past the last intact record. */
  end: number;
  /** Bytes of torn or corrupt tail that were cut off. */
  truncatedBytes: number;
  scannedBytes: number;
  /** Ranges set aside or missing in the middle of the log (records the index may still point into). */
  lost: LostRange[];
}

/** The search after damage ran out of its checksum budget (hostile or pathological bytes). */
export class ResyncBudgetExceeded extends Error {}

/**
 * Intact records follow unreadable bytes: the damage is not a torn tail, and
 * cutting there would delete acknowledged events. Start-up refuses unless the
 * operator allows `skip-corrupt`.
 */
export class CorruptLogError extends StartupError {
  override name = 'CorruptLogError';
  constructor(
    readonly segment: string,
    readonly position: number,
    readonly reason: string,
    readonly validAfter: number,
  ) {
    super(
      `the log is corrupt in the middle: ${segment} at byte ${position} (${reason}), and ${validAfter} intact record(s) follow; ` +
        'nothing was changed. Restore the data dir from a backup, or start with HERALD_RECOVERY=skip-corrupt to set the unreadable bytes aside and keep the records after them.',
    );
  }
}

/** A segment ends short of the next one's base under a durable fsync mode (see `scan`). */
function missingBytes(seg: { file: string; base: number; size: number }, next: { file: string; base: number }): StartupError {
  const missing = next.base - seg.base - seg.size;
  return new StartupError(
    `the log is missing ${missing} bytes: ${seg.file} ends at log byte ${seg.base + seg.size} and the next segment, ${path.basename(next.file)}, ` +
      `starts at ${next.base} (a segment file lost or cut short). Under HERALD_FSYNC=always or interval a segment is synced before the next ` +
      'begins, so a power cut does not do this; nothing was changed. Restore the missing segment (or the data dir) from a backup. ' +
      'If the data dir ran with HERALD_FSYNC=never before a crash, start once with HERALD_FSYNC=never; HERALD_RECOVERY=skip-corrupt goes on without those bytes.',
  );
}

/**
 * A segment that starts inside the one before it (a file renamed or copied into wal/) would have the
 * bytes of both read as one log: refused, nothing changed, whatever HERALD_RECOVERY allows.
 */
function refuseOverlaps(segments: readonly { file: string; base: number; size: number }[]): void {
  for (let i = 1; i < segments.length; i++) {
    const before = segments[i - 1]!;
    const seg = segments[i]!;
    if (before.base + before.size <= seg.base) continue;
    const past = before.base + before.size - seg.base;
    throw new StartupError(
      `${path.basename(seg.file)} starts at log byte ${seg.base}, inside ${path.basename(before.file)}, which runs to ${before.base + before.size}: ` +
        `segments overlap; nothing was changed. Either ${path.basename(before.file)} holds ${past} bytes past where the next segment begins ` +
        `(written to it by another process: cut it to ${seg.base - before.base} bytes), or a file was renamed or copied into wal/ (remove the ` +
        'segment that does not belong). Keep a copy of both first, or restore the data dir from a backup.',
    );
  }
}

interface Segment extends ReadableSegment {
  size: number;
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
  makeDirs(opts.dir);
  // A new wal/ directory must itself survive a power cut: sync the entry in its parent.
  if (created && opts.durable) fsyncPath(path.dirname(opts.dir));
  const segments: Segment[] = fs
    .readdirSync(opts.dir)
    .filter((f) => SEGMENT_FILE.test(f))
    .sort()
    .map((f) => {
      const file = path.join(opts.dir, f);
      return { base: Number(f.slice(0, 20)), file, size: fs.statSync(file).size };
    });
  refuseOverlaps(segments);
  /** Whether `loadKey` made the key now (a new log, or one of version-1 records alone): its id is new too. */
  let keyMade = false;
  const key = loadKey();
  if (segments.length === 0) segments.push(createSegment(0));
  let writeFd = fs.openSync(active().file, 'a');
  /** The read descriptors of this log's own reads (lookups, pages, live tails), at most {@link MAX_READ_FDS}. */
  const readFds = new ReadFds();
  /** Segments whose first record is version 1 (written before the key): only there may a search accept such a frame. */
  const legacySegments = new Map<Segment, boolean>();

  /**
   * The log's secret checksum key (`wal/frame.key`), made with a new log. A log written before keys
   * existed (version-1 records) gets one now and keeps being read. A keyed log without its key could
   * not be verified: refused.
   */
  function loadKey(): FrameKey {
    const file = path.join(opts.dir, KEY_FILE);
    if (fs.existsSync(file)) {
      const hex = fs.readFileSync(file, 'utf8').trim();
      if (!/^[0-9a-f]{32}$/.test(hex))
        throw new StartupError(`${file} is damaged; restore it from a backup of the data dir (the log cannot be verified without it)`);
      const key = frameKey(Buffer.from(hex, 'hex'));
      // Another log's key (a restore that mixed data dirs) verifies nothing: recovery would take the
      // whole log for a torn tail. Damaged records are fine: the records after them verify.
      if (keyEvidence(key) === 'foreign') {
        throw new StartupError(
          `${file} verifies none of the log's records it was tried on: it is not this log's key; nothing was changed. ` +
            "Restore this data dir's frame.key (or the whole data dir) from a backup.",
        );
      }
      return key;
    }
    const first = segments.find((seg) => seg.size > 0);
    // Only a log of version-1 records alone gets a key now: one keyed record anywhere means it had one.
    if (first && (!startsWithLegacyFrame(first) || keyEvidence(undefined) === 'foreign')) {
      throw new StartupError(`${file} is missing, and the log's records need it to be verified; restore it from a backup of the data dir`);
    }
    const secret = randomBytes(16);
    writeFileAtomically(file, `${secret.toString('hex')}\n`, 0o600);
    keyMade = true;
    return frameKey(secret);
  }

  /**
   * What the frames of the log's segments (newest segment first, walked by their length fields,
   * {@link KEY_CHECK_TOTAL_BYTES} in all at most) say about `key`: 'fits' when one verifies under
   * it; 'foreign' when two or more keyed frames (version byte 2, not legacy) do not and none of those
   * walked does; else 'unknown' (legacy frames, zeros and cut-short frames are no evidence). Damage
   * leaves other frames verifying, so the walk goes on past failures (two damaged records first in a
   * segment are not a foreign key); a foreign key verifies none. Without a key (`undefined`), a keyed
   * frame found is 'foreign' at once: the log had a key.
   */
  function keyEvidence(key: FrameKey | undefined): 'fits' | 'foreign' | 'unknown' {
    let failures = 0;
    let budget = KEY_CHECK_TOTAL_BYTES;
    for (const seg of [...segments].reverse()) {
      // One descriptor per segment: the walk may read many small records (up to the whole budget).
      const fd = fs.openSync(seg.file, 'r');
      try {
        for (let at = 0; at + FRAME_HEADER_BYTES <= seg.size && budget > 0;) {
          const bodyLength = readAt(seg, at, FRAME_HEADER_BYTES, fd).readUInt32LE(0);
          const length = FRAME_HEADER_BYTES + bodyLength;
          if (bodyLength < 1 || bodyLength > MAX_RECORD_BYTES || at + length > seg.size) break;
          const frame = readAt(seg, at, length, fd);
          at += length;
          budget -= length;
          if (checkFrame(frame, 0, LEGACY_FRAME_KEY).status === 'ok') continue; // unkeyed: says nothing of the key
          if (key) {
            const status = checkFrame(frame, 0, key, false).status;
            if (status === 'ok' || status === 'newer') return 'fits';
          }
          if (frame.readUInt8(FRAME_HEADER_BYTES) !== KEYED_VERSION) continue; // damage, not a keyed frame
          if (!key) return 'foreign';
          failures++;
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    return failures >= 2 ? 'foreign' : 'unknown';
  }

  /** Up to `length` bytes of a segment from `at` (fewer at its end), outside the scan's buffers; through `open` when given. */
  function readAt(seg: Segment, at: number, length: number, open?: number): Buffer {
    const fd = open ?? fs.openSync(seg.file, 'r');
    try {
      const buf = Buffer.allocUnsafe(length);
      return buf.subarray(
        0,
        aboutFile(seg.file, () => fs.readSync(fd, buf, 0, length, at)),
      );
    } finally {
      if (open === undefined) fs.closeSync(fd);
    }
  }

  function isLegacySegment(seg: Segment): boolean {
    let legacy = legacySegments.get(seg);
    if (legacy === undefined) {
      legacy = startsWithLegacyFrame(seg);
      legacySegments.set(seg, legacy);
    }
    return legacy;
  }
  /** A failed append's bytes may still be in the active segment: cut them before the next write. */
  let undoOwed = false;
  /**
   * Set once the active segment was found removed, replaced or cut short under the log (see
   * `checkActive`): sticky, every later write, sync, undo and roll throws it, and nothing re-creates
   * or zero-fills the file to carry on (that would hide the loss and serve zeros as the log).
   */
  let damage: SegmentDamagedError | undefined;
  /** A roll synced the old segment and may have made the next one's file: it must finish before any write. */
  let rollBegun = false;

  function active(): Segment {
    return segments[segments.length - 1]!;
  }

  function createSegment(base: number): Segment {
    const file = segmentFile(opts.dir, base);
    fs.closeSync(fs.openSync(file, 'a'));
    if (opts.durable) fsyncPath(opts.dir);
    return { base, file, size: fs.statSync(file).size };
  }

  function segmentAt(position: number): Segment {
    return segments[holding(segments, position)]!;
  }

  function end(): number {
    const last = active();
    return last.base + last.size;
  }

  /**
   * Checks every record from `from` (a record boundary) to the end, calling
   * `onRecord` for each intact event record (padding frames are skipped). The
   * frame is a view into a reused buffer: copy it to keep it.
   *
   * Damage is told apart by what follows it. Nothing intact after the bad
   * bytes is a torn tail: it is cut (later segments holding only garbage are
   * renamed `.corrupt-…`, never deleted). Intact records after it is
   * corruption in the middle: {@link CorruptLogError}, unless `policy.skipCorrupt`,
   * which copies the unreadable bytes to a side file, covers them with a padding
   * frame (or cuts them at a segment's end), and goes on. A record that passes
   * its checksum is never removed.
   */
  function scan(
    from: number,
    onRecord: (position: number, frame: Buffer) => void,
    policy: ScanPolicy = { skipCorrupt: false },
  ): ScanResult {
    let scannedBytes = 0;
    const lost: LostRange[] = [];
    let index = segments.indexOf(segmentAt(from));
    let startInFile = Math.max(0, from - segments[index]!.base);
    // An older segment ending short of the next one's base lost its unsynced tail (fsync=never: rolls are
    // not synced), possibly mid-record: scanning starts no later than that segment.
    const short = segments.findIndex(
      (s, i) =>
        i + 1 < segments.length &&
        s.base + s.size !== segments[i + 1]!.base &&
        !isKnownGap(policy.knownHoles, s.base + s.size, segments[i + 1]!.base),
    );
    if (short !== -1 && short < index) {
      index = short;
      startInFile = 0;
    }
    while (index < segments.length) {
      const seg = segments[index]!;
      const result = scanSegmentFile(seg, startInFile, key, onRecord);
      scannedBytes += result.scanned;
      if (result.badAt === undefined) {
        const next = segments[index + 1];
        if (next !== undefined && seg.base + seg.size < next.base && !isKnownGap(policy.knownHoles, seg.base + seg.size, next.base)) {
          // A segment is synced before the next one begins (fsync always/interval): a power cut cannot leave
          // it short. Bytes missing there were cut or a file lost: refused while a backup can still give them.
          if (opts.durable && !policy.skipCorrupt) throw missingBytes(seg, next);
          const range = { from: seg.base + seg.size, to: next.base, reason: 'segment ends short of the next one (unsynced tail lost)' };
          logError('log: a segment lost its tail; the records that were there are gone', { segment: seg.file, ...range });
          lost.push(range);
        }
        index++;
        startInFile = 0;
        continue;
      }
      let resume: { index: number; inFile: number } | undefined;
      try {
        resume = nextIntactFrame(index, result.badAt, { bytes: RESYNC_BUDGET_BYTES });
      } catch (err) {
        if (!(err instanceof ResyncBudgetExceeded)) throw err;
        if (result.torn && index === segments.length - 1) {
          // A record cut short at the end of the log whose own bytes look like many lengths (event data can):
          // a torn tail. Its bytes are copied aside before the cut, so nothing is destroyed either way.
          const truncatedBytes = cutTail(index, result.badAt, result.reason);
          return { end: end(), truncatedBytes, scannedBytes, lost };
        }
        if (!policy.skipCorrupt) {
          throw new StartupError(
            `the log is damaged in ${seg.file} at byte ${result.badAt} (${result.reason}), and what follows could not be classified within ${RESYNC_BUDGET_BYTES} bytes of checksums; nothing was changed. ` +
              'Start with HERALD_RECOVERY=skip-corrupt to set the rest of that segment aside (copied to a side file) and keep later segments.',
          );
        }
        // Whatever follows in this segment is set aside whole (copied first); later segments are scanned as they are.
        resume = { index: index + 1, inFile: 0 };
        if (index + 1 >= segments.length) {
          const truncatedBytes = cutTail(index, result.badAt, result.reason);
          return { end: end(), truncatedBytes, scannedBytes, lost };
        }
      }
      if (resume === undefined) {
        const truncatedBytes = cutTail(index, result.badAt, result.reason);
        return { end: end(), truncatedBytes, scannedBytes, lost };
      }
      if (!policy.skipCorrupt) throw new CorruptLogError(seg.file, result.badAt, result.reason, countIntact(resume));
      lost.push(setAside(index, result.badAt, resume, result.reason));
      index = resume.index;
      startInFile = resume.inFile;
    }
    return { end: end(), truncatedBytes: 0, scannedBytes, lost };
  }

  function logError(msg: string, fields: Record<string, unknown>): void {
    (opts.error ?? opts.warn)(msg, fields);
  }

  /** Cuts a torn tail at `badAt` of segment `index`; later segments (garbage only) are set aside whole. */
  function cutTail(index: number, badAt: number, reason: string): number {
    const seg = segments[index]!;
    const truncatedBytes = seg.size - badAt + segments.slice(index + 1).reduce((n, s) => n + s.size, 0);
    opts.warn('log: cutting torn tail', { segment: seg.file, at: badAt, reason, truncatedBytes });
    // Copied aside first, whatever it holds: a cut is never the only copy of bytes (a wrong key or a
    // kind of damage not foreseen would otherwise destroy records for good).
    if (seg.size > badAt) copyAside(seg, badAt, seg.size);
    aboutFile(seg.file, () => fs.truncateSync(seg.file, badAt));
    seg.size = badAt;
    for (const later of segments.splice(index + 1)) {
      if (later.size === 0) fs.rmSync(later.file);
      else fs.renameSync(later.file, `${later.file}.corrupt-${Date.now()}`);
    }
    if (opts.durable) {
      fsyncPath(seg.file);
      fsyncPath(opts.dir);
    }
    fs.closeSync(writeFd);
    writeFd = -1; // as in roll(): a failed open below leaves no stale descriptor number behind
    writeFd = fs.openSync(active().file, 'a');
    return truncatedBytes;
  }

  /**
   * Sets the unreadable bytes from `badAt` in segment `index` up to `resume` aside: copied to
   * `<segment>.corrupt-<byte>` first, then covered with a padding frame (inside a segment) or cut
   * (at a segment's end, leaving a hole in the positions). Segments wholly inside are renamed.
   */
  function setAside(index: number, badAt: number, resume: { index: number; inFile: number }, reason: string): LostRange {
    const seg = segments[index]!;
    const range = { from: seg.base + badAt, to: segments[resume.index]!.base + resume.inFile, reason };
    if (resume.index === index) {
      padOver(seg, badAt, resume.inFile);
    } else {
      copyAside(seg, badAt, seg.size);
      aboutFile(seg.file, () => fs.truncateSync(seg.file, badAt));
      seg.size = badAt;
      if (opts.durable) fsyncPath(seg.file);
      for (const inside of segments.splice(index + 1, resume.index - index - 1)) {
        fs.renameSync(inside.file, `${inside.file}.corrupt-${Date.now()}`);
      }
      const target = segments[index + 1]!;
      if (resume.inFile > 0) padOver(target, 0, resume.inFile);
      resume.index = index + 1;
    }
    logError('log: set unreadable bytes aside (HERALD_RECOVERY=skip-corrupt); the records after them are kept', {
      segment: seg.file,
      at: badAt,
      bytes: range.to - range.from,
      reason,
    });
    return range;
  }

  function padOver(seg: Segment, from: number, to: number): void {
    if (to - from < MIN_FRAME_BYTES) {
      throw new CorruptLogError(seg.file, from, `only ${to - from} unreadable bytes before the next record: too few to set aside`, 1);
    }
    copyAside(seg, from, to);
    const fd = fs.openSync(seg.file, 'r+');
    try {
      fs.writeSync(fd, encodePadding(to - from, key), 0, to - from, from);
      if (opts.durable) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  function copyAside(seg: Segment, from: number, to: number): void {
    // Never over an earlier side file: a second incident at the same byte must not destroy the first copy.
    let side = `${seg.file}.corrupt-${from}`;
    for (let n = 1; fs.existsSync(side); n++) side = `${seg.file}.corrupt-${from}.${n}`;
    const src = fs.openSync(seg.file, 'r');
    const dst = fs.openSync(side, 'wx');
    try {
      const chunk = Buffer.allocUnsafe(Math.min(SCAN_CHUNK_BYTES, Math.max(1, to - from)));
      for (let at = from; at < to;) {
        const n = fs.readSync(src, chunk, 0, Math.min(chunk.length, to - at), at);
        if (n === 0) break;
        fs.writeSync(dst, chunk, 0, n);
        at += n;
      }
      fs.fsyncSync(dst);
    } finally {
      fs.closeSync(src);
      fs.closeSync(dst);
    }
    if (opts.durable) fsyncPath(opts.dir);
  }

  /**
   * The first intact frame after the damage at `badAt` of segment `index`, or in any later segment.
   * A record whose body was damaged still has its length: the frame right after it is tried first,
   * so the common case (a flipped bit) costs one checksum, not a search through the damaged record.
   */
  function nextIntactFrame(index: number, badAt: number, budget: { bytes: number }): { index: number; inFile: number } | undefined {
    const seg = segments[index]!;
    const claimedEnd = claimedFrameEnd(seg, badAt);
    if (claimedEnd !== undefined && findIntactFrame(seg, claimedEnd, key, isLegacySegment(seg), budget, claimedEnd) !== undefined)
      return { index, inFile: claimedEnd };
    for (let i = index; i < segments.length; i++) {
      const found = findIntactFrame(segments[i]!, i === index ? badAt + 1 : 0, key, isLegacySegment(segments[i]!), budget);
      if (found !== undefined) return { index: i, inFile: found };
    }
    return undefined;
  }

  /** Where the damaged frame at `at` says it ends, when that is inside the segment. */
  function claimedFrameEnd(seg: Segment, at: number): number | undefined {
    const length = readAt(seg, at, 4);
    if (length.length < 4) return undefined;
    const end = at + FRAME_HEADER_BYTES + length.readUInt32LE(0);
    return end + MIN_FRAME_BYTES <= seg.size ? end : undefined;
  }

  /** How many intact records follow `from`, up to the next damage (for the refusal message). */
  function countIntact(from: { index: number; inFile: number }): number {
    let count = 0;
    for (let i = from.index; i < segments.length; i++) {
      const result = scanSegmentFile(segments[i]!, i === from.index ? from.inFile : 0, key, () => count++);
      if (result.badAt !== undefined) break;
    }
    return count;
  }

  /** Appends frames after rolling to a new segment if the active one is full. Does not fsync. */
  async function append(frames: Buffer[], totalBytes: number): Promise<number> {
    // Nothing more is written to a segment found removed, moved or cut short (see `checkActive`).
    if (damage) throw damage;
    // A roll that began is finished first: the next segment's file may exist, named by the old one's end.
    if (rollBegun) roll();
    // A failed undo is retried before anything lands after its garbage; a failed open left no descriptor.
    else if (undoOwed || writeFd < 0) reopenActive();
    if (active().size > 0 && active().size + totalBytes > opts.segmentBytes) roll();
    const seg = active();
    const position = seg.base + seg.size;
    const data = frames.length === 1 ? frames[0]! : Buffer.concat(frames, totalBytes);
    const written = await new Promise<number>((resolve, reject) =>
      fs.write(writeFd, data, 0, data.length, null, (err, n) => (err ? reject(err) : resolve(n))),
    );
    seg.size += written;
    // One fstat and one stat per group: the group is acknowledged only if its bytes are in the file at its path.
    checkActive(written);
    // A file system writes less than asked when it has no room left (a quota, a full disk): what the next write would say.
    if (written !== data.length)
      throw Object.assign(new Error(`ENOSPC: short write: ${written} of ${data.length} bytes (no space left?)`), { code: 'ENOSPC' });
    return position;
  }

  /**
   * Starts a new segment (not while an append is in flight: the group commit calls it between groups).
   * Once the old segment is synced the roll has begun: from then on nothing is written to the old
   * segment, since the next one's file may already exist (made, then its directory fsync failed), named
   * by the old end; a failed roll is finished by the next `roll` or `append` before anything is written.
   */
  function roll(): void {
    if (damage) throw damage;
    // The cut of a failed group comes first: a segment never starts in front of the garbage of the one before.
    if (undoOwed) reopenActive();
    if (!rollBegun) {
      if (active().size === 0) return;
      // A segment removed or cut short is not sealed and followed by a new one (the next start would take the gap for the last word).
      checkActive(0);
      if (opts.durable) fs.fdatasyncSync(writeFd);
      rollBegun = true;
    }
    if (writeFd >= 0) {
      const fd = writeFd;
      // Should the next segment not be made (disk full, no descriptors), nothing may write through or close this
      // number later: the process may have reused it for another file (SQLite's).
      writeFd = -1;
      fs.closeSync(fd);
    }
    segments.push(createSegment(end()));
    rollBegun = false;
    writeFd = fs.openSync(active().file, 'a'); // a failed open: the next append opens the new segment
  }

  /**
   * Whether the active segment is still the file at its path, linked, holding every byte this log
   * wrote to it (`justWritten` of them by the write just made). Removed (`rm`), renamed away (`mv`),
   * replaced or cut short (`truncate`) while the gateway runs, writes through the open descriptor
   * still succeed (to an unlinked file, or at the front of an emptied one): the damage is recorded
   * (sticky, see `damage`), one `error` line names the file and what was found, and it throws, so the
   * group fails (`503`) and `/readyz` names the file. The bytes just written are cut from the file
   * the descriptor holds, never past them: an emptied segment does not keep a record nobody was
   * told was stored, at a position it does not belong.
   */
  function checkActive(justWritten: number): void {
    if (damage) throw damage;
    if (writeFd < 0) return;
    const seg = active();
    const held = fs.fstatSync(writeFd);
    let found: string | undefined;
    /** Bytes another process wrote after the log's (appended to it): nothing acknowledged is missing then. */
    let grownBy = 0;
    if (held.nlink === 0) found = 'it was removed (the open file has no name left)';
    else {
      const atPath = statOrUndefined(seg.file);
      // The whole of wal/ out of reach (moved away, a link whose target is gone, no permission): the log's own
      // file is still whole and linked, appends go on as before, and reads answer 503 until it is back (see
      // the data dir's check in local-event-store.ts). Only a segment gone from a wal/ still there is damage.
      if (!atPath && held.size === seg.size && !walReachable(seg.file)) return;
      if (!atPath) found = 'no file is at its path any more (renamed or moved away)';
      else if (atPath.dev !== held.dev || atPath.ino !== held.ino) found = 'another file is at its path (replaced, or renamed away)';
      else if (held.size !== seg.size) {
        found = `it holds ${held.size} bytes where ${seg.size} were written (cut short, or written by another process)`;
        grownBy = Math.max(0, held.size - seg.size);
      }
    }
    if (found === undefined) return;
    const heldBefore = Math.max(0, held.size - justWritten);
    try {
      if (justWritten > 0 && held.nlink > 0) fs.ftruncateSync(writeFd, heldBefore);
    } catch {
      // The write is refused either way; a file that cannot be cut keeps it (the next start checks every record).
    }
    damage = new SegmentDamagedError(seg.file, found);
    const acknowledged = seg.size - justWritten;
    logError(
      'log: the active segment was removed, replaced or cut short while the gateway ran; the log takes no more writes until a restart',
      {
        segment: seg.file,
        found,
        acknowledgedBytes: acknowledged,
        logBytes: { from: seg.base, to: seg.base + acknowledged },
        lost:
          grownBy > 0
            ? `nothing acknowledged: another process wrote ${grownBy} bytes after the ${acknowledged} of acknowledged events, which are still there`
            : held.nlink === 0
              ? `the ${acknowledged} bytes of acknowledged events written to it are only in the removed file, open in this process: ` +
                `copy them now from /proc/${process.pid}/fd/${writeFd} (they are gone once it exits), or restore the data dir from a backup`
              : `the ${acknowledged} bytes of acknowledged events written to it are not in the file at its path: put the file back, or restore the data dir from a backup`,
        nextStart:
          grownBy > 0
            ? 'sets the bytes past the last whole record aside as a torn tail and starts (find what wrote them first)'
            : 'refuses while acknowledged events are missing from the log (nothing fills the gap with zeros), naming what is missing',
      },
    );
    throw damage;
  }

  function sync(): Promise<void> {
    if (damage) return Promise.reject(damage);
    return new Promise((resolve, reject) => fs.fdatasync(writeFd, (err) => (err ? reject(err) : resolve())));
  }

  /** Syncs the active segment now (at start: bytes a run under another fsync mode left unsynced). */
  function syncNow(): void {
    if (writeFd >= 0) fs.fdatasyncSync(writeFd);
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
    // A damaged segment is not reopened: `checkActive` cut the group it refused (one error line, not one per group).
    if (damage) return;
    undoOwed = true;
    reopenActive();
  }

  function reopenActive(): void {
    // Never re-create a removed segment nor fill a cut one back up with zeros: the loss stays visible.
    if (damage) throw damage;
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

  /**
   * Finishes the cut of a failed append if it is still owed. Whether the active segment now ends at its
   * last good record: only then may a stop be recorded as clean (heads exact, nothing written past them).
   */
  function finishUndo(): boolean {
    if (undoOwed) {
      try {
        reopenActive();
      } catch {
        // Still owed: the next start finds what is past the last good record and treats the stop as unclean.
      }
    }
    return !undoOwed && !damage;
  }

  /**
   * Writes, syncs and deletes a small file beside the segments: throws what the file system says if it
   * cannot, or when it has less room than `needBytes` (a refused write's size) and the probe together.
   */
  async function probeWrite(needBytes = 0): Promise<void> {
    const { bavail, bsize, blocks } = await fs.promises.statfs(opts.dir);
    // A refused group joins many requests and can be larger than the file system: room for it all never came,
    // and /readyz stayed 503 for good once space was freed (disk probe). Its retry comes a request at a time.
    const need = Math.min(needBytes, PROBE_NEED_MAX_BYTES, Math.floor((blocks * bsize) / 2));
    if (bavail * bsize < need + PROBE_BYTES) {
      throw Object.assign(new Error(`ENOSPC: ${bavail * bsize} bytes free, less than the ${need} refused`), { code: 'ENOSPC' });
    }
    const file = path.join(opts.dir, PROBE_FILE);
    try {
      const handle = await fs.promises.open(file, 'w');
      try {
        const { bytesWritten } = await handle.write(Buffer.alloc(PROBE_BYTES));
        if (bytesWritten !== PROBE_BYTES) throw Object.assign(new Error('ENOSPC: short write (no space left?)'), { code: 'ENOSPC' });
        await handle.datasync();
      } finally {
        await handle.close();
      }
    } finally {
      await fs.promises.rm(file, { force: true }).catch(() => undefined);
    }
  }

  function sameSegment(a: number, b: number): boolean {
    return segmentAt(a) === segmentAt(b);
  }

  /**
   * Writes bytes already in the log again at their position, through a descriptor of their own (the
   * write descriptor appends), and syncs them. For fsync=interval after a failed fsync: Linux may have
   * dropped those dirty pages, and a later fsync that succeeds does not bring them back. A segment
   * retention deleted meanwhile is skipped: nothing in it is read again.
   */
  function rewrite(position: number, data: Buffer): void {
    if (damage) throw damage;
    if (segments.length === 0 || position < segments[0]!.base) return;
    const seg = segmentAt(position);
    const fd = fs.openSync(seg.file, 'r+');
    try {
      for (let done = 0; done < data.length;) done += fs.writeSync(fd, data, done, data.length - done, position - seg.base + done);
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Reads one record's bytes. Synchronous: the records are recent and in the page cache. */
  function read(position: number, length: number): Buffer {
    return readRecordBytes(segmentAt(position), position, length, readFds);
  }

  function close(): void {
    try {
      if (opts.durable && writeFd >= 0) fs.fdatasyncSync(writeFd);
    } finally {
      if (writeFd >= 0) fs.closeSync(writeFd);
      writeFd = -1;
      for (const seg of segments) readFds.close(seg);
    }
  }

  /**
   * Retention: takes every segment before the one that starts at `through` out of the log (never the
   * active one) and deletes its file. Readers never ask for those records any more (the first offsets
   * moved first). While running (`background`) the unlink of a whole segment and the directory's fsync
   * run on the thread pool, not the ingest loop: measured, doing them inline stalled ingest (p99 × 1.6
   * while retention deleted). A crash before the files are gone leaves them below `log_start`, and the
   * next start deletes them (synchronously, before anything reads the log).
   */
  function dropBefore(through: number, { background = false } = {}): { segments: number; bytes: number } {
    const files: string[] = [];
    let bytes = 0;
    while (segments.length > 1 && segments[1]!.base <= through) {
      const seg = segments.shift()!;
      readFds.close(seg);
      legacySegments.delete(seg);
      files.push(seg.file);
      bytes += seg.size;
    }
    if (files.length === 0) return { segments: 0, bytes };
    if (background) {
      unlinking = unlinking.then(() => unlinkInBackground(files));
    } else {
      for (const file of files) fs.rmSync(file, { force: true });
      if (opts.durable) fsyncPath(opts.dir);
    }
    return { segments: files.length, bytes };
  }

  /** The background deletions, in order; never rejects. */
  let unlinking: Promise<void> = Promise.resolve();

  async function unlinkInBackground(files: string[]): Promise<void> {
    try {
      for (const file of files) await fs.promises.rm(file, { force: true });
      if (!opts.durable) return;
      const dir = await fs.promises.open(opts.dir, 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    } catch (err) {
      opts.warn('deleting a retired segment failed; the next start deletes it', { err: (err as Error).message, files });
    }
  }

  return {
    /** Whether the key was made at this start (a new log, or one of version-1 records alone). */
    keyMade,
    end,
    scan,
    append,
    sync,
    syncNow,
    rewrite,
    truncate,
    finishUndo,
    probeWrite,
    roll,
    dropBefore,
    /** Resolves when every file `dropBefore` handed to the background so far is deleted (or failed and logged). */
    unlinked: (): Promise<void> => unlinking,
    /** Every segment, oldest first (the last is the active one). */
    list: (): { base: number; size: number; file: string }[] => segments.map((s) => ({ base: s.base, size: s.size, file: s.file })),
    /** Base position of the segment holding `position`. */
    baseOf: (position: number) => segmentAt(position).base,
    read,
    sameSegment,
    close,
    activeSegmentBase: () => active().base,
    /** The checksum key records are written and verified with. */
    key,
    /** The segment file holding `position` and the byte within it (for error logs). */
    locate: (position: number) => {
      const seg = segmentAt(position);
      return { segment: seg.file, at: position - seg.base };
    },
    /** What was found wrong with the active segment (removed, replaced, cut short), once found: the log takes no writes. */
    damage: (): string | undefined => damage?.message,
    /** Whether any segment holds bytes (a data dir with a log but no database is a lost database). */
    hasRecords: () => segments.some((s) => s.size > 0),
    segmentFiles: () => segments.map((s) => s.file),
    sizeBytes: () => segments.reduce((n, s) => n + s.size, 0),
  };
}

export type SegmentLog = ReturnType<typeof openSegmentLog>;

/** What is at `file`'s path; undefined when nothing can be reached there (whatever the error: ENOENT, ENOTDIR, EACCES…). */
function statOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.statSync(file);
  } catch {
    return undefined;
  }
}

/** Whether the directory holding `file` can be reached at its path. */
const walReachable = (file: string): boolean => statOrUndefined(path.dirname(file))?.isDirectory() === true;

/** The active segment is no longer the file the log writes (see `checkActive`): every write fails until a restart. */
export class SegmentDamagedError extends Error {
  override name = 'SegmentDamagedError';
  readonly code = 'ESEGMENTGONE';
  constructor(
    readonly segment: string,
    readonly found: string,
  ) {
    super(`the active log segment ${segment} is no longer the file the log writes: ${found}; no write is taken until a restart`);
  }
}

/** A segment file as reads see it: where it starts, its path, and a descriptor opened on first read. */
interface ReadableSegment {
  base: number;
  file: string;
  readFd?: number;
}

/** The file of the segment that starts at log position `base`. */
function segmentFile(dir: string, base: number): string {
  return path.join(dir, `${String(base).padStart(20, '0')}${SEGMENT_SUFFIX}`);
}

/** Index of the last segment starting at or before `position` (segments sorted by base; 0 when none does). */
function holding(segments: readonly { base: number }[], position: number): number {
  let lo = 0;
  let hi = segments.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (segments[mid]!.base <= position) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Most segments a reader (the gateway's reads, the delivery thread's) keeps a read descriptor open on.
 * Each was kept until retention deleted its segment: reading a long log through (a subscription from
 * `earliest`, lookups of old events) held one per segment, and under a descriptor limit the gateway
 * ran out for good: reads of other segments `503`, delivery stuck, connections reset at accept.
 */
export const MAX_READ_FDS = 64;

/** The read descriptors a reader holds: the least recently used is closed when it would pass {@link MAX_READ_FDS}. */
export class ReadFds {
  private readonly open = new Set<ReadableSegment>();
  constructor(private readonly max = MAX_READ_FDS) {}

  /** `seg`'s descriptor, opened if need be (throws what `open` throws). Reads are synchronous, so closing another is safe. */
  of(seg: ReadableSegment): number {
    if (seg.readFd !== undefined) {
      this.open.delete(seg);
      this.open.add(seg);
      return seg.readFd;
    }
    for (const old of this.open) {
      if (this.open.size < this.max) break;
      this.close(old);
    }
    try {
      seg.readFd = fs.openSync(seg.file, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'EMFILE' && code !== 'ENFILE') || this.open.size === 0) throw err;
      // Out of descriptors (a low `ulimit -n`): give back the ones this reader caches and try once more,
      // so the process is not left holding descriptors it needs elsewhere.
      for (const old of this.open) this.close(old);
      seg.readFd = fs.openSync(seg.file, 'r');
    }
    this.open.add(seg);
    return seg.readFd;
  }

  /** Closes `seg`'s descriptor, if open (retention, close, eviction). */
  close(seg: ReadableSegment): void {
    this.open.delete(seg);
    const fd = seg.readFd;
    // Forgotten before the close, which may fail (EIO) having released it: its number may then belong to another file.
    seg.readFd = undefined;
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** One record's bytes at `position` of `seg` (its descriptor opened on first use); throws when they are not all there. */
function readRecordBytes(seg: ReadableSegment, position: number, length: number, fds: ReadFds): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let n: number;
  try {
    n = fs.readSync(fds.of(seg), buf, 0, length, position - seg.base);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EIO') throw unreadable(seg.file, err);
    // An I/O error can last a moment (syscall probe: one EIO dead-lettered an intact event as corrupt): read once
    // more, the file opened again, before its bytes are taken as bad.
    try {
      try {
        fds.close(seg);
      } catch {
        // The descriptor is released whatever close says (Linux): the read is made on a new one all the same.
      }
      n = fs.readSync(fds.of(seg), buf, 0, length, position - seg.base);
    } catch (again) {
      throw unreadable(seg.file, again);
    }
  }
  if (n !== length) throw new Error(`log read past end at ${position}`);
  return buf;
}

/**
 * Errors that say the file cannot be reached now, not that its bytes are bad: its directory gone from
 * under a link, permissions, descriptors run out, a stale network mount.
 */
const UNREACHABLE = new Set(['ENOENT', 'ENOTDIR', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE', 'ESTALE']);

/**
 * A segment file the system cannot reach now: a 503 that names it, so a read that lets it through
 * (`unreachableFails` in reads.ts) does not call its records corrupt (re-probe: `wal/`'s target renamed
 * away made a lookup answer 500 `corrupt_record`). Other errors (EIO: bad bytes) stay what they were.
 */
function unreadable(file: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string' || !UNREACHABLE.has(code)) return err;
  return new AppError('unavailable', `the log's file ${file} cannot be reached now (${code}); try again once it can`, {
    cause: err,
    retryAfter: 5,
  });
}

/**
 * Reads a segment's frames from `startInFile`, telling `onRecord` of each event record, up to its end
 * or the first bytes that are not an intact frame (`badAt`, `reason`; `torn` when they are a frame cut
 * short by the end of the file). Start-up recovery scans with it, and `herald backup` checks its copy.
 * @throws StartupError on a frame of a later format (a newer Herald wrote it)
 */
export function scanSegmentFile(
  seg: Pick<Segment, 'file' | 'size' | 'base'>,
  startInFile: number,
  key: FrameKey,
  onRecord: (position: number, frame: Buffer) => void,
): { badAt?: number; reason: string; scanned: number; torn?: boolean } {
  const fd = fs.openSync(seg.file, 'r');
  try {
    let bufStart = startInFile;
    let buf = Buffer.alloc(0);
    let work = Buffer.alloc(0);
    let at = 0;
    let scanned = 0;
    for (;;) {
      const check = checkFrame(buf, at, key);
      if (check.status === 'ok') {
        if (!check.padding) onRecord(seg.base + bufStart + at, buf.subarray(at, at + check.length));
        at += check.length;
        scanned += check.length;
        continue;
      }
      if (check.status === 'corrupt') return { badAt: bufStart + at, reason: check.reason, scanned };
      if (check.status === 'newer') throw newerFormat(seg.file, bufStart + at, check.version);
      // Incomplete: read more, or stop at end of file.
      const remaining = buf.subarray(at);
      const fileLeft = seg.size - (bufStart + buf.length);
      if (fileLeft <= 0) {
        return remaining.length === 0
          ? { reason: '', scanned }
          : { badAt: bufStart + at, reason: 'incomplete record at end of segment', scanned, torn: true };
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
      const read = aboutFile(seg.file, () => fs.readSync(fd, work, remaining.length, want, bufStart + buf.length));
      bufStart += at;
      buf = work.subarray(0, remaining.length + read);
      at = 0;
      if (read === 0) return { badAt: bufStart, reason: 'unexpected end of file', scanned };
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Tries every byte position from `start` for a frame whose checksum holds. Most positions are
 * refused by their length field alone (longer than what is left, or zero), so only plausible
 * candidates cost a checksum. Recovery searches with it after damage, and `herald backup` checks a
 * torn-looking tail with it. Unkeyed (legacy) frames count only with `allowLegacy`.
 * @throws ResyncBudgetExceeded once the checksums read pass `budget`
 */
/**
 * Whether a segment begins with an unkeyed (version-1) frame: written before its log had a key, so
 * unkeyed frames found in it, past damage, count as records (elsewhere a producer's data can hold one).
 */
export function startsWithLegacyFrame(seg: Pick<Segment, 'file' | 'size'>): boolean {
  if (seg.size < FRAME_HEADER_BYTES) return false;
  const fd = fs.openSync(seg.file, 'r');
  try {
    const header = Buffer.alloc(FRAME_HEADER_BYTES);
    if (fs.readSync(fd, header, 0, FRAME_HEADER_BYTES, 0) < FRAME_HEADER_BYTES) return false;
    const length = FRAME_HEADER_BYTES + header.readUInt32LE(0);
    if (length > seg.size) return false;
    const frame = Buffer.alloc(length);
    return fs.readSync(fd, frame, 0, length, 0) === length && checkFrame(frame, 0, LEGACY_FRAME_KEY).status === 'ok';
  } finally {
    fs.closeSync(fd);
  }
}

export function findIntactFrame(
  seg: Pick<Segment, 'file' | 'size'>,
  start: number,
  key: FrameKey,
  allowLegacy: boolean,
  budget: { bytes: number },
  last = seg.size,
): number | undefined {
  const fd = fs.openSync(seg.file, 'r');
  try {
    const window = Buffer.allocUnsafe(Math.min(SCAN_CHUNK_BYTES, Math.max(FRAME_HEADER_BYTES, seg.size)));
    let windowStart = -1;
    let windowLength = 0;
    for (let at = start; at <= last && at + MIN_FRAME_BYTES <= seg.size; at++) {
      if (at < windowStart || at + FRAME_HEADER_BYTES > windowStart + windowLength) {
        windowStart = at;
        windowLength = fs.readSync(fd, window, 0, window.length, at);
        if (windowLength < FRAME_HEADER_BYTES) return undefined;
      }
      const bodyLength = window.readUInt32LE(at - windowStart);
      if (bodyLength < 1 || at + FRAME_HEADER_BYTES + bodyLength > seg.size) continue;
      const length = FRAME_HEADER_BYTES + bodyLength;
      let frame: Buffer;
      if (at + length <= windowStart + windowLength) {
        frame = window.subarray(at - windowStart, at - windowStart + length);
      } else {
        frame = Buffer.allocUnsafe(length);
        if (fs.readSync(fd, frame, 0, length, at) !== length) continue;
      }
      budget.bytes -= length;
      if (budget.bytes < 0) throw new ResyncBudgetExceeded();
      // A newer Herald's frame after damage is found too: the scan from it then refuses the log,
      // where passing over it would have cut acknowledged events as a torn tail.
      const status = checkFrame(frame, 0, key, allowLegacy).status;
      if (status === 'ok' || status === 'newer') return at;
    }
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

/** What reads need of the segments (`reads.ts`): the writer's log, or a reader's view of it. */
export type SegmentReads = Pick<SegmentLog, 'read' | 'sameSegment' | 'locate' | 'key'>;

/** The log's checksum key, for a reader of a log another thread writes (which made the key at its start). */
export function readFrameKey(dir: string): FrameKey {
  const hex = fs.readFileSync(path.join(dir, KEY_FILE), 'utf8').trim();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new Error(`${path.join(dir, KEY_FILE)} is damaged`);
  return frameKey(Buffer.from(hex, 'hex'));
}

/**
 * A read-only view of segment files another thread writes (the delivery thread's): its own file
 * descriptors, opened when a segment is first read. It is told of new segments (`addSegment`) and of
 * retention (`dropBefore`, which closes the descriptors so the deleted files' space is freed).
 */
export function openSegmentReader(opts: { dir: string; bases: readonly number[]; key: FrameKey }) {
  const { key } = opts;
  const fileOf = (base: number) => segmentFile(opts.dir, base);
  const segments: ReadableSegment[] = opts.bases.map((base) => ({ base, file: fileOf(base) }));

  /** Index of the segment holding `position`; throws when none does. */
  function indexAt(position: number): number {
    const i = holding(segments, position);
    if (!segments[i] || segments[i]!.base > position) throw new Error(`no segment holds log position ${position}`);
    return i;
  }

  const segmentAt = (position: number): ReadableSegment => segments[indexAt(position)]!;

  const readFds = new ReadFds();
  const closeFd = (seg: ReadableSegment) => readFds.close(seg);

  return {
    key,
    /** Reads one record's bytes (throws when they are not there: a reader treats that as unreadable). */
    read: (position: number, length: number): Buffer => readRecordBytes(segmentAt(position), position, length, readFds),
    sameSegment: (a: number, b: number) => segmentAt(a) === segmentAt(b),
    /** Up to `length` bytes at `position` into `buf`, never past its segment: fewer at the end of the file. */
    readInto(position: number, buf: Buffer, length: number): number {
      const i = indexAt(position);
      const seg = segments[i]!;
      const next = segments[i + 1]?.base;
      const fd = readFds.of(seg);
      const n = next === undefined ? length : Math.min(length, next - position);
      return n > 0 ? fs.readSync(fd, buf, 0, n, position - seg.base) : 0;
    },
    locate: (position: number) => {
      const seg = segmentAt(position);
      return { segment: seg.file, at: position - seg.base };
    },
    /** A group was written to the segment at `base`: known from now on (a roll made it). */
    addSegment(base: number): void {
      const last = segments[segments.length - 1];
      if (last === undefined || base > last.base) segments.push({ base, file: fileOf(base) });
    },
    /** Retention deletes every segment before the one starting at `through`: their descriptors close. */
    dropBefore(through: number): void {
      while (segments.length > 1 && segments[1]!.base <= through) closeFd(segments.shift()!);
    },
    close(): void {
      for (const seg of segments) closeFd(seg);
    },
  };
}

export type SegmentReader = ReturnType<typeof openSegmentReader>;

/**
 * A record of a later format than this Herald writes: the data dir was used by a newer Herald. It is
 * refused, never cut as a torn tail (that would delete events the newer one acknowledged).
 */
function newerFormat(file: string, at: number, version: number): StartupError {
  return new StartupError(
    `${file} holds records of format ${version} from byte ${at}: a newer version of Herald wrote them, and this one (${HERALD_VERSION}) reads ` +
      'format 2 at most. Run that version or a newer one; a data dir cannot go back to an older Herald (restore a backup taken before the upgrade instead).',
  );
}
