/**
 * Messages between the indexer (main thread, `indexer.ts`) and its worker (`indexer-worker.ts`).
 * The worker owns the derived tables (`log_index`, `idempotency`, `partition_heads` and the
 * `log_indexed_through` / `log_start` marks): the main thread only reads them.
 */

/** One committed record, as the index needs it. */
export interface IndexRow {
  source: string;
  id: string;
  partition: number;
  offset: number;
  storedAt: number;
  position: number;
  length: number;
}

/**
 * One committed group's records, by column: cloning two string arrays and one typed array costs a
 * fraction of cloning an object per record (this message is sent on the ingest thread per group).
 */
export interface IndexColumns {
  sources: string[];
  ids: string[];
  /** Per record: partition, offset, storedAt, position, length. */
  numbers: Float64Array;
}

export const NUMBERS_PER_ROW = 5;

/** Consecutive groups' columns as one (one message, one transaction for all of them). */
export function joinColumns(parts: readonly IndexColumns[]): IndexColumns {
  if (parts.length === 1) return parts[0]!;
  let length = 0;
  for (const part of parts) length += part.numbers.length;
  const numbers = new Float64Array(length);
  const sources: string[] = [];
  const ids: string[] = [];
  let at = 0;
  for (const part of parts) {
    for (const source of part.sources) sources.push(source);
    for (const id of part.ids) ids.push(id);
    numbers.set(part.numbers, at);
    at += part.numbers.length;
  }
  return { sources, ids, numbers };
}

export function fromColumns(columns: IndexColumns): IndexRow[] {
  const { sources, ids, numbers } = columns;
  return sources.map((source, i) => {
    const at = i * NUMBERS_PER_ROW;
    return {
      source,
      id: ids[i]!,
      partition: numbers[at]!,
      offset: numbers[at + 1]!,
      storedAt: numbers[at + 2]!,
      position: numbers[at + 3]!,
      length: numbers[at + 4]!,
    };
  });
}

export type ToIndexer =
  /** The records of consecutive committed groups; `end` is the log position just past the last. */
  | { type: 'index'; end: number; columns: IndexColumns }
  /** Retention: forget every record before log position `through` (whole segments). */
  | { type: 'retire'; through: number }
  /** Forget idempotency records stored before `cutoff` (the window); answered with `pruned`. */
  | { type: 'prune'; cutoff: number; ticket: number }
  /**
   * Build a Bloom filter (`key-filter.ts`) of `2^log2Bits` bits and `hashes` hashes over every key of
   * the idempotency table, off the ingest thread; answered with `key-filter` (or `key-filter-failed`).
   * Index batches queued before it are written before its scan starts. A newer request replaces an
   * unanswered one.
   */
  | { type: 'build-key-filter'; ticket: number; log2Bits: number; hashes: number }
  | { type: 'close' };

export type FromIndexer =
  /** Every record before `through` is in SQLite. */
  | { type: 'indexed'; through: number }
  /**
   * `log_start` is `through` on disk; `firstOffsets[p]` is the partition's oldest indexed offset at
   * or past it (null: none indexed there). The rows before it are deleted after this message.
   */
  | { type: 'retired'; through: number; firstOffsets: (number | null)[] }
  | { type: 'pruned'; ticket: number; count: number }
  /**
   * The filter asked for: `words` is its bit array's buffer (transferred, not copied), `count` the
   * number of idempotency keys the scan read into it (the size of the next filter follows from it).
   */
  | { type: 'key-filter'; ticket: number; log2Bits: number; hashes: number; words: ArrayBuffer; count: number }
  /** The build failed (the worker goes on): the main thread asks again later. */
  | { type: 'key-filter-failed'; ticket: number; message: string }
  /** What killed the worker; `corrupt`: SQLite's verdict that index.db is damaged. */
  | { type: 'error'; message: string; corrupt?: boolean }
  | { type: 'closed' };

export interface IndexerWorkerData {
  dbFile: string;
  partitions: number;
  /** A restart after failures waits this long before it opens index.db (backoff; 0: at once). */
  startDelayMs: number;
  /**
   * One Int32 the main thread sets to 1 (and notifies) when the worker must stop at once: the
   * shutdown deadline. A worker waiting for a lock another process holds gives up then.
   */
  stop: SharedArrayBuffer;
}
