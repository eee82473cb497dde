import type { SubscriptionRecord } from './record';
import type { SeekTarget } from './seek-schema';
import type { AttemptRow, DeadLetterRow } from './delivery-records';

/** A result delivery may give at once (in-process) or later (the delivery thread answers by message). */
export type Awaitable<T> = T | Promise<T>;

/**
 * What the subscriptions service needs from delivery: the port it is given (the gateway passes the
 * delivery thread's proxy, `delivery/delivery-thread.ts`; tools and tests may pass an in-process
 * dispatcher). Defined here so that subscriptions import no part of `delivery/`; delivery imports
 * only these types. Every call but `initOffsets` may answer asynchronously: callers await them.
 *
 * Delivery owns the tables it writes behind (offsets, pending attempts, dead letters) and answers
 * every read of them itself, its own buffered writes included: no caller flushes first.
 */
export interface DeliveryControl {
  /**
   * Starts delivering for a subscription, from its saved offsets and pending attempts. Delivery keeps
   * its own copy of the record (and compiles its filters itself): the service sends every change with
   * `update`. `events` are how delivery reports back about this subscription.
   */
  add(record: SubscriptionRecord, events: SubscriptionEvents): Awaitable<void>;
  /** The record changed (PATCH, pause, state, secret): delivery uses it from its next step on. */
  update(record: SubscriptionRecord): Awaitable<void>;
  /**
   * A new subscription's first offsets (`startAt`), written at once: within the caller's transaction
   * (so always synchronous, on the caller's connection).
   */
  initOffsets(subscriptionId: string, startAt: 'latest' | 'earliest'): void;
  /** The subscription may deliver again (resumed, consented, PATCHed): deliver what is due now. */
  resume(subscriptionId: string): Awaitable<void>;
  /**
   * Stops delivering for a deleted subscription; its open requests are aborted and its buffered state
   * dropped. Resolves once nothing more will be written for it (the caller then deletes its rows).
   */
  remove(subscriptionId: string): Awaitable<void>;
  /**
   * Restarts delivery elsewhere in the log (issue 12 §2); pending attempts of the moved partitions are
   * dropped (not dead-lettered).
   * @throws AppError `invalid_request` naming each partition that does not exist or offset past the head
   */
  seek(subscriptionId: string, target: SeekTarget): Awaitable<{ generation: number }>;
  /** What `stats` of a subscription shows. */
  stats(subscriptionId: string): Awaitable<DeliveryStats>;
  /** A page of the attempt log, newest first, with ids below `before`. */
  attempts(subscriptionId: string, page: { before: number; limit: number }): Awaitable<(AttemptRow & { id: string })[]>;
  /** A page of dead letters, oldest first, with ids above `after`. */
  deadLetters(subscriptionId: string, page: { after: number; limit: number }): Awaitable<DeadLetterRow[]>;
  /** Queues the named dead letters (all when `ids` is undefined; unknown ids are skipped) again with a fresh attempt count; returns how many. */
  redeliver(subscriptionId: string, ids: string[] | undefined): Awaitable<number>;
  /** Deletes one dead letter; false when the subscription has no such dead letter. */
  deleteDeadLetter(subscriptionId: string, deadLetterId: string): Awaitable<boolean>;
}

/** What delivery reports about one subscription; the subscriptions service acts on it. */
export interface SubscriptionEvents {
  /** The receiver answered 410: pause with reason `gone`. */
  onGone(): void;
  /** Every attempt failed for `delivery.disableAfterFailingMs`: pause with reason `failing` (issue 12 §5). */
  onFailing?(detail: { failingSince: number; lastError: string }): void;
  /** A filter evaluation was abandoned (budget or exception): counted by `herald_filter_errors_total`. */
  onFilterError?(): void;
}

export interface PartitionStats {
  partition: number;
  committedOffset: number;
  headOffset: number;
  lag: number;
  inFlight: number;
  oldestPendingAgeMs: number | null;
  /** Events retention deleted before this subscription finished them (running total). */
  expired: number;
}

export interface DeliveryStats {
  partitions: PartitionStats[];
  /** Dead letters stored (none are buffered unseen). */
  deadLetters: number;
  /** Flow control (issue 12 §3): the AIMD in-flight limit in force, and whether the rate limit's bucket is empty. */
  currentMaxInFlight: number;
  throttled: boolean;
}
