import { CLOCK_STEP_MS, stepAwareClock } from '../../../src/delivery/clock-steps';
import { initialState, shiftTimes, type AttemptState } from '../../../src/delivery/attempt-machine';

describe('a wall clock that says when it stepped', () => {
  it('reports a step of a second or more against the monotonic clock, once, and not slow drift', () => {
    let wall = 1_000_000;
    let mono = 0;
    const steps: number[] = [];
    const clock = stepAwareClock(
      () => wall,
      (by) => steps.push(by),
      () => mono,
    );
    expect(clock()).toBe(1_000_000);
    // Both move together: no step.
    wall += 5000;
    mono += 5000;
    clock();
    // NTP slewing: a few ms between readings, never adding up to a step.
    for (let i = 0; i < 2000; i++) {
      wall += 1001;
      mono += 1000;
      clock();
    }
    expect(steps).toEqual([]);
    // Stepped back an hour, then forward a day: each told once, at the first reading after it.
    wall -= 3_600_000;
    expect(clock()).toBe(wall);
    clock();
    wall += 86_400_000;
    clock();
    expect(steps).toEqual([-3_600_000, 86_400_000]);
    // Just under the threshold is not a step.
    wall += CLOCK_STEP_MS - 1;
    clock();
    expect(steps).toHaveLength(2);
  });
});

describe('shiftTimes', () => {
  const attempts = { attempt: 1, deliveryId: 'dlv_x', lastStatus: null, lastError: null };
  it('moves the deadline of each phase that has one, and nothing else', () => {
    const scheduled: AttemptState = { ...attempts, phase: 'scheduled', nextAttemptAt: 10_000 };
    const awaiting: AttemptState = { ...attempts, phase: 'awaiting_ack', leaseUntil: 20_000 };
    expect(shiftTimes(scheduled, -1000)).toEqual({ ...scheduled, nextAttemptAt: 9000 });
    expect(shiftTimes(awaiting, 500)).toEqual({ ...awaiting, leaseUntil: 20_500 });
    const ready = initialState();
    expect(shiftTimes(ready, 1000)).toBe(ready);
  });
});
