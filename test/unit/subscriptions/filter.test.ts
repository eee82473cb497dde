import { AppError } from '../../../src/errors';
import { compileFilters, type Attributes } from '../../../src/subscriptions/filter';

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
