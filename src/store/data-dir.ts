import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { fsyncPath, writeFileAtomically } from '../durable-fs';
import { isDatabaseBusy, StartupError } from '../errors';
import { RESERVATION_FILE, SPARE_SUFFIX } from '../wal/offset-reservation';
import { KEY_FILE } from '../wal/segment-log';
import { INDEX_DB_FILE } from './index-db';

export const LOCK_FILE = 'herald.lock';
export const PID_FILE = 'herald.pid';
export const IDENTITY_FILE = 'herald.json';

export interface DataDirLock {
  release(): void;
}

/**
 * Takes the data dir for this process alone, before anything in it is read.
 *
 * The lock is SQLite's own: a `BEGIN IMMEDIATE` transaction held open on
 * `herald.lock` keeps a POSIX advisory lock that the kernel drops when the
 * process dies (a SIGKILL never leaves a stale lock), and that SQLite also
 * enforces between connections of one process. The holder writes its PID to
 * `herald.pid` only after it holds the lock, so a refused second gateway can
 * name it.
 * @throws StartupError naming the dir and the holder's PID
 */
export function lockDataDir(dataDir: string): DataDirLock {
  refuseNonFiles(dataDir);
  const file = path.join(dataDir, LOCK_FILE);
  const before = inodeOf(file);
  const db = takeLock(file, dataDir);
  if (db === 'busy') {
    const holder = readPid(dataDir);
    throw new StartupError(
      `data dir ${path.resolve(dataDir)} is in use by another Herald process${holder ? ` (PID ${holder})` : ''}; two gateways on one data dir would destroy each other's data`,
    );
  }
  // A lock file someone removed locks nothing: the gateway that holds the removed one is still at work.
  // The file locked must be the one that was there before (not made now, nor replaced meanwhile by a
  // refused start removing its own): else every process is searched for a holder.
  const lockExisted = before !== undefined && inodeOf(file) === before;
  const holder = otherHolder(dataDir, lockExisted);
  if (holder !== undefined) {
    db.close();
    // The lock file this start made goes again: left behind, it would make the next start take it for
    // the holder's and skip the search that found the holder (a second start then ran beside it).
    if (!lockExisted) fs.rmSync(file, { force: true });
    throw new StartupError(
      `data dir ${path.resolve(dataDir)} is in use by another Herald process (PID ${holder} has its herald.db open, and ${LOCK_FILE} does not lock it: was it removed?); two gateways on one data dir would destroy each other's data`,
    );
  }
  let log: Database.Database | undefined;
  try {
    log = lockLogDir(dataDir);
    fs.writeFileSync(path.join(dataDir, PID_FILE), `${process.pid}\n`);
  } catch (err) {
    log?.close();
    db.close();
    throw err instanceof StartupError ? err : unusable(dataDir, err);
  }
  return {
    release() {
      try {
        fs.rmSync(path.join(dataDir, PID_FILE), { force: true });
      } finally {
        // Closing without COMMIT rolls back and drops the lock.
        if (log?.open) log.close();
        if (db.open) db.close();
      }
    },
  };
}

/** SQLite's companions of a database file (its write-ahead log, shared memory, rollback journal). */
const companions = (name: string) => [name, `${name}-wal`, `${name}-shm`, `${name}-journal`];

/**
 * The names Herald writes a file under before renaming it into place (`writeFileAtomically`), and index.db's
 * damage marker: a named pipe there hung the start for good in `open` (a probe: wal/offsets.reserved.tmp, no line
 * logged), a directory failed every fsync=interval write after a start that said ready.
 */
const TEMPORARY = [
  `${IDENTITY_FILE}.tmp`,
  `${INDEX_DB_FILE}.damaged`,
  `${INDEX_DB_FILE}.damaged.tmp`,
  path.join('wal', `${KEY_FILE}.tmp`),
  path.join('wal', `${RESERVATION_FILE}.tmp`),
];

/**
 * The files of a data dir (and of its `wal/`) that Herald makes again by itself when missing: in their place,
 * a directory is only in the way. The others (herald.db, the log's key, record and segments) are not.
 */
const REMADE = new Set([
  ...companions(LOCK_FILE),
  PID_FILE,
  IDENTITY_FILE,
  ...companions(INDEX_DB_FILE),
  'herald.db-shm',
  path.join('wal', LOCK_FILE),
  path.join('wal', `${LOCK_FILE}-journal`),
  path.join('wal', `${RESERVATION_FILE}${SPARE_SUFFIX}`),
  ...TEMPORARY,
]);

/**
 * A directory, named pipe or socket where a data dir's file belongs (a probe: a directory in place of herald.db
 * said "SQLITE_CANTOPEN unable to open database file", of herald.json "EISDIR: illegal operation on a directory",
 * naming no path; in place of the spare, a stack trace) is refused before anything is opened, naming it. It is
 * not removed, not even in place of index.db: Herald did not make it, and what is in it is not Herald's to delete.
 * A device is let be (a segment linked to /dev/full is how tests fail a disk).
 * @throws StartupError naming the path, what it is, and what to do
 */
function refuseNonFiles(dataDir: string): void {
  const wal = path.join(dataDir, 'wal');
  let segments: string[] = [];
  try {
    segments = fs
      .readdirSync(wal)
      .filter((name) => name.endsWith('.seg'))
      .map((name) => path.join('wal', name));
  } catch {
    // no wal/ (yet), or not a directory: the lock of the log dir says what is wrong with it
  }
  const expected = [
    ...companions(LOCK_FILE),
    PID_FILE,
    IDENTITY_FILE,
    ...companions('herald.db'),
    ...companions(INDEX_DB_FILE),
    ...[...companions(LOCK_FILE), KEY_FILE, RESERVATION_FILE, `${RESERVATION_FILE}${SPARE_SUFFIX}`].map((name) => path.join('wal', name)),
    ...segments,
    ...TEMPORARY,
  ];
  for (const name of expected) {
    const file = path.resolve(dataDir, name);
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(file, { throwIfNoEntry: false });
    } catch {
      continue; // unreadable here (a loop of links, no permission): whoever opens it says why
    }
    const kind = stat?.isDirectory() ? 'a directory' : stat?.isFIFO() ? 'a named pipe' : stat?.isSocket() ? 'a socket' : undefined;
    if (kind === undefined) continue;
    const what =
      name === INDEX_DB_FILE
        ? 'index.db is rebuilt from the log'
        : REMADE.has(name)
          ? 'Herald makes the file again'
          : 'put the file back from a backup if it is lost: the start then says what is missing';
    throw new StartupError(
      `${file} is ${kind}, not a file: Herald does not remove what it did not make. Move it away (${what}), then start again`,
    );
  }
}

/** A `wal/` link whose target is missing (a disk not mounted) named as such (re-probe: "EEXIST: file already exists, mkdir"). */
function refuseDanglingLink(dir: string): void {
  if (fs.existsSync(dir) || !fs.lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink()) return;
  throw new StartupError(
    `${dir} is a link to ${fs.readlinkSync(dir)}, which does not exist: mount the disk it is on, or create it (an empty directory for a new data dir)`,
  );
}

/**
 * `wal/` is locked as well, since it may be a link (to another disk, say): a `wal/` linked from two
 * data dirs is refused while a gateway on the other one runs, as each would hand out the other's offsets.
 */
function lockLogDir(dataDir: string): Database.Database | undefined {
  const dir = path.join(dataDir, 'wal');
  refuseDanglingLink(dir);
  if (!fs.existsSync(dir)) {
    // A data dir that stored events and lost its log is refused by the store, untouched: no wal/ is made.
    if (fs.existsSync(path.join(dataDir, 'herald.db'))) return undefined;
    fs.mkdirSync(dir);
    fsyncPath(dataDir); // the new directory survives a power cut
  }
  const file = path.join(dir, LOCK_FILE);
  const before = inodeOf(file);
  const db = takeLock(file, dataDir);
  const inUse = `the log dir ${fs.realpathSync(dir)} (${path.resolve(dir)}) is in use by another Herald process`;
  const why = "is wal/ linked from another data dir? Two gateways on one log would destroy each other's data";
  if (db === 'busy') throw new StartupError(`${inUse}: ${why}`);
  // As for herald.lock: a lock file made now (or replaced) may stand in for one removed under a running gateway.
  if (before !== undefined && inodeOf(file) === before) return db;
  const holder = segmentHolder(dir);
  if (holder === undefined) return db;
  db.close();
  fs.rmSync(file, { force: true });
  throw new StartupError(`${inUse} (PID ${holder} has its segments open, and wal/${LOCK_FILE} does not lock it: was it removed?); ${why}`);
}

/** Another process with a segment file of the log dir `dir` open (see `hasOpen`); undefined without segments. */
function segmentHolder(dir: string): string | undefined {
  let segments: Set<string>;
  try {
    segments = new Set(
      fs
        .readdirSync(dir)
        .filter((name) => name.endsWith('.seg'))
        .map((name) => fs.statSync(path.join(dir, name)))
        // Only a regular file is a log's: a segment linked to a device (/dev/full in a disk-failure test) is
        // open in any process that writes to that device (a CLI test's stdout), which names no other gateway.
        .filter((stat) => stat.isFile())
        .map(fileKey),
    );
  } catch {
    return undefined;
  }
  if (segments.size === 0) return undefined;
  // Open for writing: a gateway appends to its active segment; a reader (`tail -f`, a log shipper) only reads.
  return allPids().find((pid) => pid !== String(process.pid) && hasOpen(pid, segments, true));
}

/**
 * SQLite's lock on `file`: a `BEGIN IMMEDIATE` transaction held open keeps a POSIX advisory lock,
 * which the kernel drops when the process dies. `busy` when another process holds it.
 */
function takeLock(file: string, dataDir: string): Database.Database | 'busy' {
  // SQLite would follow it and write its journal beside the target, outside the data dir (start-up probe: as
  // root, /dev/null-journal), and two data dirs linked to one target would lock each other out.
  if (fs.lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink())
    throw new StartupError(`${path.resolve(file)} is a symbolic link; a lock file must be a plain file in its directory: remove the link`);
  let db: Database.Database;
  try {
    db = new Database(file);
    db.pragma('busy_timeout = 0');
    db.pragma('journal_mode = DELETE');
  } catch (err) {
    throw unusable(dataDir, err);
  }
  try {
    db.exec('BEGIN IMMEDIATE');
    // A write inside the open transaction keeps its lock at RESERVED: others may read, none may take it.
    db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER)');
    return db;
  } catch (err) {
    db.close();
    if (isDatabaseBusy(err)) return 'busy';
    throw unusable(dataDir, err);
  }
}

/**
 * Another process with this data dir's herald.db open (Linux, `/proc/<pid>/fd`, compared by device
 * and inode, so a bind mount or symlink of the dir is the same file): the one `herald.pid` names, and,
 * when the lock file was not there before this start beside an existing herald.db (removed, or both
 * files were), every process. Undefined without herald.db, or where that cannot be seen.
 */
function otherHolder(dataDir: string, lockExisted: boolean): string | undefined {
  let database: fs.Stats;
  try {
    database = fs.statSync(path.join(dataDir, 'herald.db'));
  } catch {
    return undefined; // nothing stored yet
  }
  const pid = readPid(dataDir);
  const candidates = new Set(pid === undefined ? [] : [pid]);
  if (!lockExisted) for (const p of allPids()) candidates.add(p);
  candidates.delete(String(process.pid));
  const files = new Set([fileKey(database)]);
  for (const candidate of candidates) if (hasOpen(candidate, files)) return candidate;
  return undefined;
}

function inodeOf(file: string): number | undefined {
  try {
    return fs.statSync(file).ino;
  } catch {
    return undefined;
  }
}

function allPids(): string[] {
  try {
    return fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return []; // not Linux
  }
}

/** A file by device and inode, so a symlink or bind mount of it is the same file. */
const fileKey = (stats: fs.Stats) => `${stats.dev}:${stats.ino}`;

/**
 * Whether process `pid` has one of `files` (by {@link fileKey}) open (Linux, `/proc/<pid>/fd`), for
 * writing only when `writing` (the access mode in `/proc/<pid>/fdinfo/<fd>`).
 */
function hasOpen(pid: string, files: ReadonlySet<string>, writing = false): boolean {
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false; // gone, or not ours to see
  }
  for (const fd of fds) {
    try {
      if (files.has(fileKey(fs.statSync(`/proc/${pid}/fd/${fd}`))) && (!writing || openForWriting(pid, fd))) return true;
    } catch {
      // closed meanwhile, or a socket
    }
  }
  return false;
}

/** O_WRONLY or O_RDWR in the fd's flags (octal in fdinfo). */
function openForWriting(pid: string, fd: string): boolean {
  const flags = /^flags:\s*([0-7]+)/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
  return flags !== undefined && (parseInt(flags, 8) & 0o3) !== 0;
}

function readPid(dataDir: string): string | undefined {
  try {
    const text = fs.readFileSync(path.join(dataDir, PID_FILE), 'utf8').trim();
    return /^\d+$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A data dir that cannot be created, read or written: one line, not a stack trace. A file where the
 * dir or one of its parents should be is named as such (mkdir's EEXIST or ENOTDIR says it poorly).
 */
export function unusable(dataDir: string, err: unknown): StartupError {
  const e = err as NodeJS.ErrnoException;
  const dir = path.resolve(dataDir);
  const file = e.code === 'EEXIST' || e.code === 'ENOTDIR' ? fileInTheWay(dir) : undefined;
  // mkdir meets a symbolic link that leads back to itself as EEXIST (start-up probe: "file already exists").
  const loop = e.code === 'EEXIST' || e.code === 'ELOOP' ? loopInTheWay(dir) : undefined;
  if (loop !== undefined) return new StartupError(`data dir ${dir} is not usable: ${loop} is a symbolic link that leads in a loop`);
  if (file === dir) return new StartupError(`data dir ${dir} is not a directory: a file is in its place`);
  if (file !== undefined) return new StartupError(`data dir ${dir} is not usable: ${file} is a file, not a directory`);
  // Unlike the other reasons, this one passes without a change to the gateway: say what to do.
  const full =
    e.code === 'ENOSPC' || e.code === 'SQLITE_FULL'
      ? '; the file system is full: free space on it, then start again'
      : e.code === 'SQLITE_IOERR_SHMSIZE'
        ? '; the file system may be full (SQLite could not grow herald.db-shm): free space on it, then start again'
        : '';
  // The file a call on a descriptor failed on (`aboutFile`): its message names none.
  const about = typeof e.path === 'string' && !String(e.message).includes(e.path) ? ` (${e.path})` : '';
  return new StartupError(`data dir ${dir} is not usable: ${e.code ? `${e.code} ` : ''}${e.message ?? String(err)}${about}${full}`);
}

/** The highest of `dir` and its parents that the system cannot follow for symbolic links in a loop; else undefined. */
function loopInTheWay(dir: string): string | undefined {
  let loop: string | undefined;
  for (let at = dir; ; at = path.dirname(at)) {
    try {
      fs.statSync(at);
      return loop;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ELOOP') loop = at;
      else if (loop !== undefined) return loop;
      if (path.dirname(at) === at) return loop;
    }
  }
}

/** The deepest existing path of `dir` and its parents, when it is not a directory; else undefined. */
function fileInTheWay(dir: string): string | undefined {
  // Each step goes one level up, so this ends at the root at the latest.
  for (let at = dir; ; at = path.dirname(at)) {
    try {
      return fs.statSync(at).isDirectory() ? undefined : at;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || path.dirname(at) === at) return undefined;
    }
  }
}

/**
 * Facts about a data dir that must survive the loss of `herald.db`: its
 * partition count, and an id that `herald.db` repeats, so a database that is
 * missing or belongs elsewhere is noticed instead of silently starting empty.
 */
export interface DataDirIdentity {
  id: string;
  partitions: number;
  createdAt: string;
}

/**
 * A `herald restore` into this dir that did not finish leaves its staging dir (`.restore-<pid>`):
 * what was moved in so far is not a data dir to start on (or to start afresh in).
 * @throws StartupError naming it
 */
export function refuseUnfinishedRestore(dataDir: string): void {
  const staging = fs.readdirSync(dataDir).find((name) => RESTORE_STAGING.test(name));
  if (staging === undefined) return;
  throw new StartupError(
    `data dir ${path.resolve(dataDir)} holds ${staging}: a herald restore into it did not finish. Empty the dir and run the restore again`,
  );
}

/**
 * A start with another HERALD_PARTITIONS than the data dir was created with is refused before herald.db
 * is opened for writing: opening it runs its migrations, after which the version that made the data
 * dir may not start on it again (an upgrade probe's typo did that). The store checks again, with more.
 * @throws StartupError saying which count to start with
 */
export function refusePartitionChange(dataDir: string, partitions: number): void {
  const inIdentity = readIdentity(dataDir)?.partitions;
  const inDatabase = partitionsInDatabase(path.join(dataDir, 'herald.db'));
  // Two records that disagree: one is damaged, which the store says (neither may be taken for the count).
  if (inIdentity !== undefined && inDatabase !== undefined && inIdentity !== inDatabase) return;
  const recorded = inIdentity ?? inDatabase;
  if (recorded === undefined || recorded === partitions) return;
  throw new StartupError(
    `data dir ${dataDir} was created with ${recorded} partitions; HERALD_PARTITIONS=${partitions} would re-route keys. Start with HERALD_PARTITIONS=${recorded}. Nothing was changed.`,
  );
}

/** herald.db's `partitions`, read without writing; undefined when there is none to read. */
function partitionsInDatabase(file: string): number | undefined {
  const value = metaWithoutWriting(file, 'partitions');
  return value === undefined ? undefined : Number(value);
}

/**
 * A `meta` value of the SQLite database `file`, read on a read-only connection (nothing migrated,
 * nothing created); undefined when the file, its table or the key is not there to read.
 */
export function metaWithoutWriting(file: string, key: string, opts: { readErrors?: 'throw' } = {}): string | undefined {
  if (!fs.existsSync(file)) return undefined;
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    return db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?').get(key)?.value;
  } catch (err) {
    // An I/O error, for a caller that must not take it as "not there" (`readErrors: 'throw'`).
    const code = (err as { code?: unknown }).code;
    // CANTOPEN, CORRUPT and NOTADB too: SQLite gives them for a read the disk failed (re-probe: an EIO at the open, or
    // at a later read, still turned the backup's check off).
    if (opts.readErrors === 'throw' && typeof code === 'string' && /^(SQLITE_(IOERR|CANTOPEN|CORRUPT|NOTADB)|E[A-Z]+$)/.test(code))
      throw err;
    return undefined; // unreadable here: whoever opens it for writing says why
  } finally {
    db?.close();
  }
}

/** The staging dir `herald restore` makes inside an existing target: `.restore-<pid>`. */
export const RESTORE_STAGING = /^\.restore-\d+$/;

export function readIdentity(dataDir: string): DataDirIdentity | undefined {
  const file = path.join(dataDir, IDENTITY_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw unusable(dataDir, err);
  }
  try {
    const parsed = JSON.parse(text) as Partial<DataDirIdentity>;
    if (typeof parsed.id === 'string' && Number.isInteger(parsed.partitions) && typeof parsed.createdAt === 'string') {
      return parsed as DataDirIdentity;
    }
  } catch {
    // Reported below.
  }
  throw new StartupError(
    `${file} is not a Herald data dir identity file; restore it from a backup, or remove it to have it written again from herald.db`,
  );
}

/** Written once, atomically: a temp file, fsync, rename, fsync of the directory. */
export function writeIdentity(dataDir: string, facts: { id: string; partitions: number }): DataDirIdentity {
  const identity: DataDirIdentity = { ...facts, createdAt: new Date().toISOString() };
  writeFileAtomically(path.join(dataDir, IDENTITY_FILE), `${JSON.stringify(identity, null, 2)}\n`);
  return identity;
}
