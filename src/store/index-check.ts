import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { coerceError } from '../errors';
import { writeFileAtomically } from '../durable-fs';
import { THREAD_LIMITS } from '../thread-limits';

/**
 * `PRAGMA integrity_check` of index.db, on a read-only connection in a worker thread of its own: it
 * finds what the start's `quick_check` does not (rows out of key order, an index that disagrees with
 * its table: a lookup that misses an event stored, which a resend would then store again), but takes
 * about 1–2 s per million events indexed, too long to hold the start. WAL lets it read beside the
 * indexer's writes. Reports once, then the thread ends.
 */
export function startIndexIntegrityCheck(dbFile: string, onDamaged: (detail: string) => void): { stop(): Promise<void> } {
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const Database = require(workerData.driver);
    let detail;
    try {
      const db = new Database(workerData.dbFile, { readonly: true, fileMustExist: true });
      db.pragma('busy_timeout = 5000');
      const rows = db.pragma('integrity_check(8)');
      db.close();
      if (!(rows.length === 1 && rows[0].integrity_check === 'ok')) detail = rows.map((r) => r.integrity_check).join('; ');
    } catch (err) {
      // Damage SQLite reports by failing (SQLITE_CORRUPT): the same verdict. Anything else (the file
      // gone at close) is no verdict.
      if (err && /CORRUPT|NOTADB/.test(String(err.code))) detail = String(err.message);
    }
    parentPort.postMessage({ detail });
  `;
  const worker = new Worker(source, {
    eval: true,
    resourceLimits: THREAD_LIMITS.checkpointer,
    workerData: { dbFile, driver: require.resolve('better-sqlite3') },
  });
  worker.unref();
  worker.on('message', (m: { detail?: string }) => {
    if (m.detail !== undefined) onDamaged(m.detail);
  });
  worker.on('error', () => undefined); // a check that cannot run is no verdict
  return {
    async stop() {
      await worker.terminate();
    },
  };
}

/** The marker that has the next start set index.db aside and rebuild it from the log. */
export const damagedIndexMarker = (indexFile: string) => `${indexFile}.damaged`;

/** Leaves {@link damagedIndexMarker} saying what was found, or says to delete index.db by hand. */
export function markIndexDamaged(indexFile: string, detail: string, log: Logger): void {
  try {
    writeFileAtomically(damagedIndexMarker(indexFile), detail);
  } catch (err) {
    log.error({ err: coerceError(err) }, 'could not leave the marker that has the next start rebuild index.db; delete index.db before it');
  }
}
