import type { Db } from './db';
import type { AttemptRow } from '../subscriptions/delivery-records';

/** Attempts kept per subscription; the API's page size is at most this too. */
export const ATTEMPTS_KEPT = 1000;

const SELECT = `SELECT id, subscription_id AS subscriptionId, delivery_id AS deliveryId, partition, "offset" AS offset, attempt,
  status, error, duration_ms AS durationMs, started_at AS startedAt, outcome FROM delivery_attempts`;

/** `delivery_attempts`: the attempt log (issue 13 §1). Owned by the dispatcher, which writes it behind delivery. */
export function createAttemptsRepo(db: Db) {
  const insert = db.prepare(
    `INSERT INTO delivery_attempts (subscription_id, delivery_id, partition, "offset", attempt, status, error, duration_ms, started_at, outcome)
     VALUES (@subscriptionId, @deliveryId, @partition, @offset, @attempt, @status, @error, @durationMs, @startedAt, @outcome)`,
  );
  // The id of the newest row past the kept ones: it and everything older go (one index seek, one range delete).
  const trim = db.prepare<{ subscriptionId: string; kept: number }>(
    `DELETE FROM delivery_attempts WHERE subscription_id = @subscriptionId AND id <= (
       SELECT id FROM delivery_attempts WHERE subscription_id = @subscriptionId ORDER BY id DESC LIMIT 1 OFFSET @kept)`,
  );
  const page = db.prepare<[string, number, number], AttemptRow & { id: number }>(
    `${SELECT} WHERE subscription_id = ? AND id < ? ORDER BY id DESC LIMIT ?`,
  );
  return {
    insert(row: AttemptRow): void {
      insert.run(row);
    },
    /** Keeps the newest `ATTEMPTS_KEPT` rows of a subscription. */
    trim(subscriptionId: string): void {
      trim.run({ subscriptionId, kept: ATTEMPTS_KEPT });
    },
    /** Newest first, ids below `beforeId`. */
    page(subscriptionId: string, beforeId: number, limit: number): (AttemptRow & { id: string })[] {
      return page.all(subscriptionId, beforeId, limit).map((r) => ({ ...r, id: String(r.id) }));
    },
  };
}
