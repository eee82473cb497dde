import type { RetryPolicy } from '../webhook-policy';

/** Retry policies and their defaults are shared webhook policy (the subscriptions schema applies the defaults). */
export { DEFAULT_RETRY, type RetryPolicy } from '../webhook-policy';

/**
 * Delay before the attempt after `failedAttempt` (1-based): exponential,
 * jittered, capped at `maxDelayMs`. A receiver's `Retry-After` wins, capped too.
 */
export function retryDelayMs(
  failedAttempt: number,
  policy: RetryPolicy,
  opts: { retryAfterMs?: number; random?: () => number } = {},
): number {
  if (opts.retryAfterMs !== undefined) return Math.min(Math.max(0, opts.retryAfterMs), policy.maxDelayMs);
  const random = opts.random ?? Math.random;
  const base = policy.initialDelayMs * policy.multiplier ** Math.max(0, failedAttempt - 1);
  // Late attempts overflow to Infinity (0 × Infinity is NaN): past any cap, or 0 when the delays start at 0.
  if (!Number.isFinite(base)) return policy.initialDelayMs === 0 ? 0 : policy.maxDelayMs;
  const jittered = base * (1 + policy.jitter * (2 * random() - 1));
  return Math.round(Math.min(policy.maxDelayMs, Math.max(0, jittered)));
}

const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const MONTH = '(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)';
const TIME = '\\d{2}:\\d{2}:\\d{2}';
/**
 * The three forms of an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, RFC 850 and asctime. Anything else
 * is not a date here, whatever `Date.parse` makes of it: V8 reads `-1`, `1.5` or `3, 4` as days in
 * 2001, which would turn a malformed header into "retry now" and skip the backoff.
 */
const HTTP_DATE = new RegExp(
  `^(?:${DAY}, \\d{2} ${MONTH} \\d{4} ${TIME} GMT|${DAY}[a-z]*, \\d{2}-${MONTH}-\\d{2} ${TIME} GMT|${DAY} ${MONTH} [ \\d]\\d ${TIME} \\d{4})$`,
);

/** `Retry-After` as delay-seconds or an HTTP-date, in ms from `now`; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  if (!HTTP_DATE.test(trimmed)) return undefined;
  // asctime carries no zone: it is GMT.
  const date = Date.parse(trimmed.endsWith('GMT') ? trimmed : `${trimmed} GMT`);
  if (Number.isNaN(date)) return undefined;
  // A day the month does not have (31 Feb) is rolled forward by Date.parse: no such date, so unreadable.
  const day = Number(
    /, (\d{2})[ -]|^\w{3} \w{3} ([ \d]\d) /
      .exec(trimmed)!
      .slice(1)
      .find((d) => d !== undefined),
  );
  return new Date(date).getUTCDate() === day ? Math.max(0, date - now) : undefined;
}
