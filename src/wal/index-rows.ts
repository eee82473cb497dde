import { isLockHeld } from '../errors';
import type { Db } from '../store/db';
import { createIdempotencyRepo } from '../store/idempotency-repo';
import { createLogIndexRepo } from '../store/log-index-repo';
import { createMetaRepo } from '../store/meta-repo';
import { createPartitionHeadsRepo } from '../store/partition-heads-repo';
import type { IndexRow } from './indexer-protocol';

/** Rows per transaction: another connection's writes wait for the lock at most this long. */
const ROWS_PER_TRANSACTION = 4096;
const PRUNE_BATCH = 5000;

/**
 * The writes of the derived tables (`log_index`, `idempotency`, `partition_heads` and the
 * `log_indexed_through` / `log_start` marks), made by the indexer's worker and, for what a crash
 * left unfinished, by start-up.
 */
export function createIndexRows(db: Db, partitions: number) {
  const index = createLogIndexRepo(db);
  const idempotency = createIdempotencyRepo(db);
  const heads = createPartitionHeadsRepo(db);
  const meta = createMetaRepo(db);

  const write = db.transaction((rows: IndexRow[], end: number) => {
    const touched = new Map<number, number>();
    for (const row of rows) {
      idempotency.insert(row);
      index.insert(row.partition, row);
      touched.set(row.partition, row.offset + 1);
    }
    for (const [partition, head] of touched) heads.set(partition, head);
    meta.set('log_indexed_through', end);
  });

  /**
   * Between the transactions of a bulk delete (retention's rows, the idempotency window's): the WAL's
   * pages are copied back so the next transaction writes the WAL from its start. Without it the WAL
   * took every step's pages (81 MB for a 9.7 MB index, a probe), on the disk whose space retention was
   * freeing, past HERALD_MIN_FREE_BYTES, so ingest stayed refused with `storage_full` for good.
   */
  const reuseWal = () => void db.pragma('wal_checkpoint(PASSIVE)');

  /**
   * After a bulk delete: the WAL file emptied (TRUNCATE), as no write may come to reuse it (ingest
   * refused for free space, waiting on this very deletion). A reader in the way only leaves it for the
   * next checkpoint.
   */
  function emptyWal(): void {
    try {
      db.pragma('wal_checkpoint(TRUNCATE)');
    } catch (err) {
      if (!isLockHeld(err)) throw err;
    }
  }

  /** Steps by rows, not offsets: a partition's offsets may have gaps of any size. */
  function deleteOffsets(partition: number, from: number, to: number): void {
    for (let at = from; at < to;) {
      const stop = Math.min(to, index.nthOffsetFrom(partition, at, ROWS_PER_TRANSACTION) ?? to);
      db.transaction(() => {
        index.deleteOffsets(partition, at, stop);
        idempotency.deleteOffsets(partition, at, stop);
      })();
      reuseWal();
      at = stop;
    }
  }

  return {
    /** Indexes one or more committed groups; `end` is the log position past the last. */
    write,
    /**
     * Retention up to log position `through` (the base of the first segment kept). `log_start` moves
     * first, in one transaction with the new first offsets' computation, so a crash before the rows
     * are gone is finished at the next start; `onMarked` hears the first offsets (null: no record of
     * the partition indexed at or past `through`) before the rows are deleted in bounded steps.
     */
    retire(through: number, onMarked: (firstOffsets: (number | null)[]) => void = () => undefined): (number | null)[] {
      const from: number[] = [];
      const firstOffsets: (number | null)[] = [];
      db.transaction(() => {
        for (let p = 0; p < partitions; p++) {
          from.push(index.minOffset(p) ?? 0);
          firstOffsets.push(index.firstOffsetAtOrPast(p, through) ?? null);
        }
        meta.set('log_start', through);
      })();
      onMarked(firstOffsets);
      for (let p = 0; p < partitions; p++) deleteOffsets(p, from[p]!, firstOffsets[p] ?? (index.maxOffset(p) ?? -1) + 1);
      emptyWal();
      return firstOffsets;
    },
    /** Forgets idempotency records stored before `cutoff` (the window); returns how many. */
    prune(cutoff: number): number {
      let total = 0;
      for (;;) {
        const n = idempotency.prune(cutoff, PRUNE_BATCH);
        total += n;
        if (n < PRUNE_BATCH) break;
        reuseWal();
      }
      emptyWal();
      return total;
    },
  };
}
