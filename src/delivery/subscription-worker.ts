import type { Logger } from 'pino';
import { isUnavailable } from '../errors';
import { DEAD_LETTER_LINE_MS, throttledLine } from '../logger';
import { readOne, type LogReader, type StoredEvent } from '../wal/event-store';
import type { FinishedRow, OffsetRow, PendingRow } from '../store/delivery-state-repo';
import type { SubscriptionRecord } from '../subscriptions/record';
import type { Matcher } from '../filters/filter';
import type { DeliveryObserver } from './tally';
import { AbortGroup, LOCAL_FAILURE_RETRY_MS, type HttpSender, type Outgoing, type SendResult } from './http-sender';
import { newDeliveryId, Pending, type CallbackRegistry, type RedriveItem, type StatePersistence, type SubscriptionWorker } from './pending';
import {
  answerInput,
  answerOutcome,
  initialState,
  shiftTimes,
  stateFromRow,
  transition,
  type AttemptEffect,
  type AttemptInput,
} from './attempt-machine';
import {
  advanceOffset,
  clearBuffer,
  createCursor,
  expireCursor,
  finishOffset,
  generationAt,
  itemAtCursor,
  offsetRow,
  seekCursor,
  skipRange,
  type PartitionCursor,
} from './partition-cursor';
import { stepAwareClock } from './clock-steps';
import type { PageBudget } from './page-budget';
import { createFailureWindow } from './failure-window';
import { requestFor } from './request';
import { createFlowControl } from './flow-control';
import { obeyedRetryAfterMs, retryAfterHoldUntil } from './retry';

export interface WorkerDeps {
  subscription: () => SubscriptionRecord;
  matcher: () => Matcher;
  store: LogReader;
  sender: HttpSender;
  persistence: StatePersistence;
  callbacks: CallbackRegistry;
  ackUrlBase: () => string;
  onGone: () => void;
  /** Every attempt has failed for `delivery.disableAfterFailingMs`: pause with reason `failing` (issue 12 §5). */
  onFailing?: (detail: { failingSince: number; lastError: string }) => void;
  /** Where the part of a partition's offsets `[from, to)` that a start skipped begins (`skipped_offsets`; `to`: none). */
  skippedFrom?: (partition: number, from: number, to: number) => number;
  /** How many of a partition's offsets `[from, to)` a start skipped: not counted in the lag. */
  skippedWithin?: (partition: number, from: number, to: number) => number;
  log: Logger;
  clock: () => number;
  /** Moves the deadlines held in memory when the wall clock steps (see `clock-steps.ts`); off for a test's skewed clock. */
  clockSteps?: boolean;
  random: () => number;
  observer?: DeliveryObserver;
  /** False under `HERALD_DELIVERY=off`: nothing is sent; state and stats stay as they are. */
  enabled?: boolean;
  /** The thread's skipping shared with its other subscriptions (absent: {@link SKIP_BUDGET} a pump). */
  skipShare?: SkipShare;
  /** The thread's memory for pages of events, shared with its other subscriptions (absent: full pages always). */
  pages?: PageBudget;
}

/** How long a redelivery waits before it asks again for the write of its start, when that write failed. */
const WRITE_RETRY_MS = 1000;

/** With ordering none, how far past the oldest unfinished offset a partition may run: bounds memory. */
const MAX_WINDOW = 10_000;

/** The longest wait before a failed delivery loop runs again. */
const LOOP_RETRY_MAX_MS = 30_000;

/** The line a wall-clock step is told with, shared by the thread's workers: at most one a minute. */
const clockStepLine = throttledLine(60_000);

/** How long an event whose record cannot be read now waits before it is read again. */
const UNAVAILABLE_RETRY_MS = 5_000;

/**
 * How many items (filtered-out events, missing ranges, offsets restored as finished) one pump passes
 * before it gives the thread back and goes on in a later turn (scale probe: one subscription from
 * `earliest` whose filter matched none of a 200,000-event backlog held the delivery thread, every
 * other subscription's deliveries and API answers, for 2.4–3.8 s).
 */
export const SKIP_BUDGET = 1024;

/** The least a pump may skip however many subscriptions skip at once (see {@link createSkipShare}). */
const MIN_SKIP_SHARE = 16;

/**
 * The delivery thread's skipping, shared out between its subscriptions: every skipping subscription's
 * pump runs in the same turn of the event loop (their immediates run in one check phase), so a budget
 * of its own each made a turn N × 1,024 skips long (re-probe: 400 subscriptions skipping held another's
 * deliveries 1.3 s, and the API). Each pump may skip {@link SKIP_BUDGET} divided by the subscriptions
 * that ran out of their share at their last pump, at least {@link MIN_SKIP_SHARE}: a turn stays about
 * one budget long (at most the minimum times the skipping subscriptions), and each gets an equal share.
 */
export function createSkipShare() {
  const skipping = new Set<string>();
  return {
    /** What one pump may skip now. */
    budget: (): number => Math.max(MIN_SKIP_SHARE, Math.floor(SKIP_BUDGET / Math.max(1, skipping.size))),
    /** Whether the subscription's last pump ran out of its share (it goes on in a later turn), or is done skipping. */
    ranOut(subscriptionId: string, yes: boolean): void {
      if (yes) skipping.add(subscriptionId);
      else skipping.delete(subscriptionId);
    },
  };
}
export type SkipShare = ReturnType<typeof createSkipShare>;

/**
 * Delivers one subscription: per partition, walks the log from the committed
 * offset, filters, posts, retries, awaits acks, dead-letters, and advances the
 * committed offset over contiguous finished offsets.
 */
export function createSubscriptionWorker(
  deps: WorkerDeps,
  saved: { offsets: OffsetRow[]; pending: PendingRow[]; failingSince?: number | null; finished?: FinishedRow[]; heldUntil?: number | null },
) {
  const subId = deps.subscription().id;
  const clock = deps.clockSteps ? stepAwareClock(deps.clock, (byMs) => shiftDeadlines(byMs)) : deps.clock;
  const parts: PartitionCursor[] = [];
  const byPartition = new Map(saved.offsets.map((o) => [o.partition, o]));
  for (let p = 0; p < deps.store.partitions; p++) parts.push(createCursor(p, byPartition.get(p), deps.pages));
  // Finished above the committed offset before a graceful close: never started again (takeOne skips them).
  for (const f of saved.finished ?? []) {
    const part = parts[f.partition];
    if (part && f.offset >= part.committed) part.finished.set(f.offset, f.matched);
  }
  const redrives = new Map<string, Pending>();
  const redriveQueue: RedriveItem[] = [];
  const queuedDeadLetters = new Set<string>();
  let stopped = false;
  /** Closing gracefully: no attempt starts, open requests finish and their answers count. */
  let quiescing = false;
  let idleWaiters: (() => void)[] = [];
  let pumpScheduled = false;
  /**
   * Per partition, plus one for dead-letter redrives: a seek aborts (and replaces) the controllers of
   * the partitions it moves, deleting the subscription aborts all; their answers no longer matter.
   */
  const openRequests = parts.map(() => new AbortGroup());
  const redriveRequests = new AbortGroup();
  let worker!: SubscriptionWorker;

  // Paused, or `validating` (the sink has not consented yet, issue 12 §4): nothing is sent.
  const paused = () => deps.subscription().state !== 'active';
  /** Requests open now, and the attempts waiting for one of them to finish (see `attempt`). */
  let openCount = 0;
  const waitingForSlot = new Set<Pending>();
  /** Attempts started whose request waits for a connection to the sink (not built yet), by attempt id. */
  const awaitingConnection = new Map<string, Pending>();
  const options = () => deps.subscription().delivery;
  const failures = createFailureWindow({
    since: saved.failingSince ?? null,
    limitMs: () => options().disableAfterFailingMs,
    clock,
    active: () => !paused(),
    save: (since) => deps.persistence.saveFailingSince(subId, since),
    disable: (failingSince, lastError) => deps.onFailing?.({ failingSince, lastError }),
  });
  /** Rate limit and AIMD concurrency (issue 12 §3): gates every attempt, new or retried. */
  const flow = createFlowControl({ subscription: deps.subscription, clock, onToken: () => schedulePump() });
  // A receiver's Retry-After from before a restart still holds (a time passed holds nothing), no longer than
  // today's policy would obey a new one (a PATCH of `maxDelayMs` meanwhile).
  if (saved.heldUntil) flow.holdUntil(Math.min(saved.heldUntil, clock() + obeyedRetryAfterMs(Infinity, options().retry)));
  /** Resumed from a pause, or a new sink: a stored `Retry-After` hold is not theirs to wait out (re-probe: nothing ended one). */
  const endHold = () => {
    if (flow.endHold()) deps.persistence.saveHold(subId, null);
  };
  /**
   * At most a line a second per subscription, with how many were left out (leak probe: a sink refusing every
   * event wrote a line per event, 7.5 MB of log a minute); each dead letter is stored and listed all the same.
   */
  const deadLetterLine = throttledLine(DEAD_LETTER_LINE_MS, clock);
  /** The same for a redelivery of a dead letter whose event retention deleted (a line per dead letter redelivered). */
  const expiredRedriveLine = throttledLine(DEAD_LETTER_LINE_MS, clock);

  const totalPending = () => parts.reduce((n, p) => n + p.pending.size, 0) + redrives.size;

  /** Per partition, the committed offset at which the full window was logged: once per hold. */
  const windowLogged = new Map<number, number>();

  function hasCapacity(part: PartitionCursor): boolean {
    if (options().ordering === 'partition') return part.pending.size === 0;
    if (part.cursor - part.committed < MAX_WINDOW) return true;
    if (windowLogged.get(part.partition) !== part.committed) {
      windowLogged.set(part.partition, part.committed);
      deps.log.warn(
        { subscription: subId, partition: part.partition, offset: part.committed, window: MAX_WINDOW },
        'partition waits for its oldest unfinished event: ordering none runs at most 10,000 offsets past it',
      );
    }
    return false;
  }

  /** Failed runs of the delivery loop in a row (see `schedulePump`). */
  let loopFailures = 0;
  function schedulePump(): void {
    if (pumpScheduled || stopped || quiescing) return;
    pumpScheduled = true;
    setImmediate(() => {
      pumpScheduled = false;
      try {
        pump();
        loopFailures = 0;
      } catch (err) {
        // Nothing may escape the delivery loop (it would end the process); try again, less often while it
        // keeps failing (a damaged index.db fails every read until a restart), logged when it starts failing.
        const delayMs = Math.min(LOOP_RETRY_MAX_MS, 1000 * 2 ** Math.min(loopFailures, 5));
        if (loopFailures === 0)
          deps.log.error({ subscription: subId, err }, 'delivery loop failed; retrying (every 1 s to 30 s while it fails)');
        loopFailures++;
        setTimeout(schedulePump, delayMs).unref();
      }
    });
  }

  /**
   * Where the next pump starts: after the partition that last started an event, so that when only one
   * start is allowed at a time (a rate limit's token, an in-flight limit of one) every partition with
   * a backlog gets its turn (was: the lowest-numbered took every one until it had drained).
   */
  let nextPartition = 0;

  /** What is left of this pump's share of skipping (see {@link createSkipShare}). */
  let skipBudget = SKIP_BUDGET;

  function pump(): void {
    if (stopped || paused() || deps.enabled === false) {
      deps.skipShare?.ranOut(subId, false); // not skipping now: no share kept from the others
      if (paused()) letGoOfPages(); // paused by a 410 or auto-disable: pages not held meanwhile
      return;
    }
    skipBudget = deps.skipShare?.budget() ?? SKIP_BUDGET;
    releaseSlots(); // the limit may have grown since they waited
    const max = flow.maxInFlight();
    startRedrives(max);
    let progressed = true;
    while (progressed && totalPending() < max && skipBudget > 0) {
      progressed = false;
      const first = nextPartition;
      for (let i = 0; i < parts.length; i++) {
        // No token: the flow control pumps again when one is due.
        if (totalPending() >= max || !flow.ready()) break;
        const at = (first + i) % parts.length;
        const part = parts[at]!;
        if (hasCapacity(part) && takeOne(part)) {
          progressed = true;
          nextPartition = (at + 1) % parts.length;
        }
        if (skipBudget <= 0) {
          nextPartition = (at + 1) % parts.length; // the next pump starts with the other partitions
          break;
        }
      }
    }
    // Stopped on its budget: the rest in a later turn, after the other subscriptions, answers and messages
    // waiting (a pause, a stop or a deletion meanwhile ends it: `schedulePump` and `pump` check).
    deps.skipShare?.ranOut(subId, skipBudget <= 0);
    if (skipBudget <= 0) schedulePump();
  }

  /**
   * Starts the next matching event of a partition; filtered-out, missing and corrupt ones finish on the way,
   * as many as the pump's budget allows (false when it ran out: the pump goes on in a later turn).
   */
  function takeOne(part: PartitionCursor): boolean {
    // Filtered-out events moved the committed offset and their row is not saved yet: saved once, at the end
    // of the run (the write-behind keeps only a partition's latest row), before anything else saves one.
    let skipped = false;
    const saveSkipped = () => {
      if (skipped) saveOffset(offsetRow(part));
      skipped = false;
    };
    try {
      for (;;) {
        if (skipBudget <= 0 || !hasCapacity(part)) return false;
        // Restored work finished before the cursor got here (committed moved on over finished offsets): everything
        // below committed is done, and retention may have deleted some of it, which is not a loss to report.
        if (part.cursor < part.committed) catchUp(part);
        const item = itemAtCursor(part, deps.store);
        if (!item) return false;
        skipBudget--; // given back when the item is started
        if (item.kind === 'missing') {
          saveSkipped();
          skipMissing(part, item.from, item.to);
          continue;
        }
        const offset = item.kind === 'event' ? item.event.offset : item.offset;
        if (offset < part.committed) {
          catchUp(part);
          continue;
        }
        part.cursor++;
        const finishedMatch = part.finished.get(offset);
        if (part.pending.has(offset) || finishedMatch !== undefined) {
          // Started before a restart (still pending, or finished since): never start it twice.
          if (finishedMatch !== false) part.lastMatched = offset;
          continue;
        }
        if (item.kind === 'corrupt') {
          // Its attributes cannot be read, so no filter can rule it out: every subscription dead-letters it.
          saveSkipped();
          const pending = newPending(part.partition, offset, part.lastMatched);
          part.pending.set(offset, pending);
          step(pending, { kind: 'corrupt' });
          continue;
        }
        if (!matches(item.event)) {
          if (advanceOffset(part, offset, false)) skipped = true;
          continue;
        }
        skipBudget++;
        saveSkipped();
        const pending = newPending(part.partition, offset, part.lastMatched);
        pending.event = item.event;
        part.lastMatched = offset;
        part.pending.set(offset, pending);
        attempt(pending);
        return true;
      }
    } finally {
      saveSkipped(); // also when a read throws: what moved is saved
    }
  }

  /** Moves a cursor left behind committed up to it: everything below committed is done. */
  function catchUp(part: PartitionCursor): void {
    part.cursor = part.committed;
    part.lastMatched = part.committedLastMatched;
    clearBuffer(part);
  }

  function newPending(partition: number, offset: number, previousOffset: number | null, redrive = false): Pending {
    return new Pending(partition, offset, previousOffset, redrive, initialState());
  }

  /** A filter that fails to evaluate does not match (the matcher reports it); it never stops the loop. */
  function matches(stored: StoredEvent): boolean {
    try {
      return deps.matcher()(stored.event.attributes);
    } catch (err) {
      deps.log.warn({ subscription: subId, err }, 'filter evaluation failed; the event does not match');
      return false;
    }
  }

  /**
   * Offsets with no record (lost before a restart): skipped with one error line, never waited for. Those a start
   * skipped (reserved before an unclean stop) were logged by that start, once: passed over at `debug` here, after
   * an error line for the lost ones below them, if any.
   */
  function skipMissing(part: PartitionCursor, from: number, to: number): void {
    const skipped = deps.skippedFrom?.(part.partition, from, to) ?? to;
    const range = (a: number, b: number) => ({
      subscription: subId,
      partition: part.partition,
      fromOffset: a,
      toOffset: b - 1,
      count: b - a,
    });
    if (from < skipped) deps.log.error(range(from, skipped), 'events missing from the log (lost or set aside at recovery); skipping them');
    if (skipped < to)
      deps.log.debug(
        range(skipped, to),
        'offsets a start skipped (see its line "offsets that may have been handed out…"); passing over them',
      );
    saveOffset(skipRange(part, from, to));
    part.cursor = to;
  }

  /**
   * Starts queued redeliveries, in order, while there is room. A dead letter whose offset is being
   * redelivered already (two dead letters of one event: a seek replayed it) waits for that one to
   * finish: it was dropped, neither sent nor listed as consumed, while the answer counted it.
   */
  function startRedrives(max: number): void {
    for (let i = 0; i < redriveQueue.length && totalPending() < max && flow.ready();) {
      const item = redriveQueue[i]!;
      if (redrives.has(`${item.partition}:${item.offset}`)) {
        i++;
        continue;
      }
      redriveQueue.splice(i, 1);
      startRedrive(item);
    }
  }

  function startRedrive(item: RedriveItem): void {
    queuedDeadLetters.delete(item.deadLetterId);
    const key = `${item.partition}:${item.offset}`;
    if (item.offset < (deps.store.firstOffsets()[item.partition] ?? 0)) {
      // Retention deleted its event while it was queued: nothing to send, so the dead letter stays listed.
      expiredRedriveLine((suppressed) =>
        deps.log.warn(
          { subscription: subId, partition: item.partition, offset: item.offset, suppressed },
          'dead letter not redelivered: retention deleted its event',
        ),
      );
      return;
    }
    const record = recordAt(item.partition, item.offset);
    if (record === undefined) {
      // Lost, or set aside by recovery (skip-corrupt): nothing to send either, so it stays listed as it is, rather than
      // be consumed and listed again under a new id with its error gone (API probe).
      expiredRedriveLine((suppressed) =>
        deps.log.warn(
          { subscription: subId, partition: item.partition, offset: item.offset, suppressed },
          'dead letter not redelivered: its event is no longer in the log (lost, or set aside at recovery)',
        ),
      );
      return;
    }
    const pending = newPending(item.partition, item.offset, null, true);
    // The record just read is the one its first attempt sends (review: it was read twice).
    if (typeof record === 'object') pending.event = record;
    const part = parts[item.partition];
    // The dead letter's own webhook-id: a seek since then replays the offset under a new one, beside this (soak probe: shared).
    pending.generation = item.seekGeneration ?? (part ? generationAt(part, item.offset) : 0);
    pending.redriveReason = item.reason;
    redrives.set(key, pending);
    // Its row is written with the dead letter's removal (one flush, one transaction), and only then is it sent:
    // a crash before that write finds the dead letter still listed and nothing sent; after it, the redelivery
    // wherever it stands (sent before the write, a 2xx to it was undone: the dead letter came back after a crash).
    deps.persistence.consumeDeadLetter(subId, item.deadLetterId);
    deps.persistence.savePending(subId, pending);
    attemptOnceWritten(pending);
  }

  /**
   * The log's record at the offset, `'corrupt'` when it is there but unreadable, `'unknown'` when that cannot be told now
   * (the attempt reads it again), undefined when the log has none.
   */
  function recordAt(partition: number, offset: number): StoredEvent | 'corrupt' | 'unknown' | undefined {
    try {
      return readOne(deps.store, partition, offset);
    } catch (err) {
      if (isUnavailable(err)) return 'unknown';
      throw err;
    }
  }

  /** `attempt`, once what is buffered is written (tried again every second while the write fails). */
  function attemptOnceWritten(pending: Pending): void {
    deps.persistence.persisted().then(
      () => attempt(pending),
      () => {
        if (!stopped) setTimeout(() => attemptOnceWritten(pending), WRITE_RETRY_MS).unref();
      },
    );
  }

  function saveOffset(row: OffsetRow | undefined): void {
    if (row) deps.persistence.saveOffset(subId, row);
  }

  /** Attempts that waited for a slot under the concurrency limit, in the order they asked. */
  function releaseSlots(): void {
    for (const next of waitingForSlot) {
      if (openCount >= flow.maxInFlight()) return;
      waitingForSlot.delete(next);
      attempt(next);
    }
  }

  /**
   * The one way an attempt's life cycle changes: the machine's next state, then its effects. The
   * worker decides nothing about the life cycle itself; it feeds inputs and performs effects.
   */
  function step(pending: Pending, input: AttemptInput): AttemptEffect[] {
    const ctx = { now: clock(), policy: deps.subscription().delivery, random: deps.random, expired: isExpired(pending) };
    const { state, effects } = transition(pending.life, input, ctx);
    pending.life = state;
    // What a callback finishes (an ack, a reject, a nack past the last attempt: dead-lettered) was answered
    // 200 to a receiver: it is written with the write that answer waits for.
    const byCallback = input.kind === 'ack' || input.kind === 'reject' || input.kind === 'nack';
    for (const effect of effects) perform(pending, effect, byCallback);
    return effects;
  }

  function perform(pending: Pending, effect: AttemptEffect, byCallback = false): void {
    switch (effect.kind) {
      case 'send':
        clearTimer(pending);
        void send(pending, effect.attemptId, effect.attempt);
        return;
      case 'openCallback':
        deps.callbacks.issue(effect.attemptId, worker, pending);
        return;
      case 'settle':
        deps.callbacks.settle(effect.attemptId, effect.outcome);
        return;
      case 'persist':
        deps.persistence.savePending(subId, pending);
        return;
      case 'scheduleAt':
        armTimer(pending, effect.at, () => {
          pending.timer = undefined;
          if (!pending.finished) attempt(pending);
        });
        return;
      case 'armLease':
        armTimer(pending, effect.until, () => {
          pending.timer = undefined;
          step(pending, { kind: 'leaseExpired', attemptId: effect.attemptId });
        });
        return;
      case 'clearTimer':
        clearTimer(pending);
        return;
      case 'due':
        attempt(pending);
        return;
      case 'commitOffset':
        complete(pending, byCallback);
        return;
      case 'deadLetter':
        deadLetterLine((suppressed) =>
          deps.log.warn(
            {
              subscription: subId,
              partition: pending.partition,
              offset: pending.offset,
              reason: effect.reason,
              lastStatus: pending.lastStatus,
              lastError: pending.lastError,
              attempts: pending.attempt,
              suppressed,
            },
            'event dead-lettered',
          ),
        );
        deps.persistence.deadLetter(subId, pending, effect.reason, clock(), pending.generation ?? generationOf(pending));
        return;
      case 'release':
        release(pending);
        return;
      case 'drop':
        pending.event = undefined;
        clearTimer(pending);
        return;
      case 'observe':
        deps.observer?.outcome(subId, effect.outcome);
        return;
      case 'answered':
        return; // logged with the attempt log's outcome once the step is done (see the answer's handling)
      case 'health':
        if (effect.ok) failures.succeeded();
        else failures.failed(effect.error);
        return;
      case 'pauseSubscription':
        deps.onGone();
        return;
      case 'extended':
        return; // the callback's answer (see `extend`)
    }
  }

  /**
   * Starts the next attempt of an event when it may: not while paused, validating or with delivery
   * off (`resume` makes it due again), nor past the concurrency limit or without a rate-limit token
   * (it waits for a slot or a token, then comes back here).
   */
  function attempt(pending: Pending): void {
    // Closing: not sent now; its row stays as it is and the next start sends it (same webhook-id).
    if (stopped || quiescing || pending.finished || !startable(pending)) return;
    // Retention deleted it before it was finished (it is counted as expired): it is not sent again.
    if (isExpired(pending)) {
      step(pending, { kind: 'expire' });
      return;
    }
    if (deps.enabled === false || paused()) {
      step(pending, { kind: 'pause' });
      return;
    }
    clearTimer(pending);
    // A redelivery's event retention deleted is not sent again from memory (retention probe: attempts 2
    // and 3 went out after the deletion), as a partition's expired event is not.
    const retired = pending.redrive && pending.offset < (deps.store.firstOffsets()[pending.partition] ?? 0);
    const stored = retired ? undefined : (pending.event ?? readNow(pending));
    if (stored === 'unavailable') return;
    if (stored === 'corrupt') {
      step(pending, { kind: 'corrupt' });
      return;
    }
    if (!stored) {
      if (pending.redrive) {
        // Retention deleted it while it was being redelivered: its dead letter (consumed at the start) comes back.
        // At most one line a second per subscription, as for a queued one (soak: 500 lines in one millisecond
        // when retention deleted the events of 500 redeliveries waiting to retry).
        expiredRedriveLine((suppressed) =>
          deps.log.warn(
            { subscription: subId, partition: pending.partition, offset: pending.offset, suppressed },
            'redelivery ended: retention deleted its event',
          ),
        );
        deps.persistence.deadLetter(subId, pending, pending.redriveReason ?? 'max_attempts', clock(), pending.generation ?? 0);
        // Listed again: counted as dead-lettered, as `herald_dead_letters` counts it (metrics probe: the gauge rose, the counter did not).
        deps.observer?.outcome(subId, 'dead_letter');
      } else
        deps.log.error(
          { subscription: subId, partition: pending.partition, offset: pending.offset },
          'event missing from the log; skipping',
        );
      step(pending, { kind: 'missing' });
      return;
    }
    pending.event = stored;
    // The adaptive concurrency limit bounds requests open at once, retries included: past it the
    // attempt waits for a slot (a struggling receiver gets less traffic, not the same).
    if (openCount >= flow.maxInFlight()) {
      waitingForSlot.add(pending);
      return;
    }
    // The rate limit: without a token this attempt waits (it runs again when one is due).
    if (!flow.take(pending, () => attempt(pending))) return;
    step(pending, { kind: 'start', newAttemptId: newDeliveryId() });
  }

  /** A record that could not be read is logged once a minute per subscription, not per event. */
  const unavailableLine = throttledLine(60_000, clock);
  const localFailureLine = throttledLine(60_000, clock);

  /**
   * The pending event's record, read again (a retry, a redelivery, a restart). A read that cannot be
   * done now (a 503: its segment file cannot be reached, index.db waits for a restart) is not a corrupt
   * record: the event waits and is read again (was: dead-lettered `corrupt_record`).
   */
  function readNow(pending: Pending): StoredEvent | 'corrupt' | 'unavailable' | undefined {
    try {
      return readOne(deps.store, pending.partition, pending.offset);
    } catch (err) {
      if (!isUnavailable(err)) throw err;
      unavailableLine((suppressed) =>
        deps.log.warn(
          { subscription: subId, partition: pending.partition, offset: pending.offset, err: (err as Error).message, suppressed },
          'event cannot be read now; it waits and is read again every 5 s (logged once a minute)',
        ),
      );
      step(pending, { kind: 'unavailable', delayMs: UNAVAILABLE_RETRY_MS });
      return 'unavailable';
    }
  }

  /** The stored event at a partition's committed offset, for its age; undefined when it cannot be read now. */
  function oldestStored(partition: number, offset: number): StoredEvent | undefined {
    try {
      return deps.store.read(partition, offset, 1).events[0];
    } catch (err) {
      // The age is left out rather than failing the subscription's read (re-probe: every read of it was a 503).
      if (isUnavailable(err)) return undefined;
      throw err;
    }
  }

  /**
   * Only a ready event, or a scheduled one whose retry timer has fired (or was never armed: paused), has
   * an attempt to start. One that moved on while it waited for a slot or a token (a callback settled it,
   * an extend made it await its ack, a nack or a lost lease scheduled its retry) keeps its timers.
   */
  function startable(pending: Pending): boolean {
    const phase = pending.life.phase;
    return phase === 'ready' || (phase === 'scheduled' && pending.timer === undefined);
  }

  /** The seek generation of a partition's own delivery (not pinned): its position's, at its offset. */
  function generationOf(pending: Pending): number {
    const part = parts[pending.partition];
    return part ? generationAt(part, pending.offset) : 0;
  }

  /** Posts one attempt (the machine has moved the event to `sending`) and feeds its answer back. */
  async function send(pending: Pending, attemptId: string, attemptNumber: number): Promise<void> {
    const stored = pending.event!;
    const storedAt = stored.storedAt;
    const sub = deps.subscription();
    let startedAt = clock();
    /** The same on the monotonic clock: the attempt's duration (a wall clock stepped meanwhile made one of hours). */
    let began = performance.now();
    /**
     * The request as it goes out, built once a connection to the sink is free: signed with the secrets
     * of then, timed from then; none when the subscription was paused (or delivery is stopping) while
     * it waited, so no request leaves after a pause or a rotation has answered.
     */
    const build = (): Outgoing | undefined => {
      awaitingConnection.delete(attemptId);
      // A Retry-After that came while it waited holds it too: withdrawn, it waits for the hold's end.
      if (stopped || quiescing || deps.enabled === false || paused() || flow.held()) return undefined;
      const now = deps.subscription();
      // A PATCH moved the sink while it waited: this connection is to the old one; it goes again, to the new one.
      if (now.sink !== sub.sink) return undefined;
      startedAt = clock();
      began = performance.now();
      const request = requestFor(now, startedAt, deps.ackUrlBase(), {
        partition: pending.partition,
        offset: pending.offset,
        seekGeneration: pending.generation ?? generationOf(pending),
        previousOffset: pending.previousOffset,
        attempt: attemptNumber,
        deliveryId: attemptId,
        redrive: pending.redrive,
        event: stored.event,
      });
      return { headers: request.headers, body: request.body, timeoutMs: now.delivery.timeoutMs };
    };
    const epoch = flow.epoch();
    openCount++;
    awaitingConnection.set(attemptId, pending);
    let result: SendResult;
    try {
      result = await deps.sender.send(sub.sink, build, sub.delivery.timeoutMs, abortGroupOf(pending), subId);
    } finally {
      awaitingConnection.delete(attemptId);
      openCount--;
      releaseSlots();
      // Resolved here, run after this answer is handled below (a promise's callbacks wait for this function's turn to end).
      if (openCount === 0 && idleWaiters.length > 0) for (const resolve of idleWaiters.splice(0)) resolve();
    }
    if (result.withdrawn || result.localFailure) return notSent(pending, attemptId, result);
    const ms = Math.round(performance.now() - began);
    // Every answer informs the concurrency limit, even one that no longer matters to its event.
    if (flow.answered(result.status, result.timedOut === true, epoch)) schedulePump();
    // A 429 or 503 with Retry-After holds every request of the subscription (its own event's retry is the machine's),
    // when it came from the sink still in use: a late answer of one a PATCH moved away asks nothing of the new one.
    const sinkMoved = deps.subscription().sink !== sub.sink;
    const holdUntil = sinkMoved ? undefined : retryAfterHoldUntil(result, clock(), options().retry);
    if (holdUntil !== undefined) flow.holdUntil(holdUntil);
    // A deleted subscription's late answers are not recorded: its series are gone (and its rows: a hold written
    // for it would fail the flush on its foreign key).
    if (stopped) return;
    if (holdUntil !== undefined) deps.persistence.saveHold(subId, holdUntil);
    deps.observer?.answered(subId, ms);
    if (result.status !== null && result.status >= 200 && result.status < 300) deps.observer?.succeeded(subId, clock() - storedAt);
    // An answer for an attempt that is no longer current (a callback settled it meanwhile, a newer
    // attempt started, a seek dropped it) changes nothing: the machine checks the attempt id and phase.
    const effects = step(pending, answerInput(attemptId, result, sinkMoved));
    recordAnswer(pending, { attemptId, attemptNumber, startedAt, ms }, result, effects);
  }

  /** An attempt that never left (withdrawn, or no connection could be opened here): its number is not spent. */
  function notSent(pending: Pending, attemptId: string, result: SendResult): void {
    step(pending, { kind: 'withdraw', attemptId });
    if (result.withdrawn) {
      // Withdrawn for a new sink, not a pause: it goes again at once (a pause's resume makes it due).
      if (!stopped && !quiescing) attempt(pending);
      return;
    }
    // Out of descriptors here (connect EMFILE): nothing left, and the receiver did nothing wrong. Counted as
    // its failure, a burst of connections under a low `ulimit -n` dead-lettered events healthy receivers never saw.
    localFailureLine((suppressed) =>
      deps.log.error(
        { subscription: subId, partition: pending.partition, offset: pending.offset, err: result.error, suppressed },
        'delivery cannot open a connection (this process is out of file descriptors); the attempt waits and goes again, no attempt spent (logged once a minute)',
      ),
    );
    if (!stopped && !quiescing) step(pending, { kind: 'unavailable', delayMs: LOCAL_FAILURE_RETRY_MS });
  }

  /** The attempt log's row and the debug line of an answer the machine has stepped on (`effects`). */
  function recordAnswer(
    pending: Pending,
    a: { attemptId: string; attemptNumber: number; startedAt: number; ms: number },
    result: SendResult,
    effects: readonly AttemptEffect[],
  ): void {
    const { attemptId, attemptNumber, startedAt, ms } = a;
    // The outcome the attempt log shows (`delivered`, `awaiting_ack`, `dead_lettered`, `stale`…): the debug line
    // said the machine's own words (`done`, `await_ack`, `dead`, `error`), which neither the API nor the docs use.
    const outcome = answerOutcome(pending.life, effects);
    deps.log.debug(
      {
        subscription: subId,
        partition: pending.partition,
        offset: pending.offset,
        attempt: attemptNumber,
        status: result.status,
        ms,
        outcome,
      },
      'delivery attempt',
    );
    deps.persistence.recordAttempt({
      subscriptionId: subId,
      deliveryId: attemptId,
      partition: pending.partition,
      offset: pending.offset,
      attempt: attemptNumber,
      status: result.status,
      error: result.error?.slice(0, 1024) ?? null,
      durationMs: Math.max(0, Math.round(ms)),
      startedAt,
      outcome,
    });
  }

  function armTimer(pending: Pending, at: number, fire: () => void): void {
    clearTimer(pending);
    pending.timer = setTimeout(
      () => {
        if (!stopped) fire();
      },
      Math.max(0, at - clock()),
    );
  }

  /**
   * Finished (delivered, acked, dead-lettered, skipped): its offset counts as done, its row goes.
   * Finished above the committed offset (ordering `none`), it is written as finished behind delivery
   * once it stays there (at once with the callback that finished it), so a crash does not send it again:
   * the committed offset alone would, and one event retrying below would have the whole window behind it
   * sent again.
   */
  function complete(pending: Pending, byCallback = false): void {
    flow.forget(pending);
    waitingForSlot.delete(pending);
    pending.event = undefined; // settled callbacks and stats must not keep finished events alive
    clearTimer(pending);
    deps.persistence.deletePending(subId, pending);
    if (pending.redrive) {
      redrives.delete(`${pending.partition}:${pending.offset}`);
    } else {
      const part = parts[pending.partition]!;
      const expired = isExpired(pending);
      part.pending.delete(pending.offset);
      if (expired) {
        // Counted expired when retention moved past it while its request was open, then delivered after
        // all: not lost (retention probe: delivered and expired added up to more than the head).
        part.expired = Math.max(0, part.expired - 1);
        saveOffset(offsetRow(part));
      } else {
        saveOffset(finishOffset(part, pending.offset, true));
        if (part.finished.has(pending.offset))
          deps.persistence.saveFinished(subId, { partition: pending.partition, offset: pending.offset, matched: true }, byCallback);
      }
    }
    schedulePump();
  }

  function abortGroupOf(pending: Pending): AbortGroup {
    return pending.redrive ? redriveRequests : openRequests[pending.partition]!;
  }

  /**
   * An event of the partition below its committed offset while not finished: retention deleted it
   * and `expireCursor` moved past it (nothing else puts a pending delivery below `committed`).
   */
  function isExpired(pending: Pending): boolean {
    return !pending.redrive && pending.offset < (parts[pending.partition]?.committed ?? 0);
  }

  /**
   * Lets an expired pending delivery go: it is neither finished in the partition (its position is
   * already past it) nor dead-lettered, its row is deleted (the machine has settled its callback id).
   */
  function release(pending: Pending): void {
    pending.event = undefined;
    flow.forget(pending);
    waitingForSlot.delete(pending);
    clearTimer(pending);
    deps.persistence.deletePending(subId, pending);
    parts[pending.partition]?.pending.delete(pending.offset);
    schedulePump();
  }

  /**
   * Retention (see `EventStore.onRetire`): each partition whose committed offset is below its new
   * first offset moves past the deleted events, saves the position with the grown expired total, and
   * logs one warning with how many it had not finished. Pending deliveries of expired offsets that
   * are not waiting for an answer are let go now; one that is (a request open, or awaiting its ack)
   * ends by itself, without moving the position. Also run when delivery (re)starts, against
   * `firstOffsets()`: a deletion while the gateway was down, or before its expiry was saved, counts
   * the same. Runs whatever the state (paused, validating, delivery off).
   */
  function expire(firstOffsets: readonly number[]): void {
    if (stopped) return;
    // One line per subscription and deletion, not per partition (64 partitions made 64 lines a subscription).
    const byPartition: Record<number, number> = {};
    let expired = 0;
    for (const part of parts) {
      const first = firstOffsets[part.partition];
      const expiry = first === undefined ? undefined : expireCursor(part, first);
      if (expiry) {
        saveOffset(expiry.row);
        if (expiry.expired > 0) {
          byPartition[part.partition] = expiry.expired;
          expired += expiry.expired;
        }
      }
      // The machine lets go those not waiting for an answer (ready or scheduled).
      for (const pending of [...part.pending.values()]) if (isExpired(pending)) step(pending, { kind: 'expire' });
    }
    if (expired > 0)
      deps.log.warn(
        { subscription: subId, expired, partitions: byPartition },
        'retention deleted events this subscription had not finished; it moved past them',
      );
    schedulePump();
  }

  /** Drops every partition's page of events, giving its charge back to the thread's budget (read again when needed). */
  function letGoOfPages(): void {
    for (const part of parts) clearBuffer(part);
  }

  function clearTimer(pending: Pending): void {
    if (pending.timer) clearTimeout(pending.timer);
    pending.timer = undefined;
  }

  function restore(rows: PendingRow[]): void {
    for (const row of rows) {
      const pending = new Pending(row.partition, row.offset, row.previousOffset, row.redrive, stateFromRow(row));
      pending.persisted = true;
      if (row.seekGeneration != null) pending.generation = row.seekGeneration;
      if (row.redrive) redrives.set(`${row.partition}:${row.offset}`, pending);
      else parts[row.partition]?.pending.set(row.offset, pending);
      // The last attempt's id stays known, so a late callback for it is a 409 (stale), not a 404 (unknown),
      // unless it repeats what settled it (`settled_callbacks`): then a 200.
      if (row.deliveryId) deps.callbacks.issue(row.deliveryId, worker, pending);
      // Awaiting an ack: the lease runs on (or, run out meanwhile, fails); scheduled: the retry timer.
      // In flight at a crash: delivered again by resume() below, same webhook-id.
      step(pending, { kind: 'restore' });
    }
  }

  worker = {
    id: subId,
    // Past what retention deleted first: a restored attempt of a deleted event is then let go as expired
    // (its lease run out while the gateway was down would otherwise count as a failed attempt, and its last
    // one dead-letter an event no longer stored).
    start(): void {
      expire(deps.store.firstOffsets());
      restore(saved.pending);
      this.resume();
    },
    restoreOnly(): void {
      expire(deps.store.firstOffsets());
      restore(saved.pending);
    },
    /**
     * Moves past what retention deleted meanwhile, then re-arms due retries and starts pulling again
     * (after creation, restart or resume).
     */
    resume(): void {
      if (stopped) return;
      expire(deps.store.firstOffsets());
      if (paused()) return;
      // Ready ones are started; scheduled ones get their timer again (one 410 left none, or it fired while paused).
      for (const pending of allPending()) step(pending, { kind: 'resume' });
      // Those already due (the event a 410 paused on) go now, before any new event: the pump runs on
      // the next turn, before their timers would fire.
      const now = clock();
      for (const pending of allPending()) {
        const due = pending.nextAttemptAt;
        if (due === null || due > now) continue;
        clearTimer(pending); // the timer `resume` just armed: this is that attempt, sooner
        attempt(pending);
      }
      schedulePump();
    },
    /** The subscription's record changed (a PATCH): a new rate limit or in-flight limit applies now. */
    optionsChanged(): void {
      if (stopped) return;
      flow.optionsChanged();
      schedulePump();
    },
    holdEnded(): void {
      if (!stopped) endHold();
    },
    sinkMoved(from: string): void {
      if (!stopped) endHold();
      // Each comes back withdrawn (its number unspent) and is attempted again, to the new sink (see `send`).
      deps.sender.withdrawWaiting(from, subId);
    },
    wake(grown: ReadonlySet<number>): void {
      if (stopped || paused() || totalPending() >= flow.maxInFlight()) return;
      for (const partition of grown) {
        const part = parts[partition];
        if (part && hasCapacity(part)) {
          schedulePump();
          return;
        }
      }
    },
    expire,
    /** Callbacks from the receiver for the current attempt (the dispatcher has checked it is current). */
    ack(pending: Pending): void {
      if (pending.deliveryId !== null) step(pending, { kind: 'ack', attemptId: pending.deliveryId });
    },
    nack(pending: Pending, delayMs?: number): void {
      if (pending.deliveryId !== null) step(pending, { kind: 'nack', attemptId: pending.deliveryId, delayMs });
    },
    extend(pending: Pending, ms: number): number {
      const effects = pending.deliveryId === null ? [] : step(pending, { kind: 'extend', attemptId: pending.deliveryId, ms });
      const extended = effects.find((e) => e.kind === 'extended');
      return extended ? extended.until : Math.max(clock() + ms, pending.leaseUntil ?? 0);
    },
    reject(pending: Pending, reason?: string): void {
      if (pending.deliveryId !== null) step(pending, { kind: 'reject', attemptId: pending.deliveryId, reason });
    },
    redrive(items: RedriveItem[]): number {
      let queued = 0;
      for (const item of items) {
        if (queuedDeadLetters.has(item.deadLetterId)) continue;
        queuedDeadLetters.add(item.deadLetterId);
        redriveQueue.push(item);
        queued++;
      }
      schedulePump();
      return queued;
    },
    /** A dead letter deleted while its redelivery waits in the queue: it is not redelivered. */
    unqueueRedrive(deadLetterId: string): void {
      if (!queuedDeadLetters.delete(deadLetterId)) return;
      const at = redriveQueue.findIndex((item) => item.deadLetterId === deadLetterId);
      if (at >= 0) redriveQueue.splice(at, 1);
    },
    quiesce(): Promise<void> {
      quiescing = true;
      if (openCount === 0) return Promise.resolve();
      return new Promise<void>((resolve) => idleWaiters.push(resolve));
    },
    letGoOfPages,
    stop(opts = {}): void {
      stopped = true;
      deps.skipShare?.ranOut(subId, false);
      letGoOfPages();
      idleWaiters = [];
      flow.stop();
      if (opts.abort) {
        // Deleted: its pending events are dropped (their rows go with the subscription), its requests aborted.
        for (const controller of openRequests) controller.abort('the subscription was deleted');
        redriveRequests.abort('the subscription was deleted');
        for (const pending of allPending()) step(pending, { kind: 'delete' });
      } else {
        // Closing: the rows stay as they are for the next start; only the timers end. An attempt
        // whose request never left (it waited for a connection) is withdrawn now, while its row can
        // still be written: its number stays unspent after the restart.
        for (const [attemptId, pending] of awaitingConnection) step(pending, { kind: 'withdraw', attemptId });
        awaitingConnection.clear();
        for (const pending of allPending()) clearTimer(pending);
      }
    },
    flowStats: () => flow.stats(),
    /**
     * Moves partitions to new positions under a new seek generation (issue 12 §2), after the
     * dispatcher has saved them: their pending attempts are dropped and their open requests aborted.
     */
    seek(positions: { partition: number; offset: number }[], generation: number): void {
      for (const { partition, offset } of positions) {
        const part = parts[partition];
        if (!part) continue;
        openRequests[partition]!.abort('a seek moved its partition');
        openRequests[partition] = new AbortGroup();
        for (const pending of part.pending.values()) step(pending, { kind: 'seek' });
        seekCursor(part, offset, generation);
      }
      schedulePump();
    },
    seekGeneration: () => Math.max(0, ...parts.map((p) => p.generation)),
    finishedAbove: (): FinishedRow[] =>
      parts.flatMap((part) => [...part.finished].map(([offset, matched]) => ({ partition: part.partition, offset, matched }))),
    stats() {
      const heads = deps.store.heads();
      const now = clock();
      // Redeliveries of dead letters are events started and not finished too, below the committed offset.
      const redriving = new Array<number>(parts.length).fill(0);
      const lowestRedrive = new Array<Pending | undefined>(parts.length);
      for (const r of redrives.values()) {
        redriving[r.partition] = (redriving[r.partition] ?? 0) + 1;
        if (r.offset < (lowestRedrive[r.partition]?.offset ?? Infinity)) lowestRedrive[r.partition] = r;
      }
      return parts.map((part) => {
        const head = heads[part.partition] ?? 0;
        let oldestPendingAgeMs: number | null = null;
        if (part.committed < head) {
          const oldest = part.pending.get(part.committed)?.event ?? oldestStored(part.partition, part.committed);
          if (oldest) oldestPendingAgeMs = Math.max(0, now - oldest.storedAt);
        }
        // A redelivery still retrying is unfinished too, and older than the committed offset's event (metrics
        // probe: a redelivery failing for hours showed an age of 0). One read per partition: its lowest offset.
        const redrive = lowestRedrive[part.partition];
        const redriven = redrive && (redrive.event ?? oldestStored(part.partition, redrive.offset));
        if (redriven && redriven.offset === redrive.offset) oldestPendingAgeMs = Math.max(oldestPendingAgeMs ?? 0, now - redriven.storedAt);
        return {
          partition: part.partition,
          committedOffset: part.committed,
          headOffset: head,
          // Offsets a start skipped hold no event to deliver (a paused subscription showed 4,096 per partition after a crash).
          lag: Math.max(0, head - part.committed - (deps.skippedWithin?.(part.partition, part.committed, head) ?? 0)),
          inFlight: part.pending.size + (redriving[part.partition] ?? 0),
          oldestPendingAgeMs,
          expired: part.expired,
        };
      });
    },
  };
  function allPending(): Pending[] {
    return [...parts.flatMap((p) => [...p.pending.values()]), ...redrives.values()];
  }

  /**
   * The wall clock stepped by `byMs`: every deadline held here moves with it, so a retry, a lease, a
   * `Retry-After` hold and the failing window each keep their length; timers already running keep theirs.
   */
  function shiftDeadlines(byMs: number): void {
    for (const pending of allPending()) {
      const shifted = shiftTimes(pending.life, byMs);
      if (shifted === pending.life) continue;
      pending.life = shifted;
      deps.persistence.savePending(subId, pending);
    }
    // Stored too: a restart after the step would otherwise hold the subscription by the step again (clock re-probe:
    // a 20 s Retry-After ended while the gateway ran, stepped back an hour; restarted, it held every event an hour).
    const held = flow.shift(byMs);
    if (held !== null) deps.persistence.moveHold?.(subId, held);
    failures.shift(byMs);
    // Every worker sees the step: one line for them all (clock re-probe: a line per subscription per step).
    clockStepLine((suppressed) =>
      deps.log.info({ steppedMs: byMs, suppressed }, 'the wall clock stepped: retries, leases and holds keep their lengths'),
    );
  }

  return worker;
}

export {
  newDeliveryId,
  type CallbackOutcome,
  type CallbackRegistry,
  type Pending,
  type StatePersistence,
  type SubscriptionWorker,
} from './pending';
