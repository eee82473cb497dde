import type { StoredEvent } from '../../../src/wal/event-store';
import { createCursor, expireCursor, finishOffset, skipRange, type PartitionCursor } from '../../../src/delivery/partition-cursor';
import type { Pending } from '../../../src/delivery/pending';

/** Retention moves a subscription past deleted events it had not finished, counting them (expireCursor). */

function cursor(at: { committed: number; cursor?: number; lastMatched?: number | null; expired?: number }): PartitionCursor {
  const part = createCursor(0, {
    partition: 0,
    committedOffset: at.committed,
    lastMatchedOffset: at.lastMatched ?? null,
    expired: at.expired ?? 0,
  });
  part.cursor = at.cursor ?? at.committed;
  return part;
}

const event = (offset: number): StoredEvent => ({ partition: 0, offset, storedAt: 0, event: {} as StoredEvent['event'] });

describe('expireCursor', () => {
  it('moves committed and cursor to the first offset and counts every offset it moved over', () => {
    const part = cursor({ committed: 10, lastMatched: 7 });
    part.buffer = [event(10), event(11)];
    part.bufferAt = 1;
    part.bufferCorrupt = 12;
    expect(expireCursor(part, 25)).toEqual({
      expired: 15,
      row: { partition: 0, committedOffset: 25, lastMatchedOffset: 24, expired: 15 },
    });
    // The next delivery's herald-previous-offset names the last deleted offset: the receiver sees a gap (was: none).
    expect(part).toMatchObject({ committed: 25, cursor: 25, lastMatched: 24, committedLastMatched: 24, expired: 15 });
    expect(part.buffer).toEqual([]);
    expect(part.bufferAt).toBe(0);
    expect(part.bufferCorrupt).toBeUndefined();
  });

  it('does not count offsets already finished above committed, and moves on over finished ones from the first offset', () => {
    // Ordering none: 10 and 12 are unfinished (12 pending), 11, 13 and 14 finished; the cursor is at 20.
    const part = cursor({ committed: 10, cursor: 20, lastMatched: 18 });
    finishOffset(part, 11, true);
    finishOffset(part, 13, false);
    finishOffset(part, 14, true);
    finishOffset(part, 15, true);
    finishOffset(part, 17, false);
    part.pending.set(12, {} as Pending);
    // First offset 14: [10, 14) holds 10, 11, 12, 13, of which 11 and 13 were finished.
    expect(expireCursor(part, 14)).toEqual({
      expired: 2,
      // 14 and 15 were finished as well: committed moves on to 16, the last matched below it is 15.
      row: { partition: 0, committedOffset: 16, lastMatchedOffset: 15, expired: 2 },
    });
    // The cursor was ahead: it stays where it was, with its chain.
    expect(part).toMatchObject({ committed: 16, cursor: 20, lastMatched: 18 });
    expect([...part.finished.keys()]).toEqual([17]);
    // The pending delivery of an expired offset is left to the caller; finishing it later moves nothing.
    expect(part.pending.has(12)).toBe(true);
    expect(finishOffset(part, 12, true)).toBeUndefined();
    expect(part.committed).toBe(16);
  });

  it('adds to the running total carried by every later row', () => {
    const part = cursor({ committed: 0, expired: 5 });
    expect(expireCursor(part, 3)?.expired).toBe(3);
    expect(part.expired).toBe(8);
    expect(finishOffset(part, 3, true)).toEqual({ partition: 0, committedOffset: 4, lastMatchedOffset: 3, expired: 8 });
    expect(skipRange(part, 4, 6)).toEqual({ partition: 0, committedOffset: 6, lastMatchedOffset: 3, expired: 8 });
  });

  it('does nothing when committed is at or past the first offset', () => {
    const part = cursor({ committed: 10, cursor: 12, lastMatched: 11 });
    part.buffer = [event(12)];
    expect(expireCursor(part, 10)).toBeUndefined();
    expect(expireCursor(part, 3)).toBeUndefined();
    expect(part).toMatchObject({ committed: 10, cursor: 12, lastMatched: 11, expired: 0 });
    expect(part.buffer).toHaveLength(1);
  });

  it('counts the whole range after a restart (nothing above committed is known finished)', () => {
    const part = createCursor(0, { partition: 0, committedOffset: 100, lastMatchedOffset: 99, expired: 40 });
    expect(expireCursor(part, 1_000_100)).toEqual({
      expired: 1_000_000,
      row: { partition: 0, committedOffset: 1_000_100, lastMatchedOffset: 1_000_099, expired: 1_000_040 },
    });
  });
});
