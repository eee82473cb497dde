import type { StoredEvent } from '../../../src/wal/event-store';
import { createDecodedCache } from '../../../src/wal/reads';

/** A decoded event of `offset` in partition 0, and the index entry it was read at (`length` stored bytes). */
function read(offset: number, length: number) {
  const stored = {
    partition: 0,
    offset,
    storedAt: 0,
    event: { attributes: { specversion: '1.0', id: `e${offset}`, source: '/c', type: 't' }, data: { kind: 'none' } },
  } as unknown as StoredEvent;
  return { stored, entry: { offset, position: offset * length, length } };
}

describe('the decoded-event cache', () => {
  it('is bounded by what `charge` makes of each entry, not by its stored bytes (re-probe: 9x the bytes held on the heap)', () => {
    const cache = createDecodedCache({ maxBytes: 16 * 1024, charge: (length) => 2 * length + 1024 });
    for (let offset = 0; offset < 100; offset++) {
      const { stored, entry } = read(offset, 100);
      cache.set(stored, entry);
    }
    // Each costs 1,224: 13 fit in 16 KiB (by stored bytes alone, all 100 would have been kept).
    expect(cache.bytes).toBeLessThanOrEqual(16 * 1024);
    const kept = Array.from({ length: 100 }, (_, offset) => read(offset, 100)).filter(({ entry }) => cache.get(0, entry) !== undefined);
    expect(kept.map(({ entry }) => entry.offset)).toEqual(Array.from({ length: 13 }, (_, i) => 87 + i));
  });

  it('answers a hit only for the same log position', () => {
    const cache = createDecodedCache({ maxBytes: 1024 * 1024 });
    const { stored, entry } = read(5, 100);
    cache.set(stored, entry);
    expect(cache.get(0, entry)).toBe(stored);
    expect(cache.get(0, { ...entry, position: entry.position + 1 })).toBeUndefined();
  });
});
