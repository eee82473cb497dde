import type { Db } from './db';

/** Offsets `[from, to)` of a partition that a start skipped. */
export interface SkippedRange {
  partition: number;
  from: number;
  to: number;
}

/**
 * `skipped_offsets` (herald.db): the ranges a start moved a partition's head past, so that delivery can
 * tell them from events lost later. Written by the local event store at start, before delivery starts;
 * read by delivery only.
 */
export function createSkippedOffsetsRepo(db: Db) {
  const insert = db.prepare<[number, number, number]>(
    // A range from the same offset can be wider at a later start (its head's record lost with the events after it):
    // the wider one stands (review: kept the narrower, whose rest was then named lost events and counted as lag).
    'INSERT INTO skipped_offsets (partition, from_offset, to_offset) VALUES (?, ?, ?) ON CONFLICT (partition, from_offset) DO UPDATE SET to_offset = max(to_offset, excluded.to_offset)',
  );
  const prune = db.prepare<[number, number]>('DELETE FROM skipped_offsets WHERE partition = ? AND to_offset <= ?');
  const all = db.prepare<[], SkippedRange>(
    'SELECT partition, from_offset AS "from", to_offset AS "to" FROM skipped_offsets ORDER BY partition, from_offset',
  );
  return {
    record(range: SkippedRange): void {
      insert.run(range.partition, range.from, range.to);
    },
    /**
     * The ranges as they stand, read once: a start writes them before delivery starts and nothing changes them until
     * the next start, so one read serves delivery's whole run (no query per missing range or per lag read).
     */
    read(): SkippedRanges {
      const byPartition = new Map<number, SkippedRange[]>();
      for (const range of all.all()) {
        const ranges = byPartition.get(range.partition);
        if (ranges) ranges.push(range);
        else byPartition.set(range.partition, [range]);
      }
      const of = (partition: number) => byPartition.get(partition) ?? [];
      return {
        skippedFrom(partition, from, to) {
          // Down through ranges that meet end to end (two unclean stops with nothing kept between them); the
          // lowest-starting range that reaches `start` first, as the ranges are read in order.
          let start = to;
          for (let range = covering(of(partition), start); range && start > from; range = covering(of(partition), start))
            start = range.from;
          return Math.max(from, start);
        },
        countWithin(partition, from, to) {
          let count = 0;
          for (const range of of(partition)) count += Math.max(0, Math.min(to, range.to) - Math.max(from, range.from));
          return count;
        },
      };
    },
    /** Forgets the ranges wholly below each partition's first offset (retention is past them). */
    prune(firstOffsets: readonly number[]): void {
      firstOffsets.forEach((first, partition) => prune.run(partition, first));
    },
  };
}
export type SkippedOffsetsRepo = ReturnType<typeof createSkippedOffsetsRepo>;

/** What delivery asks of the ranges a start skipped, answered from one read of them. */
export interface SkippedRanges {
  /**
   * Where the part of `[from, to)` that a start skipped begins: `from` when all of it was, `to` when none
   * of its end was (a range with no record below a skipped one: events lost, then offsets skipped).
   */
  skippedFrom(partition: number, from: number, to: number): number;
  /** How many offsets of `[from, to)` a start skipped (left out of the lag). */
  countWithin(partition: number, from: number, to: number): number;
}

/** The first range (by start) that begins below `at` and reaches it. */
const covering = (ranges: readonly SkippedRange[], at: number): SkippedRange | undefined =>
  ranges.find((range) => range.from < at && range.to >= at);
