import { randomBytes } from 'node:crypto';
import type { StoredEvent } from '../wal/event-store';
import type { FinishedRow, OffsetRow, PendingRow, PendingState } from '../store/delivery-state-repo';
import { isEnded, ROW_STATE, type AttemptState, type CallbackOutcome } from './attempt-machine';
import type { PartitionStats } from '../subscriptions/delivery-control';
import type { AttemptRow, DeadLetterReason } from '../subscriptions/delivery-records';

/**
 * An event this subscription has started and not finished. Where its attempts stand is `life`, which
 * only `transition` (./attempt-machine) changes; the row fields are read from it.
 */
export class Pending implements PendingRow {
  event?: StoredEvent;
  timer?: NodeJS.Timeout;
  /** A row for it exists in SQLite (set by the dispatcher's flush). */
  persisted?: boolean;
  /**
   * A redelivery's seek generation, kept from its start: a seek leaves redeliveries alone, so their
   * retries keep their webhook-id (a partition's own events take the partition's current one).
   */
  generation?: number;
  /** A redelivery's dead letter's reason: it is dead-lettered again for it should retention delete its event meanwhile. */
  redriveReason?: DeadLetterReason;

  constructor(
    readonly partition: number,
    readonly offset: number,
    readonly previousOffset: number | null,
    readonly redrive: boolean,
    public life: AttemptState,
  ) {}

  /** Delivered, dead-lettered, let go or dropped: nothing about it changes any more. */
  get finished(): boolean {
    return isEnded(this.life);
  }
  /** Its row's state; an ended event has no row (and `finished` is checked first wherever this is read). */
  get state(): PendingState {
    return ROW_STATE[this.life.phase] ?? 'in_flight';
  }
  get attempt(): number {
    return this.life.attempt;
  }
  get deliveryId(): string | null {
    return this.life.deliveryId;
  }
  get nextAttemptAt(): number | null {
    return this.life.phase === 'scheduled' ? this.life.nextAttemptAt : null;
  }
  /** The ack lease; in flight, the floor an `extend` set before the answer (null: none). */
  get leaseUntil(): number | null {
    if (this.life.phase === 'awaiting_ack') return this.life.leaseUntil;
    return this.life.phase === 'sending' ? (this.life.leaseFloor ?? null) : null;
  }
  get lastStatus(): number | null {
    return this.life.lastStatus;
  }
  get lastError(): string | null {
    return this.life.lastError;
  }
}

/** A dead letter queued for delivery again, with the reason it was dead-lettered for. */
export interface RedriveItem {
  deadLetterId: string;
  partition: number;
  offset: number;
  reason: DeadLetterReason;
  /** The generation it was dead-lettered under (its webhook-id's); null for dead letters stored before it was kept. */
  seekGeneration: number | null;
}

/** Writes the dispatcher batches into SQLite (write-behind, one transaction per flush). */
export interface StatePersistence {
  savePending(subscriptionId: string, pending: Pending): void;
  deletePending(subscriptionId: string, pending: Pending): void;
  saveOffset(subscriptionId: string, row: OffsetRow): void;
  /**
   * An offset finished above the committed one (ordering `none`): not sent again after a crash. Written
   * once it has stayed above for a flush interval, or with the next write when `urgent` (a callback's).
   */
  saveFinished(subscriptionId: string, row: FinishedRow, urgent?: boolean): void;
  /** `generation`: the seek generation `pending` was delivered under, kept for its redelivery's webhook-id. */
  deadLetter(subscriptionId: string, pending: Pending, reason: DeadLetterReason, at: number, generation: number): void;
  consumeDeadLetter(subscriptionId: string, deadLetterId: string): void;
  /** Since when every attempt has failed (null: the last one succeeded), for auto-disable. */
  saveFailingSince(subscriptionId: string, since: number | null): void;
  /** A receiver's `Retry-After` holds every request of the subscription until `until` (epoch ms), restarts included; null ends it. */
  saveHold(subscriptionId: string, until: number | null): void;
  /** The hold moved with a wall-clock step (see `clock-steps.ts`): `until` replaces the stored one, earlier too. */
  moveHold?(subscriptionId: string, until: number): void;
  /** One answered (or failed) request, for the attempt log (issue 13 §1). */
  recordAttempt(row: AttemptRow): void;
  /** Resolves once everything buffered now is written; rejects when that write fails (it is retried). */
  persisted(): Promise<void>;
}

export type { CallbackOutcome };

/** Ack-URL tokens: the dispatcher routes callbacks to the worker that issued them. */
export interface CallbackRegistry {
  issue(deliveryId: string, worker: SubscriptionWorker, pending: Pending): void;
  settle(deliveryId: string, outcome: CallbackOutcome): void;
}

export interface SubscriptionWorker {
  id: string;
  start(): void;
  /**
   * `HERALD_DELIVERY=off`: loads the stored attempts without sending anything, so their callbacks are
   * answered (not 404 as unknown) and written, their leases run out, and their retries wait.
   */
  restoreOnly(): void;
  resume(): void;
  /** The subscription's record changed: a new rate or in-flight limit applies now. */
  optionsChanged(): void;
  /** A PATCH moved the sink from `from`: requests still waiting for a connection there go to the new one now (and a `Retry-After` hold ends). */
  sinkMoved(from: string): void;
  /** The subscription became active again (a resume, a consent): a receiver's `Retry-After` hold ends. */
  holdEnded(): void;
  /** The subscription stopped being active (paused): its pages of events are let go of (read again on resume). */
  letGoOfPages(): void;
  /** Some partitions grew: pumps again when one of them has room for another event (else nothing). */
  wake(grown: ReadonlySet<number>): void;
  /**
   * Retention deleted every offset below `firstOffsets[partition]`: partitions still behind move past
   * them, counting the unfinished ones as expired. Runs whatever the state (paused, disabled).
   */
  expire(firstOffsets: readonly number[]): void;
  ack(pending: Pending): void;
  nack(pending: Pending, delayMs?: number): void;
  extend(pending: Pending, ms: number): number;
  reject(pending: Pending, reason?: string): void;
  /** Queues dead letters for redelivery; returns how many were queued (one already waiting is not queued twice). */
  redrive(items: RedriveItem[]): number;
  unqueueRedrive(deadLetterId: string): void;
  /**
   * The first step of a graceful close: starts no attempt any more, but answers and callbacks still
   * count. Resolves once no request of it is open.
   */
  quiesce(): Promise<void>;
  /** Stops delivering; `abort` also cancels open requests (the subscription is gone). */
  stop(opts?: { abort?: boolean }): void;
  /** Moves partitions to saved positions under a new seek generation (see `Dispatcher.seek`). */
  seek(positions: { partition: number; offset: number }[], generation: number): void;
  /** The highest seek generation of any partition (0: never sought). */
  seekGeneration(): number;
  /** Offsets finished above each partition's committed one (ordering `none`), saved at a graceful close. */
  finishedAbove(): FinishedRow[];
  /** Flow control (issue 12 §3): the AIMD in-flight limit in force, and whether the rate limit's bucket is empty. */
  flowStats(): { currentMaxInFlight: number; throttled: boolean };
  stats(): PartitionStats[];
}

const ID_BYTES = 18;
const IDS_PER_DRAW = 1024;
let idPool = Buffer.alloc(0);
let idAt = 0;

/** `dlv_` + 144 random bits. Entropy is drawn for 1024 ids at a time: one OpenSSL call per attempt was 9 % of delivery CPU. */
export function newDeliveryId(): string {
  if (idAt + ID_BYTES > idPool.length) {
    idPool = randomBytes(ID_BYTES * IDS_PER_DRAW);
    idAt = 0;
  }
  const id = idPool.toString('base64url', idAt, idAt + ID_BYTES);
  idAt += ID_BYTES;
  return `dlv_${id}`;
}
