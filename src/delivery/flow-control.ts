import type { SubscriptionRecord } from '../subscriptions/record';
import type { DeliveryOptions } from '../subscriptions/schema';
import {
  currentLimit,
  loadSignal,
  msUntilToken,
  newAimd,
  newBucket,
  onAnswer,
  refill,
  takeToken,
  type Aimd,
  type TokenBucket,
} from './rate-limit';

const MAX_TIMER_MS = 2 ** 31 - 1;

/** What flow control reads of a subscription record. */
export type FlowSubscription = Pick<SubscriptionRecord, 'allowedRate'> & { delivery: Pick<DeliveryOptions, 'maxInFlight' | 'rateLimit'> };

/**
 * One subscription's flow control (issue 12 §3): the state of its token bucket and AIMD limiter
 * (the rules are the pure functions of `./rate-limit`), and the attempts waiting for a token.
 * Not persisted: after a restart the bucket is full and the limit back at `maxInFlight`.
 */
export function createFlowControl(deps: {
  /** The subscription as it is now: its `maxInFlight`, and its rate limit with the sink's grant. */
  subscription: () => FlowSubscription;
  clock: () => number;
  /** A token is available again: deferred attempts have been run; start new ones. */
  onToken: () => void;
}) {
  let aimd: Aimd = newAimd();
  let bucket: TokenBucket | undefined;
  let timer: NodeJS.Timeout | undefined;
  /** Until when the receiver asked for no request (a 429 or 503 with `Retry-After`, http-webhook §2.2). */
  let heldUntil = 0;
  let holdTimer: NodeJS.Timeout | undefined;
  /** Attempts (retries, redrives) that found the bucket empty, by pending, each run once a token is due. */
  const deferred = new Map<object, () => void>();

  const rate = () => effectiveRateLimit(deps.subscription())?.perSecond;
  const maxInFlight = () => deps.subscription().delivery.maxInFlight;

  function bucketNow(perSecond: number): TokenBucket {
    const now = deps.clock();
    bucket = bucket ? refill(bucket, perSecond, now) : newBucket(perSecond, now);
    return bucket;
  }

  function armTimer(): void {
    const perSecond = rate();
    if (timer || perSecond === undefined) return;
    // setTimeout fires at once past 2^31 - 1 ms: a longer wait is taken in steps (the timer re-arms).
    const delay = Math.min(MAX_TIMER_MS, msUntilToken(bucketNow(perSecond), perSecond, deps.clock()));
    timer = setTimeout(() => {
      timer = undefined;
      runDeferred();
    }, delay);
  }

  /** Whether a `Retry-After` holds every request now; arms the wake-up at its end when it does. */
  function held(): boolean {
    const now = deps.clock(); // read first: a clock step seen here moves `heldUntil` (see `shift`)
    const wait = heldUntil - now;
    if (wait <= 0) return false;
    holdTimer ??= setTimeout(
      () => {
        holdTimer = undefined;
        if (!held()) runDeferred();
      },
      Math.min(MAX_TIMER_MS, wait),
    );
    return true;
  }

  /** A token is due (or no limit holds any more): what waited for one runs, then new attempts may start. */
  function runDeferred(): void {
    const waiting = [...deferred.values()];
    deferred.clear();
    for (const run of waiting) run();
    deps.onToken();
  }

  return {
    /** The in-flight limit in force now (AIMD), at most `maxInFlight`. */
    maxInFlight: (): number => currentLimit(aimd, maxInFlight()),
    /** Captured when a request starts, handed back with its answer to `answered`. */
    epoch: (): number => aimd.epoch,
    /** Whether an attempt may start now (a token is there, or there is no rate limit); takes nothing. */
    ready(): boolean {
      if (held()) return false;
      const perSecond = rate();
      if (perSecond === undefined) return true;
      if (bucketNow(perSecond).tokens >= 1) return true;
      armTimer();
      return false;
    },
    /**
     * Takes a token for an attempt. Without one, `run` is kept (once per `key`) and called when a
     * token is due; the caller returns and tries again then.
     */
    take(key: object, run: () => void): boolean {
      if (held()) {
        deferred.set(key, run);
        return false;
      }
      const perSecond = rate();
      if (perSecond === undefined) return true;
      const taken = takeToken(bucketNow(perSecond), perSecond, deps.clock());
      bucket = taken.bucket;
      if (taken.ok) {
        deferred.delete(key);
        return true;
      }
      deferred.set(key, run);
      armTimer();
      return false;
    },
    /**
     * The receiver answered 429 or 503 with `Retry-After`: no request of this subscription starts before
     * `until` (a later one extends the hold, an earlier one changes nothing). Requests already sent finish.
     */
    holdUntil(until: number): void {
      if (until <= heldUntil) return;
      heldUntil = until;
      if (holdTimer) clearTimeout(holdTimer);
      holdTimer = undefined;
      held();
    },
    /** Whether a `Retry-After` holds every request now. */
    held,
    /**
     * The wall clock stepped by `byMs`: a hold keeps its length, and the rate limit its pace (clock re-probe: each step
     * forward filled the bucket), see `clock-steps.ts`; the hold's moved end, null without one.
     */
    shift(byMs: number): number | null {
      if (bucket) bucket = { ...bucket, at: bucket.at + byMs };
      if (heldUntil <= 0) return null;
      heldUntil += byMs;
      return heldUntil;
    },
    /** Ends a `Retry-After` hold now (an operator's resume, a new sink); true when one held. What waited runs. */
    endHold(): boolean {
      const holding = held();
      heldUntil = 0;
      if (holdTimer) clearTimeout(holdTimer);
      holdTimer = undefined;
      if (holding) runDeferred();
      return holding;
    },
    /** Forgets a deferred attempt (finished or superseded meanwhile). */
    forget(key: object): void {
      deferred.delete(key);
    },
    /** Feeds one answer (or timeout) to the AIMD limiter; true when the limit grew. */
    answered(status: number | null, timedOut: boolean, startedEpoch: number): boolean {
      const max = maxInFlight();
      const before = currentLimit(aimd, max);
      aimd = onAnswer(aimd, loadSignal(status, timedOut), startedEpoch, max);
      return currentLimit(aimd, max) > before;
    },
    /** For `stats`: the limit in force, and whether the bucket is empty now. */
    stats(): { currentMaxInFlight: number; throttled: boolean } {
      const perSecond = rate();
      const throttled = held() || (perSecond !== undefined && bucketNow(perSecond).tokens < 1);
      return { currentMaxInFlight: currentLimit(aimd, maxInFlight()), throttled };
    },
    /**
     * The rate limit may have changed (a PATCH): the wait armed under the old rate is dropped. Without
     * a limit now, what waited for a token runs at once; with one, the wait is armed again at the new
     * rate (was: a wait armed at one a day held the backlog after a PATCH to one a second).
     */
    optionsChanged(): void {
      if (!timer) return;
      clearTimeout(timer);
      timer = undefined;
      if (rate() !== undefined) return armTimer();
      runDeferred();
    },
    stop(): void {
      if (timer) clearTimeout(timer);
      if (holdTimer) clearTimeout(holdTimer);
      timer = holdTimer = undefined;
      deferred.clear();
    },
  };
}
export type FlowControl = ReturnType<typeof createFlowControl>;

/**
 * The rate limit deliveries keep: the operator's `delivery.rateLimit` and the sink's grant, whichever is
 * lower (a grant is a permission, never a reason to send faster than the operator allowed).
 */
export function effectiveRateLimit(record: FlowSubscription): { perSecond: number } | undefined {
  const own = record.delivery.rateLimit;
  const granted = record.allowedRate ?? undefined;
  if (!own || !granted) return own ?? granted;
  return own.perSecond <= granted.perSecond ? own : granted;
}
