/**
 * Whether a pull session is still pulling. nats.js re-issues a consume session's pulls on its own,
 * and in a healthy session something shows every pull expiry (PULL_EXPIRES_MS): a message, the
 * expiry (`discard`) or the pull that replaces it (`next`). Two ways it was seen to fail after a NATS
 * server stalled (SIGSTOP for 40 s, then SIGCONT), each needing a node restart before:
 * - silent: the heartbeat monitor was cancelled at the reconnect and not restarted, a pull lost as the
 *   consumer's leader moved was never re-issued, and the session neither failed nor pulled, with
 *   events waiting in the consumer;
 * - looping: resets queued while the server was stalled each pulled once it answered, and every pull
 *   refused as past the consumer's `max_waiting` (409) was re-issued at once: thousands a second.
 * Either verdict ends the session; the puller's loop starts a new one (a new inbox, a fresh pull).
 */
export type SessionVerdict = 'ok' | 'silent' | 'looping';

export interface SessionWatchLimits {
  /** No sign of life for this long: silent. */
  silentMs: number;
  /** More pulls refused as past `max_waiting` than this within one second: looping. */
  refusedPerSecond: number;
}

export function createSessionWatch(now: number, limits: SessionWatchLimits) {
  let lastLife = now;
  let windowStart = now;
  let refused = 0;
  let looping = false;
  return {
    /** A message arrived, or the session pulled or saw a pull expire. */
    life(at: number): void {
      lastLife = at;
    },
    /** The server refused a pull: too many waiting on the consumer. */
    refused(at: number): void {
      if (at - windowStart >= 1000) {
        windowStart = at;
        refused = 0;
      }
      if (++refused > limits.refusedPerSecond) looping = true;
    },
    verdict(at: number): SessionVerdict {
      if (looping) return 'looping';
      return at - lastLife > limits.silentMs ? 'silent' : 'ok';
    },
  };
}

/** A nats.js session status that shows the session pulling (see {@link createSessionWatch}). */
export function isSignOfLife(type: string): boolean {
  return type === 'next' || type === 'discard';
}

/** A nats.js `debug` status for a pull refused because the consumer has `max_waiting` pulls already. */
export function isRefusedPull(type: string, data: unknown): boolean {
  return type === 'debug' && typeof data === 'string' && /^409\b/.test(data) && /max\s*waiting/i.test(data);
}
