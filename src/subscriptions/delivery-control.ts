import type { DeadLetterRow } from '../store/dead-letters-repo';
import type { AttemptRow } from '../store/attempts-repo';
import type { SubscriptionRecord } from '../store/subscriptions-repo';
import type { Matcher } from './filter';
import type { SeekTarget } from './seek-schema';

/**
 * What the subscriptions service needs from delivery: the port it is given (the gateway passes the
 * dispatcher). Defined here so that subscriptions import no part of `delivery/`; delivery imports
 * only these types.
 *
 * Delivery owns the tables it writes behind (offsets, pending attempts, dead letters) and answers
 * every read of them itself, its own buffered writes included: no caller flushes first.
 */
export interface DeliveryControl {
  /**
   * Starts delivering for a subscription, from its saved offsets and pending attempts. Delivery reads
   * the record through the handle on every step, so a PATCH, or a pause (any state but `active`:
   * nothing is sent), needs no further call.
   */
  add(handle: SubscriptionHandle): void;
  /** A new subscription's first offsets (`startAt`), written at once: within the caller's transaction. */
  initOffsets(subscriptionId: string, startAt: 'latest' | 'earliest'): void;
  /** The subscription may deliver again (resumed, consented, PATCHed): deliver what is due now. */
  resume(subscriptionId: string): void;
  /** Stops delivering for a deleted subscription; its open requests are aborted and its buffered state dropped. */
  remove(subscriptionId: string): void;
  /**
   * Restarts delivery elsewhere in the log (issue 12 §2); pending attempts of the moved partitions are
   * dropped (not dead-lettered).
   * @throws AppError `invalid_request` naming each partition that does not exist or offset past the head
   */
  seek(subscriptionId: string, target: SeekTarget): { generation: number };
  /** What `stats` of a subscription shows. */
  stats(subscriptionId: string): DeliveryStats;
  /** A page of the attempt log, newest first, with ids below `before`. */
  attempts(subscriptionId: string, page: { before: number; limit: number }): (AttemptRow & { id: string })[];
  /** A page of dead letters, oldest first, with ids above `after`. */
  deadLetters(subscriptionId: string, page: { after: number; limit: number }): DeadLetterRow[];
  /** Queues the named dead letters (all when `ids` is undefined; unknown ids are skipped) again with a fresh attempt count; returns how many. */
  redeliver(subscriptionId: string, ids: string[] | undefined): number;
  /** Deletes one dead letter; false when the subscription has no such dead letter. */
  deleteDeadLetter(subscriptionId: string, deadLetterId: string): boolean;
}

/** Live view of a subscription delivery runs for; the subscriptions service owns the record. */
export interface SubscriptionHandle {
  record: () => SubscriptionRecord;
  matcher: () => Matcher;
  /** The receiver answered 410: pause with reason `gone`. */
  onGone: () => void;
  /** Every attempt failed for `delivery.disableAfterFailingMs`: pause with reason `failing` (issue 12 §5). */
  onFailing?: (detail: { failingSince: number; lastError: string }) => void;
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
