import { createSessionWatch, isRefusedPull, isSignOfLife } from '../../../src/jetstream/delivery/session-watch';

const LIMITS = { silentMs: 10_000, refusedPerSecond: 50 };

describe('a pull session watch', () => {
  it('is ok while something shows every pull expiry, silent once nothing has for silentMs', () => {
    const watch = createSessionWatch(0, LIMITS);
    for (let t = 2000; t <= 20_000; t += 2000) {
      watch.life(t); // what nats.js reports of a healthy idle session: a discard and a next every expiry
      expect(watch.verdict(t + 1999)).toBe('ok');
    }
    expect(watch.verdict(30_000)).toBe('ok');
    expect(watch.verdict(30_001)).toBe('silent');
  });

  it('is looping once more pulls than refusedPerSecond are refused within a second, and stays so', () => {
    const watch = createSessionWatch(0, LIMITS);
    for (let i = 0; i < 50; i++) watch.refused(10 + i); // 50 in one second: still ok
    expect(watch.verdict(100)).toBe('ok');
    for (let i = 0; i < 50; i++) watch.refused(1000 + i * 19); // a new second, 50 more
    expect(watch.verdict(2000)).toBe('ok');
    for (let i = 0; i < 51; i++) watch.refused(3000 + i);
    watch.life(3100);
    expect(watch.verdict(3100)).toBe('looping');
  });

  it('reads the statuses nats.js 2.29 reports', () => {
    expect(isSignOfLife('next')).toBe(true);
    expect(isSignOfLife('discard')).toBe(true);
    expect(isSignOfLife('heartbeats_missed')).toBe(false);
    expect(isRefusedPull('debug', '409 exceeded maxwaiting')).toBe(true);
    expect(isRefusedPull('debug', '409 exceeded maxrequestbatch of 1')).toBe(false);
    expect(isRefusedPull('debug', '408 request timeout')).toBe(false);
    expect(isRefusedPull('discard', '409 exceeded maxwaiting')).toBe(false);
  });
});
