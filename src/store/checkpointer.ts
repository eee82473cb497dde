import { Worker } from 'node:worker_threads';
import { MAX_WAL_BYTES } from './db';
import { THREAD_LIMITS } from '../thread-limits';

/**
 * Checkpoints the SQLite WAL from a worker thread with its own connection,
 * so the copy of WAL pages into the database file (8–18 ms at a time under
 * load) never runs on the event loop that answers requests. PASSIVE mode
 * never blocks the writer.
 */
export function startCheckpointer(dbFile: string, intervalMs: number): { stop(): Promise<void> } {
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const Database = require(workerData.driver);
    const db = new Database(workerData.dbFile);
    // TRUNCATE holds the write lock while it waits for readers: a long reader (herald backup's VACUUM INTO)
    // must not stall herald.db's writers for long, so each try waits 100 ms at most (the next comes 100 ms on).
    db.pragma('busy_timeout = 100');
    const fs = require('node:fs');
    const timer = setInterval(() => {
      try {
        // checkpointBounded() of ./db, which this eval'd worker cannot import.
        let walBytes = 0;
        try { walBytes = fs.statSync(workerData.dbFile + '-wal').size; } catch {}
        db.pragma(walBytes > workerData.maxWalBytes ? 'wal_checkpoint(TRUNCATE)' : 'wal_checkpoint(PASSIVE)');
      } catch (err) { parentPort.postMessage({ error: String(err) }); }
    }, workerData.intervalMs);
    parentPort.on('message', (m) => { if (m === 'stop') { clearInterval(timer); db.close(); parentPort.postMessage('stopped'); } });
  `;
  const worker = new Worker(source, {
    eval: true,
    resourceLimits: THREAD_LIMITS.checkpointer,
    workerData: { dbFile, intervalMs, maxWalBytes: MAX_WAL_BYTES, driver: require.resolve('better-sqlite3') },
  });
  worker.unref();
  return {
    stop() {
      return new Promise<void>((resolve) => {
        const done = () => resolve();
        worker.once('exit', done);
        worker.once('message', (m) => {
          if (m === 'stopped') void worker.terminate().then(done, done);
        });
        worker.postMessage('stop');
      });
    },
  };
}
