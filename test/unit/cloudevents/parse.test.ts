import fc from 'fast-check';
import { bindingHeaders, contentModeOf, parseHttpMessage, type HttpMessage } from '../../../src/cloudevents/parse';
import { AppError, MAX_PROBLEM_ERRORS } from '../../../src/errors';

const ceHeaders = { 'ce-specversion': ['1.0'], 'ce-id': ['b-1'], 'ce-source': ['/binary'], 'ce-type': ['com.example.binary'] };
const event = { specversion: '1.0', id: 's-1', source: '/structured', type: 'com.example.structured' };
const json = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8');

/** Runs parseHttpMessage and returns the AppError it throws (fails the test if it does not throw one). */
function refusal(message: HttpMessage): AppError {
  try {
    parseHttpMessage(message);
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error('expected parseHttpMessage to throw');
}

describe('contentModeOf', () => {
  it.each([
    ['application/cloudevents-batch+json', 'batch'],
    ['Application/CloudEvents-Batch+JSON; charset=utf-8', 'batch'],
    ['application/cloudevents+json', 'structured'],
    ['APPLICATION/CLOUDEVENTS+JSON ; charset=UTF-8', 'structured'],
    ['application/json', 'binary'],
    ['text/plain', 'binary'],
    ['application/octet-stream', 'binary'],
    [undefined, 'binary'],
  ])('reads %j as %s mode', (contentType, mode) => {
    expect(contentModeOf(contentType)).toBe(mode);
  });

  // Binding §3: any type prefixed application/cloudevents is structured (or batched) mode; these were read as binary.
  it.each([
    'application/cloudevents+xml',
    'application/cloudevents+avro',
    'Application/CloudEvents+Protobuf',
    'application/cloudevents',
    'application/cloudevents-batch+xml',
  ])('refuses the unsupported event format %s with 415', (contentType) => {
    const err = (() => {
      try {
        contentModeOf(contentType);
      } catch (e) {
        return e as AppError;
      }
      throw new Error('did not throw');
    })();
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('unsupported_media_type');
    expect(err.status).toBe(415);
  });
});

describe('parseHttpMessage in binary mode', () => {
  it('reads attributes from ce- headers, datacontenttype from Content-Type and the body as bytes', () => {
    const body = Buffer.from([0x7b, 0x7d, 0x00, 0xff]);
    const parsed = parseHttpMessage({
      headers: { ...ceHeaders, 'ce-myext': ['v'], 'content-type': ['application/json; charset=utf-8'], host: ['x'] },
      body,
    });
    expect(parsed.mode).toBe('binary');
    expect(parsed.events).toEqual([
      {
        attributes: {
          specversion: '1.0',
          id: 'b-1',
          source: '/binary',
          type: 'com.example.binary',
          myext: 'v',
          datacontenttype: 'application/json; charset=utf-8',
        },
        data: { kind: 'bytes', bytes: body },
      },
    ]);
  });

  it('stores no data for an empty body and no datacontenttype without Content-Type', () => {
    const parsed = parseHttpMessage({ headers: ceHeaders, body: Buffer.alloc(0) });
    expect(parsed.events[0]).toEqual({
      attributes: { specversion: '1.0', id: 'b-1', source: '/binary', type: 'com.example.binary' },
      data: { kind: 'none' },
    });
  });

  it('unquotes and percent-decodes header values', () => {
    const parsed = parseHttpMessage({
      headers: { ...ceHeaders, 'ce-subject': ['"Hello,%20%F0%9F%8C%8E!"'], 'ce-myext': ['a%22b'] },
      body: Buffer.alloc(0),
    });
    expect(parsed.events[0]!.attributes).toMatchObject({ subject: 'Hello, 🌎!', myext: 'a"b' });
  });

  it('keeps extension header values as strings', () => {
    const parsed = parseHttpMessage({ headers: { ...ceHeaders, 'ce-count': ['42'], 'ce-flag': ['true'] }, body: Buffer.alloc(0) });
    expect(parsed.events[0]!.attributes).toMatchObject({ count: '42', flag: 'true' });
  });

  it('takes a % that starts no escape literally', () => {
    const parsed = parseHttpMessage({ headers: { ...ceHeaders, 'ce-subject': ['50% off, 100%'] }, body: Buffer.alloc(0) });
    expect(parsed.events[0]!.attributes.subject).toBe('50% off, 100%');
  });

  it('refuses a header that is not valid UTF-8 after decoding, naming the attribute', () => {
    const err = refusal({ headers: { ...ceHeaders, 'ce-subject': ['%C3%28'] }, body: Buffer.alloc(0) });
    expect(err.code).toBe('invalid_event');
    expect(err.details).toEqual([{ attribute: 'subject', message: expect.stringContaining('UTF-8') }]);
  });

  it('refuses a repeated ce- header', () => {
    const err = refusal({ headers: { ...ceHeaders, 'ce-id': ['one', 'two'] }, body: Buffer.alloc(0) });
    expect(err.details).toEqual([{ attribute: 'id', message: expect.stringContaining('2 times') }]);
  });

  it('refuses a repeated Content-Type', () => {
    const err = refusal({ headers: { ...ceHeaders, 'content-type': ['text/plain', 'text/html'] }, body: Buffer.alloc(0) });
    expect(err.code).toBe('invalid_event');
    expect(err.details).toEqual([{ attribute: 'content-type', message: 'repeated header' }]);
  });

  it('refuses missing required attributes, a ce-data header and bad names', () => {
    const err = refusal({
      headers: { 'ce-specversion': ['1.0'], 'ce-data': ['x'], 'ce-bad_name': ['y'], 'ce-__proto__': ['z'] },
      body: Buffer.alloc(0),
    });
    expect(err.details.map((v) => v.attribute).sort()).toEqual(['__proto__', 'bad_name', 'data', 'id', 'source', 'type']);
  });

  it('refuses an invalid Content-Type as datacontenttype', () => {
    const err = refusal({ headers: { ...ceHeaders, 'content-type': ['not a media type'] }, body: Buffer.from('x') });
    expect(err.details).toEqual([{ attribute: 'datacontenttype', message: expect.any(String) }]);
  });

  it('refuses a ce-datacontenttype header that differs from Content-Type, and takes one that agrees', () => {
    // Was: the header silently dropped, so data sent as text/csv was stored as the Content-Type said.
    const err = refusal({
      headers: { ...ceHeaders, 'ce-datacontenttype': ['text/csv'], 'content-type': ['application/json'] },
      body: Buffer.from('{}'),
    });
    expect(err.details).toEqual([{ attribute: 'datacontenttype', message: expect.stringContaining('differs from Content-Type') }]);
    const same = parseHttpMessage({
      headers: { ...ceHeaders, 'ce-datacontenttype': ['application/json'], 'content-type': ['application/json'] },
      body: Buffer.from('{}'),
    });
    expect(same.events[0]!.attributes.datacontenttype).toBe('application/json');
  });

  it.each([
    ['Application/JSON', 'application/json'],
    ['text/plain; charset=UTF-8', 'text/plain;charset=utf-8'],
    ['text/plain; Charset="utf-8"', 'text/plain; charset=utf-8'],
    ['multipart/mixed; a=1; b=2', 'multipart/mixed; b=2; a=1'],
  ])('takes ce-datacontenttype %j with Content-Type %j: the same media type (was a 400)', (header, contentType) => {
    const parsed = parseHttpMessage({
      headers: { ...ceHeaders, 'ce-datacontenttype': [header], 'content-type': [contentType] },
      body: Buffer.from('x'),
    });
    expect(parsed.events[0]!.attributes.datacontenttype).toBe(contentType);
  });

  it.each([
    ['text/plain; boundary=A', 'text/plain; boundary=a'],
    ['text/plain', 'text/csv'],
    ['text/plain; charset=utf-8', 'text/plain'],
  ])('refuses ce-datacontenttype %j with Content-Type %j: another media type', (header, contentType) => {
    const err = refusal({
      headers: { ...ceHeaders, 'ce-datacontenttype': [header], 'content-type': [contentType] },
      body: Buffer.from('x'),
    });
    expect(err.details).toEqual([{ attribute: 'datacontenttype', message: expect.stringContaining('differs from Content-Type') }]);
  });

  it('takes JSON data in another charset as it is: its bytes are not read as UTF-8 for depth or numbers (spec probe: 400)', () => {
    // U+2200 is 0x00 0x22 in UTF-16LE: read as UTF-8 bytes, its 0x22 closed the string and what followed was scanned.
    for (const text of ['{"a":"\u2200\u6531\u3939\u3939"}', `{"a":"\u2200${'\u5b5b'.repeat(40)}"}`]) {
      const body = Buffer.from(text, 'utf16le');
      const parsed = parseHttpMessage({ headers: { ...ceHeaders, 'content-type': ['application/json; charset=utf-16le'] }, body });
      expect(parsed.events[0]!.data).toEqual({ kind: 'bytes', bytes: body });
    }
  });

  it('reports a header decoding failure once, not again as a missing attribute', () => {
    const err = refusal({ headers: { ...ceHeaders, 'ce-id': ['%FF'] }, body: Buffer.alloc(0) });
    expect(err.details).toEqual([{ attribute: 'id', message: expect.stringContaining('UTF-8') }]);
  });
});

describe('parseHttpMessage in structured mode', () => {
  const structured = (body: Buffer, contentType = 'application/cloudevents+json; charset=utf-8'): HttpMessage => ({
    headers: { 'content-type': [contentType] },
    body,
  });

  it('parses one JSON event and ignores ce- headers', () => {
    const parsed = parseHttpMessage({
      headers: { 'content-type': ['application/cloudevents+json'], 'ce-id': ['ignored'] },
      body: json({ ...event, data: { a: 1 } }),
    });
    expect(parsed).toEqual({ mode: 'structured', events: [{ attributes: event, data: { kind: 'json', value: { a: 1 } } }] });
  });

  it('refuses a body that is not UTF-8', () => {
    const err = refusal(structured(Buffer.from([0x7b, 0xff, 0x7d])));
    expect(err.message).toMatch(/UTF-8/);
  });

  it('refuses a body that is not JSON', () => {
    expect(refusal(structured(Buffer.from('{"id":'))).message).toMatch(/not valid JSON/);
    expect(refusal(structured(Buffer.alloc(0))).message).toMatch(/not valid JSON/);
  });

  it('refuses an invalid event without batch indexes', () => {
    const err = refusal(structured(json({ ...event, specversion: '0.3' })));
    expect(err.details).toEqual([{ attribute: 'specversion', message: expect.any(String) }]);
  });

  it('refuses a JSON array sent as a single structured event', () => {
    expect(refusal(structured(json([event]))).details).toEqual([{ message: 'an event must be a JSON object' }]);
  });

  it('refuses data holding a number too large for JSON, which would be stored as null', () => {
    const text = (data: string) => Buffer.from(`{"specversion":"1.0","id":"n","source":"/s","type":"t","data":${data}}`);
    for (const data of ['1e400', '{"n":1e400}', '[1,[-1e309]]', '{"a":{"b":[{"c":1e999}]}}']) {
      expect(refusal(structured(text(data))).details).toEqual([
        { attribute: 'data', message: expect.stringMatching(/too large for JSON/) },
      ]);
    }
    expect(parseHttpMessage(structured(text('{"n":1e308,"m":-0.5}'))).events[0]!.data).toEqual({
      kind: 'json',
      value: { n: 1e308, m: -0.5 },
    });
    const inBatch = parseHttpMessage.bind(null, {
      headers: { 'content-type': ['application/cloudevents-batch+json'] },
      body: Buffer.from(`[${text('1').toString()},${text('{"n":1e400}').toString()}]`),
    });
    expect(inBatch).toThrow(expect.objectContaining({ details: [expect.objectContaining({ index: 1, attribute: 'data' })] }));
  });
});

describe('parseHttpMessage in batch mode', () => {
  const batch = (value: unknown): HttpMessage => ({
    headers: { 'content-type': ['application/cloudevents-batch+json'] },
    body: json(value),
  });

  it('accepts an empty batch as no events', () => {
    expect(parseHttpMessage(batch([]))).toEqual({ mode: 'batch', events: [] });
  });

  it('returns the events in input order', () => {
    const events = [1, 2, 3].map((n) => ({ ...event, id: `b-${n}` }));
    expect(parseHttpMessage(batch(events)).events.map((e) => e.attributes.id)).toEqual(['b-1', 'b-2', 'b-3']);
  });

  it.each([{ ...event }, 'x', null, 3])('refuses %j as a batch', (value) => {
    expect(refusal(batch(value)).details).toEqual([{ message: 'expected a JSON array' }]);
  });

  it('refuses the whole batch, naming each bad event by index', () => {
    const err = refusal(batch([event, { ...event, id: '' }, event, 'x', { ...event, time: 'never', ext: 1.5 }]));
    expect(err.code).toBe('invalid_event');
    expect(err.message).toBe('3 of 5 events in the batch are invalid; none was stored');
    expect(err.details).toEqual([
      { index: 1, attribute: 'id', message: expect.any(String) },
      { index: 3, message: 'an event must be a JSON object' },
      { index: 4, attribute: 'time', message: expect.any(String) },
      { index: 4, attribute: 'ext', message: expect.any(String) },
    ]);
    expect(err.totalErrors).toBe(4);
  });

  it('keeps the first 100 violations of a long batch and counts them all', () => {
    const items = [
      ...Array.from({ length: 150 }, () => 'x'),
      ...Array.from({ length: 50 }, () => ({ ...event, id: '', time: 'never' })),
      event,
    ];
    const err = refusal(batch(items));
    expect(err.details).toHaveLength(MAX_PROBLEM_ERRORS);
    expect(err.details[99]).toEqual({ index: 99, message: 'an event must be a JSON object' });
    expect(err.totalErrors).toBe(150 + 50 * 2);
    expect(err.message).toBe('200 of 201 events in the batch are invalid; none was stored');
  });
});

describe('parseHttpMessage with arbitrary input', () => {
  const headerName = fc.oneof(
    fc.constantFrom('content-type', 'ce-id', 'ce-source', 'ce-specversion', 'ce-type', 'ce-time', 'ce-data', 'ce-x'),
    fc.string().map((s) => `ce-${s.toLowerCase()}`),
    fc.string(),
  );
  const contentType = fc.constantFrom(
    'application/cloudevents+json',
    'application/cloudevents-batch+json',
    'application/cloudevents+xml',
    'application/json',
    'text/plain',
    '',
  );
  const headerValue = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), contentType, fc.constant('1.0'));
  const headers = fc.dictionary(headerName, fc.option(fc.array(headerValue, { minLength: 0, maxLength: 3 }), { nil: undefined }));
  const body = fc.oneof(
    fc.uint8Array().map((b) => Buffer.from(b)),
    fc.jsonValue().map((v) => json(v)),
    fc
      .array(
        fc.record(
          {
            specversion: fc.constantFrom('1.0', '0.3'),
            id: fc.string(),
            source: fc.string(),
            type: fc.string(),
            // Any JSON value: a probe's `"datacontenttype": 1` beside string data was a 500.
            datacontenttype: fc.oneof(fc.jsonValue(), contentType),
            data: fc.oneof(fc.jsonValue(), fc.string()),
          },
          { requiredKeys: [] },
        ),
      )
      .map(json),
  );

  it('throws nothing but AppError for any header map and body', () => {
    fc.assert(
      fc.property(headers, body, (h, b) => {
        try {
          const parsed = parseHttpMessage({ headers: h, body: b });
          expect(['binary', 'structured', 'batch']).toContain(parsed.mode);
        } catch (err) {
          expect(err).toBeInstanceOf(AppError);
          expect([400, 415]).toContain((err as AppError).status);
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('bindingHeaders', () => {
  it('keeps only ce-* and content-type, lower-cased, with every repeated value', () => {
    const headers = bindingHeaders([
      'Host',
      'x',
      'CE-Id',
      '1',
      'Content-Type',
      'application/json',
      'ce-id',
      '2',
      'Cookie',
      'c',
      'ce-source',
      '/s',
    ]);
    expect({ ...headers }).toEqual({ 'ce-id': ['1', '2'], 'content-type': ['application/json'], 'ce-source': ['/s'] });
  });
});
