import { LONG_HOLD_MS } from '../store/checkpoint-signal';
import type { Logger } from 'pino';
import { isDatabaseBusy } from '../errors';
import { durably, type Db } from '../store/db';
import { createDeadLettersRepo } from '../store/dead-letters-repo';
import { createDeliveryStateRepo, type FinishedRow, type OffsetRow, type SettledCallbackOutcome } from '../store/delivery-state-repo';
import { ATTEMPTS_KEPT, createAttemptsRepo } from '../store/attempts-repo';
import type { Pending, StatePersistence } from './pending';
import type { AttemptRow, DeadLetterRow } from '../subscriptions/delivery-records';

/**
 * An attempt that starts and is answered within one interval is never written. At 10 ms most of a
 * draining backlog's attempts (answered in about 9 ms) were written and then deleted again: the
 * delivery thread spent 134 µs an event, against 99–106 µs at 50 ms (BENCHMARKS.md, fifth session).
 */
const FLUSH_INTERVAL_MS = 50;
/** How long after a flush met herald.db's write lock a read's flush is not tried (see `flushForRead`). */
const BUSY_SKIP_MS = 1000;
const ATTEMPT_LOG_INTERVAL_MS = 1000;
/** A flush failing again and again (a full disk) is logged once, then once per this interval, with its count. */
const FAILURE_LOG_INTERVAL_MS = 10_000;
/** How long flushes fail in a row before `/readyz` is told (see `onWriteHealth`). */
const WRITE_HEALTH_AFTER_MS = 1000;

/**
 * The dispatcher's writes to SQLite (delivery state, dead letters, failing-since, the attempt log),
 * buffered and written behind the workers: one transaction per flush (every 50 ms at most) instead
 * of one per event. A crash (of the process or of the delivery thread) loses at most the last
 * flush interval of progress, which means redelivery (at least once), never loss.
 */
export function createWriteBehind(deps: {
  db: Db;
  log: Logger;
  /** Told when flushes start failing (the error) and when one succeeds again (undefined): `/readyz` shows it. */
  onWriteHealth?: (failing: string | undefined) => void;
  /**
   * Whether herald.db's own checkpointer holds its write lock now (checkpoint-signal.ts): a write would only wait
   * out the busy timeout, the thread's event loop stopped meanwhile. The timed flushes are then put off to the next
   * interval, untried; a read of the tables (read-your-writes), a seek and the close still write (and wait).
   */
  lockHeld?: (forAtLeastMs?: number) => boolean;
}) {
  const stateRepo = createDeliveryStateRepo(deps.db);
  const deadLetters = createDeadLettersRepo(deps.db);
  const attemptLog = createAttemptsRepo(deps.db);

  // Write-behind buffers, keyed so that only the latest state of each row is written.
  const dirtyPending = new Map<string, { subscriptionId: string; pending: Pending; remove: boolean }>();
  const dirtyOffsets = new Map<string, { subscriptionId: string; row: OffsetRow }>();
  let deadLetterInserts: Omit<DeadLetterRow, 'id'>[] = [];
  let deadLetterDeletes: { subscriptionId: string; id: number }[] = [];
  /** Per subscription, since when every attempt has failed (null: delete the row). */
  const dirtyFailing = new Map<string, number | null>();
  /** Per subscription, the latest `Retry-After` hold (epoch ms; null: ended). */
  const dirtyHolds = new Map<string, number | null>();
  /** Subscriptions whose dirty hold replaces the stored one (moved by a wall-clock step), not only a later one. */
  const movedHolds = new Set<string>();
  /** Per subscription, attempts answered since the last write of the log (at most the newest `ATTEMPTS_KEPT` are written). */
  const attemptInserts = new Map<string, AttemptRow[]>();
  /** Offsets finished above the committed one (ordering `none`), so a crash does not send them again. */
  const dirtyFinished = new Map<string, { subscriptionId: string; row: FinishedRow; at: number; urgent: boolean }>();
  /** Keys of `dirtyFinished` the last transaction wrote or found passed (dropped from it once it commits). */
  let finishedDone: string[] = [];
  /** Subscriptions that may have finished rows in SQLite: their rows below a committed offset written go with it. */
  const withFinishedRows = new Set<string>();
  /** Receivers' callbacks settled since the last flush; written with the delivery state they changed. */
  let settledCallbacks: { deliveryId: string; outcome: SettledCallbackOutcome }[] = [];
  let flushTimer: NodeJS.Timeout | undefined;
  let attemptLogTimer: NodeJS.Timeout | undefined;
  /** When a flush last met herald.db's write lock held (performance.now; see `flushForRead`). */
  let busyAt = -Infinity;
  /** Set by `close()`: failed writes no longer schedule retries (no timer may outlive the database). */
  let closed = false;
  /**
   * Given to `close()`: offsets finished above the committed ones (ordering `none`). Written in the same
   * transaction as the rest of the buffer, or not at all: an offset may be skipped after the restart
   * only if what finished it (a dead letter, say) is stored too.
   */
  let finishedAtClose: readonly { subscriptionId: string; rows: readonly FinishedRow[] }[] = [];

  const writeBatch = deps.db.transaction(() => {
    for (const { subscriptionId, pending, remove } of dirtyPending.values()) {
      if (remove) stateRepo.deletePending(subscriptionId, pending.partition, pending.offset, pending.redrive);
      else stateRepo.savePending(subscriptionId, snapshot(pending));
    }
    finishedDone = [];
    const settledBefore = performance.now() - FLUSH_INTERVAL_MS;
    for (const [k, { subscriptionId, row, at, urgent }] of dirtyFinished) {
      // Passed by the committed offset written in this same transaction: the row would go at once.
      const committing = dirtyOffsets.get(`${subscriptionId}\u0000${row.partition}`)?.row.committedOffset;
      if (committing !== undefined && row.offset < committing) finishedDone.push(k);
      // Written once it has stayed above the committed offset for a whole interval (most offsets a healthy
      // subscription finishes out of order are passed by then), at once when a callback's answer waits for it,
      // and at once when this transaction deletes its written in-flight row: a crash between the two writes
      // left neither, and the restart sent the event again as a new one, attempt 1 (chaos soak: 3, then 1).
      else if (urgent || at <= settledBefore || dirtyPending.get(key(subscriptionId, row, false))?.remove) {
        stateRepo.saveFinished(subscriptionId, [row]);
        finishedDone.push(k);
      }
    }
    for (const { subscriptionId, row } of dirtyOffsets.values()) {
      stateRepo.saveOffset(subscriptionId, row);
      if (withFinishedRows.has(subscriptionId)) stateRepo.dropFinishedBelow(subscriptionId, row.partition, row.committedOffset);
    }
    for (const dl of deadLetterInserts) deadLetters.insert(dl);
    for (const d of deadLetterDeletes) deadLetters.remove(d.subscriptionId, d.id);
    for (const [subscriptionId, since] of dirtyFailing) stateRepo.setFailingSince(subscriptionId, since);
    for (const [subscriptionId, until] of dirtyHolds) {
      if (movedHolds.has(subscriptionId) && until !== null) stateRepo.replaceHold(subscriptionId, until);
      else stateRepo.saveHold(subscriptionId, until);
    }
    for (const { subscriptionId, rows } of finishedAtClose) stateRepo.saveFinished(subscriptionId, rows);
    stateRepo.saveSettledCallbacks(settledCallbacks);
  });

  /** Writes everything buffered now; throws (the buffer kept, a retry scheduled unless closing) when SQLite fails. */
  function flushOrThrow(): void {
    cancelTimedFlush();
    const idle =
      dirtyPending.size === 0 &&
      dirtyOffsets.size === 0 &&
      deadLetterInserts.length === 0 &&
      deadLetterDeletes.length === 0 &&
      dirtyFailing.size === 0 &&
      dirtyHolds.size === 0 &&
      settledCallbacks.length === 0 &&
      dirtyFinished.size === 0 &&
      finishedAtClose.length === 0;
    if (idle) return;
    try {
      writeBatch();
    } catch (err) {
      if (isDatabaseBusy(err)) busyAt = performance.now();
      noteFailure(err);
      if (!closed) scheduleFlush();
      throw err;
    }
    written();
  }

  /**
   * A flush before a read of what delivery reports (stats), so that what is reported is written: a crash then never
   * shows a committed offset moving back. Not tried while herald.db's write lock is known held (its own checkpointer's
   * hold, or a flush that met the lock within the last second): each try would wait the busy timeout, once per
   * subscription read (slow-disk probe: GET /metrics took 9.6 s behind a 10 s hold with 20 subscriptions). What is
   * reported may then be ahead of what is written, until the lock is free.
   */
  function flushForRead(): void {
    if (deps.lockHeld?.() || performance.now() - busyAt < BUSY_SKIP_MS) return;
    flush();
  }

  /** `retryBusyUntil` (at close): a write another process's lock holds up is tried again until then. */
  function flush(retryBusyUntil = 0): void {
    for (;;) {
      try {
        return flushOrThrow();
      } catch (err) {
        if (isDatabaseBusy(err) && Date.now() < retryBusyUntil) continue; // each try waits up to the busy timeout
        // Closing: what was not written is delivered again at the next start (at least once).
        stateFailures.failed(err);
        return;
      }
    }
  }

  /**
   * The attempt log is diagnostics, not delivery state: it is written once a second (a crash loses at
   * most that second of it), so a fast drain writes at most the newest `ATTEMPTS_KEPT` rows per
   * subscription a second rather than a row per attempt every flush (measured while a backlog
   * drained: one insert per attempt took 3.8 % of the ingest thread).
   */
  const writeAttempts = deps.db.transaction(() => {
    for (const [subscriptionId, rows] of attemptInserts) {
      for (const row of rows.slice(-ATTEMPTS_KEPT)) attemptLog.insert(row);
      attemptLog.trim(subscriptionId);
    }
  });

  function flushAttempts(): void {
    if (attemptLogTimer) clearTimeout(attemptLogTimer);
    attemptLogTimer = undefined;
    if (attemptInserts.size === 0) return;
    try {
      writeAttempts();
    } catch (err) {
      // Disk probe: a line with its stack every second on a full disk.
      attemptLogFailures.failed(err);
      if (!closed) attemptLogTimer = setTimeout(timedFlushAttempts, ATTEMPT_LOG_INTERVAL_MS);
      return;
    }
    attemptLogFailures.written();
    attemptInserts.clear();
  }

  /** Callers of `persisted()` waiting for the next flush. */
  let persistWaiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];
  let persistSoon: NodeJS.Immediate | undefined;

  /**
   * Resolves once everything buffered now is written (rejects if that write fails). Callers in the
   * same turn of the loop share one transaction: a receiver's callback is answered only once it is
   * durable, at the cost of one transaction per turn rather than per callback.
   */
  function persisted(): Promise<void> {
    return new Promise((resolve, reject) => {
      persistWaiters.push({ resolve, reject });
      persistSoon ??= setImmediate(() => {
        persistSoon = undefined;
        const waiting = persistWaiters;
        persistWaiters = [];
        // While herald.db's own checkpointer holds the write lock, a try would stop this thread's loop for the busy
        // timeout (1 s), then fail all the same (the callback is answered 503): it is not made, the timed flush writes
        // what is buffered once the lock is free (slow-disk re-probe: under manual acks each callback's try stopped
        // the thread, acks answered 503 after 2 s and deliveries 4-5 s late through a 6 s TRUNCATE hold).
        // Only a hold that has lasted (a slow disk's): a healthy disk's holds for milliseconds, which the write waits out.
        if (deps.lockHeld?.(LONG_HOLD_MS)) {
          const busy = Object.assign(new Error("database is locked (herald.db's own checkpoint holds its write lock)"), {
            code: 'SQLITE_BUSY',
          });
          scheduleFlush();
          for (const w of waiting) w.reject(busy);
          return;
        }
        try {
          flushOrThrow();
        } catch (err) {
          for (const w of waiting) w.reject(err);
          return;
        }
        for (const w of waiting) w.resolve();
      });
    });
  }

  /** Since when writes of the buffer have failed (every one: the timer's flushes and a callback's), and whether `/readyz` was told. */
  const health: { since: number | undefined; reported: boolean } = { since: undefined, reported: false };
  /**
   * Told once writes have failed for a second, whichever path tried them (re-probe: callbacks' writes, which
   * take the timer's place while they come, were not counted, so `/readyz` stayed ready on a full disk). A
   * write lock held for a moment is no reason to be unready.
   */
  function noteFailure(err: unknown): void {
    const now = performance.now();
    health.since ??= now;
    if (health.reported || now - health.since < WRITE_HEALTH_AFTER_MS) return;
    health.reported = true;
    deps.onWriteHealth?.(err instanceof Error ? err.message : String(err));
  }

  /**
   * The failures of one kind of write, logged the first time, at close, and then once every
   * FAILURE_LOG_INTERVAL_MS with how many there were; and that it was written again. Tried every flush
   * interval, a failing flush logged 20 error lines a second while herald.db's disk was full (a probe).
   */
  function failureLog(what: string, retriedEveryMs: number) {
    let count = 0;
    let loggedAt = 0;
    return {
      failed(err: unknown): void {
        count++;
        if (!closed && count > 1 && performance.now() - loggedAt < FAILURE_LOG_INTERVAL_MS) return;
        loggedAt = performance.now();
        const message = closed ? `${what} flush failed at close` : `${what} flush failed; retried every ${retriedEveryMs} ms`;
        deps.log.error({ err, failedTries: count }, message);
      },
      written(): void {
        if (count > 0) deps.log.info({ failedTries: count }, `${what} written again`);
        count = 0;
      },
    };
  }
  const stateFailures = failureLog('delivery state', FLUSH_INTERVAL_MS);
  const attemptLogFailures = failureLog('attempt log', ATTEMPT_LOG_INTERVAL_MS);

  /** Only once the transaction has committed: a rolled-back flush must not leave rows believed written. */
  function written(): void {
    stateFailures.written();
    if (health.reported) deps.onWriteHealth?.(undefined);
    health.since = undefined;
    health.reported = false;
    for (const { pending, remove } of dirtyPending.values()) pending.persisted = !remove;
    dirtyPending.clear();
    dirtyOffsets.clear();
    deadLetterInserts = [];
    deadLetterDeletes = [];
    dirtyFailing.clear();
    dirtyHolds.clear();
    movedHolds.clear();
    for (const k of finishedDone) dirtyFinished.delete(k);
    finishedDone = [];
    if (dirtyFinished.size > 0 && !closed) scheduleFlush(); // the younger ones, at the next interval (a close writes all)
    settledCallbacks = [];
  }

  /**
   * A seek, in one transaction: the buffered state first (so no older offset lands after the seek
   * and moves a position forward again), then the new positions with their generation, without
   * their partitions' pending rows. A crash leaves either no seek or all of it.
   */
  const writeSeek = deps.db.transaction(
    (subscriptionId: string, positions: { partition: number; offset: number }[], generation: number) => {
      writeBatch();
      for (const { partition, offset } of positions) stateRepo.seekOffset(subscriptionId, partition, offset, generation);
    },
  );

  function scheduleFlush(): void {
    flushTimer ??= setTimeout(timedFlush, FLUSH_INTERVAL_MS);
  }

  /** A write of the whole buffer made now (a flush, a seek) takes the timed flush's place. */
  function cancelTimedFlush(): void {
    clearTimeout(flushTimer);
    flushTimer = undefined;
  }

  /**
   * A flush the timer runs; while the checkpointer holds the write lock, put off to the next interval. A TRUNCATE
   * checkpoint through a slow fsync holds it for seconds, and each try waited its busy timeout (1 s) on the delivery
   * thread: every request, callback and call of the thread waited behind it (slow-disk probe: deliveries 2-5 s late
   * through a 10 s hold, the same as the hold-free latency of 11 ms once tries were put off).
   */
  function timedFlush(): void {
    flushTimer = undefined;
    if (deps.lockHeld?.()) return scheduleFlush();
    flush();
  }

  function timedFlushAttempts(): void {
    attemptLogTimer = undefined;
    if (deps.lockHeld?.()) {
      attemptLogTimer = setTimeout(timedFlushAttempts, FLUSH_INTERVAL_MS);
      return;
    }
    flushAttempts();
  }

  // A redelivery and the partition's own delivery of the same offset are two deliveries (two rows).
  const key = (subscriptionId: string, p: { partition: number; offset: number }, redrive: boolean) =>
    `${subscriptionId}\u0000${p.partition}\u0000${p.offset}\u0000${redrive ? 1 : 0}`;

  const persistence: StatePersistence = {
    savePending(subscriptionId, pending) {
      dirtyPending.set(key(subscriptionId, pending, pending.redrive), { subscriptionId, pending, remove: false });
      scheduleFlush();
    },
    deletePending(subscriptionId, pending) {
      const k = key(subscriptionId, pending, pending.redrive);
      // Started and finished within one flush window (the common, healthy case): SQLite never needs to hear of it.
      if (!pending.persisted) dirtyPending.delete(k);
      else dirtyPending.set(k, { subscriptionId, pending, remove: true });
      scheduleFlush();
    },
    saveFinished(subscriptionId, row, urgent = false) {
      dirtyFinished.set(`${subscriptionId}\u0000${row.partition}\u0000${row.offset}`, {
        subscriptionId,
        row,
        at: performance.now(),
        urgent,
      });
      withFinishedRows.add(subscriptionId);
      scheduleFlush();
    },
    saveOffset(subscriptionId, row) {
      dirtyOffsets.set(`${subscriptionId}\u0000${row.partition}`, { subscriptionId, row: { ...row } });
      scheduleFlush();
    },
    deadLetter(subscriptionId, pending, reason, at, generation) {
      deadLetterInserts.push({
        subscriptionId,
        partition: pending.partition,
        offset: pending.offset,
        attempts: pending.attempt,
        lastStatus: pending.lastStatus,
        lastError: pending.lastError?.slice(0, 1024) ?? null,
        reason,
        deadAt: at,
        seekGeneration: generation,
      });
      scheduleFlush();
    },
    consumeDeadLetter(subscriptionId, deadLetterId) {
      deadLetterDeletes.push({ subscriptionId, id: Number(deadLetterId) });
      scheduleFlush();
    },
    saveFailingSince(subscriptionId, since) {
      dirtyFailing.set(subscriptionId, since);
      scheduleFlush();
    },
    saveHold(subscriptionId, until) {
      dirtyHolds.set(subscriptionId, until === null ? null : Math.max(until, dirtyHolds.get(subscriptionId) ?? 0));
      scheduleFlush();
    },
    moveHold(subscriptionId, until) {
      dirtyHolds.set(subscriptionId, until);
      movedHolds.add(subscriptionId);
      scheduleFlush();
    },
    persisted,
    recordAttempt(row) {
      let rows = attemptInserts.get(row.subscriptionId);
      if (!rows) attemptInserts.set(row.subscriptionId, (rows = []));
      rows.push(row);
      // While SQLite refuses writes the buffer must not grow without bound: only the newest are kept anyway.
      if (rows.length > 2 * ATTEMPTS_KEPT) rows.splice(0, rows.length - ATTEMPTS_KEPT);
      attemptLogTimer ??= setTimeout(timedFlushAttempts, ATTEMPT_LOG_INTERVAL_MS);
    },
  };

  function snapshot(p: Pending) {
    return {
      partition: p.partition,
      offset: p.offset,
      attempt: p.attempt,
      state: p.state,
      deliveryId: p.deliveryId,
      previousOffset: p.previousOffset,
      nextAttemptAt: p.nextAttemptAt,
      leaseUntil: p.leaseUntil,
      redrive: p.redrive,
      lastStatus: p.lastStatus,
      lastError: p.lastError,
      seekGeneration: p.generation ?? null,
    };
  }

  return {
    persistence,
    /** Writes the buffer now (reads of the tables written behind call it first: read-your-writes). */
    flush,
    flushForRead,
    /** Writes the attempt log's buffer now (its reads call it first). */
    flushAttempts,
    flushOrThrow,
    persisted,
    /** A receiver's callback settled an attempt: written with the state it changed, read back by `settledCallback`. */
    settleCallback(deliveryId: string, outcome: SettledCallbackOutcome): void {
      settledCallbacks.push({ deliveryId, outcome });
      scheduleFlush();
    },
    /** What a callback settled for this attempt: buffered, or written (a repeat after a restart). */
    settledCallback(deliveryId: string): SettledCallbackOutcome | undefined {
      return settledCallbacks.find((s) => s.deliveryId === deliveryId)?.outcome ?? stateRepo.settledCallback(deliveryId);
    },
    /**
     * How many dead letters of the subscription its buffer adds (inserts less deletes): a count read from
     * SQLite plus this is what the subscription holds, written or not.
     */
    bufferedDeadLetters(subscriptionId: string): number {
      let n = 0;
      for (const d of deadLetterInserts) if (d.subscriptionId === subscriptionId) n++;
      for (const d of deadLetterDeletes) if (d.subscriptionId === subscriptionId) n--;
      return n;
    },
    /** The offsets finished above the committed ones that a start must not send again (they stay written until passed). */
    finishedAtStart(subscriptionId: string): FinishedRow[] {
      const rows = stateRepo.finished(subscriptionId);
      if (rows.length > 0) withFinishedRows.add(subscriptionId);
      return rows;
    },
    /**
     * At close: writes what is buffered, with `finished` (at a graceful close: the offsets finished above each
     * committed one, so the next start does not deliver them again). While another process holds herald.db's
     * write lock it is tried again until `retryBusyUntil` (a probe: given up at once, though the shutdown had
     * seconds left, and 8 answered events were sent again). A failure is logged: what was not written is
     * delivered again after the restart (at least once). No write is scheduled after it.
     */
    close(finished: readonly { subscriptionId: string; rows: readonly FinishedRow[] }[] = [], retryBusyUntil = 0): void {
      closed = true;
      finishedAtClose = finished.filter((f) => f.rows.length > 0);
      flush(retryBusyUntil);
      finishedAtClose = [];
      flushAttempts();
    },
    /**
     * Saves a seek in one transaction with the buffer (see `writeSeek`); throws, with nothing saved
     * and the buffer kept for the next flush, when SQLite fails.
     */
    seek(subscriptionId: string, positions: { partition: number; offset: number }[], generation: number): void {
      cancelTimedFlush();
      try {
        // Durably: the seek is answered as done, and a replay asked for must not be taken back by a power cut.
        durably(deps.db, () => writeSeek(subscriptionId, positions, generation));
      } catch (err) {
        scheduleFlush(); // the buffered state is still to be written; the seek is not (the caller sees the error)
        throw err;
      }
      written();
      // Offsets finished before the seek and not written yet (younger than an interval): written after it,
      // they would make a start after a crash skip them in the seek's replay.
      const sought = new Set(positions.map((p) => p.partition));
      for (const [k, v] of dirtyFinished) if (v.subscriptionId === subscriptionId && sought.has(v.row.partition)) dirtyFinished.delete(k);
    },
    /** Drops everything buffered for a deleted subscription (its rows go with it). */
    forget(subscriptionId: string): void {
      for (const [k, v] of dirtyPending) if (v.subscriptionId === subscriptionId) dirtyPending.delete(k);
      for (const [k, v] of dirtyOffsets) if (v.subscriptionId === subscriptionId) dirtyOffsets.delete(k);
      for (const [k, v] of dirtyFinished) if (v.subscriptionId === subscriptionId) dirtyFinished.delete(k);
      withFinishedRows.delete(subscriptionId);
      deadLetterInserts = deadLetterInserts.filter((d) => d.subscriptionId !== subscriptionId);
      deadLetterDeletes = deadLetterDeletes.filter((d) => d.subscriptionId !== subscriptionId);
      dirtyFailing.delete(subscriptionId);
      dirtyHolds.delete(subscriptionId);
      movedHolds.delete(subscriptionId);
      attemptInserts.delete(subscriptionId);
    },
    stateRepo,
    deadLetters,
    attemptLog,
  };
}

export type WriteBehind = ReturnType<typeof createWriteBehind>;
