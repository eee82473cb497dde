import fc from 'fast-check';
import type { CloudEvent, EventData } from '../../../src/cloudevents/event';
import { isJsonMediaType, isTextMediaType, mediaType } from '../../../src/cloudevents/event';
import { dataBytes, toBinaryMessage, toStructured, toStructuredMessage } from '../../../src/cloudevents/format';
import { parseHttpMessage } from '../../../src/cloudevents/parse';

const attrs = { specversion: '1.0', id: 'f-1', source: '/format', type: 'com.example.format' };
const ev = (data: EventData, extra: Record<string, string | number | boolean> = {}): CloudEvent => ({
  attributes: { ...attrs, ...extra },
  data,
});
const bytes = (text: string) => ({ kind: 'bytes' as const, bytes: Buffer.from(text, 'utf8') });

describe('media type helpers', () => {
  it('strips parameters and lower-cases', () => {
    expect(mediaType('Application/JSON ; charset=utf-8')).toBe('application/json');
    expect(mediaType(undefined)).toBeUndefined();
  });

  it.each(['application/json', 'text/json', 'application/vnd.api+json', 'application/cloudevents+json; charset=utf-8', 'APPLICATION/JSON'])(
    'treats %s as JSON',
    (t) => {
      expect(isJsonMediaType(t)).toBe(true);
    },
  );

  it.each(['text/plain', 'application/jsonx', 'application/json-seq', 'application/octet-stream', undefined])(
    'does not treat %s as JSON',
    (t) => {
      expect(isJsonMediaType(t)).toBe(false);
    },
  );

  it.each(['text/plain', 'text/csv; charset=us-ascii', 'application/xml', 'image/svg+xml', 'Text/HTML'])('treats %s as text', (t) => {
    expect(isTextMediaType(t)).toBe(true);
  });

  it.each(['application/json', 'application/octet-stream', 'image/png', undefined])('does not treat %s as text', (t) => {
    expect(isTextMediaType(t)).toBe(false);
  });
});

describe('toStructured', () => {
  it('omits data when the event has none', () => {
    expect(toStructured(ev({ kind: 'none' }, { ext: true, n: 3 }))).toEqual({ ...attrs, ext: true, n: 3 });
  });

  it('returns structured data as the same JSON value', () => {
    for (const value of [{ a: [1, null] }, 'text', 0, null]) {
      expect(toStructured(ev({ kind: 'json', value }))).toEqual({ ...attrs, data: value });
    }
  });

  it('returns structured data_base64 as data_base64', () => {
    expect(toStructured(ev({ kind: 'base64', bytes: Buffer.from([1, 2, 3]) }))).toEqual({ ...attrs, data_base64: 'AQID' });
  });

  it('returns binary-mode JSON bodies as parsed data for */json and */*+json', () => {
    expect(toStructured(ev(bytes('{"a":1}'), { datacontenttype: 'application/json; charset=utf-8' })).data).toEqual({ a: 1 });
    expect(toStructured(ev(bytes('[1,2]'), { datacontenttype: 'application/vnd.x+json' })).data).toEqual([1, 2]);
    expect(toStructured(ev(bytes('"s"'), { datacontenttype: 'text/json' })).data).toBe('s');
  });

  it('falls back to data_base64 for a JSON content type whose body does not parse or is not UTF-8', () => {
    const notJson = toStructured(ev(bytes('{oops'), { datacontenttype: 'application/json' }));
    expect(notJson).not.toHaveProperty('data');
    expect(notJson.data_base64).toBe(Buffer.from('{oops').toString('base64'));
    const notUtf8 = toStructured(ev({ kind: 'bytes', bytes: Buffer.from([0x22, 0xff, 0x22]) }, { datacontenttype: 'application/json' }));
    expect(notUtf8.data_base64).toBe('Iv8i');
  });

  it('returns text and XML bodies as a data string', () => {
    expect(toStructured(ev(bytes('Hello, 🌎!\n'), { datacontenttype: 'text/plain; charset=utf-8' })).data).toBe('Hello, 🌎!\n');
    expect(toStructured(ev(bytes('<a/>'), { datacontenttype: 'application/xml' })).data).toBe('<a/>');
    expect(toStructured(ev(bytes('<svg/>'), { datacontenttype: 'image/svg+xml' })).data).toBe('<svg/>');
  });

  it('keeps a byte-order mark of text data, which is data as sent (spec probe: it was dropped)', () => {
    const text = toStructured(ev({ kind: 'bytes', bytes: Buffer.from([0xef, 0xbb, 0xbf, 0x68, 0x69]) }, { datacontenttype: 'text/plain' }));
    expect(text.data).toBe('\ufeffhi');
    // JSON text may not start with one (RFC 8259 §8.1): such bytes stay bytes, every one of them.
    const json = toStructured(ev({ kind: 'bytes', bytes: Buffer.from('\ufeff{"a":1}') }, { datacontenttype: 'application/json' }));
    expect(Buffer.from(json.data_base64 as string, 'base64')).toEqual(Buffer.from('\ufeff{"a":1}'));
  });

  it('returns text bodies that are not UTF-8 as data_base64', () => {
    const out = toStructured(ev({ kind: 'bytes', bytes: Buffer.from([0x61, 0xe9]) }, { datacontenttype: 'text/plain; charset=latin1' }));
    expect(out).toEqual({ ...attrs, datacontenttype: 'text/plain; charset=latin1', data_base64: 'Yek=' });
  });

  it('returns other or undeclared content types as data_base64', () => {
    expect(toStructured(ev(bytes('{"a":1}')))).toEqual({ ...attrs, data_base64: Buffer.from('{"a":1}').toString('base64') });
    expect(
      toStructured(ev({ kind: 'bytes', bytes: Buffer.from([0, 255]) }, { datacontenttype: 'application/octet-stream' })).data_base64,
    ).toBe('AP8=');
  });

  it('does not change the event it formats', () => {
    const event = ev({ kind: 'json', value: { a: 1 } });
    const copy = structuredClone(event);
    toStructured(event).extra = 'x';
    expect(event).toEqual(copy);
  });
});

describe('dataBytes and toBinaryMessage', () => {
  it('puts every attribute but datacontenttype in an encoded ce- header', () => {
    const msg = toBinaryMessage(ev({ kind: 'none' }, { subject: 'Hello, 🌎!', flag: true, count: -7, datacontenttype: 'text/plain' }));
    expect(msg.headers).toEqual({
      'ce-specversion': '1.0',
      'ce-id': 'f-1',
      'ce-source': '/format',
      'ce-type': 'com.example.format',
      'ce-subject': 'Hello,%20%F0%9F%8C%8E!',
      'ce-flag': 'true',
      'ce-count': '-7',
      'content-type': 'text/plain',
    });
    expect(msg.body).toEqual(Buffer.alloc(0));
  });

  it('sends bytes and data_base64 payloads as the raw bytes', () => {
    const raw = Buffer.from([0, 1, 254, 255]);
    expect(toBinaryMessage(ev({ kind: 'bytes', bytes: raw })).body).toEqual(raw);
    expect(toBinaryMessage(ev({ kind: 'base64', bytes: raw }, { datacontenttype: 'image/png' }))).toMatchObject({
      body: raw,
      headers: { 'content-type': 'image/png' },
    });
    expect(toBinaryMessage(ev({ kind: 'bytes', bytes: raw })).headers).not.toHaveProperty('content-type');
  });

  it('serialises structured JSON data and declares application/json when datacontenttype is absent', () => {
    const msg = toBinaryMessage(ev({ kind: 'json', value: { a: 'b' } }));
    expect(msg.headers['content-type']).toBe('application/json');
    expect(msg.body.toString('utf8')).toBe('{"a":"b"}');
  });

  it('sends a string payload with a non-JSON content type as the text itself', () => {
    expect(dataBytes(ev({ kind: 'json', value: 'Hello, 🌎!' }, { datacontenttype: 'text/plain' }))).toEqual({
      body: Buffer.from('Hello, 🌎!'),
      contentType: 'text/plain',
    });
  });

  it('sends a string payload with a JSON content type as a JSON string', () => {
    expect(dataBytes(ev({ kind: 'json', value: 'hi' }, { datacontenttype: 'application/json' })).body.toString()).toBe('"hi"');
    expect(dataBytes(ev({ kind: 'json', value: 'hi' })).body.toString()).toBe('"hi"');
  });
});

describe('toStructuredMessage', () => {
  it('is the JSON format of toStructured with the cloudevents+json content type', () => {
    const event = ev({ kind: 'bytes', bytes: Buffer.from('x') }, { datacontenttype: 'text/plain' });
    const msg = toStructuredMessage(event);
    expect(msg.headers).toEqual({ 'content-type': 'application/cloudevents+json; charset=utf-8' });
    expect(JSON.parse(msg.body.toString('utf8'))).toEqual(toStructured(event));
  });

  // Stored before ingest checked what a ce-datacontenttype header declared: reads answered 500 and the
  // delivery thread died on every structured attempt (then the gateway exited 70).
  it('renders stored JSON bytes nested too deep to write as data_base64, without throwing', () => {
    const deep = Buffer.from('['.repeat(20_000) + ']'.repeat(20_000));
    const event = ev({ kind: 'bytes', bytes: deep }, { datacontenttype: 'application/json' });
    expect(toStructured(event)).toEqual({ ...attrs, datacontenttype: 'application/json', data_base64: deep.toString('base64') });
    expect(JSON.parse(toStructuredMessage(event).body.toString('utf8')).data_base64).toBe(deep.toString('base64'));
  });

  it('renders stored JSON bytes holding a number no double holds as data_base64, not as null', () => {
    const body = Buffer.from('{"n":1e400}');
    expect(toStructured(ev({ kind: 'bytes', bytes: body }, { datacontenttype: 'application/json' })).data_base64).toBe(
      body.toString('base64'),
    );
  });
});

describe('format and parse together', () => {
  const extensionName = fc
    .stringMatching(/^[a-z0-9]{1,12}$/)
    .filter((n) => !(n in attrs) && !['data', 'datacontenttype', 'dataschema', 'subject', 'time'].includes(n));
  /** Any code points but the noncharacters the String type disallows (spec.md, Type System): those become U+FFFD. */
  const attributeString = (minLength = 0) =>
    fc
      .string({ unit: 'binary', minLength })
      .map((s) =>
        s.replace(
          /[\uFDD0-\uFDEF\uFFFE\uFFFF]|[\uD83F\uD87F\uD8BF\uD8FF\uD93F\uD97F\uD9BF\uD9FF\uDA3F\uDA7F\uDABF\uDAFF\uDB3F\uDB7F\uDBBF\uDBFF][\uDFFE\uDFFF]/g,
          '\uFFFD',
        ),
      );
  const arbitraryEvent = fc.record({
    id: attributeString(1),
    subject: fc.option(attributeString(1), { nil: undefined }),
    extensions: fc.dictionary(extensionName, attributeString(), { maxKeys: 4 }),
    data: fc.oneof(
      fc.constant<EventData>({ kind: 'none' }),
      fc.uint8Array({ minLength: 1 }).map((b): EventData => ({ kind: 'bytes', bytes: Buffer.from(b) })),
      fc.jsonValue().map((v): EventData => ({ kind: 'json', value: JSON.parse(JSON.stringify(v)) })),
    ),
  });

  it('a binary message parses back to the same attributes and payload bytes', () => {
    fc.assert(
      fc.property(arbitraryEvent, ({ id, subject, extensions, data }) => {
        const event = ev(data, { ...extensions, id, ...(subject !== undefined ? { subject } : {}) });
        const msg = toBinaryMessage(event);
        // node:http hands the server header values as latin1 strings; encoded values are ASCII, so the same.
        const headers = Object.fromEntries(Object.entries(msg.headers).map(([k, v]) => [k, [v]]));
        const [parsed] = parseHttpMessage({ headers, body: msg.body }).events;
        const expected = { ...event.attributes, ...(msg.headers['content-type'] ? { datacontenttype: msg.headers['content-type'] } : {}) };
        expect(parsed!.attributes).toEqual(expected);
        expect(dataBytes(parsed!).body).toEqual(dataBytes(event).body);
      }),
      { numRuns: 500 },
    );
  });

  it('a structured message parses back to an event with the same structured form', () => {
    fc.assert(
      fc.property(arbitraryEvent, ({ id, extensions, data }) => {
        const event = ev(data, { ...extensions, id });
        const msg = toStructuredMessage(event);
        const [parsed] = parseHttpMessage({ headers: { 'content-type': [msg.headers['content-type']!] }, body: msg.body }).events;
        expect(toStructured(parsed!)).toEqual(toStructured(event));
      }),
      { numRuns: 500 },
    );
  });
});

describe('text data too large to write as a JSON string', () => {
  it('renders 96 MiB of control characters as data_base64, every byte kept (was: RangeError, a 500 on the page and lookup)', () => {
    const raw = Buffer.alloc(96 * 1024 * 1024, 0x01);
    const out = toStructured(ev({ kind: 'bytes', bytes: raw }, { datacontenttype: 'text/plain' }));
    expect(out.data).toBeUndefined();
    const json = JSON.stringify(out);
    const back = Buffer.from((JSON.parse(json) as { data_base64: string }).data_base64, 'base64');
    expect(back.equals(raw)).toBe(true);
  });

  it('keeps 96 MiB of newlines as text: each escapes to two characters, which fit (re-probe)', () => {
    const raw = Buffer.alloc(96 * 1024 * 1024, 0x0a);
    const out = toStructured(ev({ kind: 'bytes', bytes: raw }, { datacontenttype: 'text/plain' }));
    expect(out.data_base64).toBeUndefined();
    expect((out.data as string).length).toBe(raw.length);
  });

  it('keeps large text as text when its escapes fit', () => {
    const text = 'a'.repeat(96 * 1024 * 1024);
    expect(toStructured(ev(bytes(text), { datacontenttype: 'text/plain' })).data).toBe(text);
  });
});
