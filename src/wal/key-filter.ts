import { crc32 } from 'node:zlib';

/** The idempotency key of an event: the filter and the pending-group map must build it the same way. */
export function idempotencyKey(source: string, id: string): string {
  return `${source}\u0000${id}`;
}

/**
 * A Bloom filter over idempotency keys (source + NUL + id). Most events are
 * new, and "definitely not seen" lets ingest skip the per-event SQLite lookup;
 * "maybe seen" falls back to SQLite, so a false positive costs a query, never
 * a wrong answer. Keys cannot be removed: pruned keys linger as false
 * positives until the owner rebuilds the filter.
 */
export function createKeyFilter(log2Bits = 27, hashes = 7) {
  const bits = 2 ** log2Bits;
  const mask = bits - 1;
  const words = new Uint32Array(bits / 32);
  let count = 0;

  /** FNV-1a over UTF-16 code units: a second hash independent of CRC-32, for double hashing. */
  function fnv1a(key: string): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < key.length; i++) {
      h ^= key.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    return h >>> 0;
  }

  function positions(key: string, visit: (bit: number) => boolean): boolean {
    const h1 = crc32(key);
    const h2 = fnv1a(key) | 1;
    for (let i = 0; i < hashes; i++) {
      if (!visit((h1 + Math.imul(i, h2)) & mask)) return false;
    }
    return true;
  }

  return {
    add(key: string): void {
      positions(key, (bit) => {
        words[bit >>> 5]! |= 1 << (bit & 31);
        return true;
      });
      count++;
    },
    mightContain(key: string): boolean {
      return positions(key, (bit) => (words[bit >>> 5]! & (1 << (bit & 31))) !== 0);
    },
    /** Keys added since creation (duplicates counted): the owner rebuilds when this outgrows the size. */
    get count(): number {
      return count;
    },
    /** Keys it holds at about a 1 % false-positive rate. */
    capacity: Math.floor(bits / 9.6),
  };
}
export type KeyFilter = ReturnType<typeof createKeyFilter>;
