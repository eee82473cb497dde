import {
  currentLimit,
  loadSignal,
  msUntilToken,
  newAimd,
  newBucket,
  onAnswer,
  takeToken,
  type Aimd,
  type TokenBucket,
} from '../../../src/delivery/rate-limit';

/** Token bucket and AIMD limiter (issue 12 §3): pure rules, driven with explicit times and answers. */

describe('token bucket', () => {
  it('starts full with one second of tokens (at least one) and refuses once empty', () => {
    let bucket: TokenBucket = newBucket(3, 0);
    const taken: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      const r = takeToken(bucket, 3, 0);
      taken.push(r.ok);
      bucket = r.bucket;
    }
    expect(taken).toEqual([true, true, true, false]);
    expect(newBucket(0.5, 0).tokens).toBe(1);
  });

  it('earns perSecond tokens a second, never more than its capacity', () => {
    let bucket: TokenBucket = { tokens: 0, at: 0 };
    expect(msUntilToken(bucket, 4, 0)).toBe(250);
    expect(takeToken(bucket, 4, 249).ok).toBe(false);
    const r = takeToken(bucket, 4, 250);
    expect(r.ok).toBe(true);
    bucket = r.bucket;
    expect(bucket.tokens).toBeCloseTo(0);
    expect(takeToken({ tokens: 0, at: 0 }, 4, 60_000).bucket.tokens).toBe(3); // capped at 4, one taken
  });

  it('handles fractional rates (one token every two seconds at 0.5/s)', () => {
    const empty = { tokens: 0, at: 1000 };
    expect(msUntilToken(empty, 0.5, 1000)).toBe(2000);
    expect(takeToken(empty, 0.5, 2999).ok).toBe(false);
    expect(takeToken(empty, 0.5, 3000).ok).toBe(true);
  });

  it('earns nothing when the clock goes back, then earns again from there (not only once the clock is back at the old time)', () => {
    const bucket = { tokens: 0, at: 5000 };
    const stepped = takeToken(bucket, 10, 1000);
    expect(stepped).toEqual({ ok: false, bucket: { tokens: 0, at: 1000 } });
    expect(takeToken(stepped.bucket, 10, 1100).ok).toBe(true);
  });
});

describe('load signals', () => {
  it.each([
    [200, false, 'success'],
    [202, false, 'success'],
    [429, false, 'congestion'],
    [503, false, 'congestion'],
    [null, true, 'congestion'],
    [500, false, 'neutral'],
    [404, false, 'neutral'],
    [null, false, 'neutral'],
  ] as const)('status %p (timed out: %p) is %s', (status, timedOut, signal) => {
    expect(loadSignal(status, timedOut)).toBe(signal);
  });
});

describe('AIMD in-flight limit', () => {
  const feed = (state: Aimd, signals: ('success' | 'congestion' | 'neutral')[], max: number) =>
    signals.reduce((s, sig) => onAnswer(s, sig, s.epoch, max), state);

  it('is maxInFlight until congestion, then halves, not below 1', () => {
    let s = newAimd();
    expect(currentLimit(s, 16)).toBe(16);
    const limits: number[] = [];
    for (let i = 0; i < 6; i++) {
      s = onAnswer(s, 'congestion', s.epoch, 16);
      limits.push(currentLimit(s, 16));
    }
    expect(limits).toEqual([8, 4, 2, 1, 1, 1]);
  });

  it('decreases once per window: answers to requests started before the decrease do not halve again', () => {
    const started = newAimd().epoch;
    let s = onAnswer(newAimd(), 'congestion', started, 16);
    s = onAnswer(s, 'congestion', started, 16);
    s = onAnswer(s, 'congestion', started, 16);
    expect(currentLimit(s, 16)).toBe(8);
    expect(currentLimit(onAnswer(s, 'congestion', s.epoch, 16), 16)).toBe(4);
  });

  it('grows by one after each window of as many consecutive successes as the limit, back to maxInFlight', () => {
    let s = feed(newAimd(), ['congestion', 'congestion'], 4); // 4 → 2 → 1
    expect(currentLimit(s, 4)).toBe(1);
    s = feed(s, ['success'], 4);
    expect(currentLimit(s, 4)).toBe(2);
    s = feed(s, ['success'], 4);
    expect(currentLimit(s, 4)).toBe(2);
    s = feed(s, ['success'], 4);
    expect(currentLimit(s, 4)).toBe(3);
    s = feed(s, ['success', 'success', 'success'], 4);
    expect(s.limit).toBeNull();
    expect(currentLimit(s, 4)).toBe(4);
    expect(feed(s, ['success', 'success', 'success', 'success', 'success'], 4)).toEqual(s);
  });

  it('counts only consecutive successes: a neutral answer restarts the window', () => {
    let s = feed(newAimd(), ['congestion'], 8); // 4
    s = feed(s, ['success', 'success', 'success', 'neutral', 'success', 'success', 'success'], 8);
    expect(currentLimit(s, 8)).toBe(4);
    s = feed(s, ['success'], 8);
    expect(currentLimit(s, 8)).toBe(5);
  });

  it('never exceeds a lowered maxInFlight, and a raised one applies at once when not reduced', () => {
    const reduced = feed(newAimd(), ['congestion'], 16); // 8
    expect(currentLimit(reduced, 4)).toBe(4);
    expect(currentLimit(newAimd(), 64)).toBe(64);
  });
});
