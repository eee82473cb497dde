import fc from 'fast-check';
import { DEFAULT_RETRY, parseRetryAfter, retryDelayMs, type RetryPolicy } from '../../../src/delivery/retry';

/** The retry schedule: exponential backoff with jitter, capped; a receiver's Retry-After wins (capped too). */

const policyArb: fc.Arbitrary<RetryPolicy> = fc.record({
  maxAttempts: fc.integer({ min: 1, max: 1000 }),
  initialDelayMs: fc.integer({ min: 0, max: 86_400_000 }),
  maxDelayMs: fc.integer({ min: 0, max: 7 * 86_400_000 }),
  multiplier: fc.double({ min: 1, max: 100, noNaN: true }),
  jitter: fc.double({ min: 0, max: 1, noNaN: true }),
});
const randomArb = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
const attemptArb = fc.integer({ min: 1, max: 1000 });

describe('retryDelayMs', () => {
  it('is always a whole number of ms within [0, maxDelayMs]', () => {
    fc.assert(
      fc.property(attemptArb, policyArb, randomArb, (attempt, policy, r) => {
        const delay = retryDelayMs(attempt, policy, { random: () => r });
        expect(Number.isInteger(delay)).toBe(true);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThanOrEqual(policy.maxDelayMs);
      }),
      { numRuns: 2000 },
    );
  });

  it('stays within ±jitter of the exponential value (initialDelayMs × multiplier^(attempt−1)), then the cap', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 60 }), policyArb, randomArb, (attempt, policy, r) => {
        const exponential = policy.initialDelayMs * policy.multiplier ** (attempt - 1);
        const low = Math.min(policy.maxDelayMs, exponential * (1 - policy.jitter));
        const high = Math.min(policy.maxDelayMs, exponential * (1 + policy.jitter));
        const delay = retryDelayMs(attempt, policy, { random: () => r });
        // Rounding to whole ms may move it by half a millisecond.
        expect(delay).toBeGreaterThanOrEqual(Math.floor(low));
        expect(delay).toBeLessThanOrEqual(Math.ceil(high));
      }),
      { numRuns: 2000 },
    );
  });

  it('is exactly the exponential value without jitter', () => {
    const policy = { ...DEFAULT_RETRY, jitter: 0 };
    expect([1, 2, 3, 4, 5].map((n) => retryDelayMs(n, policy))).toEqual([1000, 2000, 4000, 8000, 16_000]);
    expect(retryDelayMs(30, policy)).toBe(300_000);
  });

  it('spans the whole jitter range, from −jitter to +jitter', () => {
    const policy = { ...DEFAULT_RETRY, initialDelayMs: 1000, jitter: 0.2 };
    expect(retryDelayMs(1, policy, { random: () => 0 })).toBe(800);
    expect(retryDelayMs(1, policy, { random: () => 0.5 })).toBe(1000);
    expect(retryDelayMs(1, policy, { random: () => 0.999999 })).toBe(1200);
  });

  it('never produces NaN, even when the exponential overflows or starts at 0', () => {
    fc.assert(
      fc.property(fc.integer({ min: 150, max: 1000 }), policyArb, fc.constantFrom(0, 0.5, 0.999999), (attempt, policy, r) => {
        const delay = retryDelayMs(attempt, { ...policy, multiplier: 100 }, { random: () => r });
        expect(Number.isNaN(delay)).toBe(false);
        expect(delay).toBeLessThanOrEqual(policy.maxDelayMs);
      }),
    );
    expect(retryDelayMs(500, { ...DEFAULT_RETRY, initialDelayMs: 0, multiplier: 100 })).toBe(0);
    expect(retryDelayMs(500, { ...DEFAULT_RETRY, multiplier: 100, jitter: 1 }, { random: () => 0 })).toBeLessThanOrEqual(
      DEFAULT_RETRY.maxDelayMs,
    );
  });

  it("obeys the receiver's Retry-After as it is, past maxDelayMs, without jitter, up to a day (or maxDelayMs when longer)", () => {
    fc.assert(
      fc.property(attemptArb, policyArb, fc.integer({ min: -1000, max: 30 * 86_400_000 }), (attempt, policy, retryAfterMs) => {
        const delay = retryDelayMs(attempt, policy, { retryAfterMs, random: () => 0 });
        expect(delay).toBe(Math.min(Math.max(0, retryAfterMs), Math.max(86_400_000, policy.maxDelayMs)));
      }),
    );
    expect(retryDelayMs(1, { ...DEFAULT_RETRY, initialDelayMs: 10 }, { retryAfterMs: 1000 })).toBe(1000);
    expect(retryDelayMs(1, { ...DEFAULT_RETRY, maxDelayMs: 50 }, { retryAfterMs: 3_600_000 })).toBe(3_600_000);
    expect(retryDelayMs(1, { ...DEFAULT_RETRY, maxDelayMs: 50 }, { retryAfterMs: 30 * 86_400_000 })).toBe(86_400_000);
    expect(retryDelayMs(1, { ...DEFAULT_RETRY, maxDelayMs: 2 * 86_400_000 }, { retryAfterMs: 30 * 86_400_000 })).toBe(2 * 86_400_000);
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('2025-03-04T05:06:07Z');

  it.each([
    ['0', 0],
    ['1', 1000],
    ['120', 120_000],
    [' 5 ', 5000],
  ])('reads delay-seconds %j as %d ms', (value, expected) => {
    expect(parseRetryAfter(value, now)).toBe(expected);
  });

  it('reads an HTTP date as the time until it', () => {
    expect(parseRetryAfter('Tue, 04 Mar 2025 05:06:17 GMT', now)).toBe(10_000);
    expect(parseRetryAfter(new Date(now + 90_000).toUTCString(), now)).toBe(90_000);
  });

  it('reads the obsolete HTTP-date forms too (RFC 850, asctime as GMT)', () => {
    expect(parseRetryAfter('Tuesday, 04-Mar-25 05:06:17 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('Tue Mar  4 05:06:17 2025', now)).toBe(10_000);
  });

  it('reads an HTTP date in the past as no delay', () => {
    expect(parseRetryAfter('Tue, 04 Mar 2025 05:00:00 GMT', now)).toBe(0);
  });

  // '-1', '1.5' and '3, 4' were read by Date.parse as dates long past: "retry now", no backoff.
  it.each([
    undefined,
    '',
    'soon',
    'later please',
    'NaN',
    '1e3x',
    '-1',
    '-5',
    '1.5',
    '3, 4',
    '2025-03-04T05:06:17Z',
    'Sat, 31 Feb 2026 00:00:00 GMT',
    'Tuesday, 30-Feb-25 05:06:17 GMT',
    'Tue Feb 30 05:06:17 2025',
  ])('ignores %j', (value) => {
    expect(parseRetryAfter(value, now)).toBeUndefined();
  });
});
