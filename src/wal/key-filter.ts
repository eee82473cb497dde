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
  return keyFilterFrom(new Uint32Array(2 ** log2Bits / 32), log2Bits, hashes, 0);
}

/**
 * A filter over bits another filter set (the indexer's worker builds one and transfers its words):
 * the same `log2Bits` and `hashes` make the bits mean the same, on any thread. `count` is how many
 * keys went into them. Takes `words` over, without copying.
 */
export function keyFilterFrom(words: Uint32Array, log2Bits: number, hashes: number, count: number) {
  if (!Number.isInteger(log2Bits) || log2Bits < 5 || log2Bits > 31) {
    throw new RangeError(`log2Bits must be an integer in 5..31, not ${log2Bits}`);
  }
  if (!Number.isInteger(hashes) || hashes < 1) throw new RangeError(`hashes must be a positive integer, not ${hashes}`);
  const bits = 2 ** log2Bits;
  if (words.length !== bits / 32) throw new RangeError(`a filter of 2^${log2Bits} bits has ${bits / 32} words, not ${words.length}`);
  const mask = bits - 1;

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
    log2Bits,
    hashes,
    /** The bit array itself (to transfer to another thread; the filter must not be used after). */
    words,
  };
}
export type KeyFilter = ReturnType<typeof keyFilterFrom>;
