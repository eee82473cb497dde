/**
 * The indexer's thread (RocketMQ's dispatcher behind the CommitLog): writes the derived rows of
 * committed records with its own SQLite connection, so ingest's ack path writes only the log.
 * Retention's row deletions and the idempotency window's pruning run here too. Everything it writes
 * can be rebuilt from the log: a crash loses at most rows that recovery derives again.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openConnection } from '../store/db';
import { createIndexRows } from './index-rows';
import { fromColumns, type FromIndexer, type IndexRow, type IndexerWorkerData, type ToIndexer } from './indexer-protocol';

/** Rows per transaction: the main thread's own writes wait for the lock at most this long. */
const ROWS_PER_TRANSACTION = 4096;

const port = parentPort!;
const { dbFile, partitions } = workerData as IndexerWorkerData;
const db = openConnection(dbFile);
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
      const next = queue[0]!;
      if (next.type === 'index') {
        indexBatch();
        continue;
      }
      queue.shift();
      if (next.type === 'retire') {
        indexRows.retire(next.through, (firstOffsets) => post({ type: 'retired', through: next.through, firstOffsets }));
      } else if (next.type === 'prune') {
        post({ type: 'pruned', ticket: next.ticket, count: indexRows.prune(next.cutoff) });
      } else {
        db.close();
        post({ type: 'closed' });
        port.close();
        return;
      }
    }
  } catch (err) {
    post({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    // The main thread restarts the worker and sends what is not indexed yet again.
    process.exit(1);
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
  indexRows.write(batch, end);
  post({ type: 'indexed', through: end });
}
