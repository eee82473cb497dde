import { CesqlError, MAX_DEPTH, cesqlMatches, compileCesql } from '../../../src/filters/cesql';

// Behaviour the TCK leaves open, pinned so a change is a decision, not an accident.
const EVENT = {
  specversion: '1.0',
  id: 'e1',
  source: 'https://example.com/src',
  type: 'com.example.created',
  myext: 'customext',
  count: '5',
};

function run(expression: string, event: Record<string, string | number | boolean> = EVENT) {
  const { value, errors } = compileCesql(expression).evaluate(event);
  return { value, kinds: errors.map((e) => e.kind) };
}

function parseError(expression: string): CesqlError {
  try {
    compileCesql(expression);
  } catch (err) {
    if (err instanceof CesqlError) return err;
    throw err;
  }
  throw new Error(`expected ${JSON.stringify(expression)} not to compile`);
}

describe('CESQL precedence', () => {
  it('binds AND tighter than OR, as SQL does', () => {
    expect(run('TRUE OR FALSE AND FALSE').value).toBe(true);
    expect(run('FALSE AND TRUE OR TRUE').value).toBe(true);
  });

  it('binds XOR between AND and OR', () => {
    expect(run('TRUE XOR TRUE AND FALSE').value).toBe(true);
    expect(run('FALSE XOR TRUE OR TRUE').value).toBe(true);
    expect(run('TRUE OR TRUE XOR TRUE').value).toBe(true);
  });

  it('binds NOT tighter than comparisons, as the spec ranks unary operators first', () => {
    expect(run('NOT 1 = 1')).toEqual({ value: false, kinds: ['cast'] });
    expect(run('NOT (1 = 1)')).toEqual({ value: false, kinds: [] });
  });

  it('binds * tighter than + and arithmetic tighter than comparison', () => {
    expect(run('1 + 2 * 3 = 7').value).toBe(true);
    expect(run("count + 1 LIKE '6'").value).toBe(true);
  });

  it('reads a minus between numbers as subtraction even without spaces', () => {
    expect(run('4-1').value).toBe(3);
    expect(run('4 -1').value).toBe(3);
    expect(run('+4').value).toBe(4);
  });
});

describe('CESQL integers', () => {
  it('accepts -2147483648 as a literal and rejects literals outside 32 bits', () => {
    expect(run('-2147483648').value).toBe(-2147483648);
    expect(parseError('2147483648').kind).toBe('parse');
    expect(parseError('-2147483649').kind).toBe('parse');
  });

  it('saturates and reports a math error on overflow', () => {
    expect(run('2147483647 + 1')).toEqual({ value: 2147483647, kinds: ['math'] });
    expect(run('-2147483648 - 1')).toEqual({ value: -2147483648, kinds: ['math'] });
    expect(run('65536 * 65536')).toEqual({ value: 2147483647, kinds: ['math'] });
    expect(run('-2147483648 / -1')).toEqual({ value: 2147483647, kinds: ['math'] });
    expect(run('--2147483648')).toEqual({ value: 2147483647, kinds: ['math'] });
  });

  it('truncates division toward zero and gives the remainder the sign of the dividend', () => {
    expect(run('-7 / 2').value).toBe(-3);
    expect(run('-7 % 2').value).toBe(-1);
    expect(run('7 % -2').value).toBe(1);
    expect(Object.is(run('-4 % 2').value, 0)).toBe(true);
  });
});

describe('CESQL attributes', () => {
  it('never reads inherited properties as attributes', () => {
    expect(run('constructor')).toEqual({ value: false, kinds: ['missingAttribute'] });
    expect(run('EXISTS tostring').value).toBe(false);
  });

  it('reads numbers outside the 32-bit range as their decimal text', () => {
    expect(run("big = '1099511627776'", { ...EVENT, big: 2 ** 40 }).value).toBe(true);
    expect(run('INT(big)', { ...EVENT, big: 2 ** 40 })).toEqual({ value: 0, kinds: ['cast'] });
  });

  it('treats attribute names case-insensitively', () => {
    expect(run("MyExt = 'customext'").value).toBe(true);
  });

  it('evaluates every IN element, so the order of a set does not change the result', () => {
    expect(run("myext IN ('customext', missing)")).toEqual({ value: false, kinds: ['missingAttribute'] });
    expect(run("myext IN (missing, 'customext')")).toEqual({ value: false, kinds: ['missingAttribute'] });
  });
});

describe('CESQL strings and LIKE', () => {
  it('counts characters as code points', () => {
    expect(run("LENGTH('😀x')").value).toBe(2);
    expect(run("SUBSTRING('😀xy', 2)").value).toBe('xy');
    expect(run("RIGHT('a😀', 1)").value).toBe('😀');
    expect(run("'😀' LIKE '_'").value).toBe(true);
  });

  it('needs a string literal as the LIKE pattern', () => {
    expect(parseError('type LIKE myext').kind).toBe('parse');
  });

  it('matches newlines with wildcards', () => {
    expect(run("'a\nb' LIKE 'a_b'").value).toBe(true);
    expect(run("'a\n\nb' LIKE 'a%b'").value).toBe(true);
  });

  it('rejects SQL doubled quotes, which CESQL does not define', () => {
    expect(parseError("'it''s'").kind).toBe('parse');
    expect(run("'it\\'s'").value).toBe("it's");
  });
});

describe('CESQL functions', () => {
  it('reports unknown functions at evaluation and up front in staticErrors', () => {
    const expression = compileCesql('FOO(1) OR TRUE');
    expect(expression.staticErrors.map((e) => e.kind)).toEqual(['missingFunction']);
    expect(expression.evaluate(EVENT).errors.map((e) => e.kind)).toEqual(['missingFunction']);
    expect(compileCesql('LOWER(type) = type').staticErrors).toEqual([]);
  });

  it('rejects function names with digits', () => {
    expect(parseError('f1(2)').kind).toBe('parse');
  });

  it('offers IS_INT and IS_BOOL', () => {
    expect(run("IS_INT('-12') AND NOT IS_INT('1.5') AND IS_BOOL('False') AND NOT IS_BOOL('yes')").value).toBe(true);
  });
});

describe('cesqlMatches', () => {
  it('passes only a Boolean true without errors', () => {
    expect(cesqlMatches(compileCesql("myext = 'customext'"), EVENT)).toBe(true);
    expect(cesqlMatches(compileCesql("'true'"), EVENT)).toBe(false);
    expect(cesqlMatches(compileCesql('1'), EVENT)).toBe(false);
    expect(cesqlMatches(compileCesql("myext = 'customext' OR 'x' AND TRUE"), EVENT)).toBe(true);
    expect(cesqlMatches(compileCesql("'x' OR TRUE"), EVENT)).toBe(false);
  });

  it('is reusable across events', () => {
    const expression = compileCesql("type LIKE 'com.example.%'");
    expect(cesqlMatches(expression, EVENT)).toBe(true);
    expect(cesqlMatches(expression, { ...EVENT, type: 'org.other' })).toBe(false);
  });
});

describe('CESQL limits', () => {
  it('rejects nesting deeper than MAX_DEPTH without overflowing the stack', () => {
    expect(parseError(`${'('.repeat(100_000)}1${')'.repeat(100_000)}`).kind).toBe('parse');
    expect(parseError(`${'NOT '.repeat(100_000)}TRUE`).kind).toBe('parse');
    expect(parseError(`${'-'.repeat(100_000)}'1'`).kind).toBe('parse');
    expect(parseError(Array.from({ length: MAX_DEPTH + 1 }, () => '1').join(' + ')).kind).toBe('parse');
  });

  it('keeps long AND and OR chains shallow', () => {
    const types = Array.from({ length: 5000 }, (_, i) => `type = 't${i}'`).join(' OR ');
    expect(run(types, { ...EVENT, type: 't4999' }).value).toBe(true);
  });
});

describe('CESQL TRIM', () => {
  it('removes Unicode White_Space at both ends (§3.5.1), not what JavaScript trims', () => {
    expect(run("TRIM(myext) = 'x'", { ...EVENT, myext: '\u0085\u2003x\u3000\u0085' }).value).toBe(true);
    // U+FEFF is no White_Space: kept.
    expect(run('LENGTH(TRIM(myext)) = 2', { ...EVENT, myext: '\ufeffx' }).value).toBe(true);
    expect(run("TRIM(myext) = 'a  b'", { ...EVENT, myext: ' \ta  b\n ' }).value).toBe(true);
  });

  it('keeps a long run of inner white space (one pass from each end)', () => {
    expect(run('LENGTH(TRIM(myext)) = 200002', { ...EVENT, myext: `x${' '.repeat(200_000)}y` }).value).toBe(true);
  });
});
