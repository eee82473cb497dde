import type { Logger } from 'pino';
import { throttledLine } from '../logger';
import { AppError, coerceError } from '../errors';
import type { StoreHealth } from './event-store';
import { createWriteHealth } from './write-health';
import type { OffsetReservation } from './offset-reservation';
import type { PendingEntry } from './sequencer';
import type { SegmentLog } from './segment-log';

export interface CommittedGroup {
  entries: PendingEntry[];
  /** Log position of each entry's record. */
  positions: number[];
  /** Log position just past the group. */
  end: number;
  /** How long its fsync took; undefined when none ran. */
  fsyncMs: number | undefined;
}

export interface GroupCommitOptions {
  segments: SegmentLog;
  log: Logger;
  fsync: 'always' | 'interval' | 'never';
  fsyncIntervalMs: number;
  /** Test hook: how long an unwritable log waits before its first probe write (see `write-health.ts`). */
  probeFirstMs?: number;
  /** The group is durable (synchronously before its waiters resume). */
  onCommitted: (group: CommittedGroup) => void;
  /** A group failed: it and every group queued behind it are undone. */
  onFailed: () => void;
  /** Offsets are acknowledged only below the reserved ceilings (see `offset-reservation.ts`). */
  reservation?: Pick<OffsetReservation, 'cover'>;
}

interface Group {
  entries: PendingEntry[];
  bytes: number;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const RETRY_AFTER_SECONDS = 1;
/** fsync=interval: past this many bytes written and not yet synced, a commit syncs (bounds what is kept for a rewrite). */
const MAX_UNSYNCED_BYTES = 64 * 1024 * 1024;

/** A group written under fsync=interval and not yet covered by a sync that succeeded. */
interface Unsynced {
  position: number;
  frames: Buffer[];
  bytes: number;
  seq: number;
}

/**
 * Group commit: requests that arrive while a group is written and synced join the next group, so one
 * `write` + `fdatasync` acknowledges all of them. Nothing but the log is on this path. A failed write
 * or sync undoes the group (and those queued behind it, whose offsets follow its offsets) and marks
 * the log unwritable until a later group succeeds.
 */
export function createGroupCommit(opts: GroupCommitOptions) {
  const { segments, log } = opts;
  const undoLine = throttledLine(60_000);
  let current = newGroup();
  let flushing = false;
  let closed = false;
  /** Closed with everything acknowledged known synced, and nothing past it in the log (a failed write was cut). */
  let closedClean = false;
  const writeHealth = createWriteHealth({
    log,
    // A probe beside a segment found removed or cut short proves nothing: that log stays unwritable.
    probe: (needBytes) => {
      const damage = segments.damage();
      return damage ? Promise.reject(new Error(damage)) : segments.probeWrite(needBytes);
    },
    probeFirstMs: opts.probeFirstMs,
  });
  let dirty = false;
  /** fsync=interval: the last timed sync failed, so every commit syncs until one succeeds. */
  let syncFailed = false;
  let rollOwed = false;
  /**
   * fsync=interval: groups acknowledged and not yet covered by a sync that succeeded. After a failed
   * fsync Linux may drop those dirty pages and report the next fsync as a success (fsyncgate), so they
   * are written again from here (`rewriteOwed`) before the log takes another write.
   */
  let unsynced: Unsynced[] = [];
  let unsyncedBytes = 0;
  let unsyncedSeq = 0;
  let rewriteOwed = false;
  /** Counts failed syncs and writes: a sync that succeeded covers what was written before it only if none failed meanwhile. */
  let failures = 0;
  /** The timed sync running now, if any (close waits for it). */
  let timedSync: Promise<void> | undefined;

  const syncTimer =
    opts.fsync === 'interval'
      ? setInterval(() => {
          if (!dirty || closed) return;
          dirty = false;
          const covered = unsyncedSeq;
          const failuresBefore = failures;
          timedSync = segments.sync().then(
            () => {
              timedSync = undefined;
              if (failures !== failuresBefore) return; // a failure reported meanwhile: this success proves nothing
              syncFailed = false;
              forgetUnsynced(covered);
            },
            (err) => {
              timedSync = undefined;
              // Sticky until a sync succeeds: acknowledging writes the disk cannot make durable would be a lie.
              syncFailed = true;
              failed(err);
            },
          );
        }, opts.fsyncIntervalMs)
      : undefined;
  syncTimer?.unref();

  function keepUnsynced(position: number, group: Group): void {
    unsynced.push({ position, frames: group.entries.map((e) => e.frame), bytes: group.bytes, seq: ++unsyncedSeq });
    unsyncedBytes += group.bytes;
  }

  /** A refused group (cut from the log) is never written again. */
  function dropUnsyncedFrom(position: number): void {
    while (unsynced.length > 0 && unsynced[unsynced.length - 1]!.position >= position) unsyncedBytes -= unsynced.pop()!.bytes;
  }

  /** A sync that succeeded covers the groups up to `seq`. */
  function forgetUnsynced(seq: number): void {
    let n = 0;
    while (n < unsynced.length && unsynced[n]!.seq <= seq) unsyncedBytes -= unsynced[n++]!.bytes;
    if (n > 0) unsynced = unsynced.slice(n);
  }

  /** Writes every group not known durable again, each synced; throws (still owed) if the disk still fails. */
  function rewriteUnsynced(): void {
    for (const u of unsynced) segments.rewrite(u.position, u.frames.length === 1 ? u.frames[0]! : Buffer.concat(u.frames, u.bytes));
    rewriteOwed = false;
    unsynced = [];
    unsyncedBytes = 0;
    log.warn('log: wrote again the events not yet synced when an fsync failed');
  }

  function newGroup(): Group {
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => undefined); // every waiter handles it; this keeps an unobserved group quiet
    return { entries: [], bytes: 0, done, resolve, reject };
  }

  async function flush(): Promise<void> {
    if (flushing) return;
    flushing = true;
    try {
      while (current.entries.length > 0) {
        const group = current;
        current = newGroup();
        await commit(group);
      }
      if (rollOwed) rollSafely();
    } finally {
      flushing = false;
    }
  }

  async function commit(group: Group): Promise<void> {
    const before = segments.end();
    let committed: CommittedGroup;
    const failuresBefore = failures;
    try {
      if (rewriteOwed) rewriteUnsynced();
      if (rollOwed) rollNow();
      // Before the group's write (about once per half a block of a partition's offsets): a reservation
      // that fails then fails the group before any of it is on disk, never after its own sync.
      const reserved = opts.reservation?.cover(group.entries);
      if (reserved) await reserved;
      const first = await segments.append(
        group.entries.map((e) => e.frame),
        group.bytes,
      );
      const positions: number[] = [];
      let at = first;
      for (const e of group.entries) {
        positions.push(at);
        at += e.frame.length;
      }
      const mustSync = opts.fsync === 'always' || syncFailed || unsyncedBytes + group.bytes > MAX_UNSYNCED_BYTES;
      // Kept even when it syncs now: Linux reports a writeback error once per file, so a timed sync failing
      // meanwhile may take this group's pages while this sync reports success.
      if (opts.fsync === 'interval') keepUnsynced(first, group);
      let fsyncMs: number | undefined;
      if (mustSync) {
        const covered = unsyncedSeq;
        const started = performance.now();
        await segments.sync();
        fsyncMs = performance.now() - started;
        if (failures === failuresBefore) {
          syncFailed = false;
          forgetUnsynced(covered);
        }
      } else {
        dirty = true;
      }
      if (failures !== failuresBefore && unsynced.length > 0) rewriteOwed = true;
      committed = { entries: group.entries, positions, end: at, fsyncMs };
    } catch (err) {
      fail(group, before, err);
      return;
    }
    if (failures === failuresBefore) writeHealth.succeeded();
    try {
      opts.onCommitted(committed);
    } catch (err) {
      log.error({ err: coerceError(err) }, 'after a committed group'); // the group is durable: never undone now
    }
    group.resolve();
  }

  function fail(group: Group, before: number, err: unknown): void {
    dropUnsyncedFrom(before);
    failed(err, group.bytes);
    // Its bytes reached the file (its sync failed, or a check after the write): they must be cut.
    const wrote = segments.end() > before;
    let undone = true;
    try {
      segments.truncate(before);
    } catch (truncateErr) {
      undone = false;
      // Once a minute: every group refused while the cut keeps failing came here (syscall probe: 202 lines in 1 s).
      undoLine((suppressed) =>
        log.error(
          { err: coerceError(truncateErr), suppressed },
          'log: could not undo a failed append (tried again before the next write); the events it refused may be found stored after a restart',
        ),
      );
    }
    const queued = current;
    current = newGroup();
    opts.onFailed();
    const refused = (maybeStored: boolean) =>
      new AppError(
        'unavailable',
        maybeStored
          ? "the event log cannot be written right now, and this request's write could not be undone: its events may be found stored after a restart (sent again, they are answered as duplicates then)"
          : 'the event log cannot be written right now; nothing from this request was stored',
        { cause: err, retryAfter: RETRY_AFTER_SECONDS },
      );
    // Was "nothing … was stored" whatever the cut did: a restart then recovered those events and delivered them.
    group.reject(refused(wrote && !undone));
    queued.reject(refused(false));
  }

  /** A write or sync failed: under fsync=interval what is not known durable is owed a rewrite. */
  function failed(err: unknown, refusedBytes = 0): void {
    oweRewrite();
    writeHealth.failed(err, refusedBytes);
  }

  /** A sync may have failed: no success seen before it covers anything, and the groups kept are written again. */
  function oweRewrite(): void {
    failures++;
    if (unsynced.length > 0) rewriteOwed = true;
  }

  function rollNow(): void {
    rollOwed = false;
    try {
      segments.roll();
    } catch (err) {
      if (unsynced.length > 0) oweRewrite(); // the old segment's sync may be what failed
      throw err;
    }
  }

  /** The roll retention asked for while a group was written: nobody awaits it, so a failure is logged (the log finishes it before its next write). */
  function rollSafely(): void {
    try {
      rollNow();
    } catch (err) {
      log.error({ err: coerceError(err) }, 'log: could not start a new segment; retried before the next write');
    }
  }

  return {
    /** Joins the entries to the next group; resolves once it is durable. */
    enqueue(entries: PendingEntry[]): Promise<void> {
      const group = current;
      for (const entry of entries) {
        group.entries.push(entry);
        group.bytes += entry.frame.length;
      }
      if (!flushing) setImmediate(flush);
      return group.done;
    },
    /** Starts a new segment between groups (retention deletes whole segments, the active one rolled first). */
    roll(): void {
      if (flushing) rollOwed = true;
      else rollNow();
    },
    health(): StoreHealth {
      if (closed) return { writable: false, reason: 'closed' };
      // Sticky, whatever a probe write beside the log says: the file the log writes is gone or cut short.
      const damage = segments.damage();
      return damage ? { writable: false, reason: damage } : writeHealth.health();
    },
    get closed() {
      return closed;
    },
    /** Writes what is queued; later `enqueue`s are refused by the caller. */
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      if (syncTimer) clearInterval(syncTimer);
      writeHealth.close();
      while (flushing || current.entries.length > 0) {
        await flush();
        await new Promise((r) => setImmediate(r));
      }
      await timedSync?.catch(() => undefined);
      // What is kept is synced here, not only by the log's close: a failure now is owed a rewrite like any other.
      if (unsynced.length > 0 && !rewriteOwed) {
        const failuresBefore = failures;
        try {
          await segments.sync();
          if (failures === failuresBefore) forgetUnsynced(unsyncedSeq);
        } catch (err) {
          failed(err);
        }
      }
      if (rewriteOwed) {
        try {
          rewriteUnsynced();
        } catch (err) {
          log.error({ err: coerceError(err) }, 'log: could not write again the events an fsync failed to cover; they may be lost');
        }
      }
      // A write refused earlier does not make the stop unclean once it is cut: it was never acknowledged
      // (storage probe: every stop after a full disk had gone by skipped 4,096 offsets per partition).
      closedClean = !rewriteOwed && unsynced.length === 0 && segments.finishUndo();
    },
    /** After `close`: whether it left everything acknowledged synced (fsync=never: written). */
    get closedClean() {
      return closedClean;
    },
  };
}

export type GroupCommit = ReturnType<typeof createGroupCommit>;
