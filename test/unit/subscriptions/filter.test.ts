import { Writable } from 'node:stream';
import pino from 'pino';
import { AppError } from '../../../src/errors';
import {
  FilterEvaluationError,
  MAX_FILTER_DEPTH,
  MAX_FILTER_NODES,
  MAX_FILTER_TEXT,
  MAX_SQL_LENGTH,
  compileFilters,
  createFilterErrorReporter,
  type Attributes,
  type WarnLog,
} from '../../../src/filters/filter';

/** Filter dialects of the CloudEvents Subscriptions API (§3.2.4), compiled to one matcher per subscription. */

const event: Attributes = {
  specversion: '1.0',
  id: 'e-1',
  source: '/shop/orders',
  type: 'com.example.order.created',
  subject: 'order-42',
  tenant: 'acme',
  count: 42,
  urgent: true,
};

const matches = (filters: unknown[], attributes: Attributes = event) => compileFilters(filters)(attributes);

/** The violations a malformed filter list is refused with. */
function violationsOf(filters: unknown): { attribute?: string; message: string }[] {
  try {
    compileFilters(filters);
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe('invalid_request');
    expect((err as AppError).status).toBe(400);
    return (err as AppError).details;
  }
  throw new Error('expected the filters to be refused');
}

describe('compileFilters: dialects', () => {
  it('matches everything with an empty filter list', () => {
    expect(matches([])).toBe(true);
    expect(matches([], { specversion: '1.0', id: 'x', source: '/s', type: 't' })).toBe(true);
  });

  it.each([
    [{ exact: { type: 'com.example.order.created' } }, true],
    [{ exact: { type: 'com.example.order' } }, false],
    [{ exact: { type: 'COM.EXAMPLE.ORDER.CREATED' } }, false],
    [{ exact: { type: 'com.example.order.created', source: '/shop/orders' } }, true],
    [{ exact: { type: 'com.example.order.created', source: '/shop' } }, false],
  ])('exact %j → %s (every named attribute must be equal)', (filter, expected) => {
    expect(matches([filter])).toBe(expected);
  });

  it.each([
    [{ prefix: { type: 'com.example.' } }, true],
    [{ prefix: { type: 'com.example.order.created' } }, true],
    [{ prefix: { type: 'org.example.' } }, false],
    [{ prefix: { source: '/shop', subject: 'order-' } }, true],
    [{ prefix: { source: '/shop', subject: 'invoice-' } }, false],
  ])('prefix %j → %s', (filter, expected) => {
    expect(matches([filter])).toBe(expected);
  });

  it.each([
    [{ suffix: { type: '.created' } }, true],
    [{ suffix: { type: 'com.example.order.created' } }, true],
    [{ suffix: { type: '.deleted' } }, false],
    [{ suffix: { source: '/orders', subject: '-42' } }, true],
    [{ suffix: { source: '/orders', subject: '-43' } }, false],
  ])('suffix %j → %s', (filter, expected) => {
    expect(matches([filter])).toBe(expected);
  });

  it('matches extension attributes like core ones', () => {
    expect(matches([{ exact: { tenant: 'acme' } }])).toBe(true);
    expect(matches([{ exact: { tenant: 'globex' } }])).toBe(false);
    expect(matches([{ prefix: { tenant: 'ac' } }, { suffix: { tenant: 'me' } }])).toBe(true);
  });

  it('compares integer and boolean attribute values by their string form', () => {
    expect(matches([{ exact: { count: '42' } }])).toBe(true);
    expect(matches([{ exact: { count: '42.0' } }])).toBe(false);
    expect(matches([{ prefix: { count: '4' } }, { suffix: { count: '2' } }])).toBe(true);
    expect(matches([{ exact: { urgent: 'true' } }])).toBe(true);
    expect(matches([{ exact: { urgent: 'false' } }])).toBe(false);
    expect(matches([{ exact: { count: '0' } }], { ...event, count: 0 })).toBe(true);
    expect(matches([{ exact: { urgent: 'false' } }], { ...event, urgent: false })).toBe(true);
  });

  it('never matches an attribute the event does not have, whatever the dialect', () => {
    for (const dialect of ['exact', 'prefix', 'suffix']) {
      expect(matches([{ [dialect]: { region: 'eu' } }])).toBe(false);
    }
    // …so `not` of a missing attribute does match.
    expect(matches([{ not: { exact: { region: 'eu' } } }])).toBe(true);
  });

  it('reads own attributes only: "constructor" of an event without it is not Object\'s', () => {
    for (const dialect of ['exact', 'prefix', 'suffix'])
      expect(matches([{ [dialect]: { constructor: dialect === 'suffix' ? '}' : 'function' } }])).toBe(false);
    expect(matches([{ prefix: { constructor: 'function' } }], { ...event, constructor: 'function-call' })).toBe(true);
  });

  it('ANDs the filters of the list', () => {
    expect(matches([{ exact: { tenant: 'acme' } }, { prefix: { type: 'com.example.' } }])).toBe(true);
    expect(matches([{ exact: { tenant: 'acme' } }, { prefix: { type: 'org.' } }])).toBe(false);
    expect(matches([{ exact: { tenant: 'globex' } }, { prefix: { type: 'com.' } }])).toBe(false);
  });

  it('all: every nested filter must match', () => {
    expect(matches([{ all: [{ exact: { tenant: 'acme' } }, { suffix: { type: '.created' } }] }])).toBe(true);
    expect(matches([{ all: [{ exact: { tenant: 'acme' } }, { suffix: { type: '.deleted' } }] }])).toBe(false);
  });

  it('any: one nested filter is enough', () => {
    expect(matches([{ any: [{ exact: { tenant: 'globex' } }, { suffix: { type: '.created' } }] }])).toBe(true);
    expect(matches([{ any: [{ exact: { tenant: 'globex' } }, { suffix: { type: '.deleted' } }] }])).toBe(false);
  });

  it('not: inverts the nested filter', () => {
    expect(matches([{ not: { exact: { tenant: 'acme' } } }])).toBe(false);
    expect(matches([{ not: { exact: { tenant: 'globex' } } }])).toBe(true);
  });

  it('evaluates nested combinations', () => {
    const filters = [
      {
        any: [
          { all: [{ prefix: { source: '/shop' } }, { not: { exact: { subject: 'order-1' } } }] },
          { exact: { type: 'com.example.audit' } },
        ],
      },
      { not: { any: [{ exact: { tenant: 'blocked' } }, { suffix: { type: '.test' } }] } },
    ];
    expect(matches(filters)).toBe(true);
    expect(matches(filters, { ...event, subject: 'order-1' })).toBe(false);
    expect(matches(filters, { ...event, subject: 'order-1', type: 'com.example.audit' })).toBe(true);
    expect(matches(filters, { ...event, tenant: 'blocked' })).toBe(false);
    expect(matches(filters, { ...event, source: '/warehouse', type: 'com.example.audit.test' })).toBe(false);
    expect(matches([{ not: { not: { exact: { tenant: 'acme' } } } }])).toBe(true);
  });
});

describe('compileFilters: malformed filters', () => {
  it('refuses something that is not a list', () => {
    expect(violationsOf({ exact: { type: 'x' } })[0]!.attribute).toBe('filters');
    expect(violationsOf('type = x')[0]!.attribute).toBe('filters');
  });

  it('refuses an unknown dialect, naming it and its path', () => {
    const [v] = violationsOf([{ exact: { type: 'x' } }, { regex: { type: '.*' } }]);
    expect(v!.attribute).toBe('filters.1.regex');
    expect(v!.message).toMatch(/unknown filter dialect "regex"/);
  });

  it('refuses an unknown dialect nested deep inside', () => {
    const [v] = violationsOf([{ all: [{ any: [{ not: { fuzzy: { type: 'x' } } }] }] }]);
    expect(v!.attribute).toBe('filters.0.all.0.any.0.not.fuzzy');
  });

  it.each([
    ['a string', ['exact']],
    ['null', [null]],
    ['an array', [[{ exact: { type: 'x' } }]]],
    ['no dialect', [{}]],
    ['two dialects in one object', [{ exact: { type: 'x' }, prefix: { source: '/' } }]],
    ['exact with a non-string value', [{ exact: { type: 1 } }]],
    ['exact with a null value', [{ exact: { type: null } }]],
    ['exact with a nested object', [{ exact: { type: { eq: 'x' } } }]],
    ['exact naming no attribute', [{ exact: {} }]],
    ['prefix as a string', [{ prefix: 'com.' }]],
    ['suffix as a list', [{ suffix: ['x'] }]],
    ['exact with an empty value', [{ exact: { type: '' } }]],
    ['all without a list', [{ all: { exact: { type: 'x' } } }]],
    ['all with an empty list', [{ all: [] }]],
    ['any with an empty list', [{ any: [] }]],
    ['any holding a malformed filter', [{ any: [{ exact: { type: 'x' } }, { exact: 'x' }] }]],
    ['not holding a list', [{ not: [{ exact: { type: 'x' } }] }]],
    ['not holding nothing', [{ not: null }]],
  ])('refuses %s', (_name, filters) => {
    expect(violationsOf(filters).length).toBeGreaterThan(0);
  });

  it('refuses a "__proto__" attribute name rather than drop its condition (no event can carry one)', () => {
    const filters = JSON.parse('[{"exact": {"__proto__": "x", "type": "com.example.order.created"}}]') as unknown;
    expect(violationsOf(filters)).toEqual([
      { attribute: 'filters.0.exact.__proto__', message: '__proto__ is not a CloudEvents attribute name' },
    ]);
  });

  it('refuses, for the API, names no CloudEvent can carry in exact, prefix and suffix, naming each by path', () => {
    const filters: unknown[] = [
      { exact: { Type: 'x' } },
      { prefix: { type: 'com.', 'ce-type': 'com.' } },
      { any: [{ not: { suffix: { data: 'x' } } }, { all: [{ exact: { data_base64: 'AA==' } }] }] },
      { exact: { type: 'ok', source: '/ok', partitionkey: 'k1', constructor: 'x' } },
    ];
    let refused: AppError | undefined;
    try {
      compileFilters(filters, { attributeNamesOnly: true });
    } catch (err) {
      refused = err as AppError;
    }
    expect(refused).toBeInstanceOf(AppError);
    expect(refused!.status).toBe(400);
    expect(refused!.details).toEqual([
      { attribute: 'filters.0.exact.Type', message: expect.stringMatching(/^"Type" is not a CloudEvents attribute name.*"type"/) },
      { attribute: 'filters.1.prefix.ce-type', message: expect.stringMatching(/lower-case letters a-z and digits 0-9$/) },
      { attribute: 'filters.2.any.0.not.suffix.data', message: expect.stringMatching(/^"data" is the event's data, not an attribute/) },
      { attribute: 'filters.2.any.1.all.0.exact.data_base64', message: expect.stringMatching(/not a CloudEvents attribute name/) },
    ]);
  });

  it('compiles such names by default, as delivery does for stored subscriptions: they match nothing', () => {
    const stored = [{ any: [{ exact: { Type: 'com.example.order.created' } }, { suffix: { data: 'x' } }] }];
    expect(matches(stored)).toBe(false);
  });

  it('names each fault of an exact, prefix or suffix map by its path', () => {
    expect(violationsOf([{ exact: 'x' }, { prefix: {} }, { suffix: { '': 'v', type: 1, subject: '' } }, { exact: [] }])).toEqual([
      { attribute: 'filters.0.exact', message: 'expected an object of attribute names to strings, received string' },
      { attribute: 'filters.1.prefix', message: 'must name at least one attribute' },
      { attribute: 'filters.2.suffix.', message: 'attribute names must not be empty' },
      { attribute: 'filters.2.suffix.type', message: 'expected a string, received number' },
      { attribute: 'filters.2.suffix.subject', message: 'values must not be empty strings' },
      { attribute: 'filters.3.exact', message: 'expected an object of attribute names to strings, received an array' },
    ]);
  });

  it('reports every malformed filter of the list, not only the first', () => {
    const violations = violationsOf([{ exact: { type: 1 } }, { exact: { type: 'ok' } }, { nope: {} }]);
    expect(violations.map((v) => v.attribute)).toEqual(['filters.0.exact.type', 'filters.2.nope']);
  });

  it('bounds the nesting depth', () => {
    let deep: unknown = { exact: { type: 'x' } };
    for (let i = 0; i < 40; i++) deep = { not: deep };
    expect(violationsOf([deep]).some((v) => /nest/.test(v.message))).toBe(true);
    let fine: unknown = { exact: { type: 'x' } };
    for (let i = 0; i < 7; i++) fine = { not: { not: fine } }; // 14 levels: within the limit
    expect(matches([fine], { ...event, type: 'x' })).toBe(true);
  });
});

describe('compileFilters: size limits (issue 8)', () => {
  const nest = (levels: number): unknown => {
    let filter: unknown = { exact: { type: 'x' } };
    for (let i = 0; i < levels; i++) filter = { not: { not: filter } };
    return filter;
  };

  it(`refuses a sql expression over ${MAX_SQL_LENGTH} characters, naming the limit`, () => {
    const sql = (length: number) => `type = '${'x'.repeat(length - 9)}'`;
    expect(sql(4097)).toHaveLength(4097);
    expect(violationsOf([{ exact: { type: 'x' } }, { sql: sql(4097) }])).toEqual([
      { attribute: 'filters.1.sql', message: expect.stringContaining('sql expressions may be at most 4096 characters') },
    ]);
    expect(matches([{ sql: sql(4096) }])).toBe(false);
  });

  it(`refuses more than ${MAX_FILTER_NODES} filter objects in all, nested ones included, naming the limit`, () => {
    const leaf = { exact: { type: 'com.example.order.created' } };
    expect(violationsOf(Array.from({ length: 65 }, () => leaf))).toEqual([
      { attribute: 'filters', message: expect.stringContaining('at most 64 filter expressions') },
    ]);
    expect(violationsOf([{ all: Array.from({ length: 64 }, () => leaf) }])).toHaveLength(1);
    expect(violationsOf([leaf, { any: [{ not: leaf }, ...Array.from({ length: 61 }, () => leaf)] }])[0]!.message).toMatch(/64/);
    expect(matches(Array.from({ length: 64 }, () => leaf))).toBe(true);
    expect(matches([{ all: Array.from({ length: 63 }, () => leaf) }])).toBe(true);
  });

  it(`refuses more than ${MAX_FILTER_TEXT} characters of exact, prefix and suffix names and values in all, naming the limit (API probe: 900,000-character prefixes made lists of 28 MB)`, () => {
    // 4 + 16,380 characters: at the limit; one more, in another filter, is past it.
    const atLimit = [{ prefix: { type: 'x'.repeat(16_380) } }];
    expect(matches(atLimit, { ...event, type: 'x'.repeat(16_380) })).toBe(true);
    expect(violationsOf([...atLimit, { not: { suffix: { id: 'y' } } }])).toEqual([
      { attribute: 'filters.1.not.suffix', message: expect.stringContaining(`at most ${MAX_FILTER_TEXT} characters in all`) },
    ]);
    expect(violationsOf([{ exact: { ['a'.repeat(20_000)]: 'x' } }])).toHaveLength(1);
    // A subscription stored past it (by an older version) keeps loading.
    expect(() => compileFilters([{ prefix: { type: 'x'.repeat(20_000) } }], { sizeLimits: false })).not.toThrow();
  });

  it(`refuses nesting deeper than ${MAX_FILTER_DEPTH} levels, naming the limit`, () => {
    const tooDeep = { not: nest(8) }; // 17 levels below the top-level filter
    expect(violationsOf([tooDeep])).toEqual([
      { attribute: `filters.0${'.not'.repeat(17)}`, message: 'filters may nest at most 16 levels' },
    ]);
    expect(matches([nest(8)], { ...event, type: 'x' })).toBe(true);
  });
});

describe('compileFilters: failures while matching (issue 8)', () => {
  const KB = 1024;

  function compileWithErrors(filters: unknown[], options: { budget?: number } = {}) {
    const errors: FilterEvaluationError[] = [];
    const matcher = compileFilters(filters, { ...options, onError: (err) => errors.push(err) });
    return { matcher, errors };
  }

  it('does not match, and reports, a CONCAT that would build a string longer than V8 allows (defect 7)', () => {
    const { matcher, errors } = compileWithErrors([{ sql: `CONCAT(${Array.from({ length: 600 }, () => 'big').join(', ')}) = 'z'` }]);
    const attributes = { ...event, big: 'x'.repeat(900 * KB) };
    expect(() => matcher(attributes)).not.toThrow();
    expect(matcher(attributes)).toBe(false);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toBeInstanceOf(FilterEvaluationError);
    expect(errors[0]).toMatchObject({ reason: 'budget', path: 'filters.0.sql' });
    expect(errors[0]!.message).toMatch(/work budget of 1000000 units/);
  });

  it('does not match, and reports, an evaluation that runs out of budget — also under `not`', () => {
    const big = 'a'.repeat(600 * KB);
    const costly = { sql: "LOWER(big) = 'x' OR UPPER(big) = 'y'" };
    for (const filters of [[costly], [{ not: costly }], [{ any: [costly, { exact: { tenant: 'acme' } }] }], [{ not: { not: costly } }]]) {
      const { matcher, errors } = compileWithErrors(filters);
      expect(matcher({ ...event, big })).toBe(false);
      expect(errors.map((e) => e.reason)).toEqual(['budget']);
    }
  });

  it('shares one budget between the sql filters of a list', () => {
    const big = 'a'.repeat(600 * KB);
    const one = { sql: "LOWER(big) != 'x'" };
    expect(compileWithErrors([one]).matcher({ ...event, big })).toBe(true);
    const { matcher, errors } = compileWithErrors([one, one]);
    expect(matcher({ ...event, big })).toBe(false);
    expect(errors).toMatchObject([{ reason: 'budget', path: 'filters.1.sql' }]);
    // …and gives every event a full budget again.
    expect(compileWithErrors([one]).matcher({ ...event, big }) && compileWithErrors([one]).matcher({ ...event, big })).toBe(true);
  });

  it('matches a quadratic-looking LIKE in linear time, without an error (defect 8)', () => {
    const { matcher, errors } = compileWithErrors([{ sql: `a LIKE '%${'a'.repeat(4000)}b%'` }]);
    expect(matcher({ ...event, a: 'a'.repeat(100 * KB) })).toBe(false);
    expect(matcher({ ...event, a: `${'a'.repeat(100 * KB)}b` })).toBe(true);
    expect(errors).toEqual([]);
  });

  it('does not report the ordinary CESQL errors of a non-matching event', () => {
    const { matcher, errors } = compileWithErrors([{ sql: "region = 'eu'" }, { not: { sql: 'INT(tenant) = 1' } }]);
    expect(matcher(event)).toBe(false);
    expect(compileWithErrors([{ not: { sql: "region = 'eu'" } }]).matcher(event)).toBe(true);
    expect(errors).toEqual([]);
  });

  it('does not match, and reports, anything that throws during evaluation', () => {
    const throwing = { ...event };
    Object.defineProperty(throwing, 'tenant', {
      enumerable: true,
      get: () => {
        throw new RangeError('Invalid string length');
      },
    });
    for (const filters of [[{ sql: "tenant = 'acme'" }], [{ not: { exact: { tenant: 'acme' } } }]]) {
      const { matcher, errors } = compileWithErrors(filters);
      expect(matcher(throwing)).toBe(false);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ reason: 'exception' });
      expect(errors[0]!.message).toMatch(/RangeError: Invalid string length/);
      expect(errors[0]!.cause).toBeInstanceOf(RangeError);
    }
  });

  it('never throws, even when the error callback does', () => {
    const matcher = compileFilters([{ sql: "LOWER(big) = 'x'" }], {
      budget: 10,
      onError: () => {
        throw new Error('reporter failed');
      },
    });
    expect(matcher({ ...event, big: 'a'.repeat(100) })).toBe(false);
    expect(compileFilters([{ sql: "LOWER(big) = 'x'" }], { budget: 10 })({ ...event, big: 'a'.repeat(100) })).toBe(false);
  });
});

describe('createFilterErrorReporter', () => {
  const error = new FilterEvaluationError('budget', 'filters.0.sql', 'filters.0.sql needed more than the work budget');

  it('logs at most once a minute per subscription, with the count of errors left out', () => {
    const lines: { obj: Record<string, unknown>; msg: string }[] = [];
    const log: WarnLog = { warn: (obj, msg) => lines.push({ obj: obj as Record<string, unknown>, msg }) };
    let now = 1_000_000;
    const counted: FilterEvaluationError[] = [];
    const report = createFilterErrorReporter({ log, subscriptionId: 'sub-1', clock: () => now, count: (err) => counted.push(err) });
    const other = createFilterErrorReporter({ log, subscriptionId: 'sub-2', clock: () => now });
    report(error);
    now += 30_000;
    report(error);
    other(error);
    now += 29_999;
    report(error);
    expect(lines.map((l) => [l.obj.subscription, l.obj.suppressed])).toEqual([
      ['sub-1', 0],
      ['sub-2', 0],
    ]);
    now += 1;
    report(error);
    expect(lines.map((l) => [l.obj.subscription, l.obj.suppressed])).toEqual([
      ['sub-1', 0],
      ['sub-2', 0],
      ['sub-1', 2],
    ]);
    expect(lines[0]!.obj.err).toBe(error);
    expect(lines[0]!.msg).toMatch(/filter/);
    expect(counted).toHaveLength(4);
    // A clock set back does not silence the log for the time it went back.
    now -= 3_600_000;
    report(error);
    expect(lines).toHaveLength(4);
  });

  it('takes a pino logger, logging at warn with the error serialized', () => {
    const out: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        out.push(chunk.toString());
        done();
      },
    });
    const logger = pino({ level: 'info' }, stream);
    const report = createFilterErrorReporter({ log: logger, subscriptionId: 'sub-1' });
    report(error);
    report(error);
    logger.flush();
    return new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      expect(out).toHaveLength(1);
      const line = JSON.parse(out[0]!) as { level: number; subscription: string; err: { type: string; message: string } };
      expect(line).toMatchObject({ level: 40, subscription: 'sub-1', err: { type: 'FilterEvaluationError', message: error.message } });
    });
  });
});
