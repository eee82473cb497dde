import Database from 'better-sqlite3';
import { createHash, randomInt } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fsyncPath, makeDirs, writeFileAtomically } from './durable-fs';
import { NewerSchemaError, StartupError } from './errors';
import { IDENTITY_FILE, LOCK_FILE, metaWithoutWriting, readIdentity } from './store/data-dir';
import { openDatabase } from './store/db';
import { createLogIndexRepo } from './store/log-index-repo';
import { createMetaRepo } from './store/meta-repo';
import { createPartitionHeadsRepo } from './store/partition-heads-repo';
import { createRetentionFloors } from './store/retention-floors';
import { RESERVATION_FILE } from './wal/offset-reservation';
import { formatHoles, holeMap, isKnownGap, mergeHoles, parseHoles, type LogHole } from './wal/log-holes';
import { FRAME_HEADER_BYTES, LEGACY_FRAME_KEY, MAX_RECORD_BYTES, type FrameKey } from './wal/record';
import {
  findIntactFrame,
  KEY_FILE,
  readFrameKey,
  RESYNC_BUDGET_BYTES,
  ResyncBudgetExceeded,
  scanSegmentFile,
  SEGMENT_FILE,
  startsWithLegacyFrame,
} from './wal/segment-log';

/**
 * Online backup and restore of a local data dir (the embedded engine). A copy of the files with
 * `cp` while the gateway runs is not a backup: `herald.db` and its SQLite `-wal` are copied at
 * different moments and can give a database SQLite calls malformed. Here `herald.db` is copied by
 * SQLite itself (`VACUUM INTO`, one read transaction: a consistent snapshot that never blocks the
 * gateway's writes), and the log after it. The log is append-only, so a copy made later holds every
 * event the snapshot's offsets point at; its last record may be torn, which the next start cuts like
 * a crash's. `index.db` is left out: it is rebuilt from the log at the first start of a restore.
 */

export const MANIFEST_FILE = 'herald-backup.json';

export interface BackupFile {
  path: string;
  bytes: number;
  /** Absent in a format-1 manifest. */
  sha256?: string;
}
const DB_FILE = 'herald.db';
const WAL_DIR = 'wal';

export interface BackupManifest {
  /** 2: every file with its SHA-256. 1 (sizes only) is still restored. */
  format: 2;
  /** When the copy began: every event acknowledged before it is in the backup. */
  startedAt: string;
  finishedAt: string;
  source: string;
  /** Every file of the backup with its size and SHA-256, paths relative to the backup (slashes). */
  files: BackupFile[];
  /** Segments retention deleted while they were copied, with the older ones dropped with them (the log stays whole). */
  segmentsDroppedByRetention: number;
}

/**
 * A backup inside the data dir it copies would be lost with it, and copied into itself by the next backup
 * (CLI probe: `herald backup $DIR/inside` was taken). Compared by real paths (a symlink is followed), with the
 * data dir's and with its `wal/`'s, which may be a link to another disk.
 */
function requireOutside(source: string, dest: string): void {
  const real = (p: string): string => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.join(real(path.dirname(p)), path.basename(p)); // not there yet: its parent's real path
    }
  };
  const to = real(path.resolve(dest));
  // `wal/` may be a link to another disk (README: the free-space check watches it too): it is the data dir as well
  // (ops probe: a backup into the linked directory was taken, written among the live segments).
  for (const from of [real(source), real(path.join(source, 'wal'))])
    if (to === from || to.startsWith(from + path.sep))
      throw new BackupError(`${dest} is inside the data dir ${source}: a backup there is lost with it; choose a directory outside it`);
}

/** A backup or restore that cannot be done as asked: its message is the whole explanation. */
export class BackupError extends Error {
  override name = 'BackupError';
}

/**
 * Copies the data dir `dataDir` to the new directory `dest`, whether or not a gateway runs on it.
 * Written to a temp directory beside `dest` and renamed at the end, so `dest` only ever holds a
 * whole backup (with {@link MANIFEST_FILE}).
 */
export function backupDataDir(dataDir: string, dest: string, clock: () => Date = () => new Date()): BackupManifest {
  const source = path.resolve(dataDir);
  const startedAt = clock().toISOString();
  if (dest.trim() === '') throw new BackupError('no destination given: a backup goes to a new directory');
  requireDataDir(source);
  requireOutside(source, dest);
  requireAbsent(dest);
  removeAbandoned(path.resolve(dest));
  const work = `${path.resolve(dest)}.partial-${process.pid}`;
  fs.rmSync(work, { recursive: true, force: true });
  makeDirs(path.join(work, WAL_DIR));
  let placed = false;
  try {
    const walDir = path.join(source, WAL_DIR);
    // Listed before the snapshot too: segments retention deletes while SQLite copies are counted as dropped.
    const listedFirst = listSegments(walDir);
    // Before the segments are copied: the log only grows at its end, so a whole copy reaches at least as far.
    // A read that fails is the backup's failure (backup probe: an EIO here turned the check off without a word).
    const indexedThrough = indexedThroughOf(path.join(source, 'index.db'));
    fs.copyFileSync(path.join(source, IDENTITY_FILE), path.join(work, IDENTITY_FILE));
    snapshotDatabase(path.join(source, DB_FILE), path.join(work, DB_FILE));
    copyIfPresent(path.join(walDir, KEY_FILE), path.join(work, WAL_DIR, KEY_FILE));
    const listed = [...new Set([...listedFirst, ...listSegments(walDir)])].sort();
    const dropped = copySegments(walDir, path.join(work, WAL_DIR), listed);
    const end = verifySegments(path.join(work, WAL_DIR), carryHoles(source, path.join(work, DB_FILE)));
    if (end !== undefined && indexedThrough > end) throw logCutShort(end, indexedThrough);
    // Last, so that they are the newest: floors only ever rise, and a copy below the live ones could
    // let a partition emptied by retention during the copy restart below offsets already acknowledged.
    copyIfPresent(path.join(walDir, RESERVATION_FILE), path.join(work, WAL_DIR, RESERVATION_FILE));
    withoutLogEnd(path.join(work, WAL_DIR, RESERVATION_FILE));
    raiseRetentionFloors(source, path.join(work, DB_FILE));
    syncTree(work);
    const manifest: BackupManifest = {
      format: 2,
      startedAt,
      finishedAt: clock().toISOString(),
      source,
      files: listFiles(work),
      segmentsDroppedByRetention: dropped,
    };
    writeFileAtomically(path.join(work, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
    fs.renameSync(work, dest);
    placed = true;
    fsyncPath(path.dirname(path.resolve(dest)));
    return manifest;
  } catch (err) {
    const full = fullDisk(err, work, 'backed up');
    // A failure after the rename (the fsync of its directory) removes DEST too: exit 1 means no backup
    // there (was: "the backup failed" beside a DEST that restore took, and a retry refused as existing).
    undo(placed ? [path.resolve(dest)] : [], work, full ?? err);
    throw full ?? err;
  }
}

/** Below this many free bytes after a write failed, the file system is taken to be what refused it. */
const FULL_BELOW_BYTES = 1024 * 1024;

/**
 * A write refused for want of space, said as such: SQLite reports a full disk as "database or disk is
 * full", or as a bare "disk I/O error" when it could not grow `herald.db-shm`. Asked before the
 * partial copy is removed, while the file system is still as full as the write found it.
 */
function fullDisk(err: unknown, work: string, what: string): BackupError | undefined {
  const code = String((err as NodeJS.ErrnoException).code ?? '');
  if (code !== 'ENOSPC' && code !== 'EDQUOT' && code !== 'SQLITE_FULL' && !code.startsWith('SQLITE_IOERR')) return undefined;
  let free: number;
  try {
    const stats = fs.statfsSync(fs.existsSync(work) ? work : path.dirname(work));
    free = stats.bavail * stats.bsize;
  } catch {
    return undefined;
  }
  if (code.startsWith('SQLITE_IOERR') && free >= FULL_BELOW_BYTES) return undefined;
  return new BackupError(
    `the file system holding ${path.dirname(work)} ran out of space (${free} bytes free once the failed write let go; ${(err as Error).message}): ` +
      `nothing was ${what}, and the partial copy was removed; free space there or choose another directory`,
  );
}

/** `DEST.partial-<pid>` left by a backup that was killed (its process is gone): removed. */
function removeAbandoned(dest: string): void {
  const dir = path.dirname(dest);
  const prefix = `${path.basename(dest)}.partial-`;
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (Number.isSafeInteger(pid) && pid > 0 && !isRunning(pid)) fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Where `skip-corrupt` set bytes aside (`log_holes`): the copied herald.db's, and index.db's, where a
 * version before this one kept them alone; those go into the copy, whose first start rebuilds its
 * index without them and would take a hole at a segment's end for a lost segment.
 */
function carryHoles(source: string, copyDb: string): LogHole[] {
  const copiedText = metaWithoutWriting(copyDb, 'log_holes');
  const indexed = parseHoles(metaWithoutWriting(path.join(source, 'index.db'), 'log_holes'));
  const holes = mergeHoles(parseHoles(copiedText), indexed);
  if (holes.length === 0 || formatHoles(holes) === copiedText) return holes;
  const copy = new Database(copyDb, { fileMustExist: true });
  try {
    createMetaRepo(copy).set('log_holes', formatHoles(holes));
  } finally {
    copy.close();
  }
  return holes;
}

/** The live retention floors (raised before retention deletes anything) into the copy, where higher; an older version's from index.db. */
function raiseRetentionFloors(source: string, copyDb: string): void {
  const live = new Database(path.join(source, DB_FILE), { readonly: true, fileMustExist: true });
  let floors: number[];
  let logStart: number | undefined;
  try {
    live.pragma('busy_timeout = 5000');
    const liveFloors = createRetentionFloors(createMetaRepo(live));
    floors = liveFloors.load();
    logStart = liveFloors.logStart();
  } finally {
    live.close();
  }
  if (floors.length === 0 && logStart === undefined) ({ floors, logStart } = retentionInIndex(source) ?? { floors, logStart });
  if (floors.length === 0 && logStart === undefined) return;
  const copy = new Database(copyDb, { fileMustExist: true });
  try {
    const copied = createRetentionFloors(createMetaRepo(copy));
    copied.raise(floors);
    // Where the live log starts now: segments retention deleted during the copy are not missing from it.
    if (logStart !== undefined) copied.raiseLogStart(logStart);
  } finally {
    copy.close();
  }
}

/**
 * Retention's record as an older version kept it, in index.db alone (which no backup holds): where
 * the log starts, and each partition's first offset past it. Without it, the backup's first start
 * could not tell deleted segments from lost ones (an upgrade probe's restore was refused).
 */
function retentionInIndex(source: string): { floors: number[]; logStart: number } | undefined {
  const file = path.join(source, 'index.db');
  const partitions = readIdentity(source)?.partitions;
  if (!fs.existsSync(file) || partitions === undefined) return undefined;
  const index = new Database(file, { readonly: true, fileMustExist: true });
  try {
    index.pragma('busy_timeout = 5000');
    const logStart = Number(createMetaRepo(index).get('log_start') ?? 0);
    if (!(logStart > 0)) return undefined;
    const offsets = createLogIndexRepo(index);
    const heads = createPartitionHeadsRepo(index).load(partitions);
    const floors = heads.map((head, p) => offsets.firstOffsetAtOrPast(p, logStart) ?? head);
    return { floors, logStart };
  } catch {
    return undefined; // no record to read there: the backup's start checks what it can
  } finally {
    index.close();
  }
}

/**
 * Makes `dataDir` (absent or empty) a copy of the backup `backupDir`, checked against its manifest,
 * as a new incarnation of the gateway that was backed up. Offsets past the backup's heads were
 * perhaps handed out by that gateway after the backup, to other events; the restored gateway hands
 * them out again. So every partition's seek generation moves to a new random one (webhook-id is
 * derived from it): a receiver de-duplicating on webhook-id must not drop the restored gateway's new
 * events as repeats of the old gateway's. The events the backup holds keep their ids: deliveries
 * pending at the backup, and redeliveries of what was delivered after it (see `newIncarnation`).
 */
export function restoreDataDir(
  backupDir: string,
  dataDir: string,
  random: (max: number) => number = (max) => randomInt(1, max),
): BackupManifest {
  if (dataDir.trim() === '' || backupDir.trim() === '') throw new BackupError('no data dir or no backup given: nothing restored');
  const manifest = readManifest(backupDir);
  const target = path.resolve(dataDir);
  const exists = requireEmpty(target);
  if (!exists) removeAbandoned(target);
  // Inside the target when it exists (a mount point, a symlink: renames stay on its file system),
  // else beside it; either way it becomes the data dir only once whole.
  const work = exists ? path.join(target, `.restore-${process.pid}`) : `${target}.partial-${process.pid}`;
  fs.rmSync(work, { recursive: true, force: true });
  makeDirs(work);
  const moved: string[] = [];
  try {
    for (const file of manifest.files) {
      const to = path.join(work, ...file.path.split('/'));
      makeDirs(path.dirname(to));
      copyKeepingTimes(path.join(backupDir, ...file.path.split('/')), to);
    }
    newIncarnation(path.join(work, DB_FILE), readIdentity(work)?.partitions ?? 0, random(2 ** 31));
    syncTree(work);
    if (exists) {
      // The log first, then herald.db, herald.json last: a restore cut short leaves a log without its
      // database (the gateway refuses to start on it) or a whole one, never a database without its log.
      const rank = (name: string) => (name === WAL_DIR ? 0 : name === DB_FILE ? 2 : name === IDENTITY_FILE ? 3 : 1);
      const names = fs.readdirSync(work).sort((a, b) => rank(a) - rank(b));
      for (const name of names) {
        fs.renameSync(path.join(work, name), path.join(target, name));
        moved.push(path.join(target, name));
      }
      fs.rmdirSync(work);
      fsyncPath(target);
    } else {
      fs.renameSync(work, target);
      moved.push(target);
      fsyncPath(path.dirname(target));
    }
    return manifest;
  } catch (err) {
    const full = fullDisk(err, work, 'restored');
    // What was already moved into the target goes too, so the target is as it was found and the
    // restore can be run again (was: a failed rename of herald.db left wal/ alone in it, the gateway
    // refused it for want of herald.db, and the next restore refused it as not empty).
    undo(moved, work, full ?? err);
    throw full ?? err;
  }
}

/**
 * After a failed backup or restore: removes what it had already put in place, newest first (herald.json
 * and herald.db before the log, so an interrupted removal leaves a log without its database, which a
 * start refuses), then its staging copy, last (a gateway refuses a dir that still holds it).
 */
function undo(placed: readonly string[], work: string, failure: unknown): void {
  for (const at of [...[...placed].reverse(), work]) {
    try {
      fs.rmSync(at, { recursive: true, force: true });
    } catch (err) {
      // The failure stays what is said, with what is left behind (re-probe: the undo's own EIO replaced it, and
      // nothing said a partial directory was left to remove).
      throw new BackupError(
        `${(failure as Error).message}; then ${at} could not be removed (${(err as Error).message}): remove it by hand before running it again`,
      );
    }
  }
}

function requireDataDir(dir: string): void {
  if (!fs.existsSync(path.join(dir, IDENTITY_FILE)) || !fs.existsSync(path.join(dir, DB_FILE))) {
    throw new BackupError(`${dir} is not a Herald data dir (no ${IDENTITY_FILE} and ${DB_FILE}): nothing to back up`);
  }
}

function requireAbsent(dest: string): void {
  // lstat: a dangling link exists too (CLI probe: the whole copy was made, then its rename failed with ENOTDIR).
  if (fs.lstatSync(path.resolve(dest), { throwIfNoEntry: false }))
    throw new BackupError(`${path.resolve(dest)} already exists: a backup goes to a new directory`);
}

/** Whether `dir` exists (it must then be an empty directory). */
function requireEmpty(dir: string): boolean {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // A link to nothing (a disk path not made yet) is not absent: the copy could not be renamed onto it (re-probe).
    const place = path.resolve(dir);
    if (code === 'ENOENT' && fs.lstatSync(place, { throwIfNoEntry: false })?.isSymbolicLink())
      throw new BackupError(`${dir} is a link to ${fs.readlinkSync(place)}, which does not exist: make it, then restore into it`);
    if (code === 'ENOENT') return false;
    throw new BackupError(`${dir} cannot be restored into: ${code === 'ENOTDIR' ? 'it is not a directory' : (err as Error).message}`);
  }
  // An ext4 mount point holds lost+found: empty as far as a data dir goes.
  if (entries.every((name) => name === 'lost+found')) return true;
  const running = entries.includes(LOCK_FILE) ? ' (stop the gateway first)' : '';
  throw new BackupError(`${dir} is not empty${running}: move it aside, then restore into it`);
}

/**
 * A database copy that failed on a read or write (not a full disk, which `fullDisk` words): named, since SQLite's
 * message names no file, and its "malformed" is also what it says when the disk fails a read (backup probe: an
 * injected EIO on the live herald.db read as corruption, though the gateway went on without an error).
 */
function copyFailed(from: string, err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !/^SQLITE_(IOERR|CORRUPT|NOTADB)/.test(code) || code === 'SQLITE_IOERR_SHMSIZE') return err;
  const hint = code.startsWith('SQLITE_IOERR')
    ? ''
    : "; SQLite says so also when the disk fails a read: run the backup again, and if it says so again, check the disk and run `sqlite3 FILE 'PRAGMA integrity_check'` on a copy";
  return new BackupError(`could not copy ${from} (${(err as Error).message}, ${code})${hint}: nothing was backed up`);
}

/**
 * How far index.db says it indexed the log, which the copy must reach; 0 when it holds nothing to say. A read that
 * fails is the backup's failure (backup probe: an EIO here turned that check off without a word).
 */
function indexedThroughOf(file: string): number {
  try {
    return Number(metaWithoutWriting(file, 'log_indexed_through', { readErrors: 'throw' }) ?? 0);
  } catch (err) {
    throw new BackupError(
      `could not read ${file} (${(err as Error).message}), which the copy of the log is checked against: nothing was backed up. ` +
        'SQLite says "malformed" also when the disk fails a read: run the backup again; an index.db that is damaged is rebuilt from the log by a gateway started without it',
    );
  }
}

/** `VACUUM INTO` from a read-only connection: SQLite's own consistent copy, the source left as it is. */
function snapshotDatabase(from: string, to: string): void {
  const db = new Database(from, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    db.prepare('VACUUM INTO ?').run(to);
  } catch (err) {
    throw copyFailed(from, err);
  } finally {
    db.close();
  }
  const copy = new Database(to, { readonly: true, fileMustExist: true });
  try {
    const rows = copy.pragma('quick_check(1)') as { quick_check: string }[];
    if (rows[0]?.quick_check !== 'ok') throw new BackupError(`the copy of ${from} failed its check: ${rows[0]?.quick_check}`);
  } finally {
    copy.close();
  }
}

/**
 * Copies a file with its modification time: a segment's is when its newest event was stored, which
 * retention goes by after a start (was: the copy's time, so a restore kept every event for one more
 * `HERALD_RETENTION`, however old).
 */
function copyKeepingTimes(from: string, to: string): void {
  try {
    copyWithTimes(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOENT is retention's (copySegments), a full disk is worded by fullDisk: any other system error names the file.
    if (typeof code !== 'string' || code === 'ENOENT' || code === 'ENOSPC' || code === 'EDQUOT') throw err;
    throw new BackupError(`could not copy ${from} (${(err as Error).message})`);
  }
}

function copyWithTimes(from: string, to: string): void {
  // The times of the file copied, read from its descriptor: a segment retention deleted once it was open is
  // copied whole (was: its stat by name failed with ENOENT, taken for a segment gone before its turn, and its copy
  // was left in the backup beside none of the segments after it: the backup was refused as a log cut short).
  const { atime, mtime } = copyToEnd(from, to);
  fs.utimesSync(to, atime, mtime);
}

const COPY_CHUNK_BYTES = 1024 * 1024;

/**
 * Copies `from` as far as it reads, however its size changes meanwhile. Not `copyFileSync`: it copies the size
 * it read first, and a segment that a start cut shorter during the copy (its torn tail) made it spin for ever
 * (backup probe: a hang with no message); the copy's records are verified after.
 */
function copyToEnd(from: string, to: string): fs.Stats {
  const source = fs.openSync(from, 'r');
  try {
    const target = fs.openSync(to, 'w');
    try {
      const buf = Buffer.allocUnsafe(COPY_CHUNK_BYTES);
      for (let at = 0; ;) {
        const read = fs.readSync(source, buf, 0, buf.length, at);
        if (read === 0) return fs.fstatSync(source);
        for (let written = 0; written < read;) written += fs.writeSync(target, buf, written, read - written, at + written);
        at += read;
      }
    } finally {
      fs.closeSync(target);
    }
  } finally {
    fs.closeSync(source);
  }
}

/**
 * Drops the copied record's `logEnd`: a clean stop after the segments were copied can put it past
 * them, and the restore would then be refused as a log cut short (the copy was verified above).
 */
function withoutLogEnd(file: string): void {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return; // none, or unreadable: the start reads it as it would the original
  }
  if (record === null || typeof record !== 'object' || !('logEnd' in record)) return;
  delete record.logEnd;
  fs.writeFileSync(file, JSON.stringify(record));
}

function copyIfPresent(from: string, to: string): void {
  try {
    fs.copyFileSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Copies the segments oldest first; each copy holds the bytes the file had when it was opened. A
 * segment gone before its turn was deleted by retention, which deletes oldest first: the ones
 * copied before it are older still, so they are dropped too and the copy stays one run of segments.
 * Returns how many segments were dropped. `names`: the listing, oldest first (a test gives its own).
 */
export function copySegments(fromDir: string, toDir: string, listed = listSegments(fromDir)): number {
  const copied: string[] = [];
  const names = [...listed];
  let dropped = 0;
  for (let i = 0; i < names.length || (copied.length === 0 && names.length > 0 && more(i)); i++) {
    const name = names[i]!;
    try {
      copyKeepingTimes(path.join(fromDir, name), path.join(toDir, name));
      copied.push(name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // Retention deletes oldest first: an older segment still there means something else took this one.
      const older = listSegments(fromDir).filter((n) => n < name);
      if (older.length > 0)
        throw new BackupError(
          `${path.join(fromDir, name)} disappeared while older segments remain: not retention; the backup is abandoned`,
        );
      for (const gone of copied.splice(0)) fs.rmSync(path.join(toDir, gone));
      dropped = i + 1;
    }
  }
  return dropped;

  /**
   * Retention deleted every segment listed (the newest too: it rolls the active one first): the segments started
   * since hold the log's end, so they are copied (was: a backup with no log at all, exit 0, whose restore the
   * gateway refused to start: "wal holds no log, but herald.db shows this data dir stored events").
   */
  function more(i: number): boolean {
    if (i >= 10 * Math.max(listed.length, 1) + 10) return false; // bounded: a log that rolls faster than it is copied
    names.push(...listSegments(fromDir).filter((n) => n > names.at(-1)!));
    return i < names.length;
  }
}

/**
 * Reads every record of the copied log and checks it, as a start on the restored dir would: a backup
 * of damaged bytes was reported whole and its restore then refused to start (a probe). The segments
 * follow one another without a gap, and only the newest may end in bytes the start cuts (a record
 * being written while it was copied, zeros a power cut left). Bytes `skip-corrupt` set aside are
 * padding inside a segment (read as such) or, at a segment's end, a gap that `holes` (herald.db's
 * `log_holes`) names, as a start takes it.
 * @throws BackupError naming the segment and the byte
 */
function verifySegments(walDir: string, holes: readonly LogHole[]): number | undefined {
  const key = keyOf(walDir);
  const gaps = holeMap(holes);
  const names = listSegments(walDir);
  let end: number | undefined;
  for (const [i, name] of names.entries()) {
    const file = path.join(walDir, name);
    const base = Number(name.slice(0, -'.seg'.length));
    const size = fs.statSync(file).size;
    // Each segment starts where the one before ends, as the start checks (a re-probe's cut or deleted
    // segment was backed up, and the restore refused: "the log is missing … bytes").
    if (end !== undefined && end !== base && !isKnownGap(gaps, end, base))
      throw new BackupError(
        `the log is missing ${base - end} bytes: the segment before ${name} ends at log byte ${end}; a restore of this backup would not start; the backup is abandoned`,
      );
    end = base + size;
    let scan: ReturnType<typeof scanSegmentFile>;
    try {
      scan = scanSegmentFile({ file, size, base }, 0, key, () => undefined);
    } catch (err) {
      throw new BackupError(`${name}: ${(err as Error).message}; the backup is abandoned`);
    }
    if (scan.badAt === undefined) continue;
    // The newest segment's tail: cut at the start when no intact record follows (a record cut short,
    // zeros a power cut left), so taken; what the start would refuse is not.
    if (i === names.length - 1 && !intactAfter(file, size, scan.badAt, scan.torn === true, key)) continue;
    throw new BackupError(
      `the log is damaged: ${name} at byte ${scan.badAt} (${scan.reason}); a restore of this backup would not start. ` +
        'To set the damage aside: stop the gateway, move index.db aside and start it once with HERALD_RECOVERY=skip-corrupt ' +
        '(a start reads the log from where index.db ends; see "Durability guarantees" in the README); the backup is abandoned',
    );
  }
  return end;
}

/**
 * The copied log ends before records its index had: its newest segment was lost or cut at a record's
 * end (which the scan cannot see), and a restore, which rebuilds its index, would start without them
 * (a start of the source refuses it, under HERALD_FSYNC=always).
 */
function logCutShort(end: number, indexedThrough: number): BackupError {
  return new BackupError(
    `the log ends at byte ${end}, but index.db holds events up to byte ${indexedThrough}: a segment was lost or cut short ` +
      '(or, under HERALD_FSYNC=interval or never, a power cut took bytes the next start rolls back: start the gateway once, then back up); ' +
      'a restore of this backup would start without those events; the backup is abandoned',
  );
}

/**
 * Whether an intact record starts anywhere after `badAt` (the start's own search): then the bytes
 * there are damage in the middle, not a tail the start cuts (a record cut short, zeros). A damaged
 * length can claim the rest of the file, as a re-probe's did. Past the longest a record can be, the
 * rest is no single record cut short at all; a search past its checksum budget is taken for damage,
 * but after a record cut short (the start cuts that tail). Unkeyed frames count only in a segment
 * that begins with one (written before its log had a key), as at the start: a producer's data can
 * hold one, and a torn record holding it was refused (a re-probe).
 */
function intactAfter(file: string, size: number, badAt: number, torn: boolean, key: FrameKey): boolean {
  if (size - badAt > FRAME_HEADER_BYTES + MAX_RECORD_BYTES) return true;
  try {
    const legacy = startsWithLegacyFrame({ file, size });
    return findIntactFrame({ file, size }, badAt + 1, key, legacy, { bytes: RESYNC_BUDGET_BYTES }) !== undefined;
  } catch (err) {
    if (err instanceof ResyncBudgetExceeded) return !torn;
    throw err;
  }
}

/** The log's checksum key; a log from before the key has none (its frames are checked unkeyed). */
function keyOf(walDir: string): FrameKey {
  return fs.existsSync(path.join(walDir, KEY_FILE)) ? readFrameKey(walDir) : LEGACY_FRAME_KEY;
}

function listSegments(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => SEGMENT_FILE.test(f))
    .sort();
}

function listFiles(root: string, under = ''): BackupFile[] {
  const out: BackupFile[] = [];
  for (const entry of fs.readdirSync(path.join(root, under), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const rel = under ? `${under}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listFiles(root, rel));
    else out.push({ path: rel, bytes: fs.statSync(path.join(root, rel)).size, sha256: sha256Of(path.join(root, rel)) });
  }
  return out;
}

function sha256Of(file: string): string {
  const hash = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(1024 * 1024);
    for (let n = fs.readSync(fd, chunk); n > 0; n = fs.readSync(fd, chunk)) hash.update(chunk.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

function syncTree(dir: string): void {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const at = path.join(dir, entry.name);
    if (entry.isDirectory()) syncTree(at);
    else fsyncPath(at);
  }
  fsyncPath(dir);
}

function readManifest(backupDir: string): BackupManifest {
  const file = path.join(backupDir, MANIFEST_FILE);
  const whole = `${path.resolve(backupDir)} is not a whole Herald backup`;
  let manifest: Partial<BackupManifest> | null;
  try {
    manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<BackupManifest> | null;
  } catch (err) {
    throw new BackupError(
      `${whole} (${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it has no' : 'it has an unreadable'} ${MANIFEST_FILE})`,
    );
  }
  const format = (manifest as { format?: unknown } | null)?.format;
  if ((format !== 1 && format !== 2) || !Array.isArray(manifest!.files) || !manifest!.files.every((f) => isBackupFile(f, format === 2))) {
    throw new BackupError(`${file} is not a manifest this version of Herald can restore`);
  }
  const paths = new Set(manifest!.files.map((f) => f.path));
  for (const needed of [IDENTITY_FILE, DB_FILE])
    if (!paths.has(needed)) throw new BackupError(`${whole} (its manifest lists no ${needed})`);
  for (const f of manifest!.files) {
    const at = path.join(backupDir, ...f.path.split('/'));
    const damaged = () =>
      new BackupError(`the backup ${path.resolve(backupDir)} is damaged: ${f.path} is missing or not the file its manifest gives`);
    if (!fs.existsSync(at) || fs.statSync(at).size !== f.bytes) throw damaged();
    if (f.sha256 !== undefined && sha256Of(at) !== f.sha256) throw damaged();
  }
  return manifest as BackupManifest;
}

function isBackupFile(f: unknown, hashed: boolean): f is BackupFile {
  const file = f as Partial<BackupFile> | null;
  return (
    typeof file?.path === 'string' &&
    file.path.split('/').every((part) => part !== '' && part !== '.' && part !== '..') &&
    !file.path.includes('\\') &&
    Number.isSafeInteger(file.bytes) &&
    file.bytes! >= 0 &&
    (hashed ? typeof file.sha256 === 'string' && /^[0-9a-f]{64}$/.test(file.sha256) : file.sha256 === undefined)
  );
}

/**
 * Moves every partition of every subscription to seek generation `bump` above the subscription's
 * highest, and pins pending deliveries that took their partition's generation to the one they had.
 * The generation a partition had is kept for the offsets below its head, which the first start sets
 * (`keepRestoredIds`): the backup's events, whose redeliveries keep their ids. A position kept from
 * an earlier restore keeps that one's generation while its bound is unset, else takes the newer one
 * (ids of that generation were never given below the earlier bound: safe, if not the ids they had).
 */
export function newIncarnation(dbFile: string, partitions: number, bump: number): void {
  let db: Database.Database;
  try {
    // Migrated first: a backup of an older Herald gets this one's tables (a newer one's is refused).
    db = openDatabase(dbFile);
  } catch (err) {
    // Said of the backup, not of the staging copy (removed by the time this is read: upgrade probe).
    if (err instanceof NewerSchemaError)
      throw new BackupError(
        `the backup was made by a newer Herald (its herald.db has schema migration ${err.migration}, which this version does not have): restore it with that version or a newer one`,
      );
    if (err instanceof StartupError) throw new BackupError(err.message);
    throw err;
  }
  try {
    db.transaction(() => {
      // A partition without a position (an old subscription that never moved there) starts at 0 under
      // generation 0: it gets a row now, so it moves to the new generation with the others.
      const missing = db.prepare(
        `INSERT OR IGNORE INTO subscription_offsets (subscription_id, partition, committed_offset) SELECT id, ?, 0 FROM subscriptions`,
      );
      for (let p = 0; p < partitions; p++) missing.run(p);
      db.prepare(
        `UPDATE pending_deliveries SET seek_generation = (
           SELECT o.seek_generation FROM subscription_offsets o
           WHERE o.subscription_id = pending_deliveries.subscription_id AND o.partition = pending_deliveries.partition)
         WHERE seek_generation IS NULL`,
      ).run();
      // Each subscription's highest generation is read first: a subquery in the UPDATE would see the rows
      // it already moved (each partition then got a higher one than the last). SET reads the row as it
      // was: kept_generation takes the old seek_generation.
      const highest = db
        .prepare('SELECT subscription_id AS id, MAX(seek_generation) AS highest FROM subscription_offsets GROUP BY subscription_id')
        .all() as { id: string; highest: number }[];
      const move = db.prepare(
        `UPDATE subscription_offsets SET
           kept_generation = CASE WHEN kept_generation IS NOT NULL AND kept_below IS NULL THEN kept_generation ELSE seek_generation END,
           kept_below = NULL,
           seek_generation = ?
         WHERE subscription_id = ?`,
      );
      for (const { id, highest: was } of highest) move.run(bump + was, id);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
}
