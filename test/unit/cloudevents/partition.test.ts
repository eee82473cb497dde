import fc from 'fast-check';
import { crc32 } from 'node:zlib';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { partitionOf } from '../../../src/cloudevents/partition';

const event = (extra: Record<string, string | number | boolean>): CloudEvent => ({
  attributes: { specversion: '1.0', id: 'p-1', source: '/orders', type: 't', ...extra },
  data: { kind: 'none' },
});

describe('partitionOf', () => {
  it('hashes source, NUL and id with CRC-32 when there is no partitionkey', () => {
    expect(partitionOf(event({}), 16)).toBe(crc32(Buffer.from('/orders\u0000p-1', 'utf8')) % 16);
  });

  it('hashes the UTF-8 partitionkey alone when present', () => {
    const a = partitionOf(event({ id: 'x', partitionkey: 'customer-Ω' }), 7);
    const b = partitionOf(event({ id: 'y', source: '/other', partitionkey: 'customer-Ω' }), 7);
    expect(a).toBe(crc32(Buffer.from('customer-Ω', 'utf8')) % 7);
    expect(b).toBe(a);
  });

  it('matches known CRC-32 values, so routing is stable across versions', () => {
    // crc32("123456789") is the standard check value 0xCBF43926.
    expect(partitionOf(event({ partitionkey: '123456789' }), 4096)).toBe(0xcbf43926 % 4096);
    expect(partitionOf(event({ partitionkey: '' }), 16)).toBe(0);
  });

  it('always lands inside the partition range', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), fc.integer({ min: 1, max: 4096 }), (source, id, n) => {
        const p = partitionOf(event({ source, id }), n);
        expect(Number.isInteger(p) && p >= 0 && p < n).toBe(true);
      }),
    );
  });
});
