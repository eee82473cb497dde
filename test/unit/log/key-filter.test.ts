import fc from 'fast-check';
import { createKeyFilter } from '../../../src/wal/key-filter';

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
