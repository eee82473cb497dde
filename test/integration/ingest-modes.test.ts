import net from 'node:net';
import request from 'supertest';
import { useGatewayForFile } from '../helpers/gateway';
import { postEventsRaw, type RawReply as Reply } from '../helpers/http';

const gw = useGatewayForFile();
let seq = 0;
const nextId = () => `modes-${++seq}`;

const ce = (id: string, extra: Record<string, string> = {}) => ({
  'ce-specversion': '1.0',
  'ce-id': id,
  'ce-source': '/modes',
  'ce-type': 'com.example.modes',
  ...extra,
});
const structured = (id: string, extra: Record<string, unknown> = {}) => ({
  specversion: '1.0',
  id,
  source: '/modes',
  type: 'com.example.modes',
  ...extra,
});

const postBinary = (headers: Record<string, string>, body: Buffer = Buffer.alloc(0)) => post(headers, body);
const postJson = (contentType: string, value: unknown) => post({ 'content-type': contentType }, JSON.stringify(value));
const readBack = async (id: string, source = '/modes') => {
  const res = await request(gw.url).get('/events').query({ source, id });
  expect(res.status).toBe(200);
  return res.body.event as Record<string, unknown>;
};
const heads = async () => (await request(gw.url).get('/partitions')).body;

/** Sends a request written out by hand over a plain socket; resolves with the status and body of the answer. */
function rawHttp(text: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(gw.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(text, 'latin1')); // Connection: close: the server ends it
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const reply = Buffer.concat(chunks).toString('utf8');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1]), body: reply.slice(reply.indexOf('\r\n\r\n') + 4) });
    });
  });
}

/** POST /events with headers and body exactly as given; an array header value is sent as that many header lines. */
const post = (headers: Record<string, string | string[]>, body: string | Buffer = '') => postEventsRaw(gw.url, headers, body);

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
  for (const e of res.body.errors) expect(typeof e.message).toBe('string');
}

describe('binary content mode', () => {
  it('stores the body byte for byte and its Content-Type as datacontenttype', async () => {
    const id = nextId();
    const body = Buffer.from([0, 1, 2, 127, 128, 254, 255]);
    const res = await postBinary({ ...ce(id), 'content-type': 'application/octet-stream' }, body);
    expect(res.status).toBe(202);
    expect(res.body).toEqual({
      results: [{ id, source: '/modes', partition: expect.any(Number), offset: expect.any(Number), duplicate: false }],
    });
    expect(await readBack(id)).toEqual({
      specversion: '1.0',
      id,
      source: '/modes',
      type: 'com.example.modes',
      datacontenttype: 'application/octet-stream',
      data_base64: body.toString('base64'),
    });
  });

  it('stores no datacontenttype and no data for a request without Content-Type or body', async () => {
    const id = nextId();
    expect((await postBinary(ce(id))).status).toBe(202);
    expect(await readBack(id)).toEqual({ specversion: '1.0', id, source: '/modes', type: 'com.example.modes' });
  });

  it('stores extension headers as string attributes and ignores other headers', async () => {
    const id = nextId();
    const res = await postBinary(
      { ...ce(id, { 'ce-comexampleext': 'value', 'ce-count': '5' }), 'x-other': 'ignored', 'content-type': 'text/plain' },
      Buffer.from('hi'),
    );
    expect(res.status).toBe(202);
    expect(await readBack(id)).toEqual({
      ...structured(id),
      comexampleext: 'value',
      count: '5',
      datacontenttype: 'text/plain',
      data: 'hi',
    });
  });

  it.each(['application/json', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'])(
    'treats Content-Type %s as binary mode',
    async (contentType) => {
      const id = nextId();
      const res = await postBinary({ ...ce(id), 'content-type': contentType }, Buffer.from('{}'));
      expect(res.status).toBe(202);
      expect((await readBack(id)).datacontenttype).toBe(contentType);
    },
  );

  it('unquotes a quoted-string header value, then percent-decodes it once', async () => {
    const id = nextId();
    const res = await postBinary(ce(id, { 'ce-subject': '"Hello,%20%F0%9F%8C%8E! \\"quoted\\""', 'ce-myext': '%2541' }));
    expect(res.status).toBe(202);
    expect(await readBack(id)).toMatchObject({ subject: 'Hello, 🌎! "quoted"', myext: '%41' });
  });

  it('decodes unescaped UTF-8 bytes in a header value as UTF-8', async () => {
    const id = nextId();
    const res = await postBinary(ce(id, { 'ce-subject': Buffer.from('café 🌎', 'utf8').toString('latin1') }));
    expect(res.status).toBe(202);
    expect((await readBack(id)).subject).toBe('café 🌎');
  });

  it.each([
    ['a percent-encoded invalid UTF-8 sequence', '%C3%28'],
    ['a lone continuation byte', '%80'],
    ['a raw byte that is not UTF-8', 'caf\u00e9'],
    ['a raw byte that is not UTF-8 next to a literal %', '50% caf\u00e9'],
    ['an escape decoding to invalid UTF-8 next to a literal %', '50% %FF'],
  ])('answers 400 for a header with %s and stores nothing', async (_label, value) => {
    const before = await heads();
    const res = await postBinary(ce(nextId(), { 'ce-subject': value }));
    expectProblem(res, 400, 'invalid_event');
    expect(res.body.errors).toEqual([{ attribute: 'subject', message: expect.any(String) }]);
    expect(await heads()).toEqual(before);
  });

  // The official JavaScript SDK (and curl users) send attribute values without percent-encoding them.
  it.each([
    ['a % followed by a space', '50% off', '50% off'],
    ['a % at the end', 'up 100%', 'up 100%'],
    ['a % followed by non-hex characters', '%G0 %zz', '%G0 %zz'],
    ['a % followed by one hex digit', 'a%2', 'a%2'],
    ['a % before a valid escape', '%%41', '%A'],
    ['unescaped UTF-8 with a literal %', Buffer.from('café 50% off', 'utf8').toString('latin1'), 'café 50% off'],
    ['a literal % next to valid escapes', 'caf%C3%A9 50% off', 'café 50% off'],
  ])('takes %s literally and decodes the rest', async (_label, value, expected) => {
    const id = nextId();
    const res = await postBinary(ce(id, { 'ce-subject': value }));
    expect(res.status).toBe(202);
    expect((await readBack(id)).subject).toBe(expected);
  });

  it('refuses a repeated ce-id sent after more than 2,000 other headers', async () => {
    const before = await heads();
    const lines = [
      ...Object.entries(ce(nextId())).map(([k, v]) => `${k}: ${v}`),
      ...Array.from({ length: 2000 }, () => 'x: 1'),
      'ce-id: second',
    ];
    const { status, body } = await rawHttp(
      `POST /events HTTP/1.1\r\nhost: x\r\n${lines.join('\r\n')}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`,
    );
    expect(status).toBe(400);
    expect(JSON.parse(body)).toMatchObject({
      code: 'invalid_event',
      errors: [{ attribute: 'id', message: expect.stringContaining('2 times') }],
    });
    expect(await heads()).toEqual(before);
  });

  it.each(['ce-id', 'ce-myext'])('answers 400 for a repeated %s header', async (name) => {
    const before = await heads();
    const headers: Record<string, string | string[]> = { ...ce(nextId()), [name]: ['one', 'two'] };
    const res = await post(headers);
    expectProblem(res, 400, 'invalid_event');
    expect(res.body.errors).toEqual([{ attribute: name.slice(3), message: expect.stringContaining('2 times') }]);
    expect(await heads()).toEqual(before);
  });

  it('answers 400 for a repeated Content-Type header', async () => {
    const res = await post({ ...ce(nextId()), 'content-type': ['text/plain', 'text/plain'] }, 'x');
    expectProblem(res, 400, 'invalid_event');
  });
});

describe('structured content mode', () => {
  it.each([
    'application/cloudevents+json',
    'application/cloudevents+json; charset=utf-8',
    'Application/CloudEvents+JSON; Charset=UTF-8',
    'APPLICATION/CLOUDEVENTS+JSON',
  ])('accepts Content-Type %s', async (contentType) => {
    const id = nextId();
    const res = await postJson(contentType, structured(id, { datacontenttype: 'application/json', data: { n: 1 } }));
    expect(res.status).toBe(202);
    expect(res.body.results).toEqual([
      { id, source: '/modes', partition: expect.any(Number), offset: expect.any(Number), duplicate: false },
    ]);
    expect(await readBack(id)).toEqual(structured(id, { datacontenttype: 'application/json', data: { n: 1 } }));
  });

  it('takes attributes from the body only, ignoring ce- headers', async () => {
    const id = nextId();
    const res = await post(
      { 'content-type': 'application/cloudevents+json', 'ce-id': 'header-id', 'ce-myext': 'x' },
      JSON.stringify(structured(id)),
    );
    expect(res.status).toBe(202);
    expect(await readBack(id)).toEqual(structured(id));
  });
});

describe('batch content mode', () => {
  it.each(['application/cloudevents-batch+json', 'Application/CloudEvents-Batch+JSON; charset=utf-8'])(
    'accepts Content-Type %s and answers in input order',
    async (contentType) => {
      const ids = [nextId(), nextId(), nextId()];
      const res = await postJson(
        contentType,
        ids.map((id) => structured(id)),
      );
      expect(res.status).toBe(202);
      expect(res.body.results.map((r: { id: string }) => r.id)).toEqual(ids);
      for (const id of ids) expect(await readBack(id)).toEqual(structured(id));
    },
  );
});

describe('unsupported event formats', () => {
  it.each([
    'application/cloudevents+xml',
    'application/cloudevents+avro',
    'Application/CloudEvents+Protobuf; charset=utf-8',
    // Read as binary mode before, so a 400 naming every attribute as missing.
    'application/cloudevents',
    'application/cloudevents-batch+xml',
  ])('answers 415 for %s and stores nothing', async (contentType) => {
    const before = await heads();
    const res = await post({ ...ce(nextId()), 'content-type': contentType }, '<event/>');
    expectProblem(res, 415, 'unsupported_media_type');
    expect(await heads()).toEqual(before);
  });
});

describe('read-back data representation', () => {
  it.each<[string, unknown]>([
    ['an object', { a: [1, 'two', null], b: { c: true } }],
    ['an array', [1, 2, 3]],
    ['a string', 'Hello, 🌎!'],
    ['a number', 42.5],
    ['a boolean', false],
    ['null', null],
  ])('returns structured data that is %s as the same JSON value', async (_label, data) => {
    const id = nextId();
    expect((await postJson('application/cloudevents+json', structured(id, { data }))).status).toBe(202);
    expect(await readBack(id)).toEqual(structured(id, { data }));
  });

  it('returns structured data_base64 as data_base64', async () => {
    const id = nextId();
    expect(
      (await postJson('application/cloudevents+json', structured(id, { datacontenttype: 'application/json', data_base64: 'eyJhIjoxfQ==' })))
        .status,
    ).toBe(202);
    expect(await readBack(id)).toEqual(structured(id, { datacontenttype: 'application/json', data_base64: 'eyJhIjoxfQ==' }));
  });

  it.each<[string, string, Record<string, unknown>]>([
    ['application/json', '{"a":1}', { data: { a: 1 } }],
    ['application/json; charset=utf-8', '"Hello, 🌎!"', { data: 'Hello, 🌎!' }],
    ['text/json', '[1,2]', { data: [1, 2] }],
    ['application/vnd.example+json', '{"v":true}', { data: { v: true } }],
    ['application/json', '{not json', { data_base64: Buffer.from('{not json').toString('base64') }],
    ['text/plain', 'Hello, World!\n', { data: 'Hello, World!\n' }],
    ['text/plain; charset=utf-8', 'Hello, 🌎!', { data: 'Hello, 🌎!' }],
    ['text/csv', 'a,b\n1,2', { data: 'a,b\n1,2' }],
    ['application/xml', '<msg>Hello</msg>', { data: '<msg>Hello</msg>' }],
    ['text/xml', '<msg/>', { data: '<msg/>' }],
    ['image/svg+xml', '<svg/>', { data: '<svg/>' }],
    ['application/octet-stream', 'raw', { data_base64: Buffer.from('raw').toString('base64') }],
    ['image/png', '\u0089PNG', { data_base64: Buffer.from('\u0089PNG').toString('base64') }],
  ])('returns a binary-mode body with Content-Type %s in the documented form', async (contentType, body, expected) => {
    const id = nextId();
    expect((await postBinary({ ...ce(id), 'content-type': contentType }, Buffer.from(body, 'utf8'))).status).toBe(202);
    expect(await readBack(id)).toEqual({ ...structured(id), datacontenttype: contentType, ...expected });
  });

  it('returns a text body that is not UTF-8 as data_base64 so no byte is lost', async () => {
    const id = nextId();
    const body = Buffer.from([0x63, 0x61, 0x66, 0xe9]);
    expect((await postBinary({ ...ce(id), 'content-type': 'text/plain; charset=iso-8859-1' }, body)).status).toBe(202);
    expect((await readBack(id)).data_base64).toBe(body.toString('base64'));
  });
});
