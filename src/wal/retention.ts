import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { AppError, coerceError } from '../errors';
import type { StoreHealth } from './event-store';
import type { GroupCommit } from './group-commit';
import type { Indexer } from './indexer';
import type { SegmentLog } from './segment-log';

export interface RetentionOptions {
  dataDir: string;
  segments: SegmentLog;
  groups: Pick<GroupCommit, 'roll'>;
  indexer: Pick<Indexer, 'indexedThrough' | 'retire'>;
  log: Logger;
  clock: () => number;
  /** `HERALD_RETENTION`: a segment goes once its newest event was stored longer ago than this. */
  retentionMs: number;
  /** `HERALD_MAX_LOG_BYTES` (0: no limit): past it the oldest segments go. */
  maxLogBytes: number;
  /** `HERALD_MIN_FREE_BYTES`: below this much free space ingest is refused (`storage_full`). */
  minFreeBytes: number;
  /** Test hook: free bytes of the data dir's file system. */
  freeBytes?: () => number;
  /** Awaited before anything before `through` is deleted (readers in other threads let go first). */
  beforeRetire?: (through: number) => Promise<void>;
}

const CHECK_INTERVAL_MS = 1000;
const SPACE_RECHECK_MS = 100;
const STORAGE_FULL_RETRY_AFTER_SECONDS = 5;

/**
 * The least of `measure` over the file systems holding `dirs` (undefined when none can be read), and the
 * first error of those that cannot be read: one of them (its link's target renamed away) leaves the
 * others measured (re-probe: the data dir's check stopped with it).
 */
function leastOver(dirs: string[], measure: (stats: fs.StatsFs) => number): { least: number | undefined; failed: unknown } {
  let least: number | undefined;
  let failed: unknown;
  for (const dir of dirs) {
    try {
      least = Math.min(least ?? Infinity, measure(fs.statfsSync(dir)));
    } catch (err) {
      failed ??= err;
    }
  }
  return { least, failed };
}

/** The least free space (bytes an unprivileged writer may still use) of the file systems holding `dirs`; throws only when none can be read. */
function leastFree(dirs: string[]): number {
  const { least, failed } = leastOver(dirs, (stats) => Number(stats.bavail) * Number(stats.bsize));
  if (least === undefined && failed !== undefined) throw failed;
  return least ?? Number.POSITIVE_INFINITY;
}

/** The smallest of the file systems holding `dirs`, in bytes (undefined when none can be read: the free-space check says why). */
const smallestSize = (dirs: string[]): number | undefined => leastOver(dirs, (stats) => Number(stats.blocks) * Number(stats.bsize)).least;

/**
 * Retention with Kafka's and JetStream's "limits" semantics: whole segments are deleted, oldest
 * first, by the time their newest event was stored (`HERALD_RETENTION`; the active segment is
 * rolled first) and by the log's size (`HERALD_MAX_LOG_BYTES`), whatever subscriptions still
 * needed. The index goes first (the indexer's `retire`), then the files. Also watches free space
 * (`HERALD_MIN_FREE_BYTES`): below it ingest is refused, and nothing stored is touched.
 */
export function createRetention(opts: RetentionOptions) {
  const { segments, log } = opts;
  /** Newest stored time per segment base, as this process wrote or first looked at it. */
  const newest = new Map<number, number>();
  let scheduled = false;
  let free = Number.POSITIVE_INFINITY;
  let spaceCheckedAt = 0;
  let full = false;
  // The data dir's file system and `wal/`'s, which may be a link to another disk (ops probe: that one was not watched).
  const watched = [opts.dataDir, path.join(opts.dataDir, 'wal')];
  const freeBytes = opts.freeBytes ?? (() => leastFree(watched));
  // A minimum larger than the whole disk can never be met: said wherever storage_full is (ops probe: nothing said why).
  const size = opts.minFreeBytes > 0 ? smallestSize(watched) : undefined;
  const beyondDisk =
    size !== undefined && opts.minFreeBytes > size ? `, which is more than the whole file system (${size} bytes): lower it` : '';
  if (beyondDisk)
    log.warn(
      { minFreeBytes: opts.minFreeBytes, fileSystemBytes: size },
      `HERALD_MIN_FREE_BYTES${beyondDisk}; ingest is refused until then`,
    );

  const timer = setInterval(() => {
    checkSpace();
    void run();
  }, CHECK_INTERVAL_MS);
  timer.unref();

  function checkSpace(): void {
    spaceCheckedAt = performance.now(); // monotonic: a clock stepped back must not stop the free-space checks
    try {
      free = freeBytes();
    } catch (err) {
      log.warn({ err: coerceError(err) }, 'retention: cannot read the free space of the data dir');
      return;
    }
    const nowFull = free < opts.minFreeBytes;
    if (nowFull !== full) {
      full = nowFull;
      if (full) log.error({ freeBytes: free, minFreeBytes: opts.minFreeBytes }, 'storage full: refusing new events until space returns');
      else log.info({ freeBytes: free }, 'storage has room again: accepting events');
    }
  }

  /** A segment's newest stored time: known when this process wrote it, else the file's modification time. */
  function newestOf(seg: { base: number; file: string }): number {
    let at = newest.get(seg.base);
    if (at === undefined) {
      try {
        at = fs.statSync(seg.file).mtimeMs;
      } catch {
        at = opts.clock();
      }
      newest.set(seg.base, at);
    }
    return at;
  }

  /** Where to delete up to: the base of the first segment to keep, or undefined for nothing. */
  function plan(): number | undefined {
    const list = segments.list();
    let keepFrom = 0;
    const cutoff = opts.clock() - opts.retentionMs;
    while (keepFrom < list.length - 1 && newestOf(list[keepFrom]!) < cutoff) keepFrom++;
    const active = list[list.length - 1]!;
    if (keepFrom === list.length - 1 && active.size > 0 && newestOf(active) < cutoff) {
      // Everything but the active segment has expired and so has the active one: roll it, delete it next round.
      opts.groups.roll();
      schedule();
    }
    if (opts.maxLogBytes > 0) {
      let total = list.reduce((n, s) => n + s.size, 0);
      for (let i = 0; i < keepFrom; i++) total -= list[i]!.size;
      while (total > opts.maxLogBytes && keepFrom < list.length - 1) total -= list[keepFrom++]!.size;
    }
    return keepFrom > 0 ? list[keepFrom]!.base : undefined;
  }

  /** The round in progress: a second caller waits for it rather than starting another beside it. */
  let current: Promise<void> | undefined;

  function run(): Promise<void> {
    current ??= round().finally(() => (current = undefined));
    return current;
  }

  async function round(): Promise<void> {
    try {
      const through = plan();
      // Rows must exist before they can be deleted: wait for the indexer to pass the segments.
      if (through === undefined) return;
      if (opts.indexer.indexedThrough() < through) {
        schedule();
        return;
      }
      await opts.beforeRetire?.(through);
      await opts.indexer.retire(through);
      for (const base of newest.keys()) if (base < through) newest.delete(base);
    } catch (err) {
      log.error({ err: coerceError(err) }, 'retention failed; it is tried again');
    }
  }

  function schedule(): void {
    if (scheduled) return;
    scheduled = true;
    setTimeout(() => {
      scheduled = false;
      void run();
    }, 10).unref();
  }

  checkSpace();

  return {
    /** A group was committed: its segment's newest time moves, and the size limit may be passed. */
    committed(position: number, storedAt: number): void {
      const base = segments.baseOf(position);
      newest.set(base, Math.max(newest.get(base) ?? 0, storedAt));
      if (opts.maxLogBytes > 0 && segments.sizeBytes() > opts.maxLogBytes) schedule();
    },
    /** Refuses ingest while free space is below `HERALD_MIN_FREE_BYTES` (rechecked at most every 100 ms). */
    assertRoom(): void {
      if (performance.now() - spaceCheckedAt >= SPACE_RECHECK_MS) checkSpace();
      if (full) {
        throw new AppError(
          'storage_full',
          `the file system of the data dir (or of its wal/) has ${free} bytes free, less than HERALD_MIN_FREE_BYTES=${opts.minFreeBytes}${beyondDisk}; nothing was stored. Free space (or lower HERALD_RETENTION / HERALD_MAX_LOG_BYTES) and retry.`,
          { retryAfter: STORAGE_FULL_RETRY_AFTER_SECONDS },
        );
      }
    },
    health(): StoreHealth | undefined {
      return full
        ? { writable: false, reason: `storage_full: ${free} bytes free, below HERALD_MIN_FREE_BYTES=${opts.minFreeBytes}${beyondDisk}` }
        : undefined;
    },
    /** Runs a round now (tests and start-up). */
    run,
    stop(): void {
      clearInterval(timer);
    },
  };
}

export type Retention = ReturnType<typeof createRetention>;
