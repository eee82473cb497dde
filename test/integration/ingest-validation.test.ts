import fc from 'fast-check';
import request from 'supertest';
import { encodeHeaderValue } from '../../src/cloudevents/headers';
import { useGatewayForFile } from '../helpers/gateway';
import { postEventsRaw, type RawReply as Reply } from '../helpers/http';

const gw = useGatewayForFile();
let seq = 0;
const nextId = () => `val-${++seq}`;

/** POST /events with headers and body exactly as given (no client-side serialisation); an empty answer has no body. */
const post = (headers: Record<string, string>, body: string | Buffer = '') =>
  postEventsRaw(gw.url, headers, body, { allowEmptyBody: true });

const STRUCTURED = 'application/cloudevents+json';
const base = (id = nextId()) => ({ specversion: '1.0', id, source: '/validation', type: 'com.example.validation' });
const postStructured = (event: unknown) => post({ 'content-type': STRUCTURED }, JSON.stringify(event));
/** Binary mode: every attribute becomes an encoded ce- header (null means "leave the header out"). */
const postBinary = (attributes: Record<string, unknown>) =>
  post(
    Object.fromEntries(
      Object.entries(attributes)
        .filter(([, v]) => v !== null)
        .map(([k, v]) => [`ce-${k}`, encodeHeaderValue(v as string)]),
    ),
  );
const heads = async () => (await request(gw.url).get('/partitions')).body;
const readBack = async (source: string, id: string) => (await request(gw.url).get('/events').query({ source, id })).body.event;

function expectProblem(res: Reply, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.contentType).toBe('application/problem+json');
  expect(res.body).toEqual({
    type: `urn:herald:problem:${code}`,
    title: expect.any(String),
    status,
    detail: expect.any(String),
    code,
    errors: expect.any(Array),
  });
  expect(res.body.errors.length).toBeGreaterThan(0);
}

/** Sends a request that must be refused with 400 naming `attribute`, and checks no partition head moved. */
async function expectRefused(send: () => Promise<Reply>, attribute: string | undefined) {
  const before = await heads();
  const res = await send();
  expectProblem(res, 400, 'invalid_event');
  if (attribute !== undefined) expect(res.body.errors).toContainEqual({ attribute, message: expect.any(String) });
  for (const e of res.body.errors) expect(e).not.toHaveProperty('index');
  expect(await heads()).toEqual(before);
}

async function expectAccepted(res: Reply, attributes: Record<string, unknown>) {
  expect(res.status).toBe(202);
  expect(res.body.results).toEqual([
    { id: attributes.id, source: attributes.source, partition: expect.any(Number), offset: expect.any(Number), duplicate: false },
  ]);
  expect(await readBack(attributes.source as string, attributes.id as string)).toEqual(attributes);
}

/** Rules a binary-mode request can express as well as a structured one: [label, attributes to merge, attribute named]. */
const refusedInBothModes: [string, Record<string, unknown>, string][] = [
  ['a missing id', { id: null }, 'id'],
  ['a missing source', { source: null }, 'source'],
  ['a missing specversion', { specversion: null }, 'specversion'],
  ['a missing type', { type: null }, 'type'],
  ['an empty id', { id: '' }, 'id'],
  ['an empty source', { source: '' }, 'source'],
  ['an empty type', { type: '' }, 'type'],
  ['specversion 0.3', { specversion: '0.3' }, 'specversion'],
  ['specversion 1', { specversion: '1' }, 'specversion'],
  ['specversion 2.0', { specversion: '2.0' }, 'specversion'],
  ['a time without offset', { time: '2018-04-05T03:56:24' }, 'time'],
  ['a time on Feb 29 of a non-leap year', { time: '2023-02-29T00:00:00Z' }, 'time'],
  ['a time of hour 24', { time: '2018-04-05T24:00:00Z' }, 'time'],
  ['an HTTP-date time', { time: 'Thu, 05 Apr 2018 03:56:24 GMT' }, 'time'],
  ['a relative dataschema', { dataschema: '/schemas/v1.json' }, 'dataschema'],
  ['a dataschema with a space', { dataschema: 'https://example.com/a schema' }, 'dataschema'],
  ['a source with a space', { source: '/has space' }, 'source'],
  ['a source with non-ASCII', { source: '/café' }, 'source'],
  ['a source with a malformed scheme', { source: '1http://x' }, 'source'],
  ['an empty subject', { subject: '' }, 'subject'],
  ['an attribute name with an underscore', { bad_name: 'x' }, 'bad_name'],
  ['an attribute name with a dash', { 'bad-name': 'x' }, 'bad-name'],
];

const acceptedInBothModes: [string, Record<string, unknown>][] = [
  ['only the required attributes', {}],
  ['a UTC time', { time: '2018-04-05T03:56:24Z' }],
  ['a time with fractional seconds and an offset', { time: '2024-02-29T12:00:00.123456789+05:30' }],
  ['a leap second', { time: '2016-12-31T23:59:60Z' }],
  ['an absolute dataschema', { dataschema: 'https://example.com/schemas/v1.json' }],
  ['a URN dataschema', { dataschema: 'urn:example:schema:1' }],
  ['a URN source', { source: 'urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66' }],
  ['an absolute URI source', { source: 'https://example.com/orders?x=1#y' }],
  ['a network-path source', { source: '//github.com/cloudevents' }],
  ['a relative source', { source: 'relative/path' }],
  ['a subject', { subject: 'Hello, 🌎!' }],
  ['string extensions, including an empty one', { comexampleext: 'value', empty: '', a1: 'x' }],
  ['a datacontenttype', { datacontenttype: 'application/json' }],
];

describe('validation in structured mode', () => {
  it.each(refusedInBothModes)('answers 400 for %s and stores nothing', async (_label, change) => {
    // A null member is how the JSON format says "absent", so { id: null } is a missing id here too.
    await expectRefused(() => postStructured({ ...base(), ...change }), Object.keys(change)[0]);
  });

  it.each(acceptedInBothModes)('accepts an event with %s', async (_label, change) => {
    const event = { ...base(), ...change };
    await expectAccepted(await postStructured(event), event);
  });

  it.each<[string, unknown]>([
    ['a string', 'text'],
    ['true', true],
    ['false', false],
    ['zero', 0],
    ['the largest int32', 2147483647],
    ['the smallest int32', -2147483648],
  ])('accepts and keeps %s as an extension value', async (_label, value) => {
    const event = { ...base(), ext: value };
    await expectAccepted(await postStructured(event), event);
  });

  it.each<[string, unknown]>([
    ['an object', { a: 1 }],
    ['an array', ['a']],
    ['a float', 1.5],
    ['an int above int32', 2147483648],
    ['an int below int32', -2147483649],
    ['a huge number', 1e300],
  ])('answers 400 for %s as an extension value', async (_label, value) => {
    await expectRefused(() => postStructured({ ...base(), ext: value }), 'ext');
  });

  it.each(['Upper', 'camelCase', 'dotted.name', 'ümlaut'])('answers 400 for the attribute name %s', async (name) => {
    await expectRefused(() => postStructured({ ...base(), [name]: 'x' }), name);
  });

  it.each(['id', 'source', 'specversion', 'type', 'time', 'subject', 'dataschema', 'datacontenttype'])(
    'answers 400 when %s is not a string',
    async (name) => {
      await expectRefused(() => postStructured({ ...base(), [name]: 1 }), name);
    },
  );

  it('treats null attribute values as absent', async () => {
    const event = base();
    await expectAccepted(
      await postStructured({ ...event, subject: null, time: null, dataschema: null, datacontenttype: null, ext: null }),
      event,
    );
    await expectRefused(() => postStructured({ ...base(), id: null }), 'id');
    await expectRefused(() => postStructured({ ...base(), type: null }), 'type');
  });

  it('answers 400 when data and data_base64 are both present', async () => {
    await expectRefused(() => postStructured({ ...base(), data: { a: 1 }, data_base64: 'QQ==' }), 'data_base64');
  });

  it.each(['QQ', 'QQ=', 'not base64!', 'SGVsbG8=\n', '-_8='])('answers 400 for data_base64 %j', async (value) => {
    await expectRefused(() => postStructured({ ...base(), data_base64: value }), 'data_base64');
  });

  it('answers 400 for a data_base64 that is not a string', async () => {
    await expectRefused(() => postStructured({ ...base(), data_base64: 65 }), 'data_base64');
  });

  it('accepts a valid data_base64', async () => {
    const event = { ...base(), datacontenttype: 'application/octet-stream', data_base64: 'AAEC/w==' };
    await expectAccepted(await postStructured(event), event);
  });

  it('answers 400 with every violation of one event listed', async () => {
    const before = await heads();
    const res = await postStructured({ specversion: '0.3', source: 'a b', type: '', time: 'now', Ext: 1, data: 1, data_base64: 'QQ==' });
    expectProblem(res, 400, 'invalid_event');
    expect(res.body.errors.map((e: { attribute: string }) => e.attribute).sort()).toEqual([
      'Ext',
      'data_base64',
      'id',
      'source',
      'specversion',
      'time',
      'type',
    ]);
    expect(await heads()).toEqual(before);
  });

  it.each<[string, string | Buffer]>([
    ['a body that is not JSON', '{"specversion":'],
    ['an empty body', ''],
    ['a body that is not UTF-8', Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x7d])],
    ['a JSON string', '"event"'],
    ['a JSON array', JSON.stringify([base()])],
    ['JSON null', 'null'],
  ])('answers 400 for %s', async (_label, body) => {
    await expectRefused(() => post({ 'content-type': STRUCTURED }, body), undefined);
  });

  it('answers 400 for a "__proto__" member instead of inheriting attributes from it', async () => {
    const { id, ...rest } = base();
    const body = JSON.stringify(rest).replace(/^\{/, `{"__proto__":{"id":"${id}"},`);
    await expectRefused(() => post({ 'content-type': STRUCTURED }, body), '__proto__');
  });
});

describe('lone surrogates (JSON escapes UTF-8 cannot carry)', () => {
  it('answers 400 for a lone surrogate in id, in a structured event and in a batch, and stores nothing', async () => {
    const id = `${nextId()}-`;
    await expectRefused(
      () => post({ 'content-type': STRUCTURED }, JSON.stringify(base()).replace(/"id":"[^"]*"/, `"id":"${id}\\ud800"`)),
      'id',
    );
    const batch = `[${JSON.stringify(base())},${JSON.stringify(base()).replace(/"type":"[^"]*"/, '"type":"t\\udfff"')}]`;
    const before = await heads();
    const res = await post({ 'content-type': 'application/cloudevents-batch+json' }, batch);
    expectProblem(res, 400, 'invalid_event');
    expect(res.body.errors).toEqual([{ index: 1, attribute: 'type', message: expect.stringContaining('valid Unicode') }]);
    expect(await heads()).toEqual(before);
  });
});

describe('validation in binary mode', () => {
  it.each(refusedInBothModes)('answers 400 for %s and stores nothing', async (_label, change) => {
    await expectRefused(() => postBinary({ ...base(), ...change }), Object.keys(change)[0]);
  });

  it.each(acceptedInBothModes)('accepts an event with %s', async (_label, change) => {
    const { datacontenttype, ...headers } = { ...base(), ...change } as Record<string, unknown>;
    const res =
      datacontenttype === undefined
        ? await postBinary(headers)
        : await post({
            ...Object.fromEntries(Object.entries(headers).map(([k, v]) => [`ce-${k}`, encodeHeaderValue(v as string)])),
            'content-type': datacontenttype as string,
          });
    await expectAccepted(res, { ...base(headers.id as string), ...change });
  });

  it('answers 400 for a ce-data header, since "data" cannot be an attribute name', async () => {
    await expectRefused(() => postBinary({ ...base(), data: 'x' }), 'data');
  });

  it('answers 400 for a Content-Type that is not a media type', async () => {
    await expectRefused(
      () => post({ 'ce-specversion': '1.0', 'ce-id': nextId(), 'ce-source': '/v', 'ce-type': 't', 'content-type': 'nonsense' }, 'x'),
      'datacontenttype',
    );
  });

  it('answers 400 for a "ce-__proto__" header instead of ignoring it', async () => {
    await expectRefused(() => postBinary({ ...base(), ['__proto__']: 'x' }), '__proto__');
  });

  it('answers 400 for a request without any ce- headers', async () => {
    const before = await heads();
    const res = await post({ 'content-type': 'application/json' }, '{"hello":"world"}');
    expectProblem(res, 400, 'invalid_event');
    expect(res.body.errors.map((e: { attribute: string }) => e.attribute).sort()).toEqual(['id', 'source', 'specversion', 'type']);
    expect(await heads()).toEqual(before);
  });
});

describe('arbitrary input', () => {
  it('answers every request with 2xx or 4xx, never 500, and a refusal stores nothing', async () => {
    const contentType = fc.constantFrom(
      'application/cloudevents+json',
      'application/cloudevents-batch+json',
      'application/cloudevents+xml',
      'application/json',
      'text/plain',
      'no/such; type',
    );
    const attribute = fc.oneof(
      fc.string(),
      fc.constantFrom('1.0', '/s', '2018-04-05T03:56:24Z', 'https://x/y'),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.jsonValue(),
    );
    const event = fc.record(
      {
        specversion: attribute,
        id: attribute,
        source: attribute,
        type: attribute,
        time: attribute,
        ext: attribute,
        data: fc.jsonValue(),
        data_base64: attribute,
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      event.map((e) => JSON.stringify(e)),
      fc.array(event, { maxLength: 3 }).map((e) => JSON.stringify(e)),
      fc.string(),
      fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
    );
    const ceHeaders = fc.dictionary(
      fc.constantFrom('ce-id', 'ce-source', 'ce-type', 'ce-specversion', 'ce-time', 'ce-x', 'ce-data'),
      fc.string({ unit: 'binary' }).map(encodeHeaderValue),
      { maxKeys: 5 },
    );
    await fc.assert(
      fc.asyncProperty(contentType, ceHeaders, body, async (ct, headers, b) => {
        const before = await heads();
        const res = await post({ ...headers, 'content-type': ct }, b);
        expect(res.status).toBeGreaterThanOrEqual(200);
        expect(res.status).toBeLessThan(500);
        if (res.status >= 400) {
          expect(res.contentType).toBe('application/problem+json');
          expect(await heads()).toEqual(before);
        }
      }),
      { numRuns: 150 },
    );
  });
});
