import fc from 'fast-check';
import { MessageChannel } from 'node:worker_threads';
import { createKeyFilter, keyFilterFrom } from '../../../src/wal/key-filter';

describe('createKeyFilter', () => {
  it('never forgets a key it was given (no false negatives)', () => {
    fc.assert(
      fc.property(fc.array(fc.string(), { maxLength: 200 }), (keys) => {
        const filter = createKeyFilter(16);
        for (const key of keys) filter.add(key);
        return keys.every((key) => filter.mightContain(key));
      }),
    );
  });

  it('answers "never seen" for most keys it was not given, within its capacity', () => {
    const filter = createKeyFilter(20);
    for (let i = 0; i < filter.capacity; i++) filter.add(`/source\u0000id-${i}`);
    let falsePositives = 0;
    const probes = 20_000;
    for (let i = 0; i < probes; i++) if (filter.mightContain(`/source\u0000other-${i}`)) falsePositives++;
    expect(falsePositives / probes).toBeLessThan(0.03);
    expect(filter.count).toBe(filter.capacity);
  });
});

describe('keyFilterFrom', () => {
  it('answers exactly like the filter whose words it was given, for keys added and keys not', () => {
    fc.assert(
      fc.property(fc.array(fc.string(), { maxLength: 300 }), fc.array(fc.string(), { maxLength: 300 }), (added, probes) => {
        const original = createKeyFilter(12, 5); // small, so probes often hit set bits
        for (const key of added) original.add(key);
        const copy = keyFilterFrom(original.words.slice(), original.log2Bits, original.hashes, original.count);
        expect(copy.count).toBe(added.length);
        expect(copy.capacity).toBe(original.capacity);
        for (const key of [...added, ...probes]) expect(copy.mightContain(key)).toBe(original.mightContain(key));
        return added.every((key) => copy.mightContain(key));
      }),
    );
  });

  it('works over words transferred through a message port (no copy), and goes on taking keys', async () => {
    const built = createKeyFilter(16, 7);
    const keys = Array.from({ length: 2000 }, (_, i) => `/source\u0000id-${i}`);
    for (const key of keys) built.add(key);
    const { port1, port2 } = new MessageChannel();
    const received = new Promise<ArrayBuffer>((resolve) => port2.once('message', resolve));
    const buffer = built.words.buffer as ArrayBuffer;
    port1.postMessage(buffer, [buffer]);
    const words = new Uint32Array(await received);
    port1.close();
    expect(built.words.length).toBe(0); // transferred: the sender's view is detached
    const filter = keyFilterFrom(words, 16, 7, keys.length);
    for (const key of keys) expect(filter.mightContain(key)).toBe(true);
    filter.add('/source\u0000later');
    expect(filter.mightContain('/source\u0000later')).toBe(true);
    expect(filter.count).toBe(keys.length + 1);
    let falsePositives = 0;
    for (let i = 0; i < 10_000; i++) if (filter.mightContain(`/source\u0000other-${i}`)) falsePositives++;
    expect(falsePositives / 10_000).toBeLessThan(0.03);
  });

  it('refuses words of another size than the bits say', () => {
    expect(() => keyFilterFrom(new Uint32Array(100), 12, 7, 0)).toThrow(RangeError);
    expect(() => keyFilterFrom(new Uint32Array(2 ** 12 / 32), 12, 0, 0)).toThrow(RangeError);
  });
});
