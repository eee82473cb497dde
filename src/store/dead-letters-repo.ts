import type { Db } from './db';
import type { DeadLetterRow } from '../subscriptions/delivery-records';

/** A dead letter id as the API spells it (digits, no sign, exponent or leading zero), else undefined. */
export function deadLetterIdNumber(id: string): number | undefined {
  return /^[1-9]\d{0,14}$/.test(id) ? Number(id) : undefined;
}

type Raw = Omit<DeadLetterRow, 'id'> & { id: number };
const SELECT = `SELECT id, subscription_id AS subscriptionId, partition, "offset" AS offset, attempts, last_status AS lastStatus,
  last_error AS lastError, reason, dead_at AS deadAt, seek_generation AS seekGeneration FROM dead_letters`;
const toRow = (r: Raw): DeadLetterRow => ({ ...r, id: String(r.id) });

/** `dead_letters`: events a subscription gave up on. Owned by the dispatcher. */
export function createDeadLettersRepo(db: Db) {
  const insert = db.prepare(
    `INSERT INTO dead_letters (subscription_id, partition, "offset", attempts, last_status, last_error, reason, dead_at, seek_generation)
     VALUES (@subscriptionId, @partition, @offset, @attempts, @lastStatus, @lastError, @reason, @deadAt, @seekGeneration)`,
  );
  const page = db.prepare<[string, number, number], Raw>(`${SELECT} WHERE subscription_id = ? AND id > ? ORDER BY id LIMIT ?`);
  const byIds = (ids: number[]) =>
    db.prepare<unknown[], Raw>(`${SELECT} WHERE subscription_id = ? AND id IN (${ids.map(() => '?').join(',')})`);
  const count = db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM dead_letters WHERE subscription_id = ?');
  const remove = db.prepare<[string, number]>('DELETE FROM dead_letters WHERE subscription_id = ? AND id = ?');
  return {
    insert(row: Omit<DeadLetterRow, 'id'>): string {
      return String(insert.run({ ...row, seekGeneration: row.seekGeneration ?? null }).lastInsertRowid);
    },
    page(subscriptionId: string, afterId: number, limit: number): DeadLetterRow[] {
      return page.all(subscriptionId, afterId, limit).map(toRow);
    },
    byIds(subscriptionId: string, ids: number[]): DeadLetterRow[] {
      if (ids.length === 0) return [];
      return byIds(ids)
        .all(subscriptionId, ...ids)
        .map(toRow);
    },
    count(subscriptionId: string): number {
      return count.get(subscriptionId)!.n;
    },
    remove(subscriptionId: string, id: number): boolean {
      return remove.run(subscriptionId, id).changes > 0;
    },
  };
}
export type DeadLettersRepo = ReturnType<typeof createDeadLettersRepo>;
