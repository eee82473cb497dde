import type { Db } from './db';

export interface IndexEntry {
  offset: number;
  position: number;
  length: number;
}

/** `log_index`: (partition, offset) → byte range in the log. Owned by the local event store. */
export function createLogIndexRepo(db: Db) {
  const insert = db.prepare<[number, number, number, number]>(
    'INSERT OR REPLACE INTO log_index (partition, "offset", position, length) VALUES (?, ?, ?, ?)',
  );
  const range = db.prepare<[number, number, number], IndexEntry>(
    'SELECT "offset" AS offset, position, length FROM log_index WHERE partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
  );
  const one = db.prepare<[number, number], IndexEntry>(
    'SELECT "offset" AS offset, position, length FROM log_index WHERE partition = ? AND "offset" = ?',
  );
  const past = db.prepare<[number], { partition: number; offset: number }>(
    'SELECT partition, MIN("offset") AS offset FROM log_index WHERE position >= ? GROUP BY partition',
  );
  const deletePast = db.prepare<[number]>('DELETE FROM log_index WHERE position >= ?');
  const inRange = db.prepare<[number, number], { partition: number; offset: number }>(
    'SELECT partition, "offset" AS offset FROM log_index WHERE position >= ? AND position < ?',
  );
  const deleteRange = db.prepare<[number, number]>('DELETE FROM log_index WHERE position >= ? AND position < ?');
  const firstAtOrPast = db.prepare<[number, number], { offset: number }>(
    'SELECT "offset" AS offset FROM log_index WHERE partition = ? AND position >= ? ORDER BY "offset" LIMIT 1',
  );
  const minOffset = db.prepare<[number], { offset: number | null }>('SELECT MIN("offset") AS offset FROM log_index WHERE partition = ?');
  const deleteBelow = db.prepare<[number, number, number]>('DELETE FROM log_index WHERE partition = ? AND "offset" >= ? AND "offset" < ?');
  const nth = db.prepare<[number, number, number], { offset: number }>(
    'SELECT "offset" AS offset FROM log_index WHERE partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT 1 OFFSET ?',
  );
  const maxOffset = db.prepare<[number], { offset: number | null }>('SELECT MAX("offset") AS offset FROM log_index WHERE partition = ?');
  return {
    /** The `n`th indexed offset of a partition at or after `from` (0 is the first): bounds a step of deletions. */
    nthOffsetFrom(partition: number, from: number, n: number): number | undefined {
      return nth.get(partition, from, n)?.offset;
    },
    /** The partition's newest indexed offset. */
    maxOffset(partition: number): number | undefined {
      return maxOffset.get(partition)?.offset ?? undefined;
    },
    /** The partition's first offset whose record is at or past `position` (retention's new first offset). */
    firstOffsetAtOrPast(partition: number, position: number): number | undefined {
      return firstAtOrPast.get(partition, position)?.offset;
    },
    /** The partition's oldest indexed offset. */
    minOffset(partition: number): number | undefined {
      return minOffset.get(partition)?.offset ?? undefined;
    },
    /** Deletes the entries of offsets in `[from, to)` of a partition (retention, in bounded steps). */
    deleteOffsets(partition: number, from: number, to: number): number {
      return deleteBelow.run(partition, from, to).changes;
    },
    insert(partition: number, entry: IndexEntry): void {
      insert.run(partition, entry.offset, entry.position, entry.length);
    },
    range(partition: number, fromOffset: number, limit: number): IndexEntry[] {
      return range.all(partition, fromOffset, limit);
    },
    get(partition: number, offset: number): IndexEntry | undefined {
      return one.get(partition, offset);
    },
    /** First offset per partition of entries at or past `position` (entries the log no longer holds). */
    firstOffsetsPast(position: number) {
      return past.all(position);
    },
    deletePast(position: number): void {
      deletePast.run(position);
    },
    /** Removes the entries of records in `[from, to)` (bytes set aside or lost); returns which they were. */
    deleteRange(from: number, to: number): { partition: number; offset: number }[] {
      const removed = inRange.all(from, to);
      deleteRange.run(from, to);
      return removed;
    },
  };
}
export type LogIndexRepo = ReturnType<typeof createLogIndexRepo>;
