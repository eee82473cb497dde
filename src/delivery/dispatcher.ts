import type { Logger } from 'pino';
import { AppError, fromDatabaseError } from '../errors';
import { untilDeadline } from '../shutdown-steps';
import type { LogReader } from '../wal/event-store';
import type { Db } from '../store/db';
import { deadLetterIdNumber } from '../store/dead-letters-repo';
import { SETTLED_CALLBACKS_KEPT, type SettledCallbackOutcome } from '../store/delivery-state-repo';
import type { DeliveryStats, SubscriptionEvents } from '../subscriptions/delivery-control';
import type { SubscriptionRecord } from '../subscriptions/record';
import { effectiveRateLimit } from './flow-control';
import { compileFilters, createFilterErrorReporter, type FilterEvaluationError, type Matcher } from '../filters/filter';
import type { SeekTarget } from '../subscriptions/seek-schema';
import type { HttpSender } from './http-sender';
import { seekPositions } from './seek';
import { writeInitialOffsets } from './initial-offsets';
import { createWriteBehind } from './write-behind';
import type { RedriveItem } from './pending';
import { DELIVERY_BUSY_TIMEOUT_MS } from './delivery-protocol';
import type { DeadLetterRow } from '../subscriptions/delivery-records';
import {
  createSkipShare,
  createSubscriptionWorker,
  type CallbackOutcome,
  type Pending,
  type SubscriptionWorker,
} from './subscription-worker';
import { createPageBudget } from './page-budget';
import type { DeliveryObserver } from './tally';
import { createSkippedOffsetsRepo } from '../store/skipped-offsets-repo';

export interface DispatcherDeps {
  store: LogReader;
  db: Db;
  log: Logger;
  sender: HttpSender;
  ackUrlBase: () => string;
  clock?: () => number;
  /** See `WorkerDeps.clockSteps`. */
  clockSteps?: boolean;
  random?: () => number;
  observer?: DeliveryObserver;
  /** `HERALD_DELIVERY=off`: workers keep their state and stats but send nothing. */
  enabled?: boolean;
  /** Delivery state (offsets, pending attempts, dead letters) cannot be written now (the error), or can again (undefined). */
  onWriteHealth?: (failing: string | undefined) => void;
  /** Whether herald.db's own checkpointer holds its write lock now, for at least that long (see the write-behind's `lockHeld`). */
  lockHeld?: (forAtLeastMs?: number) => boolean;
  /** Memory for the cursors' pages of events (see `createPageBudget`; tests set a small one). */
  pagesBudget?: number;
}

/** Delivery's copy of a subscription: the record the service last sent, and its compiled filters. */
interface Subscribed {
  record: SubscriptionRecord;
  matcher: Matcher;
  /** Kept across updates, so "once a minute" holds per subscription. */
  report: (err: FilterEvaluationError) => void;
}

interface CallbackEntry {
  worker: SubscriptionWorker;
  pending: Pending;
}

export type CallbackAction = 'ack' | 'nack' | 'extend' | 'reject';

/** A callback's answer (the body of its 200). */
export type CallbackAnswer =
  | { deliveryId: string; status: CallbackOutcome; repeated: true }
  | { deliveryId: string; status: 'acked' | 'rejected' }
  | { deliveryId: string; status: 'nacked'; nextAttemptAt: string | null }
  | { deliveryId: string; status: 'extended'; leaseUntil: string };

/** Where receivers' callbacks go (the deliveries router's port): the delivery thread's proxy, or a dispatcher in-process. */
export interface DeliveryCallbacks {
  callback(
    deliveryId: string,
    action: CallbackAction,
    arg?: { delayMs?: number; ms?: number; reason?: string },
  ): CallbackAnswer | Promise<CallbackAnswer>;
}

const ACTION_OUTCOME: Record<CallbackAction, CallbackOutcome | null> = { ack: 'acked', nack: 'nacked', reject: 'rejected', extend: null };
/** The outcomes a receiver's own callback gives (those of {@link ACTION_OUTCOME}). */
const RECEIVER_OUTCOMES: ReadonlySet<CallbackOutcome> = new Set(Object.values(ACTION_OUTCOME).filter((o) => o !== null));

/** Dead letters read per query when every one of a subscription is redelivered. */
const REDRIVE_PAGE = 1000;

/**
 * Runs one worker per subscription, routes ack callbacks to them, and writes
 * their state to SQLite behind them (`write-behind.ts`): one transaction per
 * flush instead of one per event. A crash loses at most the last flush
 * interval of progress, which means redelivery (at least once), never loss.
 * In the gateway it runs in the delivery thread (`delivery-worker.ts`).
 *
 * It owns the tables it writes behind (delivery state, dead letters) and answers reads of them
 * itself, after writing its buffer (read-your-writes): no caller flushes first. It is the
 * subscriptions service's `DeliveryControl`.
 */
export function createDispatcher(deps: DispatcherDeps) {
  const clock = deps.clock ?? Date.now;
  const random = deps.random ?? Math.random;
  const writes = createWriteBehind({ db: deps.db, log: deps.log, onWriteHealth: deps.onWriteHealth, lockHeld: deps.lockHeld });
  // Read once: a start wrote them before delivery started, and nothing changes them until the next start.
  const skipped = createSkippedOffsetsRepo(deps.db).read();
  const { persistence, flush, stateRepo, deadLetters, attemptLog } = writes;
  /**
   * Reads of the dead letters go to SQLite, so what is buffered is written first. When it cannot be
   * (herald.db locked, disk full) the read is refused as unavailable rather than answered without it.
   */
  function readYourWrites(): void {
    try {
      writes.flushOrThrow();
    } catch (err) {
      throw (
        fromDatabaseError(err) ??
        new AppError('unavailable', 'delivery state waiting to be written cannot be written right now', { cause: err, retryAfter: 1 })
      );
    }
  }
  const workers = new Map<string, SubscriptionWorker>();
  /** A shutdown began: no worker starts an attempt any more, one added since neither. */
  let quiescing = false;
  const subscribed = new Map<string, Subscribed>();
  /** Attempts whose callback is still open. */
  const callbacks = new Map<string, CallbackEntry>();
  /** Outcomes of recent attempts (as many as `settled_callbacks` keeps), so a repeated callback is answered 200 or 409 rather than 404. */
  const settled = new Map<string, CallbackOutcome>();
  const settledRing = new Array<string | undefined>(SETTLED_CALLBACKS_KEPT);
  let settledAt = 0;
  /** Skipping filtered-out events shared out between the subscriptions, so a turn of the loop stays short. */
  const skipShare = createSkipShare();
  /** Memory for the pages of events the subscriptions' cursors hold, shared out between them. */
  const pages = createPageBudget(deps.pagesBudget);

  const registry = {
    issue(deliveryId: string, worker: SubscriptionWorker, pending: Pending) {
      callbacks.set(deliveryId, { worker, pending });
    },
    settle(deliveryId: string, outcome: CallbackOutcome) {
      if (!callbacks.delete(deliveryId)) return;
      // Only the outcome is kept (not the event). A ring of ids evicts the oldest in O(1): deleting a
      // Map's first key instead leaves holes its iterator walks over on every later eviction.
      const evicted = settledRing[settledAt];
      if (evicted !== undefined) settled.delete(evicted);
      settledRing[settledAt] = deliveryId;
      settledAt = (settledAt + 1) % SETTLED_CALLBACKS_KEPT;
      settled.set(deliveryId, outcome);
    },
  };

  /** A receiver's ack, nack or reject: remembered in memory and, written with the state it changes, across restarts. */
  function settleByReceiver(deliveryId: string, outcome: SettledCallbackOutcome): void {
    registry.settle(deliveryId, outcome);
    writes.settleCallback(deliveryId, outcome);
  }

  const isReceiverOutcome = (outcome: CallbackOutcome): outcome is SettledCallbackOutcome => RECEIVER_OUTCOMES.has(outcome);

  const isCurrent = ({ pending }: CallbackEntry, deliveryId: string): boolean =>
    !pending.finished && pending.deliveryId === deliveryId && (pending.state === 'awaiting_ack' || pending.state === 'in_flight');

  /**
   * A callback for an attempt no longer open: the same call as the one that settled it is answered 200
   * (`repeated`), also after a restart; another is a conflict, as is any on an attempt a newer one replaced.
   */
  function answerSettled(deliveryId: string, action: CallbackAction, known: boolean): CallbackAnswer {
    // The receiver's own outcome wins over one the gateway gave the id later: a nacked attempt restored after a
    // restart is superseded by its retry, and a repeated nack is still a 200 (probe: 409 superseded).
    const remembered = settled.get(deliveryId);
    const outcome =
      remembered !== undefined && isReceiverOutcome(remembered) ? remembered : (writes.settledCallback(deliveryId) ?? remembered);
    if (outcome !== undefined && ACTION_OUTCOME[action] === outcome) return { deliveryId, status: outcome, repeated: true };
    if (outcome !== undefined || known) {
      throw new AppError('conflict', `delivery attempt ${deliveryId} is no longer current${outcome ? ` (${outcome})` : ''}`);
    }
    throw new AppError('not_found', `no delivery attempt ${deliveryId}`);
  }

  const enabled = deps.enabled ?? true;
  // Only workers with room for more in a partition that grew are woken (a saturated or paused one is not).
  const unsubscribe = deps.store.onAppend((grown) => {
    if (!enabled) return;
    for (const worker of workers.values()) worker.wake(grown);
  });

  // Retention deleted events (synchronously, before any read sees it): every worker moves past the
  // ones it had not finished, whatever its state (paused, validating, delivery off), and counts them.
  const unsubscribeRetire = deps.store.onRetire((firstOffsets) => {
    for (const worker of workers.values()) {
      try {
        worker.expire(firstOffsets);
      } catch (err) {
        // Never into the store's retention; the worker checks again when it (re)starts.
        deps.log.error({ subscription: worker.id, err }, 'moving past events deleted by retention failed');
      }
    }
  });

  function workerOf(subscriptionId: string): SubscriptionWorker {
    const worker = workers.get(subscriptionId);
    if (!worker) throw new AppError('not_found', `subscription ${subscriptionId} does not exist`);
    return worker;
  }

  const dispatcher = {
    /**
     * Starts delivering for a subscription, from its saved offsets and pending rows. The record is
     * delivery's own copy (see `update`); its filters are compiled here, with a reporter of their
     * evaluation errors (logged at most once a minute per subscription, each one counted).
     */
    add(record: SubscriptionRecord, events: SubscriptionEvents): void {
      const id = record.id;
      // Already delivered (the service re-attaches after a failed removal): one worker per subscription, ever.
      if (workers.has(id)) return dispatcher.update(record);
      flush();
      const report = createFilterErrorReporter({ log: deps.log, subscriptionId: id, clock, count: () => events.onFilterError?.() });
      const entry: Subscribed = { record, report, matcher: compileFilters(record.filters, { onError: report, sizeLimits: false }) };
      subscribed.set(id, entry);
      const worker = createSubscriptionWorker(
        {
          subscription: () => entry.record,
          matcher: () => entry.matcher,
          store: deps.store,
          sender: deps.sender,
          persistence,
          callbacks: registry,
          ackUrlBase: deps.ackUrlBase,
          onGone: () => {
            // Paused here at once, so nothing more is sent before the service's update arrives.
            entry.record = { ...entry.record, state: 'paused', stateReason: 'gone' };
            events.onGone();
          },
          onFailing: (detail) => {
            if (entry.record.state !== 'active') return;
            entry.record = { ...entry.record, state: 'paused', stateReason: 'failing' };
            events.onFailing?.(detail);
          },
          skippedFrom: skipped.skippedFrom,
          skippedWithin: skipped.countWithin,
          log: deps.log,
          clock,
          clockSteps: deps.clockSteps ?? false,
          random,
          observer: deps.observer,
          enabled,
          skipShare,
          pages,
        },
        {
          offsets: stateRepo.offsets(id),
          pending: stateRepo.pending(id),
          failingSince: stateRepo.failingSince(id),
          heldUntil: stateRepo.heldUntil(id),
          finished: writes.finishedAtStart(id),
        },
      );
      workers.set(id, worker);
      if (quiescing) void worker.quiesce();
      // Starting (and resuming) moves past what retention deleted while the worker was not running.
      if (enabled) worker.start();
      else {
        worker.restoreOnly();
        worker.expire(deps.store.firstOffsets());
      }
    },
    /** How many subscriptions it delivers. */
    count: (): number => workers.size,
    /** What the pages of events its subscriptions hold are charged (see `createPageBudget`; diagnostics and tests). */
    pagesHeld: (): number => pages.held(),
    /** The service's record changed: used from the next step on (filters recompiled when they changed). */
    update(record: SubscriptionRecord): void {
      const entry = subscribed.get(record.id);
      if (!entry) return;
      if (JSON.stringify(record.filters) !== JSON.stringify(entry.record.filters)) {
        entry.matcher = compileFilters(record.filters, { onError: entry.report, sizeLimits: false });
      }
      const before = entry.record;
      entry.record = record;
      if (before.sink !== record.sink) workers.get(record.id)?.sinkMoved(before.sink);
      // Paused: its pages of events go back to the thread's budget (read again on resume).
      if (record.state !== 'active') workers.get(record.id)?.letGoOfPages();
      // Resumed (by an operator, or by the sink's consent): what a receiver's Retry-After held may go now.
      if (before.state !== 'active' && record.state === 'active') workers.get(record.id)?.holdEnded();
      // Only a new limit wakes the worker: a state change (a resume) is the worker's own step, which
      // sends what is due first (a pump woken here ahead of it sent newer events before them).
      const limits = (r: SubscriptionRecord) => JSON.stringify([r.delivery.maxInFlight, effectiveRateLimit(r) ?? null]);
      if (limits(before) !== limits(record)) workers.get(record.id)?.optionsChanged();
    },
    /**
     * Initial offsets of a new subscription, written at once so a restart keeps `startAt` meaning:
     * `earliest` is the first offset retention has kept (what was deleted before is not expired: this
     * subscription never had it to finish).
     */
    initOffsets(subscriptionId: string, startAt: 'latest' | 'earliest'): void {
      writeInitialOffsets(stateRepo, deps.store, subscriptionId, startAt);
    },
    resume(subscriptionId: string): void {
      const worker = workerOf(subscriptionId);
      if (enabled) worker.resume();
    },
    /**
     * What it buffered is written first, or the removal is refused with nothing changed (SQLite fails): a
     * subscription whose deletion then fails goes on delivering, and callbacks already answered stay answered.
     */
    remove(subscriptionId: string): void {
      const worker = workers.get(subscriptionId);
      if (worker) writes.flushOrThrow();
      worker?.stop({ abort: true });
      workers.delete(subscriptionId);
      subscribed.delete(subscriptionId);
      writes.forget(subscriptionId);
      for (const [id, entry] of callbacks) if (entry.worker === worker) callbacks.delete(id);
    },
    /** Per partition, the dead letters stored, and flow control (`currentMaxInFlight`, `throttled`, issue 12 §3). */
    stats(subscriptionId: string): DeliveryStats {
      const worker = workerOf(subscriptionId);
      // What is reported is written first (a crash never shows a committed offset moving back), but stats never fail,
      // and wait on a locked herald.db at most once a second, not once per subscription (slow-disk probe: GET /metrics
      // took 9.6 s with 20 subscriptions behind a 10 s hold): the dead letters still buffered are counted with those written.
      writes.flushForRead();
      const dead = Math.max(0, deadLetters.count(subscriptionId) + writes.bufferedDeadLetters(subscriptionId));
      return { partitions: worker.stats(), deadLetters: dead, ...worker.flowStats() };
    },
    /**
     * Restarts partitions of a subscription (issue 12 §2), backwards or forwards, at the positions
     * `target` means (see `seekPositions`), under a new seek generation: saved first (see
     * `WriteBehind.seek`), then applied to the worker, which drops the partitions' pending attempts (not
     * dead-lettered) and aborts their open requests. When the seek cannot be saved (SQLite fails) it
     * throws and nothing has changed.
     * @throws AppError `invalid_request` naming each partition that does not exist or offset past the head
     */
    seek(subscriptionId: string, target: SeekTarget): { generation: number } {
      const worker = workerOf(subscriptionId);
      const positions = seekPositions(deps.store, target);
      const generation = worker.seekGeneration() + 1;
      writes.seek(subscriptionId, positions, generation);
      worker.seek(positions, generation);
      return { generation };
    },
    /** A page of a subscription's attempt log, newest first, with ids below `page.before`. */
    attempts(subscriptionId: string, page: { before: number; limit: number }) {
      workerOf(subscriptionId);
      writes.flushAttempts();
      return attemptLog.page(subscriptionId, page.before, page.limit);
    },
    /** A page of a subscription's dead letters, oldest first, with ids above `page.after`. */
    deadLetters(subscriptionId: string, page: { after: number; limit: number }): DeadLetterRow[] {
      workerOf(subscriptionId);
      readYourWrites();
      return deadLetters.page(subscriptionId, page.after, page.limit);
    },
    /**
     * Queues dead letters for delivery again with a fresh attempt count: those named (ids that are
     * not this subscription's dead letters are skipped), or all of them; returns how many were queued.
     */
    redeliver(subscriptionId: string, ids: string[] | undefined): number {
      const worker = workerOf(subscriptionId);
      readYourWrites();
      const items: RedriveItem[] = [];
      const firsts = deps.store.firstOffsets();
      // A dead letter whose event retention deleted has nothing to send: it stays listed (deleting it is the
      // operator's call), rather than be consumed by a redelivery that finds nothing.
      const add = (row: DeadLetterRow) => {
        if (row.offset >= (firsts[row.partition] ?? 0))
          items.push({
            deadLetterId: row.id,
            partition: row.partition,
            offset: row.offset,
            reason: row.reason,
            seekGeneration: row.seekGeneration ?? null,
          });
      };
      if (ids) {
        const numeric = ids.map(deadLetterIdNumber).filter((n) => n !== undefined);
        deadLetters.byIds(subscriptionId, numeric).forEach(add);
      } else {
        let after = 0;
        for (;;) {
          const rows = deadLetters.page(subscriptionId, after, REDRIVE_PAGE);
          rows.forEach(add);
          if (rows.length < REDRIVE_PAGE) break;
          after = Number(rows[rows.length - 1]!.id);
        }
      }
      // Counted as queued now: one already waiting (a second redeliver while paused) is neither queued again nor
      // counted, as on JetStream, where a queued dead letter has left the list (parity and console probes).
      return worker.redrive(items);
    },
    /** Deletes one dead letter of a subscription; false when it has none of that id. */
    deleteDeadLetter(subscriptionId: string, deadLetterId: string): boolean {
      const worker = workerOf(subscriptionId);
      readYourWrites();
      const id = deadLetterIdNumber(deadLetterId);
      if (id === undefined || !deadLetters.remove(subscriptionId, id)) return false;
      worker.unqueueRedrive(String(id)); // the operator deleted it: a redelivery still queued is not sent
      return true;
    },
    /** Resolves once the state changed so far is written (a callback is answered only then). */
    persisted: writes.persisted,
    /**
     * A receiver's callback for one attempt. Repeating the same call is
     * idempotent; a call for an attempt that is no longer current is a conflict.
     */
    callback(deliveryId: string, action: CallbackAction, arg: { delayMs?: number; ms?: number; reason?: string } = {}): CallbackAnswer {
      const entry = callbacks.get(deliveryId);
      if (!entry || !isCurrent(entry, deliveryId)) return answerSettled(deliveryId, action, entry !== undefined);
      const { pending, worker } = entry;
      deps.log.debug({ subscription: worker.id, partition: pending.partition, offset: pending.offset, action }, 'delivery callback');
      switch (action) {
        case 'ack':
          settleByReceiver(deliveryId, 'acked');
          worker.ack(pending);
          return { deliveryId, status: 'acked' as const };
        case 'nack':
          settleByReceiver(deliveryId, 'nacked');
          worker.nack(pending, arg.delayMs);
          return {
            deliveryId,
            status: 'nacked' as const,
            nextAttemptAt: pending.finished || pending.nextAttemptAt === null ? null : new Date(pending.nextAttemptAt).toISOString(),
          };
        case 'reject':
          settleByReceiver(deliveryId, 'rejected');
          worker.reject(pending, arg.reason);
          return { deliveryId, status: 'rejected' as const };
        case 'extend': {
          const leaseUntil = worker.extend(pending, arg.ms ?? 0);
          return { deliveryId, status: 'extended' as const, leaseUntil: new Date(leaseUntil).toISOString() };
        }
      }
    },
    /**
     * A shutdown begins: no attempt starts from now on, while the HTTP server still waits for its open
     * requests (a delivery started then names an ack URL that takes no callbacks any more; a probe saw
     * them start for 70 ms after SIGTERM). Open requests go on; `close` follows.
     */
    quiesce(): void {
      quiescing = true;
      for (const worker of workers.values()) void worker.quiesce();
    },
    /**
     * Starts no attempt any more, gives the requests still open until `deadline` to finish (their
     * answers count: a 2xx finishes its event, a 202 leaves it awaiting its ack), then
     * stops every worker and writes their state. Requests still open at the deadline are destroyed:
     * their events stay pending and are delivered again after the restart (same webhook-id).
     */
    async close(opts: { deadline?: number } = {}): Promise<void> {
      unsubscribe();
      unsubscribeRetire();
      await untilDeadline(Promise.all([...workers.values()].map((worker) => worker.quiesce())), opts.deadline);
      for (const worker of workers.values()) worker.stop();
      const finished = [...workers.values()].map((worker) => ({ subscriptionId: worker.id, rows: worker.finishedAbove() }));
      workers.clear();
      // Tried again until a busy timeout past the deadline: its last try and the attempt log's then end inside
      // the grace after which the main thread terminates this thread (CLOSE_GRACE_MS; never inside SQLite).
      writes.close(finished, (opts.deadline ?? Date.now()) + DELIVERY_BUSY_TIMEOUT_MS);
      await deps.sender.close(opts.deadline);
    },
  };
  return dispatcher;
}

export type Dispatcher = ReturnType<typeof createDispatcher>;
