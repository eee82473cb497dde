import type { Db } from './db';

export interface IdempotencyRow {
  source: string;
  id: string;
  partition: number;
  offset: number;
  storedAt: number;
}

/** `idempotency`: source+id → where the event was stored. Owned by the local event store. */
export function createIdempotencyRepo(db: Db) {
  const find = db.prepare<[string, string], { partition: number; offset: number; storedAt: number }>(
    'SELECT partition, "offset" AS offset, stored_at AS storedAt FROM idempotency WHERE source = ? AND id = ?',
  );
  const insert = db.prepare<[string, string, number, number, number]>(
    'INSERT OR IGNORE INTO idempotency (source, id, partition, "offset", stored_at) VALUES (?, ?, ?, ?, ?)',
  );
  const pruneBatch = db.prepare<[number, number]>(
    `DELETE FROM idempotency WHERE (source, id) IN
       (SELECT source, id FROM idempotency WHERE stored_at < ? LIMIT ?)`,
  );
  const deleteFrom = db.prepare<[number, number]>('DELETE FROM idempotency WHERE partition = ? AND "offset" >= ?');
  const deleteOne = db.prepare<[number, number]>('DELETE FROM idempotency WHERE partition = ? AND "offset" = ?');
  const deleteOffsets = db.prepare<[number, number, number]>(
    'DELETE FROM idempotency WHERE partition = ? AND "offset" >= ? AND "offset" < ?',
  );
  const count = db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM idempotency');
  // Both walk idempotency_by_stored_at from the time on and stop at the partition's first row.
  const oldestIn = db.prepare<[number], { storedAt: number; offset: number }>(
    'SELECT stored_at AS storedAt, "offset" AS offset FROM idempotency INDEXED BY idempotency_by_stored_at WHERE partition = ? ORDER BY stored_at LIMIT 1',
  );
  // INDEXED BY: with idempotency_by_offset there too, the planner would walk the partition's every row.
  const firstAt = db.prepare<[number, number, number], { offset: number | null }>(
    `SELECT MIN("offset") AS offset FROM idempotency INDEXED BY idempotency_by_stored_at WHERE partition = ? AND stored_at =
       (SELECT stored_at FROM idempotency INDEXED BY idempotency_by_stored_at WHERE partition = ? AND stored_at >= ? ORDER BY stored_at LIMIT 1)`,
  );
  const firstKeys = db.prepare<[number], { source: string; id: string }>('SELECT source, id FROM idempotency ORDER BY source, id LIMIT ?');
  const keysAfter = db.prepare<[string, string, number], { source: string; id: string }>(
    'SELECT source, id FROM idempotency WHERE (source, id) > (?, ?) ORDER BY source, id LIMIT ?',
  );
  return {
    find(source: string, id: string) {
      return find.get(source, id);
    },
    insert(row: IdempotencyRow): void {
      insert.run(row.source, row.id, row.partition, row.offset, row.storedAt);
    },
    /** Deletes up to `limit` records stored before `cutoff`; returns how many. Bounded so it never stalls ingest. */
    prune(cutoff: number, limit: number): number {
      return pruneBatch.run(cutoff, limit).changes;
    },
    count(): number {
      return count.get()!.n;
    },
    /** The partition's oldest record kept (older ones were pruned), if any: its stored time and offset. */
    oldest(partition: number): { storedAt: number; offset: number } | undefined {
      return oldestIn.get(partition);
    },
    /** The first offset of the partition stored at or after `atMs` among the records kept. */
    firstOffsetAt(partition: number, atMs: number): number | undefined {
      return firstAt.get(partition, partition, atMs)?.offset ?? undefined;
    },
    /** One page of keys in key order, after `after` (keyset paging: each page is an index range scan). */
    keys(after: { source: string; id: string } | undefined, limit: number): { source: string; id: string }[] {
      return after ? keysAfter.all(after.source, after.id, limit) : firstKeys.all(limit);
    },
    /** Forgets records at or past `offset` in a partition (SQLite ahead of the log after a power cut). */
    deleteFrom(partition: number, offset: number): void {
      deleteFrom.run(partition, offset);
    },
    /** Forgets the records of offsets in `[from, to)` of a partition (their segments were deleted). */
    deleteOffsets(partition: number, from: number, to: number): number {
      return deleteOffsets.run(partition, from, to).changes;
    },
    /** Forgets the record of one stored event (its bytes were lost or set aside). */
    deleteAt(partition: number, offset: number): void {
      deleteOne.run(partition, offset);
    },
  };
}
export type IdempotencyRepo = ReturnType<typeof createIdempotencyRepo>;
