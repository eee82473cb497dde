import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { MAX_WAL_BYTES } from './db';
import { THREAD_LIMITS } from '../thread-limits';

/**
 * Checkpoints the SQLite WAL from a worker thread with its own connection,
 * so the copy of WAL pages into the database file (8–18 ms at a time under
 * load) never runs on the event loop that answers requests. PASSIVE mode
 * never blocks the writer; the TRUNCATE that empties a WAL past 32 MiB does,
 * so it runs only while checkpoints are quick.
 */
/** What the checkpointer tells: its thread failed (could not start, or died), or a checkpoint failed (the thread goes on). */
export interface CheckpointerEvents {
  failed?: (err: Error) => void;
  checkpointFailed?: (message: string) => void;
}

/** Past this size herald.db's WAL is emptied even while checkpoints are slow (see the worker's source). */
export const HARD_MAX_WAL_BYTES = 16 * MAX_WAL_BYTES;

/** A PASSIVE or TRUNCATE checkpoint that took this long says the disk is slow now (see the worker's source). */
const QUICK_CHECKPOINT_MS = 250;

export function startCheckpointer(
  dbFile: string,
  intervalMs: number,
  events: CheckpointerEvents = {},
  /** checkpoint-signal.ts's buffer: when this thread held herald.db's write lock. */
  signal?: SharedArrayBuffer,
  /** Tests: what counts as a quick checkpoint (default {@link QUICK_CHECKPOINT_MS}). */
  quickMs = QUICK_CHECKPOINT_MS,
  /** Tests: the WAL size past which the TRUNCATE runs however slow the disk (default {@link HARD_MAX_WAL_BYTES}). */
  hardMaxWalBytes = HARD_MAX_WAL_BYTES,
): { quiesce(): void; stop(): Promise<void> } {
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const Database = require(workerData.driver);
    const db = new Database(workerData.dbFile);
    // TRUNCATE takes the write lock and waits for readers: it never waits here (busy_timeout 0), and
    // after a try that found readers (herald backup's VACUUM INTO, an operator's sqlite3 shell) only
    // PASSIVE runs for a second, so herald.db's writers are never shut out by this thread.
    db.pragma('busy_timeout = 0');
    const fs = require('node:fs');
    // checkpoint-signal.ts: when this thread held the write lock (0: began, 1: last ended), for the gateway's writers.
    const held = workerData.signal ? new Float64Array(workerData.signal) : new Float64Array(3);
    let passiveUntil = 0;
    // When held[2] (the longest round of the last minute) was set.
    let longestAt = 0;
    // Set by quiesce() or stop() (index 0: 1) while this thread may be inside a checkpoint: an interval overdue behind
    // a slow one starts none after it (re-probe: a SIGTERM's stop waited out a second 10 s checkpoint it began).
    const stopping = new Int32Array(workerData.stopFlag);
    const timer = setInterval(() => {
      if (Atomics.load(stopping, 0) === 1) return;
      const roundAt = performance.now();
      try {
        // checkpointBounded() of ./db, which this eval'd worker cannot import.
        let walBytes = 0;
        try { walBytes = fs.statSync(workerData.dbFile + '-wal').size; } catch {}
        // PASSIVE first, never blocking writers, so that a TRUNCATE after it has little to copy.
        const passiveAt = performance.now();
        db.pragma('wal_checkpoint(PASSIVE)');
        const quick = performance.now() - passiveAt < workerData.quickMs;
        // A slow PASSIVE bars the TRUNCATE for 10 s too: the next PASSIVE, with nothing it can copy (all copied, or a
        // reader's snapshot in the way), syncs nothing and is quick whatever the disk (re-probe: under a 10 s fsync
        // the TRUNCATE after such a PASSIVE held the write lock for 10 s, in every run). Not longer: on a healthy disk
        // a PASSIVE that copies a large WAL can take that long too, and the WAL grows while the TRUNCATE waits.
        if (!quick) passiveUntil = Math.max(passiveUntil, performance.now() + 10000);
        // TRUNCATE holds the write lock through its copy and sync: only after a quick PASSIVE (the disk is keeping
        // up), and after one that was slow itself not for a minute (slow-disk probe: writers shut out for seconds).
        // Past the hard bound it runs all the same: a slow disk that stays slow would otherwise grow the WAL without
        // end (re-probe: 278 MiB in a minute of 10 s fsyncs), to a full disk; a hold of the lock is the lesser harm.
        const barred = !quick || performance.now() < passiveUntil;
        if (walBytes > workerData.maxWalBytes && (!barred || walBytes > workerData.hardMaxWalBytes)) {
          const began = performance.now();
          held[0] = Date.now();
          let row;
          try {
            [row] = db.pragma('wal_checkpoint(TRUNCATE)');
          } finally {
            held[1] = Date.now();
            held[0] = 0;
          }
          if (row && row.busy) passiveUntil = Math.max(passiveUntil, performance.now() + 1000);
          else if (performance.now() - began >= workerData.quickMs) passiveUntil = performance.now() + 60000;
        }
      } catch (err) {
        if (String(err.code).startsWith('SQLITE_BUSY')) passiveUntil = Math.max(passiveUntil, performance.now() + 1000);
        else parentPort.postMessage({ error: String(err) });
      } finally {
        // The longest round of the last minute, not the last one: after a slow round the next ones, with nothing to
        // copy, sync nothing and are quick whatever the disk, while the shutdown's own checkpoint has its writes to
        // copy and sync (re-probe: a round of 0 ms said a closing checkpoint fitted; it ended 1.9 s past the deadline).
        const took = performance.now() - roundAt;
        if (took >= held[2] || performance.now() - longestAt > 60000) {
          held[2] = took;
          longestAt = performance.now();
        }
      }
    }, workerData.intervalMs);
    parentPort.on('message', (m) => { if (m === 'stop') { clearInterval(timer); db.close(); parentPort.postMessage('stopped'); } });
  `;
  const stopFlag = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
  const worker = new Worker(source, {
    eval: true,
    resourceLimits: THREAD_LIMITS.checkpointer,
    workerData: {
      dbFile,
      intervalMs,
      maxWalBytes: MAX_WAL_BYTES,
      quickMs,
      hardMaxWalBytes,
      signal,
      stopFlag,
      driver: require.resolve('better-sqlite3'),
    },
  });
  worker.unref();
  // A thread that cannot start (no descriptor left: `Worker initialization failure: EMFILE`) or that
  // dies (its heap bound, herald.db unreachable) emits 'error': without a listener that killed the
  // whole gateway. It is the checkpointer's failure alone: the WAL stays durable, and the caller may start one again.
  let exited = false;
  let stopping = false;
  worker.on('error', (err) => {
    if (!stopping) events.failed?.(err);
  });
  // A checkpoint that failed (an I/O error, a full disk) was posted to no one (re-probe): said now.
  worker.on('message', (m: unknown) => {
    const error = (m as { error?: unknown } | null)?.error;
    if (typeof error === 'string' && !stopping) events.checkpointFailed?.(error);
  });
  worker.on('exit', () => {
    exited = true;
  });
  /** No checkpoint starts from now on (one in progress goes on): a shutdown began. */
  const quiesce = () => Atomics.store(new Int32Array(stopFlag), 0, 1);
  return {
    quiesce,
    stop() {
      stopping = true;
      quiesce();
      if (exited) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const done = () => resolve();
        worker.once('exit', done);
        // Not `once`: a failed checkpoint's message still on its way would take it, and the stop would wait for ever.
        const stopped = (m: unknown) => {
          if (m !== 'stopped') return;
          worker.off('message', stopped);
          void worker.terminate().then(done, done);
        };
        worker.on('message', stopped);
        worker.postMessage('stop');
      });
    },
  };
}

/** Size of herald.db's WAL past which {@link startCheckpointerOnDemand} starts the checkpointer. */
export const CHECKPOINTER_START_BYTES = 1024 * 1024;

/** How long after its thread failed {@link startCheckpointerOnDemand} waits before watching the WAL again. */
const RESTART_PAUSE_MS = 5000;

/**
 * {@link startCheckpointer} once herald.db's WAL first grows past `startBytes` (looked at every
 * interval, one `stat`): a gateway whose subscriptions and delivery state change little never needs
 * the thread, which costs about 0.3 s of CPU to start. Below that size nothing is lost by waiting: the
 * WAL is durable, and the shutdown checkpoints it.
 */
export function startCheckpointerOnDemand(
  dbFile: string,
  intervalMs: number,
  startBytes = CHECKPOINTER_START_BYTES,
  events: CheckpointerEvents = {},
  signal?: SharedArrayBuffer,
): { started(): boolean; quiesce(): void; stop(): Promise<void> } {
  let running: ReturnType<typeof startCheckpointer> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const watch = () => {
    timer = setInterval(() => {
      let walBytes = 0;
      try {
        walBytes = fs.statSync(`${dbFile}-wal`).size;
      } catch {
        // No WAL file yet: nothing to checkpoint.
      }
      if (walBytes <= startBytes) return;
      clearInterval(timer);
      const started = startCheckpointer(
        dbFile,
        intervalMs,
        {
          failed: (err) => {
            if (stopped || running !== started) return;
            events.failed?.(err);
            running = undefined;
            // Watched again after a pause (descriptors freed, say), not a new thread every interval.
            timer = setTimeout(watch, RESTART_PAUSE_MS);
            timer.unref();
          },
          checkpointFailed: events.checkpointFailed,
        },
        signal,
      );
      running = started;
    }, intervalMs);
    timer.unref();
  };
  watch();
  return {
    started: () => running !== undefined,
    /** Starts no thread and no checkpoint from now on (a shutdown began; one in progress goes on). */
    quiesce() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(timer);
      running?.quiesce();
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(timer);
      await running?.stop();
    },
  };
}
