import fc from 'fast-check';
import { WORK_BUDGET, cesqlBudget, cesqlMatches, compileCesql } from '../../../src/filters/cesql';
import { compileLike } from '../../../src/filters/cesql/like';

/**
 * The work budget (issue 8, defects 7 and 8): expressions come from whoever
 * creates a subscription and run for every event, so their cost is charged in
 * characters and bounded, and LIKE is linear for the patterns people write.
 */

const KB = 1024;

function run(expression: string, event: Record<string, string | number | boolean>, limit = WORK_BUDGET) {
  const budget = cesqlBudget(limit);
  const { value, errors } = compileCesql(expression).evaluate(event, budget);
  return { value, kinds: errors.map((e) => e.kind), spent: limit - budget.remaining, exhausted: budget.remaining < 0 };
}

describe('CESQL work budget', () => {
  it('refuses CONCAT(big × 600) over a 900 KB attribute before joining, with a budget error', () => {
    const big = 'x'.repeat(900 * KB);
    const concat = `CONCAT(${Array.from({ length: 600 }, () => 'big').join(', ')})`;
    expect(run(concat, { big })).toMatchObject({ value: '', kinds: ['budget'], exhausted: true });
    expect(run(`${concat} = 'z'`, { big })).toMatchObject({ value: false, kinds: ['budget'] });
    expect(run(`CONCAT_WS(big, ${Array.from({ length: 600 }, () => 'big').join(', ')}) = 'z'`, { big })).toMatchObject({
      value: false,
      kinds: ['budget'],
    });
  });

  it('charges string functions the length of their argument', () => {
    const big = 'ab'.repeat(100 * KB);
    expect(run('LENGTH(big)', { big })).toMatchObject({ value: big.length, kinds: [], spent: big.length });
    expect(run("LOWER(big) = 'x'", { big })).toMatchObject({ value: false, kinds: [], spent: big.length });
    expect(run('CONCAT(big, big)', { big }).spent).toBe(2 * big.length);
    for (const call of [
      'UPPER(big)',
      'TRIM(big)',
      'LEFT(big, 3)',
      'RIGHT(big, 3)',
      'SUBSTRING(big, 2)',
      'SUBSTRING(big, 2, 3)',
      'IS_INT(big)',
    ]) {
      expect(run(call, { big }, big.length - 1)).toMatchObject({ kinds: ['budget'], exhausted: true });
    }
  });

  it('charges more per character for the costlier work: case mapping beyond ASCII, code points in JavaScript', () => {
    expect(run("LOWER(a) = 'x'", { a: 'é'.repeat(1000) }).spent).toBe(6000);
    expect(run('LENGTH(a)', { a: '😀'.repeat(1000) })).toMatchObject({ value: 1000, spent: 6000 });
    expect(run('LENGTH(a)', { a: 'é'.repeat(1000) })).toMatchObject({ value: 1000, spent: 1000 });
    expect(run("UPPER(a) = 'x'", { a: 'e'.repeat(1000) }).spent).toBe(1000);
    expect(run("LOWER(a) = 'x'", { a: 'İ'.repeat(300 * KB) })).toMatchObject({ kinds: ['budget'] });
  });

  it('shares one budget between the operations of an expression', () => {
    const big = 'a'.repeat(600 * KB);
    expect(run("LOWER(big) = 'x'", { big }).kinds).toEqual([]);
    expect(run("LOWER(big) = 'x' OR UPPER(big) = 'y'", { big })).toMatchObject({ value: false, kinds: ['budget'] });
  });

  it('charges comparisons of equal-length strings, so a long IN list over large attributes stays bounded', () => {
    const a = `${'a'.repeat(300 * KB)}1`;
    const b = `${'a'.repeat(300 * KB)}2`;
    const set = Array.from({ length: 500 }, () => 'b').join(', ');
    expect(run(`a IN (${set})`, { a, b })).toMatchObject({ value: false, kinds: ['budget'] });
    expect(run('a = b', { a, b })).toMatchObject({ value: false, kinds: [], spent: a.length });
    expect(run("a = 'short'", { a, b }).spent).toBe(0);
  });

  it('charges the implicit cast of a string to an integer', () => {
    const digits = `${'0'.repeat(900 * KB)}7`;
    expect(run('INT(n) = 7', { n: digits })).toMatchObject({ value: true, kinds: [], spent: digits.length });
    expect(run('n + 1', { n: digits }, 100)).toMatchObject({ kinds: ['budget'], exhausted: true });
  });

  it('keeps a budget error apart from the ordinary errors of a non-matching event', () => {
    expect(run("missing = 'x'", {})).toMatchObject({ kinds: ['missingAttribute'], exhausted: false });
    expect(run("NOT (big LIKE '%b%')", { big: 'a'.repeat(1000) }, 10)).toMatchObject({ value: false, kinds: ['budget'] });
    expect(run("big NOT LIKE '%b%'", { big: 'a'.repeat(1000) }, 10)).toMatchObject({ value: false, kinds: ['budget'] });
    expect(run("big != 'x'", { big: 'x' }, 0)).toMatchObject({ kinds: ['budget'] });
  });

  it('gives every evaluation without a budget of its own a fresh one', () => {
    const expression = compileCesql("LOWER(big) = 'x'");
    const event = { big: 'a'.repeat(600 * KB) };
    for (let i = 0; i < 3; i++) expect(expression.evaluate(event).errors).toEqual([]);
    const shared = cesqlBudget();
    expect(cesqlMatches(expression, event, shared)).toBe(false);
    expect(shared.remaining).toBeGreaterThanOrEqual(0);
    expect(cesqlMatches(expression, event, shared)).toBe(false);
    expect(shared.remaining).toBeLessThan(0);
  });
});

describe('LIKE cost', () => {
  const value = 'a'.repeat(100_000);
  const adversarial = 'a'.repeat(10_000);

  it.each([
    ['%x%', `%${adversarial}b%`],
    ['x%', `${adversarial}b%`],
    ['%x', `%${adversarial}b`],
    ['%x%y%', `%${adversarial}%${adversarial}b%`],
    ['x%y', `${adversarial}%b${adversarial}`],
    ['%x% with the odd letter in the middle', `%${'a'.repeat(5_000)}b${'a'.repeat(5_000)}%`],
  ])('matches %s patterns in time linear in the value (issue 8: 2.9 s before)', (_shape, pattern) => {
    const budget = cesqlBudget();
    expect(compileLike(pattern)(value, budget)).toBe(false);
    // Work, not time: at most two passes over the value, whatever the pattern's length.
    expect(budget.remaining).toBeGreaterThanOrEqual(WORK_BUDGET - 2 * value.length - 2 * adversarial.length);
  });

  it("evaluates the issue's filter to false, with no error", () => {
    expect(run(`a LIKE '%${adversarial}b%'`, { a: value })).toMatchObject({ value: false, kinds: [], exhausted: false });
    expect(run(`a LIKE '%${adversarial}%'`, { a: value })).toMatchObject({ value: true, kinds: [] });
  });

  it('bounds patterns with _ by the budget', () => {
    const result = run(`a LIKE '%${'_'.repeat(2_000)}b%'`, { a: value });
    expect(result).toMatchObject({ value: false, kinds: ['budget'] });
    // Anchored segments with _ cost their own length only.
    expect(run(`a LIKE '_${'a'.repeat(50)}%_'`, { a: value })).toMatchObject({ value: true, kinds: [] });
    expect(run(`a LIKE '%${'_'.repeat(50)}'`, { a: value }).spent).toBeLessThan(200);
    // Charged per UTF-16 unit compared, 2 each: a character beyond the BMP is two units.
    expect(run("a LIKE '___'", { a: '😀😀😀' })).toMatchObject({ value: true, spent: 12 });
    expect(run("a LIKE '___'", { a: 'abc' })).toMatchObject({ value: true, spent: 6 });
  });

  it('gives up a search it cannot pay for instead of answering "no match"', () => {
    const budget = cesqlBudget(50);
    expect(compileLike('%b%')('a'.repeat(100), budget)).toBe(false);
    expect(budget.remaining).toBeLessThan(0);
    // Searching charges 2 per character read: 11 here.
    const enough = cesqlBudget(50);
    expect(compileLike('%b%')(`${'a'.repeat(10)}b${'a'.repeat(90)}`, enough)).toBe(true);
    expect(enough.remaining).toBe(50 - 22);
  });

  it('never matches half of a surrogate pair', () => {
    expect(compileLike('%\uD83D%')('😀')).toBe(false);
    expect(compileLike('\uD83D%')('😀')).toBe(false);
    expect(compileLike('%\uDE00')('😀')).toBe(false);
    expect(compileLike('%😀%')('x😀y')).toBe(true);
    expect(compileLike('_\uDE00')('\uD83D\uDE00')).toBe(false);
    expect(compileLike('%_')('\uDE00')).toBe(true);
  });

  it('agrees with a regular-expression oracle on values with repeats, lone surrogates and every kind of segment', () => {
    const oracle = (pattern: string, value: string) => {
      let source = '';
      const chars = Array.from(pattern);
      for (let i = 0; i < chars.length; i++) {
        const c = chars[i]!;
        const following = chars[i + 1];
        if (c === '\\' && (following === '%' || following === '_')) {
          source += following;
          i++;
        } else if (c === '%') source += '.*';
        else if (c === '_') source += '.';
        else source += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      }
      return new RegExp(`^${source}$`, 'su').test(value);
    };
    const alphabet = ['a', 'b', '%', '_', '\\', '😀', '\uD83D', '\uDE00'];
    const text = (max: number) => fc.array(fc.constantFrom(...alphabet), { maxLength: max }).map((cs) => cs.join(''));
    fc.assert(
      fc.property(text(8), text(24), (pattern, value) => {
        expect(compileLike(pattern)(value, cesqlBudget())).toBe(oracle(pattern, value));
      }),
      { numRuns: 5000 },
    );
  });
});
