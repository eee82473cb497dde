import { throttledLine } from '../../src/logger';

describe('throttledLine', () => {
  it('emits at most once per interval, saying how many it left out (crash probe: 62,090 callback lines in 25 s)', () => {
    let now = 1_000;
    const line = throttledLine(60_000, () => now);
    const emitted: number[] = [];
    for (let i = 0; i < 1_000; i++) line((suppressed) => emitted.push(suppressed));
    expect(emitted).toEqual([0]);
    now += 60_000;
    line((suppressed) => emitted.push(suppressed));
    expect(emitted).toEqual([0, 999]);
    // A clock that went back starts a new interval rather than silencing the line.
    now -= 10_000;
    line((suppressed) => emitted.push(suppressed));
    expect(emitted).toEqual([0, 999, 0]);
  });
});
