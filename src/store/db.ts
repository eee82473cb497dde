import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { NewerSchemaError } from '../errors';
import { HERALD_VERSION } from '../version';

export type Db = Database.Database;

/** Works from `src/store` (ts-jest) and `dist/store` (build) alike. */
export const MIGRATIONS_DIR = path.resolve(__dirname, '..', '..', 'migrations');

/**
 * Opens the gateway's SQLite database with the pragmas Herald relies on.
 * `synchronous=NORMAL`: a power cut may lose the last transactions, but every
 * row the log implies is rebuilt from the log at start-up, and delivery's state
 * (offsets, pending rows) may only move back to a safe older state. What a client
 * was told is done (a subscription created, changed or deleted) and what files
 * outside the database rely on is written {@link durably}.
 * Automatic checkpoints are off: they stall commits on the request path, so
 * the gateway checkpoints on a timer instead (see `checkpoint`).
 */
/**
 * How long a statement of the main thread's connection waits for herald.db's write lock: the wait blocks the event
 * loop that answers producers, so it is short (slow-disk probe: a PATCH waiting 5 s behind the lock held every
 * publish of that moment for 5 s). The delivery thread's flushes hold it for milliseconds; past this it is a 503.
 */
export const MAIN_BUSY_TIMEOUT_MS = 1_000;

export function openDatabase(file: string, opts: { check?: boolean } = {}): Db {
  const db = openConnection(file);
  return closedOnThrow(db, () => {
    if (opts.check) quickCheck(db);
    migrate(db);
    db.pragma(`busy_timeout = ${MAIN_BUSY_TIMEOUT_MS}`);
  });
}

/**
 * Runs `write` (one transaction, or a few statements) with `synchronous=FULL`: its commit is on disk when it
 * returns, not at the next checkpoint. A subscription answered `201` was rolled back by a power cut 3 s later
 * (file-system probe: the WAL is only synced at a checkpoint, which waits for 1 MiB of it), as were the data
 * dir's id and a PATCH or DELETE would be. Inside a transaction it only runs `write`: the pragma cannot change
 * there, and the outer transaction's owner decides.
 */
export function durably<T>(db: Db, write: () => T): T {
  if (db.inTransaction) return write();
  db.pragma('synchronous = FULL');
  try {
    return write();
  } finally {
    db.pragma('synchronous = NORMAL');
  }
}

/**
 * `PRAGMA quick_check` before anything is written: a damaged page otherwise opens fine and fails
 * writes later, while `/readyz` says ready (crash probe: a flipped byte in herald.db).
 * @throws an error with code `DB_CHECK` (see `isCorruptDatabase`) when the file is damaged
 */
export function quickCheck(db: Db): void {
  const rows = db.pragma('quick_check(8)') as { quick_check: string }[];
  if (rows.length !== 1 || rows[0]!.quick_check !== 'ok') {
    // One line: SQLite's findings carry newlines of their own.
    const found = rows.map((r) => r.quick_check.trim().replace(/\s*\n\s*/g, '; ')).join('; ');
    throw Object.assign(new Error(`quick_check: ${found}`), { code: 'DB_CHECK' });
  }
}

/** A connection with the same pragmas, for a worker thread (the schema is already migrated). */
export function openConnection(file: string): Db {
  const db = new Database(file);
  return closedOnThrow(db, () => {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    db.pragma('wal_autocheckpoint = 0');
    // Without a limit the WAL file keeps its high-water size forever, and opening it after a crash reads all of it.
    db.pragma('journal_size_limit = 67108864');
  });
}

/**
 * `db` once `setUp` ran; closed when it threw (a full disk refusing `-shm`, a refused migration), so a
 * caller that goes on (a restore in the CLI, a test) holds no descriptor into the file system.
 */
function closedOnThrow(db: Db, setUp: () => unknown): Db {
  try {
    setUp();
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** Applies `migrations/NNNN_name.sql` files not yet recorded, in order, each in a transaction. */
export function migrate(db: Db, dir = MIGRATIONS_DIR): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
  const rows = db.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all() as { version: number; name: string }[];
  const applied = new Set(rows.map((r) => r.version));
  const files = fs
    .readdirSync(dir)
    .filter((f) => /^\d+_.+\.sql$/.test(f))
    .sort();
  // A database a newer Herald migrated: this one would read tables it does not know the meaning of.
  const known = new Set(files.map((f) => Number(f.split('_', 1)[0])));
  const unknown = rows.find((r) => !known.has(r.version));
  if (unknown) {
    throw new NewerSchemaError(
      `${db.name} has schema migration ${unknown.name}, which this version of Herald (${HERALD_VERSION}) does not have: a newer Herald ` +
        'migrated it. Run that version or a newer one; a data dir cannot go back to an older Herald (restore a backup taken before the upgrade instead).',
      unknown.name,
    );
  }
  const newlyApplied: number[] = [];
  for (const file of files) {
    const version = Number(file.split('_', 1)[0]);
    if (applied.has(version)) continue;
    const sql = fs.readFileSync(path.join(dir, file), 'utf8');
    db.transaction(() => {
      db.exec(sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(version, file, Date.now());
    })();
    newlyApplied.push(version);
  }
  return newlyApplied;
}

/**
 * How often Herald checkpoints each SQLite database (index.db from the indexer thread, herald.db from
 * the checkpointer thread). Small and often: a checkpoint's fsync makes ext4 (data=ordered) write
 * every page it copied before the journal commit that the log's next fdatasync waits for. Once a
 * second, ingest stalled 70–100 ms every second at 3,600 req/s (330 ms every 5 s at 5 s); every
 * 100 ms the stall is lost in the noise.
 */
export const CHECKPOINT_INTERVAL_MS = 100;

/** A WAL file past this is emptied (TRUNCATE) rather than only copied back (PASSIVE): it counts in the data dir's disk use. */
export const MAX_WAL_BYTES = 32 * 1024 * 1024;

/**
 * The checkpoint a steady writer's database needs: PASSIVE never resets the WAL while writes keep
 * coming, so past {@link MAX_WAL_BYTES} TRUNCATE waits for a gap between transactions and empties it.
 */
export function checkpointBounded(db: Db, file: string): void {
  let walBytes = 0;
  try {
    walBytes = fs.statSync(`${file}-wal`).size;
  } catch {
    return; // no WAL file: nothing to checkpoint
  }
  db.pragma(walBytes > MAX_WAL_BYTES ? 'wal_checkpoint(TRUNCATE)' : 'wal_checkpoint(PASSIVE)');
}

/** Moves the SQLite WAL into the main file without blocking writers (PASSIVE). */
export function checkpoint(db: Db): void {
  db.pragma('wal_checkpoint(PASSIVE)');
}
