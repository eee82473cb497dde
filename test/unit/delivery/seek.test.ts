import { MAX_PROBLEM_ERRORS, type AppError } from '../../../src/errors';
import type { ReadPage, StoredEvent } from '../../../src/wal/event-store';
import { offsetAtTime, seekPositions } from '../../../src/delivery/seek';

/** Time seek: the first offset stored at or after a time, by binary search over a partition's reads. */

/** A one-partition store: `times[offset]` is its storedAt, `null` a gap, `'corrupt'` a corrupt record. */
function fakeStore(times: (number | null | 'corrupt')[]) {
  let reads = 0;
  return {
    partitions: 1,
    heads: () => [times.length],
    read(_partition: number, from: number, limit: number): ReadPage {
      reads++;
      const events: StoredEvent[] = [];
      for (let offset = from; offset < times.length && events.length < limit; offset++) {
        const t = times[offset];
        if (t === null || t === undefined) continue;
        if (t === 'corrupt') return { events, corruptOffset: offset };
        events.push({ partition: 0, offset, storedAt: t, event: {} as StoredEvent['event'] });
      }
      return { events };
    },
    reads: () => reads,
  };
}

/** What a linear scan says: the first intact event at or after the time, else the head. */
function linear(times: (number | null | 'corrupt')[], at: number): number {
  const i = times.findIndex((t) => typeof t === 'number' && t >= at);
  return i === -1 ? times.length : i;
}

describe('offsetAtTime', () => {
  it('finds the first event stored at or after the time, with equal times, gaps and corrupt records', () => {
    const times: (number | null | 'corrupt')[] = [10, 10, 20, null, null, 30, 'corrupt', 40, 40, 50, null, 'corrupt', 60];
    for (let at = 0; at <= 70; at += 5) expect([at, offsetAtTime(fakeStore(times), 0, at)]).toEqual([at, linear(times, at)]);
  });

  it('answers 0 for an empty partition and the head for a time after every event', () => {
    expect(offsetAtTime(fakeStore([]), 0, 5)).toBe(0);
    expect(offsetAtTime(fakeStore([1, 2, 3]), 0, 4)).toBe(3);
  });

  it('reads O(log n) records', () => {
    const times = Array.from({ length: 1_000_000 }, (_, i) => i * 2);
    const store = fakeStore(times);
    expect(offsetAtTime(store, 0, 777_777)).toBe(388_889);
    expect(store.reads()).toBeLessThanOrEqual(21);
  });
});

describe('seekPositions', () => {
  it('maps each form to per-partition offsets', () => {
    const store = fakeStore([1, 2, 3]);
    expect(seekPositions(store, { to: 'earliest' })).toEqual([{ partition: 0, offset: 0 }]);
    expect(seekPositions(store, { to: 'latest' })).toEqual([{ partition: 0, offset: 3 }]);
    expect(seekPositions(store, { time: 2 })).toEqual([{ partition: 0, offset: 1 }]);
    expect(seekPositions(store, { offsets: { '0': 3 } })).toEqual([{ partition: 0, offset: 3 }]);
  });

  it('refuses offsets past the head and unknown partitions, naming each', () => {
    expect(() => seekPositions(fakeStore([1]), { offsets: { '0': 2, '1': 0, '01': 0 } })).toThrow(
      expect.objectContaining({
        code: 'invalid_request',
        details: [
          // The range it names is the one taken (retention probe: it named [first, head] while 0 was taken).
          expect.objectContaining({ attribute: 'offsets.0', message: "offset 2 is past partition 0's head: offsets 0 to 1 can be sought" }),
          expect.objectContaining({ attribute: 'offsets.1' }),
          expect.objectContaining({ attribute: 'offsets.01' }),
        ],
      }),
    );
  });

  it('answers a seek naming very many unknown partitions in bounded size: a few in the detail, 100 listed, the total counted', () => {
    const offsets = Object.fromEntries(Array.from({ length: 75_000 }, (_, i) => [String(i + 1), 0]));
    let refused: AppError | undefined;
    try {
      seekPositions(fakeStore([1]), { offsets });
    } catch (err) {
      refused = err as AppError;
    }
    expect(refused?.code).toBe('invalid_request');
    expect(refused!.message.length).toBeLessThan(400);
    expect(refused!.message).toMatch(/and 74997 more$/);
    expect(refused!.details).toHaveLength(MAX_PROBLEM_ERRORS);
    expect(refused!.totalErrors).toBe(75_000);
  });
});
