import type { Logger } from 'pino';
import { coerceError } from '../errors';
import type { StoreHealth } from './event-store';

/**
 * While the log is unwritable, how long before a probe write beside it is tried: a balancer that
 * follows `/readyz` sends no request while it is 503, so waiting for a request's write to succeed
 * would wait for good once space is freed.
 */
const PROBE_FIRST_MS = 5000;
/** Each time a probe said writable and the next write failed anyway, the wait doubles, up to this. */
const PROBE_MAX_MS = 5 * 60_000;
/** While the log stays unwritable for one reason, its failures are logged this far apart (with a count). */
const FAILURE_LOG_INTERVAL_MS = 60_000;

export interface WriteHealthOptions {
  log: Logger;
  /** Writes beside the log; rejects when `needBytes` (the refused write's size) would not fit, or the write fails. */
  probe: (needBytes: number) => Promise<void>;
  /** Test hook: the first wait before a probe (default {@link PROBE_FIRST_MS}). */
  probeFirstMs?: number;
}

/** From the first failed write until a group commits again. */
interface Episode {
  reason: string;
  loggedAt: number;
  unlogged: number;
  /** The largest write refused: a probe checks there is room for it, not only for itself. */
  refusedBytes: number;
  probeMs: number;
  probeSaid: boolean;
}

/**
 * What `/readyz` says of the log's writes, the error lines about them, and the probe that turns it
 * ready again without a request. Readiness only: the group commit decides what a write owes first.
 */
export function createWriteHealth(opts: WriteHealthOptions) {
  const { log } = opts;
  let writable = true;
  let reason: string | undefined;
  let episode: Episode | undefined;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  function failed(err: unknown, refusedBytes = 0): void {
    const e = coerceError(err);
    const now = performance.now();
    const why = `log write failed: ${(e as NodeJS.ErrnoException).code ?? e.message}`;
    failures++;
    if (!episode) {
      episode = { reason: why, loggedAt: now, unlogged: 0, refusedBytes, probeMs: opts.probeFirstMs ?? PROBE_FIRST_MS, probeSaid: false };
      log.error({ err: e }, 'log write failed');
    } else {
      // A probe said writable, and a write says otherwise: probe less often (re-probe: /readyz flapped every 5 s).
      if (writable) episode.probeMs = Math.min(episode.probeMs * 2, PROBE_MAX_MS);
      episode.refusedBytes = Math.max(episode.refusedBytes, refusedBytes);
      // One line when it turns unwritable or the reason changes, then at most one a minute with the count
      // since (storage probe: a full disk under load logged 2,950 error lines with stacks in 3 s).
      if (why !== episode.reason || now - episode.loggedAt >= FAILURE_LOG_INTERVAL_MS) {
        log.error({ err: e, failuresSinceLastLine: episode.unlogged }, 'log write failed');
        Object.assign(episode, { reason: why, loggedAt: now, unlogged: 0 });
      } else {
        episode.unlogged++;
      }
    }
    writable = false;
    reason = why;
    scheduleProbe();
  }

  function scheduleProbe(): void {
    clearTimeout(timer);
    if (!closed && episode) timer = setTimeout(probe, episode.probeMs).unref();
  }

  function probe(): void {
    if (closed || !episode || writable) return;
    const before = failures;
    opts.probe(episode.refusedBytes).then(
      () => {
        if (closed || !episode || failures !== before) return;
        writable = true;
        reason = undefined;
        if (!episode.probeSaid) log.info('log looks writable again (a probe write beside it succeeded)');
        episode.probeSaid = true;
      },
      () => scheduleProbe(),
    );
  }

  return {
    failed,
    /** A group committed: the episode, if any, is over. */
    succeeded(): void {
      if (!episode) return;
      log.info({ failuresSinceLastLine: episode.unlogged }, 'log is writable again');
      episode = undefined;
      writable = true;
      reason = undefined;
      clearTimeout(timer);
    },
    health(): StoreHealth {
      return writable ? { writable: true } : { writable: false, reason };
    },
    close(): void {
      closed = true;
      clearTimeout(timer);
    },
  };
}
