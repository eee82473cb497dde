import { formatHoles, holeMap, isKnownGap, mergeHoles, parseHoles } from '../../../src/wal/log-holes';

describe('log_holes', () => {
  it('reads [from, to] pairs and the bare positions older versions wrote, and ignores anything else', () => {
    expect(parseHoles('[100, [200, 260], "x", [1], [3, 4, 5], null]')).toEqual([{ from: 100 }, { from: 200, to: 260 }]);
    expect(parseHoles('not json')).toEqual([]);
    expect(parseHoles(undefined)).toEqual([]);
    expect(formatHoles([{ from: 100 }, { from: 200, to: 260 }])).toBe('[100,[200,260]]');
  });

  it('merges by position, keeping the end where either list knows it', () => {
    expect(mergeHoles([{ from: 300 }, { from: 100, to: 150 }], [{ from: 300, to: 360 }, { from: 100 }])).toEqual([
      { from: 100, to: 150 },
      { from: 300, to: 360 },
    ]);
  });

  it('accepts only the gap a hole covers: a later gap from the same position (the next segment gone too) is not it', () => {
    const holes = holeMap([{ from: 1000, to: 2000 }, { from: 5000 }]);
    expect(isKnownGap(holes, 1000, 2000)).toBe(true);
    expect(isKnownGap(holes, 1000, 1500)).toBe(true); // the set-aside padded the next segment's start
    expect(isKnownGap(holes, 1000, 66_000)).toBe(false);
    expect(isKnownGap(holes, 1200, 2000)).toBe(false);
    expect(isKnownGap(holes, 5000, 99_999)).toBe(true); // an older version's record: its end unknown
    expect(isKnownGap(undefined, 1000, 2000)).toBe(false);
  });
});
