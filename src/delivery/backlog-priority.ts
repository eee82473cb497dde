/**
 * Ingest first while a backlog drains ("a slow or dead subscriber never slows ingest"). The delivery
 * thread reads a backlog through index.db (older than the newest 32,768 records it keeps positions
 * of); when it did so in the last interval and producers were storing events meanwhile, it raises
 * its nice value, so on busy cores the scheduler gives the ingest thread the larger share. The value
 * is the thread's, so every subscription it delivers for is slowed with the backlog's. When every
 * subscriber keeps up (fresh events only), or a drain has no ingest beside it, it runs at the
 * gateway's own priority.
 */

/** What the delivery thread saw in one interval. */
export interface Interval {
  /** Page reads that went to index.db (the subscriber is behind the newest records). */
  backlogReads: number;
  /** Groups the main thread committed (producers are storing events). */
  committedGroups: number;
}

const BACKLOG_PRIORITY_INTERVAL_MS = 250;
/** Intervals without a backlog read under ingest before the thread returns to nice 0 (a page covers many events). */
export const HOLD_INTERVALS = 4;

/** How much to raise the nice value for the next interval: `backlogNice` while a backlog drains under ingest, else 0. */
export function niceFor(seen: Interval, backlogNice: number): number {
  return seen.backlogReads > 0 && seen.committedGroups > 0 ? backlogNice : 0;
}

export interface BacklogPriorityOptions {
  /** How much to raise the thread's nice value while a backlog drains under ingest; 0: never. */
  backlogNice: number;
  /** The thread's nice value as it started (inherited from the gateway): what it returns to. */
  base: number;
  /** Counters since the thread started; the governor takes differences. */
  counts: () => Interval;
  /** Sets the thread's nice value; false when it was not set. */
  apply: (nice: number) => boolean;
  intervalMs?: number;
}

/**
 * Re-decides every interval: `base + backlogNice` (at most 19) as soon as an interval saw a backlog
 * read under ingest, `base` after {@link HOLD_INTERVALS} intervals that did not. Calls `apply` only
 * on a change (a refused change is tried again next interval); `stop()` returns to `base`.
 */
export function startBacklogPriority(opts: BacklogPriorityOptions): { stop(): void; nice(): number } {
  let raisedBy = 0;
  let quiet = 0;
  let last = opts.counts();
  const set = (by: number) => {
    if (by !== raisedBy && opts.apply(Math.min(19, opts.base + by))) raisedBy = by;
  };
  const tick = () => {
    const now = opts.counts();
    const wanted = niceFor(
      { backlogReads: now.backlogReads - last.backlogReads, committedGroups: now.committedGroups - last.committedGroups },
      opts.backlogNice,
    );
    last = now;
    quiet = wanted > 0 ? 0 : quiet + 1;
    if (wanted > 0) set(wanted);
    else if (quiet >= HOLD_INTERVALS) set(0);
  };
  const timer = opts.backlogNice > 0 ? setInterval(tick, opts.intervalMs ?? BACKLOG_PRIORITY_INTERVAL_MS) : undefined;
  timer?.unref();
  return {
    stop() {
      if (timer) clearInterval(timer);
      set(0);
    },
    /** The thread's nice value as last set. */
    nice: () => Math.min(19, opts.base + raisedBy),
  };
}
