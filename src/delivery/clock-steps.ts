/**
 * A wall clock that says when it stepped (an NTP correction, a VM resumed, `date -s`). Deadlines held in
 * memory (a retry's due time, an ack lease, a `Retry-After` hold, auto-disable's failing window) are
 * wall-clock times, since they are stored and outlive a restart; a step moved every one of them by its
 * length (clock probe: stepped back an hour, a hold of 2 s and an extended lease of 2 s each lasted the
 * hour). The owner of the deadlines moves them by the step when told, so each keeps its length.
 */

/** A change of the wall clock against the monotonic one by this much, between two readings, is a step. */
export const CLOCK_STEP_MS = 1000;

/**
 * `wall`, calling `onStep(byMs)` (before it returns, whole milliseconds) at the first reading after the wall clock
 * moved by {@link CLOCK_STEP_MS} or more against `monotonic` since the last step (or the first reading). Each reading
 * is compared with that mark, not with the reading before: steps under a second in a row add up (clock re-probe: ten
 * of 0.9 s went unseen). Slow drift (NTP slewing) counts once it reaches a second too; the deadlines then move by it.
 */
export function stepAwareClock(
  wall: () => number,
  onStep: (byMs: number) => void,
  monotonic: () => number = () => performance.now(),
): () => number {
  let mark: number | undefined;
  return () => {
    const now = wall();
    const skew = now - monotonic();
    if (mark === undefined) mark = skew;
    else if (Math.abs(skew - mark) >= CLOCK_STEP_MS) {
      const byMs = Math.round(skew - mark);
      mark += byMs;
      onStep(byMs);
    }
    return now;
  };
}
