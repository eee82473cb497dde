import { DEFAULT_DISABLE_AFTER_FAILING_MS } from '../webhook-policy';

export interface FailureWindowDeps {
  /** Restored at start-up: since when every attempt has failed, or null. */
  since: number | null;
  /** `delivery.disableAfterFailingMs`, read on every failure so a PATCH applies at once (0: never). */
  limitMs: () => number | undefined;
  clock: () => number;
  /** Nothing is counted while the subscription is not active (answers of requests still open then). */
  active: () => boolean;
  /** Persists a change of `since` (write-behind). */
  save: (since: number | null) => void;
  /** Every attempt has failed for `limitMs`: the subscription is to pause with reason `failing`. */
  disable: (since: number, lastError: string) => void;
}

/**
 * Auto-disable of a failing endpoint (issue 12 §5): tracks since when every attempt to a subscription
 * has failed with no success between, and asks to disable it once that has lasted `limitMs`. The
 * window is checked when a failure arrives, so a subscription whose retries are far apart pauses at
 * the first failure past the limit. Disabling ends the window: after `resume` a new one starts with
 * the next failure, rather than pausing again at once.
 */
export function createFailureWindow(deps: FailureWindowDeps) {
  let since = deps.since;
  return {
    /** A 2xx answer: the window ends. */
    succeeded(): void {
      if (since === null) return;
      since = null;
      deps.save(null);
    },
    /** Any other answer, or none (connection error, timeout). */
    failed(error: string): void {
      if (!deps.active()) return;
      const now = deps.clock();
      if (since === null) {
        since = now;
        deps.save(since);
        return;
      }
      const limit = deps.limitMs() ?? DEFAULT_DISABLE_AFTER_FAILING_MS;
      if (limit <= 0 || now - since < limit) return;
      const began = since;
      since = null;
      deps.save(null);
      deps.disable(began, error);
    },
    failingSince: (): number | null => since,
    /** The wall clock stepped by `byMs`: the window keeps the length it has lasted (see `clock-steps.ts`). */
    shift(byMs: number): void {
      if (since === null) return;
      since += byMs;
      deps.save(since);
    },
  };
}
