/**
 * The indexer's thread (RocketMQ's dispatcher behind the CommitLog): writes the derived rows of
 * committed records with its own SQLite connection, so ingest's ack path writes only the log.
 * Retention's row deletions and the idempotency window's pruning run here too. Everything it writes
 * can be rebuilt from the log: a crash loses at most rows that recovery derives again.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { isLockHeld } from '../errors';
import { CHECKPOINT_INTERVAL_MS, checkpointBounded, openConnection } from '../store/db';
import { createIdempotencyRepo } from '../store/idempotency-repo';
import { isCorruptDatabase } from '../store/index-db';
import { createIndexRows } from './index-rows';
import { fromColumns, type FromIndexer, type IndexRow, type IndexerWorkerData, type ToIndexer } from './indexer-protocol';
import { idempotencyKey, keyFilterFrom, type KeyFilter } from './key-filter';

/** Rows per transaction: the main thread's own writes wait for the lock at most this long. */
const ROWS_PER_TRANSACTION = 4096;
/** How long one SQLite call waits for a lock another process holds, and the pause between tries. */
const BUSY_SLICE_MS = 100;
/** How long a write is tried against a held lock before the worker gives up (and is restarted). */
const BUSY_GIVE_UP_MS = 5000;

const port = parentPort!;
const { dbFile, partitions, startDelayMs, stop } = workerData as IndexerWorkerData;
const stopFlag = new Int32Array(stop);
// Backoff after failures (index.db locked, unwritable): this thread only sleeps (woken by a stop); messages queue in its port.
if (startDelayMs > 0) Atomics.wait(stopFlag, 0, 0, startDelayMs);
const db = openConnection(dbFile);
// SQLite's busy wait is native: a thread inside it can be neither stopped nor terminated (a terminate
// then aborts the process when the call returns). So each wait is short, and the waiting is done
// here, where a stop is seen (see `whileBusy`).
db.pragma(`busy_timeout = ${BUSY_SLICE_MS}`);
// The idempotency B-tree is written at random keys: with SQLite's default 2 MiB page cache most
// inserts read a page from the OS first (half the indexer's CPU was system time). 16 MiB keeps the
// hot interior pages in memory (a million keys' interior pages take about 2 MiB); 32 MiB was resident
// memory for nothing.
db.pragma('cache_size = -16384');
const indexRows = createIndexRows(db, partitions);
const post = (message: FromIndexer) => port.postMessage(message);

/** Commands in arrival order; index batches queued behind a retire are written after it. */
const queue: ToIndexer[] = [];
let draining = false;

port.on('message', (message: ToIndexer) => {
  queue.push(message);
  if (!draining) {
    draining = true;
    setImmediate(drain);
  }
});

/** Handles what arrived; messages that arrive meanwhile queue up (bigger batches under load). */
function drain(): void {
  try {
    while (queue.length > 0) {
      // Stopped at the shutdown deadline: what is left is indexed at the next start (see the catch).
      if (Atomics.load(stopFlag, 0) === 1) process.exit(0);
      const next = queue[0]!;
      if (next.type === 'index') {
        indexBatch();
        continue;
      }
      queue.shift();
      if (next.type === 'retire') {
        whileBusy(() => indexRows.retire(next.through, (firstOffsets) => post({ type: 'retired', through: next.through, firstOffsets })));
      } else if (next.type === 'prune') {
        post({ type: 'pruned', ticket: next.ticket, count: whileBusy(() => indexRows.prune(next.cutoff)) });
      } else if (next.type === 'build-key-filter') {
        startKeyFilter(next);
      } else {
        keyFilterBuild = undefined;
        db.close();
        post({ type: 'closed' });
        port.close();
        return;
      }
    }
  } catch (err) {
    // Stopped at the shutdown deadline: the indexer has said so; what is left is indexed at the next start.
    if (Atomics.load(stopFlag, 0) === 1) process.exit(0);
    post({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err), corrupt: isCorruptDatabase(err) });
    // The main thread restarts the worker and sends what is not indexed yet again.
    process.exit(1);
  }
  // A key filter build reads a page at a time, and what arrived meanwhile is handled between pages.
  if (keyFilterBuild) {
    keyFilterStep();
    if (keyFilterBuild) {
      setImmediate(drain);
      return;
    }
  }
  draining = false;
}

/** Writes the consecutive `index` messages at the front of the queue, in transactions of bounded size. */
function indexBatch(): void {
  let batch: IndexRow[] = [];
  let end = 0;
  while (queue[0]?.type === 'index' && batch.length < ROWS_PER_TRANSACTION) {
    const message = queue.shift() as Extract<ToIndexer, { type: 'index' }>;
    const rows = fromColumns(message.columns);
    batch = batch.length === 0 ? rows : batch.concat(rows);
    end = message.end;
  }
  whileBusy(() => indexRows.write(batch, end));
  post({ type: 'indexed', through: end });
  checkpoint();
}

// Monotonic: a wall clock stepped back an hour (NTP) stopped every checkpoint for that hour, and index.db's
// WAL (no autocheckpoint) took every page written meanwhile (clock probe: 189 MiB for 160,000 events).
let checkpointedAt = performance.now();

/** The indexer is index.db's only writer, so it checkpoints it itself, between its transactions, at most every {@link CHECKPOINT_INTERVAL_MS}. */
function checkpoint(): void {
  if (performance.now() - checkpointedAt < CHECKPOINT_INTERVAL_MS) return;
  checkpointedAt = performance.now();
  whileBusy(() => checkpointBounded(db, dbFile));
}

/**
 * Runs `write` (a whole transaction: it rolls back when it throws) until it gets past a lock another
 * process holds: for {@link BUSY_GIVE_UP_MS} at most, and not once a stop is asked for; then the
 * error goes up and the worker exits (restarted unless the indexer is closing).
 */
function whileBusy<T>(write: () => T): T {
  const started = performance.now();
  for (;;) {
    try {
      return write();
    } catch (err) {
      if (!isLockHeld(err) || Atomics.load(stopFlag, 0) === 1 || performance.now() - started >= BUSY_GIVE_UP_MS) throw err;
      Atomics.wait(stopFlag, 0, 0, BUSY_SLICE_MS);
    }
  }
}

/** Keys per page of the key filter's scan (keyset paging: each page is an index range scan). */
const KEY_FILTER_PAGE = 5_000;

interface KeyFilterBuild {
  ticket: number;
  words: Uint32Array<ArrayBuffer>;
  filter: KeyFilter;
  after: { source: string; id: string } | undefined;
}

const idempotency = createIdempotencyRepo(db);
let keyFilterBuild: KeyFilterBuild | undefined;

/**
 * Starts the build of the ingest thread's key filter (replacing one not finished) and reads its
 * first page now, before the index batches queued behind the request: the keys those batches write
 * reach the main thread's filter through its list of keys added since it asked.
 */
function startKeyFilter(request: Extract<ToIndexer, { type: 'build-key-filter' }>): void {
  keyFilterBuild = undefined;
  try {
    const words = new Uint32Array(2 ** request.log2Bits / 32);
    keyFilterBuild = { ticket: request.ticket, words, filter: keyFilterFrom(words, request.log2Bits, request.hashes, 0), after: undefined };
  } catch (err) {
    post({ type: 'key-filter-failed', ticket: request.ticket, message: err instanceof Error ? err.message : String(err) });
    return;
  }
  keyFilterStep();
}

/** Reads one page of keys into the filter; after the last, sends the filter's bits (transferred, not copied). */
function keyFilterStep(): void {
  const build = keyFilterBuild!;
  try {
    const rows = idempotency.keys(build.after, KEY_FILTER_PAGE);
    for (const row of rows) build.filter.add(idempotencyKey(row.source, row.id));
    if (rows.length === KEY_FILTER_PAGE) {
      build.after = rows[rows.length - 1];
      return;
    }
    keyFilterBuild = undefined;
    const { log2Bits, hashes, count } = build.filter;
    const words = build.words.buffer;
    port.postMessage({ type: 'key-filter', ticket: build.ticket, log2Bits, hashes, words, count } satisfies FromIndexer, [words]);
  } catch (err) {
    // Only the filter is lost (ingest asks SQLite meanwhile): the worker goes on indexing.
    keyFilterBuild = undefined;
    post({ type: 'key-filter-failed', ticket: build.ticket, message: err instanceof Error ? err.message : String(err) });
  }
}
