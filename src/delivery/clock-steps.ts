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
 * `wall`, calling `onStep(byMs)` (before it returns) at the first reading after the wall clock moved by
 * {@link CLOCK_STEP_MS} or more against `monotonic` since the reading before. Slow drift (NTP slewing)
 * never adds up to a step: each reading is compared with the one before it.
 */
export function stepAwareClock(
  wall: () => number,
  onStep: (byMs: number) => void,
  monotonic: () => number = () => performance.now(),
): () => number {
  let skew: number | undefined;
  return () => {
    const now = wall();
    const current = now - monotonic();
    const previous = skew;
    skew = current;
    if (previous !== undefined && Math.abs(current - previous) >= CLOCK_STEP_MS) onStep(current - previous);
    return now;
  };
}
