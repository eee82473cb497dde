import type { RetryPolicy } from '../webhook-policy';

/** Retry policies and their defaults are shared webhook policy (the subscriptions schema applies the defaults). */
export { DEFAULT_RETRY, type RetryPolicy } from '../webhook-policy';

/**
 * The longest `Retry-After` obeyed (unless `maxDelayMs` is longer): a day. A receiver may ask for any
 * wait (http-webhook §2.2: the sender MUST observe it); a date years ahead is a clock or a bug, and a
 * day of silence is long enough for an operator to see it (`stats.throttled`).
 */
const RETRY_AFTER_CEILING_MS = 86_400_000;

/** A receiver's `Retry-After` as the wait obeyed: at least 0, at most the ceiling (or `maxDelayMs` when longer). */
export function obeyedRetryAfterMs(retryAfterMs: number, policy: Pick<RetryPolicy, 'maxDelayMs'>): number {
  return Math.min(Math.max(0, retryAfterMs), Math.max(RETRY_AFTER_CEILING_MS, policy.maxDelayMs));
}

/**
 * Until when a receiver's answer holds every request of its subscription: a 429 or 503 with a
 * `Retry-After` still ahead (http-webhook §2.2: the sender MUST refrain from sending further requests
 * until then), whichever event it answered. Undefined: no hold.
 */
export function retryAfterHoldUntil(
  answer: { status: number | null; retryAfter?: string },
  now: number,
  policy: Pick<RetryPolicy, 'maxDelayMs'>,
): number | undefined {
  if (answer.status !== 429 && answer.status !== 503) return undefined;
  const ms = parseRetryAfter(answer.retryAfter, now);
  return ms !== undefined && ms > 0 ? now + obeyedRetryAfterMs(ms, policy) : undefined;
}

/**
 * Delay before the attempt after `failedAttempt` (1-based): exponential, jittered, capped at
 * `maxDelayMs`. A receiver's `Retry-After` wins, as it asked (see {@link obeyedRetryAfterMs}).
 */
export function retryDelayMs(
  failedAttempt: number,
  policy: RetryPolicy,
  opts: { retryAfterMs?: number; random?: () => number } = {},
): number {
  if (opts.retryAfterMs !== undefined) return obeyedRetryAfterMs(opts.retryAfterMs, policy);
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
