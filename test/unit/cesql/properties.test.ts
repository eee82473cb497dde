import fc from 'fast-check';
import { CesqlError, compileCesql } from '../../../src/filters/cesql';
import { compileLike } from '../../../src/filters/cesql/like';

function compileOrParseError(expression: string) {
  try {
    return compileCesql(expression);
  } catch (err) {
    expect(err).toBeInstanceOf(CesqlError);
    expect((err as CesqlError).kind).toBe('parse');
    return undefined;
  }
}

// Fragments that reach deep into the grammar far more often than random text does.
const fragment = fc.constantFrom(
  '(',
  ')',
  ',',
  'NOT',
  'AND',
  'OR',
  'XOR',
  'LIKE',
  'IN',
  'EXISTS',
  'TRUE',
  'false',
  '-',
  '+',
  '*',
  '/',
  '%',
  '=',
  '!=',
  '<>',
  '<',
  '>=',
  '0',
  '1',
  '-1',
  '2147483647',
  '2147483648',
  "'a%'",
  '"b\\"c"',
  "'\\_'",
  "'",
  'x',
  'id',
  'missing',
  'ABS',
  'SUBSTRING',
  'CONCAT_WS',
  'INT',
  'BOOL',
  'LEFT',
  'FOO',
);
const tokenSoup = fc.array(fragment, { maxLength: 25 }).map((parts) => parts.join(' '));
const event = fc.dictionary(fc.constantFrom('id', 'x', 'source', 'type'), fc.oneof(fc.string(), fc.integer(), fc.boolean()));

describe('compileCesql', () => {
  it('throws only parse CesqlErrors for arbitrary text', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 60 }), (text) => void compileOrParseError(text)),
      { numRuns: 2000 },
    );
  });

  it('throws only parse CesqlErrors for arbitrary token sequences, and what compiles evaluates without throwing', () => {
    fc.assert(
      fc.property(tokenSoup, event, (text, attributes) => {
        const expression = compileOrParseError(text);
        if (expression === undefined) return;
        const { value, errors } = expression.evaluate(attributes);
        expect(['string', 'number', 'boolean']).toContain(typeof value);
        for (const e of errors) expect(e).toBeInstanceOf(CesqlError);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('CESQL integer arithmetic', () => {
  const int32 = fc.integer({ min: -2147483648, max: 2147483647 });
  const inRange = (n: number) => n >= -2147483648 && n <= 2147483647;

  it('adds, subtracts and multiplies exactly, or reports a math error when the result leaves 32 bits', () => {
    fc.assert(
      fc.property(int32, int32, fc.constantFrom('+', '-', '*'), (a, b, op) => {
        const exact = op === '+' ? a + b : op === '-' ? a - b : Number(BigInt(a) * BigInt(b));
        const { value, errors } = compileCesql(`INT('${a}') ${op} INT('${b}')`).evaluate({});
        expect(errors.map((e) => e.kind)).toEqual(inRange(exact) ? [] : ['math']);
        if (inRange(exact)) expect(value).toBe(exact);
      }),
    );
  });

  it('satisfies a = (a / b) * b + a % b with truncated division', () => {
    fc.assert(
      fc.property(
        int32,
        int32.filter((b) => b !== 0),
        (a, b) => {
          if (a === -2147483648 && b === -1) return;
          const q = compileCesql(`INT('${a}') / INT('${b}')`).evaluate({}).value as number;
          const r = compileCesql(`INT('${a}') % INT('${b}')`).evaluate({}).value as number;
          expect(BigInt(q) * BigInt(b) + BigInt(r)).toBe(BigInt(a));
          expect(Math.abs(r)).toBeLessThan(Math.abs(b));
          expect(r === 0 || Math.sign(r) === Math.sign(a)).toBe(true);
        },
      ),
    );
  });

  it('round-trips integers through STRING and INT', () => {
    fc.assert(fc.property(int32, (n) => expect(compileCesql(`INT(STRING(INT('${n}')))`).evaluate({}).value).toBe(n)));
  });
});

describe('LIKE matching', () => {
  // A regular expression is a fine oracle on short inputs, where backtracking cost does not matter.
  function oracle(pattern: string, value: string): boolean {
    let source = '';
    const chars = Array.from(pattern);
    for (let i = 0; i < chars.length; i++) {
      const c = chars[i]!;
      const following = chars[i + 1];
      if (c === '\\' && (following === '%' || following === '_')) {
        source += following; // % and _ are not special in a regular expression
        i++;
      } else if (c === '%') source += '.*';
      else if (c === '_') source += '.';
      else source += c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    }
    return new RegExp(`^${source}$`, 'su').test(value);
  }

  const text = (chars: string[]) => fc.array(fc.constantFrom(...chars), { maxLength: 10 }).map((cs) => cs.join(''));

  it('agrees with a regular-expression oracle', () => {
    fc.assert(
      fc.property(text(['a', 'b', '%', '_', '\\', '😀']), text(['a', 'b', '%', '_', '\\', '😀']), (pattern, value) => {
        expect(compileLike(pattern)(value)).toBe(oracle(pattern, value));
      }),
      { numRuns: 5000 },
    );
  });

  it('stays fast on patterns that make backtracking regular expressions slow', () => {
    const matches = compileLike(`${'%a'.repeat(30)}%b`);
    // Not a timing assertion: the walk is O(value × pattern), so this returns promptly.
    expect(matches('a'.repeat(5000))).toBe(false);
  });
});
