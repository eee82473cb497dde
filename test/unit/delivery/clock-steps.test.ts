import { CLOCK_STEP_MS, stepAwareClock } from '../../../src/delivery/clock-steps';
import { initialState, shiftTimes, type AttemptState } from '../../../src/delivery/attempt-machine';
import { createFlowControl, type FlowSubscription } from '../../../src/delivery/flow-control';

describe('a wall clock that says when it stepped', () => {
  it('reports a step of a second or more against the monotonic clock, once, in whole milliseconds', () => {
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
    // NTP slewing under a second in all: no step.
    for (let i = 0; i < 900; i++) {
      wall += 1001;
      mono += 1000;
      clock();
    }
    expect(steps).toEqual([]);
    // Stepped back an hour, then forward a day: each told once, at the first reading after it (the 900 ms of drift
    // are in the first).
    wall -= 3_600_000;
    expect(clock()).toBe(wall);
    clock();
    wall += 86_400_000;
    clock();
    expect(steps).toEqual([-3_599_100, 86_400_000]);
    // Just under the threshold is not a step.
    wall += CLOCK_STEP_MS - 1;
    clock();
    expect(steps).toHaveLength(2);
    wall += 0.4;
    mono += 0.3;
    clock();
    expect(steps).toHaveLength(2);
  });

  it('adds up steps under a second that come in a row (clock re-probe: ten of 0.9 s went unseen)', () => {
    let wall = 0;
    const steps: number[] = [];
    const clock = stepAwareClock(
      () => wall,
      (by) => steps.push(by),
      () => 0,
    );
    clock();
    for (let i = 0; i < 10; i++) {
      wall += 900;
      clock();
    }
    // Seen at 1.8 s, 3.6 s, … : 9 s in all, less what is under a second since the last.
    expect(steps).toEqual([1800, 1800, 1800, 1800, 1800]);
    expect(steps.reduce((a, b) => a + b, 0)).toBe(9000);
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

describe('flow control across a clock step', () => {
  it('keeps the rate limit at its pace: a step forward earns no tokens (clock re-probe: each filled the bucket)', () => {
    let now = 1_000_000;
    const flow = createFlowControl({
      subscription: () =>
        ({ delivery: { maxInFlight: 16, rateLimit: { perSecond: 5 } }, allowedRate: null }) as unknown as FlowSubscription,
      clock: () => now,
      onToken: () => undefined,
    });
    try {
      let taken = 0;
      while (flow.ready() && taken < 100) {
        flow.take({}, () => undefined);
        taken++;
      }
      expect(taken).toBe(5); // the bucket's capacity
      now += 3 * 86_400_000; // stepped forward three days, and seen as such
      flow.shift(3 * 86_400_000);
      expect(flow.ready()).toBe(false);
      now += 200; // a fifth of a second: one token
      expect(flow.ready()).toBe(true);
    } finally {
      flow.endHold();
    }
  });
});
