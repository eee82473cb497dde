import fc from 'fast-check';
import {
  isAbsoluteUri,
  isBase64,
  isRfc3339,
  isStringPayload,
  isUriReference,
  parseJsonEvent,
  validateAttributes,
} from '../../../src/cloudevents/validate';

const base = { specversion: '1.0', id: 'e-1', source: '/src', type: 'com.example.test' };

describe('isRfc3339', () => {
  it.each([
    '2018-04-05T03:56:24Z',
    '2018-04-05t03:56:24z',
    '2018-04-05T03:56:24.1Z',
    '2018-04-05T03:56:24.123456789Z',
    '2018-04-05T03:56:24+00:00',
    '2018-04-05T03:56:24-00:00',
    '2018-04-05T03:56:24+23:59',
    '2018-04-05T03:56:24.5-08:30',
    '2024-02-29T00:00:00Z',
    '2000-02-29T00:00:00Z',
    '0000-02-29T00:00:00Z',
    '0004-02-29T00:00:00Z',
    '2016-12-31T23:59:60Z',
    '2016-12-31T18:59:60-05:00',
    '2017-01-01T05:29:60+05:30',
    '2018-01-31T00:00:00Z',
    '2018-04-30T23:59:59Z',
  ])('accepts %s', (value) => {
    expect(isRfc3339(value)).toBe(true);
  });

  it.each([
    '2023-02-29T00:00:00Z',
    '1900-02-29T00:00:00Z',
    '2100-02-29T00:00:00Z',
    '0100-02-29T00:00:00Z',
    '2018-04-31T00:00:00Z',
    '2018-13-01T00:00:00Z',
    '2018-00-01T00:00:00Z',
    '2018-01-00T00:00:00Z',
    '2018-01-01T24:00:00Z',
    '2018-01-01T23:60:00Z',
    '2018-01-01T23:59:61Z',
    // A leap second anywhere but the last minute of a UTC day (hostile probe: accepted at noon).
    '2016-12-30T12:00:60Z',
    '9999-12-31T23:59:60-23:59',
    '2016-12-31T23:59:60+01:00',
    '2018-01-01T00:00:00+24:00',
    '2018-01-01T00:00:00+05:60',
    '2018-01-01T00:00:00+0500',
    '2018-01-01T00:00:00',
    '2018-01-01T00:00Z',
    '2018-01-01T00:00:00.Z',
    '2018-01-01',
    '18-01-01T00:00:00Z',
    '2018-1-01T00:00:00Z',
    '2018-01-01T00:00:00Z ',
    'Thu, 05 Apr 2018 03:56:24 GMT',
    '',
  ])('refuses %j', (value) => {
    expect(isRfc3339(value)).toBe(false);
  });
});

describe('isUriReference and isAbsoluteUri', () => {
  it.each([
    '/mycontext/subcontext',
    '//github.com/cloudevents',
    'https://example.com/a?b=c#d',
    'urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66',
    'mailto:a@example.com',
    'relative/path',
    './a:b',
    'a%20b',
    '#frag',
    'x',
    'http://[::1]:8080/x?y#z',
    '//[2001:db8::7]/a',
    'http://user@[::1]/',
    'http://[v1.fe:x]/',
    'http://u:p@h:80/x',
    'http://h:/',
    '//h:8080',
    'http://a%40b@h/',
  ])('accepts %s as a URI-reference', (value) => {
    expect(isUriReference(value)).toBe(true);
  });

  it.each([
    'a b',
    'café',
    '%zz',
    '%4',
    '1abc:rest',
    ':nothing',
    'a\\b',
    'a<b>',
    'tab\there',
    'quote"',
    'http://[::1',
    'a]b[c',
    'http://x/[p]',
    'http://[zz]/',
    'http://x/#a#b',
    '[::1]',
    // Spec probe: an authority's port is digits, its user info holds no @.
    'http://h:x/',
    'http://h:80:90/',
    'http://a@b@c/',
    '//h:8o',
  ])('refuses %j as a URI-reference', (value) => {
    expect(isUriReference(value)).toBe(false);
  });

  it.each(['https://example.com/schema.json', 'urn:example:schema', 'http://x', 'tag:example.com,2024:s'])(
    'accepts %s as an absolute URI',
    (value) => {
      expect(isAbsoluteUri(value)).toBe(true);
    },
  );

  it.each(['/schema.json', 'schema.json', '//example.com/s', '1http://x', 'http://a b', ''])('refuses %j as an absolute URI', (value) => {
    expect(isAbsoluteUri(value)).toBe(false);
  });
});

describe('isBase64', () => {
  it.each(['', 'QQ==', 'QUI=', 'QUJD', 'SGVsbG8sIFdvcmxkIQ==', '+/+/'])('accepts %j', (value) => {
    expect(isBase64(value)).toBe(true);
  });

  it.each(['Q', 'QQ', 'QQ=', 'Q===', 'QUJD=', 'QU JD', 'QUJD\n', '-_-_', 'QQ==QQ==', '****'])('refuses %j', (value) => {
    expect(isBase64(value)).toBe(false);
  });

  it('accepts anything Buffer encodes as base64', () => {
    fc.assert(fc.property(fc.uint8Array(), (bytes) => isBase64(Buffer.from(bytes).toString('base64'))));
  });
});

describe('validateAttributes', () => {
  it('accepts the four required attributes alone', () => {
    expect(validateAttributes({ ...base })).toEqual([]);
  });

  it.each(['id', 'source', 'specversion', 'type'])('names a missing required %s', (name) => {
    const attributes: Record<string, unknown> = { ...base };
    delete attributes[name];
    expect(validateAttributes(attributes)).toEqual([{ attribute: name, message: `required attribute "${name}" is missing` }]);
  });

  it.each(['id', 'source', 'type', 'subject', 'partitionkey', 'traceparent'])('refuses an empty %s', (name) => {
    expect(validateAttributes({ ...base, [name]: '' })).toEqual([{ attribute: name, message: expect.stringContaining('non-empty') }]);
  });

  it.each([
    'id',
    'source',
    'specversion',
    'type',
    'time',
    'subject',
    'dataschema',
    'datacontenttype',
    'partitionkey',
    'traceparent',
    'tracestate',
  ])('refuses a non-string %s', (name) => {
    expect(validateAttributes({ ...base, [name]: 42 })).toEqual([{ attribute: name, message: `"${name}" must be a string` }]);
  });

  it('refuses a boolean partitionkey (the partitioning extension types it String)', () => {
    expect(validateAttributes({ ...base, partitionkey: true })).toEqual([
      { attribute: 'partitionkey', message: '"partitionkey" must be a string' },
    ]);
  });

  it('accepts only specversion "1.0"', () => {
    for (const version of ['0.3', '1', '1.0.0', '2.0']) {
      expect(validateAttributes({ ...base, specversion: version })).toEqual([
        { attribute: 'specversion', message: expect.stringContaining(version) },
      ]);
    }
  });

  it('checks time, dataschema, source and datacontenttype formats', () => {
    expect(
      validateAttributes({
        ...base,
        time: '2018-04-05T03:56:24Z',
        dataschema: 'https://x/s',
        datacontenttype: 'text/plain; charset=us-ascii',
        subject: 's',
      }),
    ).toEqual([]);
    expect(validateAttributes({ ...base, time: '2018-04-05 03:56:24' })).toEqual([{ attribute: 'time', message: expect.any(String) }]);
    expect(validateAttributes({ ...base, dataschema: '/relative' })).toEqual([{ attribute: 'dataschema', message: expect.any(String) }]);
    expect(validateAttributes({ ...base, source: 'not a uri' })).toEqual([{ attribute: 'source', message: expect.any(String) }]);
    expect(validateAttributes({ ...base, datacontenttype: 'json' })).toEqual([
      { attribute: 'datacontenttype', message: expect.any(String) },
    ]);
    for (const bad of ['text/plain; a=b\r\nx: y', 'text/plain; note="5 €"', 'text/plain\u0000']) {
      expect(validateAttributes({ ...base, datacontenttype: bad })).toEqual([
        { attribute: 'datacontenttype', message: expect.any(String) },
      ]);
    }
    expect(validateAttributes({ ...base, datacontenttype: 'application/json;\tcharset="utf-8"' })).toEqual([]);
  });

  it.each(['Upper', 'with_underscore', 'with-dash', 'dotted.name', 'ümlaut', ''])('refuses the attribute name %j', (name) => {
    expect(validateAttributes({ ...base, [name]: 'v' })).toEqual([{ attribute: name, message: expect.stringContaining('lower-case') }]);
  });

  it('refuses "data" as an attribute name', () => {
    expect(validateAttributes({ ...base, data: 'v' })).toEqual([{ attribute: 'data', message: expect.stringContaining('reserved') }]);
  });

  it('accepts string, boolean and int32 extension values', () => {
    expect(validateAttributes({ ...base, s: '', b: false, zero: 0, max: 2147483647, min: -2147483648, a1b2c3: 'x' })).toEqual([]);
  });

  it.each([
    ['a float', 1.5],
    ['an int above int32', 2147483648],
    ['an int below int32', -2147483649],
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['an object', { a: 1 }],
    ['an array', [1]],
    ['null', null],
  ])('refuses %s as an extension value', (_label, value) => {
    expect(validateAttributes({ ...base, ext: value })).toEqual([{ attribute: 'ext', message: expect.any(String) }]);
  });

  it.each([
    ['id', 'a\ud800'],
    ['id', '\udc00b'],
    ['type', 't\udbff'],
    ['subject', '\ud800\ud800'],
    ['ext', 'x\udfff'],
  ])('refuses a lone surrogate in %s (%j)', (attribute, value) => {
    expect(validateAttributes({ ...base, [attribute]: value })).toEqual([{ attribute, message: expect.stringContaining('valid Unicode') }]);
  });

  it('accepts characters outside the BMP (a surrogate pair)', () => {
    expect(validateAttributes({ ...base, id: 'e-\u{1F600}', subject: '\ud83d\ude00', ext: '\u{10FFFD}' })).toEqual([]);
  });

  it('refuses the noncharacters the String type disallows, in any plane (spec.md, Type System)', () => {
    for (const ext of ['\uFDD0', '\uFDEF', '\uFFFE', '\uFFFF', '\u{1FFFE}', '\u{10FFFF}']) {
      expect(validateAttributes({ ...base, ext })).toEqual([{ attribute: 'ext', message: expect.stringMatching(/noncharacter/) }]);
    }
  });

  it('refuses a dataschema with a fragment (an absolute URI has none)', () => {
    expect(validateAttributes({ ...base, dataschema: 'https://example.com/schema#v1' })).toEqual([
      { attribute: 'dataschema', message: expect.stringContaining('absolute URI') },
    ]);
  });

  it('adds the batch index to every violation when given', () => {
    const violations = validateAttributes({ specversion: '2.0', id: '', source: '/s', type: 't', Bad: 1 }, 3);
    expect(violations).toHaveLength(3);
    for (const v of violations) expect(v.index).toBe(3);
  });
});

describe('parseJsonEvent', () => {
  it('parses an event without data', () => {
    expect(parseJsonEvent({ ...base, ext: 7 })).toEqual({ ok: true, event: { attributes: { ...base, ext: 7 }, data: { kind: 'none' } } });
  });

  it.each([null, 'x', 42, true, [base]])('refuses %j as an event', (input) => {
    expect(parseJsonEvent(input, 2)).toEqual({ ok: false, violations: [{ index: 2, message: 'an event must be a JSON object' }] });
  });

  it('keeps any JSON value of data, including null and strings', () => {
    for (const value of [{ a: [1, 'two'] }, [1, 2], 'text', 0, false, null]) {
      const outcome = parseJsonEvent({ ...base, data: value });
      expect(outcome).toEqual({ ok: true, event: { attributes: base, data: { kind: 'json', value } } });
    }
  });

  it('decodes data_base64 into bytes', () => {
    const outcome = parseJsonEvent({ ...base, data_base64: 'AAEC/w==' });
    expect(outcome.ok && outcome.event.data).toEqual({ kind: 'base64', bytes: Buffer.from([0, 1, 2, 255]) });
  });

  it('treats null attribute values as absent', () => {
    expect(parseJsonEvent({ ...base, subject: null, time: null, ext: null, data_base64: null })).toEqual({
      ok: true,
      event: { attributes: base, data: { kind: 'none' } },
    });
    const outcome = parseJsonEvent({ ...base, id: null });
    expect(outcome).toEqual({ ok: false, violations: [{ attribute: 'id', message: expect.stringContaining('missing') }] });
  });

  it('refuses data and data_base64 together', () => {
    expect(parseJsonEvent({ ...base, data: 'x', data_base64: 'QQ==' }, 0)).toEqual({
      ok: false,
      violations: [{ index: 0, attribute: 'data_base64', message: expect.any(String) }],
    });
  });

  it.each(['QQ', 'not base64!', 12, true, { a: 1 }])('refuses %j as data_base64', (value) => {
    expect(parseJsonEvent({ ...base, data_base64: value })).toEqual({
      ok: false,
      violations: [{ attribute: 'data_base64', message: expect.any(String) }],
    });
  });

  it('reports every violation of one event', () => {
    const outcome = parseJsonEvent(
      { specversion: '1.0', source: '', type: 't', time: 'yesterday', ext: [], data: 1, data_base64: 'QQ==' },
      5,
    );
    expect(outcome.ok).toBe(false);
    const attributes = !outcome.ok ? outcome.violations.map((v) => v.attribute).sort() : [];
    expect(attributes).toEqual(['data_base64', 'ext', 'id', 'source', 'time']);
  });

  it('refuses a "__proto__" member as an invalid attribute name instead of inheriting from it', () => {
    const input = JSON.parse('{"__proto__":{"id":"inherited"},"specversion":"1.0","source":"/s","type":"t"}');
    const outcome = parseJsonEvent(input);
    expect(outcome.ok).toBe(false);
    const attributes = !outcome.ok ? outcome.violations.map((v) => v.attribute).sort() : [];
    expect(attributes).toEqual(['__proto__', 'id']);
  });

  it('never throws for any JSON value and answers ok or violations', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue(),
          fc.anything(),
          fc.record(
            { ...Object.fromEntries(Object.keys(base).map((k) => [k, fc.jsonValue()])), data: fc.jsonValue(), data_base64: fc.jsonValue() },
            { requiredKeys: [] },
          ),
        ),
        fc.option(fc.nat()),
        (input, index) => {
          const outcome = parseJsonEvent(input, index ?? undefined);
          if (outcome.ok) {
            expect(validateAttributes(outcome.event.attributes)).toEqual([]);
          } else {
            expect(outcome.violations.length).toBeGreaterThan(0);
            for (const v of outcome.violations) {
              expect(typeof v.message).toBe('string');
              expect(v.index).toBe(index ?? undefined);
            }
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('isStringPayload', () => {
  it('is true only for string data with a non-JSON datacontenttype', () => {
    const ev = (data: unknown, datacontenttype?: string) => ({
      attributes: { ...base, ...(datacontenttype ? { datacontenttype } : {}) },
      data: { kind: 'json' as const, value: data },
    });
    expect(isStringPayload(ev('hi', 'text/plain'))).toBe(true);
    expect(isStringPayload(ev('hi', 'application/json'))).toBe(false);
    expect(isStringPayload(ev('hi', 'application/vnd.x+json'))).toBe(false);
    expect(isStringPayload(ev('hi'))).toBe(false);
    expect(isStringPayload(ev({ a: 1 }, 'text/plain'))).toBe(false);
  });
});
