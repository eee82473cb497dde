import { openConnection, quickCheck, type Db } from './db';

/**
 * `index.db`: the tables derived from the log (the indexer's), in a database of their own so the
 * indexer thread's writes never hold the lock the ingest thread's own writes (delivery state,
 * subscriptions) wait for. Everything here can be rebuilt from the log: a missing `index.db` is
 * rebuilt at start-up.
 */
export const INDEX_DB_FILE = 'index.db';

/**
 * The same tables as herald.db had them (migrations 0001 and 0006), so a data dir from before moves
 * its rows over as they are. Derived data: no migrations; a change of shape would rebuild it.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
  source    TEXT    NOT NULL,
  id        TEXT    NOT NULL,
  partition INTEGER NOT NULL,
  "offset"  INTEGER NOT NULL,
  stored_at INTEGER NOT NULL,
  PRIMARY KEY (source, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_by_stored_at ON idempotency (stored_at);
CREATE INDEX IF NOT EXISTS idempotency_by_offset ON idempotency (partition, "offset");
CREATE TABLE IF NOT EXISTS log_index (
  partition INTEGER NOT NULL,
  "offset"  INTEGER NOT NULL,
  position  INTEGER NOT NULL,
  length    INTEGER NOT NULL,
  PRIMARY KEY (partition, "offset")
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS partition_heads (
  partition   INTEGER PRIMARY KEY,
  head_offset INTEGER NOT NULL
);
`;

/** Keys of `meta` that describe the index (the rest of herald.db's meta describes the data dir). */
const INDEX_META_KEYS = ['log_indexed_through', 'log_start', 'log_holes'];
const MOVED_TABLES = ['idempotency', 'log_index', 'partition_heads'];

/** Opens (creating if needed) the index database of a data dir. */
export function openIndexDatabase(file: string): Db {
  const db = openConnection(file);
  db.exec(SCHEMA);
  return db;
}

/** SQLite's verdict on a damaged file (at open, at the first read, or by `quick_check`). */
export function isCorruptDatabase(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT_INDEX' || code === 'DB_CHECK';
}

/**
 * Opens the index database and checks its pages (`PRAGMA quick_check`: about 0.3 s per million
 * events indexed, warm). A damaged index is never trusted: its lookups can answer "not found" for an
 * event stored (which would then be stored twice) or fail every read and write.
 * @throws an error `isCorruptDatabase` recognises when the file is damaged
 */
export function openCheckedIndexDatabase(file: string): Db {
  const db = openIndexDatabase(file);
  try {
    quickCheck(db);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** herald.db still holds the index tables of a data dir from before `index.db` (see {@link moveIndexTables}). */
export function hasLegacyIndexTables(herald: Db): boolean {
  return herald.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'log_index'").get() !== undefined;
}

/**
 * Data dirs written before `index.db` kept these tables in `herald.db`: they move over once (copied,
 * then dropped; a crash between is repeated harmlessly at the next start). A new data dir's empty
 * tables (created by the first migration) go the same way.
 */
export function moveIndexTables(herald: Db, indexFile: string): void {
  if (!hasLegacyIndexTables(herald)) return;
  herald.prepare('ATTACH DATABASE ? AS idx').run(indexFile);
  try {
    herald.transaction(() => {
      for (const table of MOVED_TABLES) herald.exec(`INSERT OR REPLACE INTO idx.${table} SELECT * FROM main.${table}`);
      const copy = herald.prepare('INSERT OR REPLACE INTO idx.meta (key, value) SELECT key, value FROM main.meta WHERE key = ?');
      for (const key of INDEX_META_KEYS) copy.run(key);
    })();
    herald.transaction(() => {
      for (const table of MOVED_TABLES) herald.exec(`DROP TABLE main.${table}`);
      const drop = herald.prepare('DELETE FROM main.meta WHERE key = ?');
      for (const key of INDEX_META_KEYS) drop.run(key);
    })();
  } finally {
    herald.exec('DETACH DATABASE idx');
  }
}
