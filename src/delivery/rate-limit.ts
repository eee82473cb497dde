/**
 * Flow control of one subscription, as pure functions over plain state (issue 12 §3):
 *
 * - a token bucket (`delivery.rateLimit.perSecond`) shared by every partition: each attempt,
 *   first tries and retries alike, takes one token. The bucket holds at most one second of tokens
 *   (at least one), so a quiet subscription may send a burst of `perSecond` requests at once, never
 *   more than `perSecond` on average.
 * - AIMD on the in-flight limit: 429, 503 and timeouts halve it (not below 1); each window of
 *   successes (as many consecutive 2xx answers as the current limit) adds one, up to
 *   `maxInFlight`. Like TCP, only one decrease per window: answers to requests started before the
 *   last decrease do not halve it again, so a burst of 429s from one window counts once.
 */

export interface TokenBucket {
  tokens: number;
  /** Epoch ms of the last refill. */
  at: number;
}

export const bucketCapacity = (perSecond: number): number => Math.max(1, perSecond);

/** A full bucket. */
export function newBucket(perSecond: number, now: number): TokenBucket {
  return { tokens: bucketCapacity(perSecond), at: now };
}

/**
 * The bucket at `now`: tokens earned since the last refill, capped at the capacity. A clock that went
 * back earns none, and the bucket earns again from `now`: kept at the later time, it earned nothing
 * until the clock was back there (clock probe: an NTP step back of 10 minutes held a rate-limited
 * subscription for those 10 minutes).
 */
export function refill(bucket: TokenBucket, perSecond: number, now: number): TokenBucket {
  const earned = (Math.max(0, now - bucket.at) * perSecond) / 1000;
  return { tokens: Math.min(bucketCapacity(perSecond), bucket.tokens + earned), at: now };
}

/** Takes one token if there is one: `{ ok, bucket }` with the bucket after the refill (and the take). */
export function takeToken(bucket: TokenBucket, perSecond: number, now: number): { ok: boolean; bucket: TokenBucket } {
  const next = refill(bucket, perSecond, now);
  if (next.tokens < 1) return { ok: false, bucket: next };
  return { ok: true, bucket: { tokens: next.tokens - 1, at: next.at } };
}

/** Milliseconds until the bucket holds a whole token (0 when it does now). */
export function msUntilToken(bucket: TokenBucket, perSecond: number, now: number): number {
  const next = refill(bucket, perSecond, now);
  if (next.tokens >= 1) return 0;
  return Math.ceil(((1 - next.tokens) * 1000) / perSecond);
}

export interface Aimd {
  /** The reduced limit; null while at `maxInFlight` (so raising `maxInFlight` takes effect at once). */
  limit: number | null;
  /** Consecutive 2xx answers since the limit last changed. */
  successes: number;
  /** Incremented by every decrease; an answer to a request started in an older epoch cannot decrease again. */
  epoch: number;
}

export const newAimd = (): Aimd => ({ limit: null, successes: 0, epoch: 0 });

/** The in-flight limit in force: the reduced one, never above `maxInFlight`. */
export function currentLimit(state: Aimd, maxInFlight: number): number {
  return state.limit === null ? maxInFlight : Math.min(state.limit, maxInFlight);
}

/** What an answer says about the receiver's load. */
export type LoadSignal = 'success' | 'congestion' | 'neutral';

/** 2xx: success; 429, 503 and timeouts: congestion; anything else (4xx, other 5xx, connection errors) says nothing. */
export function loadSignal(status: number | null, timedOut: boolean): LoadSignal {
  if (status === null) return timedOut ? 'congestion' : 'neutral';
  if (status === 429 || status === 503) return 'congestion';
  return status >= 200 && status < 300 ? 'success' : 'neutral';
}

/**
 * The limiter after one answer to a request started in epoch `startedEpoch`. A neutral answer
 * breaks a run of successes (they must be consecutive) and changes nothing else.
 */
export function onAnswer(state: Aimd, signal: LoadSignal, startedEpoch: number, maxInFlight: number): Aimd {
  const current = currentLimit(state, maxInFlight);
  switch (signal) {
    case 'congestion':
      if (startedEpoch < state.epoch) return state;
      return { limit: Math.max(1, Math.floor(current / 2)), successes: 0, epoch: state.epoch + 1 };
    case 'neutral':
      return state.successes === 0 ? state : { ...state, successes: 0 };
    case 'success': {
      if (state.limit === null) return state;
      const successes = state.successes + 1;
      if (successes < current) return { ...state, successes };
      const grown = current + 1;
      return { ...state, limit: grown >= maxInFlight ? null : grown, successes: 0 };
    }
  }
}
