/**
 * What a reader of the log in another thread (the delivery thread) is told by the store that writes
 * it, so it can read committed events with its own file descriptors and its own connection to
 * `index.db`: the positions of each committed group (the records the indexer has not written yet),
 * how far the indexer has written, and retention's deletions, before they happen.
 */

import type { FrameKey } from './record';

/** Numbers per record in {@link GroupPositions.numbers}: partition, offset, position, length, storedAt. */
export const POSITION_FIELDS = 5;

/** One committed group's records, where they are in the log (a typed array: cheap to clone). */
export interface GroupPositions {
  /** The log position just past the group (the indexer confirms groups by it). */
  end: number;
  /** Base of the segment the group was written to (a group never spans segments). */
  segmentBase: number;
  /** Per record: partition, offset, position, length, storedAt. */
  numbers: Float64Array;
}

/** Where a reader starts: everything it needs to read what is committed now. */
export interface LogSnapshot {
  walDir: string;
  indexDbFile: string;
  partitions: number;
  heads: number[];
  firstOffsets: number[];
  /** Bases of the segments, oldest first. */
  segmentBases: number[];
  /**
   * The log's checksum key, as the writer holds it: the reader does not read `frame.key` itself, so it
   * starts while `wal/` cannot be reached (a link's target moved away), as the writer keeps going.
   */
  frameKey: FrameKey;
  /** Committed groups the indexer has not written yet, in log order. */
  tail: GroupPositions[];
  /** The log position just past the last committed group: every byte before it is final. */
  committedEnd: number;
}

export interface LogFeedListener {
  /** A group is durable (called before the appenders hear of it). */
  committed(group: GroupPositions): void;
  /** Every record before log position `through` is in `index.db`. */
  indexed(through: number): void;
  /**
   * Retention is about to delete every record before log position `through` (whole segments); the
   * partitions' first offsets will be `firstOffsets`. Nothing is deleted, neither rows nor files,
   * before the returned promise settles: the reader stops reading below them and lets the files go.
   */
  retiring(through: number, firstOffsets: readonly number[]): Promise<void>;
}

/** The local store's side: one listener (the delivery thread's proxy). */
export interface LogFeed {
  snapshot(): LogSnapshot;
  /** Sets the listener (replacing any); returns a function that removes it. */
  listen(listener: LogFeedListener): () => void;
  /** The reader found index.db damaged (see `reads.ts`): ingest and reads stop here too, until a restart rebuilds it. */
  indexDamaged(detail: string): void;
}

/**
 * For a queue kept as an array read from index `at`: cuts off the consumed front once it is longer
 * than `after` and most of the array (amortised: each entry moves at most once per halving, rather
 * than a shift per entry). Returns the new read index.
 */
export function cutConsumedFront(list: unknown[], at: number, after: number): number {
  if (at <= after || at * 2 <= list.length) return at;
  list.splice(0, at);
  return 0;
}

/**
 * In a list of one partition's tail records in offset order, the index of the first at or after
 * `offset`, searching from `from` (the entries before it are pruned).
 */
export function firstAtOrAfter(list: readonly { offset: number }[], from: number, offset: number): number {
  let lo = from;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]!.offset < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
