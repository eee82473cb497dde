import type { Db } from './db';

export interface OffsetRow {
  partition: number;
  committedOffset: number;
  lastMatchedOffset: number | null;
  /** The seek generation that last set this position (0: never sought); part of the webhook-id. */
  seekGeneration?: number;
  /**
   * Running total of events retention deleted before this subscription finished them (it moved past
   * them). Only grows: a write carrying less (or none) keeps the stored total.
   */
  expired?: number;
  /**
   * After `herald restore`: offsets below `keptBelow` keep the ids of generation `keptGeneration`
   * (the events the backup holds, at the offsets they had); `seekGeneration` is for the rest. Absent
   * without a restore since the last seek.
   */
  keptGeneration?: number | null;
  keptBelow?: number | null;
}

export type PendingState = 'in_flight' | 'awaiting_ack' | 'scheduled';

/** What a receiver's callback settled (`settled_callbacks`). */
export type SettledCallbackOutcome = 'acked' | 'nacked' | 'rejected';
/** Settled callbacks kept: a repeat of an older one is answered 404. */
export const SETTLED_CALLBACKS_KEPT = 100_000;

/** An offset finished above the committed one (ordering `none`), kept across a graceful restart. */
export interface FinishedRow {
  partition: number;
  offset: number;
  /** Whether the event matched the filters (it is then the partition's last matched offset when committed over). */
  matched: boolean;
}

export interface PendingRow {
  partition: number;
  offset: number;
  attempt: number;
  state: PendingState;
  deliveryId: string | null;
  previousOffset: number | null;
  nextAttemptAt: number | null;
  leaseUntil: number | null;
  redrive: boolean;
  lastStatus: number | null;
  lastError: string | null;
  /** A redelivery's seek generation, kept from its start (part of its webhook-id); null for a partition's own delivery. */
  seekGeneration?: number | null;
}

/**
 * `subscription_offsets` and `pending_deliveries`: where each subscription is
 * in each partition, and the events it has started. Owned by the dispatcher.
 */
export function createDeliveryStateRepo(db: Db) {
  const offsets = db.prepare<[string], OffsetRow>(
    `SELECT partition, committed_offset AS committedOffset, last_matched_offset AS lastMatchedOffset, seek_generation AS seekGeneration,
       expired, kept_generation AS keptGeneration, kept_below AS keptBelow
     FROM subscription_offsets WHERE subscription_id = ?`,
  );
  // A seek is the one write that may move a committed offset backwards: it names its generation (for every
  // offset: a restore's kept ids go). It keeps the expired total (what retention deleted unfinished stays counted).
  const seekOffset = db.prepare<[string, number, number, number]>(
    `INSERT INTO subscription_offsets (subscription_id, partition, committed_offset, last_matched_offset, seek_generation)
     VALUES (?, ?, ?, NULL, ?)
     ON CONFLICT (subscription_id, partition) DO UPDATE SET committed_offset = excluded.committed_offset,
       last_matched_offset = NULL, seek_generation = excluded.seek_generation, kept_generation = NULL, kept_below = NULL`,
  );
  const keepRestoredIds = db.prepare<[number, number]>(
    'UPDATE subscription_offsets SET kept_below = ? WHERE partition = ? AND kept_generation IS NOT NULL AND kept_below IS NULL',
  );
  const deletePartitionPending = db.prepare<[string, number]>(
    'DELETE FROM pending_deliveries WHERE subscription_id = ? AND partition = ? AND redrive = 0',
  );
  const failingSince = db.prepare<[string], { failingSince: number }>(
    'SELECT failing_since AS failingSince FROM delivery_failures WHERE subscription_id = ?',
  );
  const upsertFailing = db.prepare<[string, number]>(
    `INSERT INTO delivery_failures (subscription_id, failing_since) VALUES (?, ?)
     ON CONFLICT (subscription_id) DO UPDATE SET failing_since = excluded.failing_since`,
  );
  const deleteFailing = db.prepare<[string]>('DELETE FROM delivery_failures WHERE subscription_id = ?');
  const heldUntil = db.prepare<[string], { heldUntil: number }>(
    'SELECT held_until AS heldUntil FROM delivery_holds WHERE subscription_id = ?',
  );
  const deleteHold = db.prepare<[string]>('DELETE FROM delivery_holds WHERE subscription_id = ?');
  // Only ever later: a write of an earlier hold (two answers flushed out of order) changes nothing.
  const upsertHold = db.prepare<[string, number]>(
    `INSERT INTO delivery_holds (subscription_id, held_until) VALUES (?, ?)
     ON CONFLICT (subscription_id) DO UPDATE SET held_until = MAX(held_until, excluded.held_until)`,
  );
  const replaceHold = db.prepare<[string, number]>(
    `INSERT INTO delivery_holds (subscription_id, held_until) VALUES (?, ?)
     ON CONFLICT (subscription_id) DO UPDATE SET held_until = excluded.held_until`,
  );
  // The committed offset only grows: a write that arrives late (an older position) changes nothing, and
  // one row carries the position and the expired total, so a retention expiry (position past the deleted
  // events plus their count) lands whole or not at all. At the same position the total is the row's: it
  // also falls, when an event counted expired is delivered after all (re-probe: MAX kept the old count,
  // and a restart put it back).
  const upsertOffset = db.prepare<[string, number, number, number | null, number]>(
    `INSERT INTO subscription_offsets (subscription_id, partition, committed_offset, last_matched_offset, expired) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (subscription_id, partition) DO UPDATE SET
       committed_offset = MAX(committed_offset, excluded.committed_offset),
       last_matched_offset = CASE WHEN excluded.committed_offset >= committed_offset THEN excluded.last_matched_offset ELSE last_matched_offset END,
       expired = CASE WHEN excluded.committed_offset >= committed_offset THEN excluded.expired ELSE expired END`,
  );
  const pending = db.prepare<[string], Omit<PendingRow, 'redrive'> & { redrive: number }>(
    `SELECT partition, "offset" AS offset, attempt, state, delivery_id AS deliveryId, previous_offset AS previousOffset,
       next_attempt_at AS nextAttemptAt, lease_until AS leaseUntil, redrive, last_status AS lastStatus, last_error AS lastError,
       seek_generation AS seekGeneration
     FROM pending_deliveries WHERE subscription_id = ? ORDER BY partition, "offset"`,
  );
  const upsertPending = db.prepare(
    `INSERT INTO pending_deliveries (subscription_id, partition, "offset", attempt, state, delivery_id, previous_offset,
       next_attempt_at, lease_until, redrive, last_status, last_error, seek_generation)
     VALUES (@subscriptionId, @partition, @offset, @attempt, @state, @deliveryId, @previousOffset, @nextAttemptAt, @leaseUntil,
       @redrive, @lastStatus, @lastError, @seekGeneration)
     ON CONFLICT (subscription_id, partition, "offset", redrive) DO UPDATE SET attempt = excluded.attempt, state = excluded.state,
       delivery_id = excluded.delivery_id, previous_offset = excluded.previous_offset, next_attempt_at = excluded.next_attempt_at,
       lease_until = excluded.lease_until, last_status = excluded.last_status, last_error = excluded.last_error,
       seek_generation = excluded.seek_generation`,
  );
  // A redelivery of an offset and the partition's own delivery of it (after a seek back) are two rows (migration 0009).
  const deletePending = db.prepare<[string, number, number, number]>(
    'DELETE FROM pending_deliveries WHERE subscription_id = ? AND partition = ? AND "offset" = ? AND redrive = ?',
  );
  const finished = db.prepare<[string], { partition: number; offset: number; matched: number }>(
    'SELECT partition, "offset" AS offset, matched FROM finished_deliveries WHERE subscription_id = ?',
  );
  const insertFinished = db.prepare<[string, number, number, number]>(
    'INSERT OR REPLACE INTO finished_deliveries (subscription_id, partition, "offset", matched) VALUES (?, ?, ?, ?)',
  );
  const deleteFinishedBelow = db.prepare<[string, number, number]>(
    'DELETE FROM finished_deliveries WHERE subscription_id = ? AND partition = ? AND "offset" < ?',
  );
  const deletePartitionFinished = db.prepare<[string, number]>(
    'DELETE FROM finished_deliveries WHERE subscription_id = ? AND partition = ?',
  );
  const settledOutcome = db.prepare<[string], { outcome: SettledCallbackOutcome }>(
    'SELECT outcome FROM settled_callbacks WHERE delivery_id = ?',
  );
  const insertSettled = db.prepare<[string, string]>('INSERT OR IGNORE INTO settled_callbacks (delivery_id, outcome) VALUES (?, ?)');
  // Everything at or below the newest id less the kept count goes (one range delete on the rowid).
  const trimSettled = db.prepare<[number]>('DELETE FROM settled_callbacks WHERE id <= (SELECT MAX(id) FROM settled_callbacks) - ?');
  const floors = db.prepare<[], { partition: number; next: number }>(
    `SELECT partition, MAX(next) AS next FROM (
       SELECT partition, MAX(committed_offset) AS next FROM subscription_offsets GROUP BY partition
       UNION ALL SELECT partition, MAX("offset") + 1 FROM pending_deliveries GROUP BY partition
       UNION ALL SELECT partition, MAX("offset") + 1 FROM dead_letters GROUP BY partition
       UNION ALL SELECT partition, MAX("offset") + 1 FROM finished_deliveries GROUP BY partition)
     GROUP BY partition`,
  );
  return {
    /**
     * Per partition, the lowest head offset that reuses nothing delivery has seen: past every
     * committed offset, pending delivery, dead letter and offset finished above a committed one. Recovery never assigns below it.
     */
    offsetFloors(): { partition: number; next: number }[] {
      return floors.all();
    },
    offsets(subscriptionId: string): OffsetRow[] {
      return offsets.all(subscriptionId);
    },
    /** Never moves a committed offset backwards nor lowers the expired total, whatever order writes arrive in. */
    saveOffset(subscriptionId: string, row: OffsetRow): void {
      upsertOffset.run(subscriptionId, row.partition, row.committedOffset, row.lastMatchedOffset, row.expired ?? 0);
    },
    /**
     * A seek (issue 12 §2): sets the committed offset exactly (backwards too), starts a new chain
     * (no last matched offset) and records the generation. Its pending deliveries in the partition
     * are dropped (dead-letter redrives are not: they are not positions in the partition). Run in
     * the transaction that writes the buffered state first, so no older write lands after it.
     */
    seekOffset(subscriptionId: string, partition: number, committedOffset: number, generation: number): void {
      seekOffset.run(subscriptionId, partition, committedOffset, generation);
      deletePartitionPending.run(subscriptionId, partition);
      deletePartitionFinished.run(subscriptionId, partition); // replayed: delivered again, not skipped
    },
    /**
     * The first start after `herald restore`, before anything is ingested: offsets below each partition's
     * head are the backup's events, whose redeliveries keep their ids; the restore's new generation is for
     * the offsets from the head on (the backed-up gateway may have given them other events). Idempotent.
     */
    keepRestoredIds(heads: readonly number[]): void {
      db.transaction(() => heads.forEach((head, partition) => keepRestoredIds.run(head, partition)))();
    },
    /** Since when every attempt has failed (epoch ms), or null. */
    failingSince(subscriptionId: string): number | null {
      return failingSince.get(subscriptionId)?.failingSince ?? null;
    },
    /** Until when (epoch ms) a receiver's `Retry-After` holds the subscription's requests; null: no hold recorded. */
    heldUntil(subscriptionId: string): number | null {
      return heldUntil.get(subscriptionId)?.heldUntil ?? null;
    },
    /** Records a hold until `until` (never moved earlier), or ends it (null). */
    saveHold(subscriptionId: string, until: number | null): void {
      if (until === null) deleteHold.run(subscriptionId);
      else upsertHold.run(subscriptionId, until);
    },
    /** Records a hold until `until`, earlier or later than the stored one (a hold moved by a wall-clock step). */
    replaceHold(subscriptionId: string, until: number): void {
      replaceHold.run(subscriptionId, until);
    },
    setFailingSince(subscriptionId: string, at: number | null): void {
      if (at === null) deleteFailing.run(subscriptionId);
      else upsertFailing.run(subscriptionId, at);
    },
    pending(subscriptionId: string): PendingRow[] {
      return pending.all(subscriptionId).map((r) => ({ ...r, redrive: r.redrive === 1 }));
    },
    savePending(subscriptionId: string, row: PendingRow): void {
      upsertPending.run({ subscriptionId, ...row, redrive: row.redrive ? 1 : 0, seekGeneration: row.seekGeneration ?? null });
    },
    deletePending(subscriptionId: string, partition: number, offset: number, redrive: boolean): void {
      deletePending.run(subscriptionId, partition, offset, redrive ? 1 : 0);
    },
    /**
     * Offsets finished above the committed ones (ordering `none`): all of them at a graceful close, and
     * each one a receiver's callback finished. Read at start; a row goes once its partition's committed
     * offset passes it (`dropFinishedBelow`), so a crash soon after a start still skips it.
     */
    finished(subscriptionId: string): FinishedRow[] {
      return finished.all(subscriptionId).map((r) => ({ partition: r.partition, offset: r.offset, matched: r.matched === 1 }));
    },
    saveFinished(subscriptionId: string, rows: readonly FinishedRow[]): void {
      for (const r of rows) insertFinished.run(subscriptionId, r.partition, r.offset, r.matched ? 1 : 0);
    },
    dropFinishedBelow(subscriptionId: string, partition: number, committedOffset: number): void {
      deleteFinishedBelow.run(subscriptionId, partition, committedOffset);
    },
    /** What a receiver's callback settled for this attempt, if it is among the newest kept. */
    settledCallback(deliveryId: string): SettledCallbackOutcome | undefined {
      return settledOutcome.get(deliveryId)?.outcome;
    },
    /** Records callbacks' outcomes (the first one of an id stays) and trims to the newest `SETTLED_CALLBACKS_KEPT`. */
    saveSettledCallbacks(rows: readonly { deliveryId: string; outcome: SettledCallbackOutcome }[]): void {
      for (const r of rows) insertSettled.run(r.deliveryId, r.outcome);
      if (rows.length > 0) trimSettled.run(SETTLED_CALLBACKS_KEPT);
    },
  };
}
export type DeliveryStateRepo = ReturnType<typeof createDeliveryStateRepo>;
