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

  /** Steps by rows, not offsets: a partition's offsets may have gaps of any size. `afterStep` runs between the steps' transactions. */
  function deleteOffsets(partition: number, from: number, to: number, afterStep: () => void): void {
    for (let at = from; at < to;) {
      const stop = Math.min(to, index.nthOffsetFrom(partition, at, ROWS_PER_TRANSACTION) ?? to);
      db.transaction(() => {
        index.deleteOffsets(partition, at, stop);
        idempotency.deleteOffsets(partition, at, stop);
      })();
      afterStep();
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
    retire(
      through: number,
      onMarked: (firstOffsets: (number | null)[]) => void = () => undefined,
      afterStep = () => {},
    ): (number | null)[] {
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
      for (let p = 0; p < partitions; p++) deleteOffsets(p, from[p]!, firstOffsets[p] ?? (index.maxOffset(p) ?? -1) + 1, afterStep);
      return firstOffsets;
    },
    /** Forgets idempotency records stored before `cutoff` (the window); returns how many. `afterStep` runs between batches. */
    prune(cutoff: number, afterStep = () => {}): number {
      let total = 0;
      for (;;) {
        const n = idempotency.prune(cutoff, PRUNE_BATCH);
        total += n;
        if (n < PRUNE_BATCH) return total;
        afterStep();
      }
    },
  };
}
