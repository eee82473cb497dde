import { useGatewayForFile } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';

/**
 * What a hostile probe of CloudEvents data found: data the gateway stored and then could not give
 * back as it was sent (or could not give back at all). Each event is read back with GET /events.
 */
const gw = useGatewayForFile({ HERALD_PARTITIONS: '2' });
let n = 0;
const nextId = (tag: string) => `${tag}-${++n}`;
const ce = (id: string, extra: Record<string, string> = {}) => ({
  'ce-specversion': '1.0',
  'ce-id': id,
  'ce-source': '/fidelity',
  'ce-type': 'com.example.fidelity',
  ...extra,
});
const structured = (event: Record<string, unknown>) =>
  postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(event));

async function readBack(id: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${gw.url}/events?${new URLSearchParams({ source: '/fidelity', id })}`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { event: Record<string, unknown> }).event;
}

describe('binary-mode JSON data', () => {
  const DEPTH = 20_000;
  const deep = '['.repeat(DEPTH) + ']'.repeat(DEPTH);

  it('is refused past HERALD_MAX_JSON_DEPTH when only a ce-datacontenttype header declares it JSON', async () => {
    // Stored, it was a 202 whose reads answered 500 and whose structured delivery killed the delivery thread.
    const res = await postEventsRaw(gw.url, ce(nextId('deep'), { 'ce-datacontenttype': 'application/json' }), deep);
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('invalid_event');
    expect(res.body.errors).toEqual([
      expect.objectContaining({ attribute: 'data', message: expect.stringContaining('HERALD_MAX_JSON_DEPTH') }),
    ]);
  });

  it.each([
    ['an exponent', '{"n":1e400}'],
    ['a negative exponent sign on a huge number', '[-1E+999]'],
    ['400 digits', `{"n":${'9'.repeat(400)}}`],
  ])('is refused when a number holds %s beyond a double (read back, it would have become null)', async (_what, body) => {
    const res = await postEventsRaw(gw.url, ce(nextId('inf'), { 'content-type': 'application/json' }), body);
    expect(res.status).toBe(400);
    expect(res.body.errors).toEqual([expect.objectContaining({ attribute: 'data', message: expect.stringContaining('too large') })]);
  });

  it('keeps numbers a double holds, exponents and strings that look like numbers included', async () => {
    const id = nextId('num');
    const body = '{"a":1e2,"b":-2.5E-3,"c":"1e400","d":[0,1.5]}';
    expect((await postEventsRaw(gw.url, ce(id, { 'content-type': 'application/json' }), body)).status).toBe(202);
    expect((await readBack(id)).data).toEqual({ a: 100, b: -0.0025, c: '1e400', d: [0, 1.5] });
  });

  it('that is not JSON after all is stored and read back as data_base64, byte for byte', async () => {
    const id = nextId('notjson');
    const body = Buffer.from('{"n": 1e');
    expect((await postEventsRaw(gw.url, ce(id, { 'content-type': 'application/json' }), body)).status).toBe(202);
    expect((await readBack(id)).data_base64).toBe(body.toString('base64'));
  });
});

describe('binary-mode text in a charset other than UTF-8', () => {
  it.each([
    ['text/plain; charset=iso-8859-1', Buffer.from([0xc3, 0xa9])], // "Ã©" in Latin-1, "é" if misread as UTF-8
    ['text/plain; charset="UTF-16LE"', Buffer.from('hi', 'utf16le')],
    ['application/json; charset=utf-16', Buffer.from('{"a":1}', 'utf16le')],
  ])('%s is read back as data_base64 of the bytes sent, not decoded as UTF-8', async (contentType, body) => {
    const id = nextId('charset');
    expect((await postEventsRaw(gw.url, ce(id, { 'content-type': contentType }), body)).status).toBe(202);
    const event = await readBack(id);
    expect(event.data).toBeUndefined();
    expect(event.data_base64).toBe(body.toString('base64'));
    expect(event.datacontenttype).toBe(contentType);
  });

  it('UTF-8 and US-ASCII declared text is still read back as text', async () => {
    const id = nextId('utf8');
    expect((await postEventsRaw(gw.url, ce(id, { 'content-type': 'text/plain; charset=UTF-8' }), Buffer.from('é'))).status).toBe(202);
    expect((await readBack(id)).data).toBe('é');
  });
});

describe('structured and batch bodies in a charset other than UTF-8', () => {
  const event = (id: string) => ({ specversion: '1.0', id, source: '/fidelity', type: 'com.example.fidelity', data: 'PLACEHOLDER' });
  // Latin-1 "Ã©" is also valid UTF-8 ("é"): read as UTF-8 it was stored changed, with a 202.
  const latin1 = (json: string) =>
    Buffer.concat(
      json.split('PLACEHOLDER').flatMap((part, i) => (i ? [Buffer.from([0xc3, 0xa9]), Buffer.from(part)] : [Buffer.from(part)])),
    );

  it.each([
    ['application/cloudevents+json; charset=iso-8859-1', (id: string) => latin1(JSON.stringify(event(id)))],
    ['application/cloudevents-batch+json; charset="UTF-16"', (id: string) => Buffer.from(JSON.stringify([event(id)]), 'utf16le')],
  ])('%s is a 415 that stores nothing', async (contentType, body) => {
    const id = nextId('json-charset');
    const res = await postEventsRaw(gw.url, { 'content-type': contentType }, body(id));
    expect(res.status).toBe(415);
    expect(res.body.code).toBe('unsupported_media_type');
    expect(res.body.errors).toEqual([expect.objectContaining({ attribute: 'content-type' })]);
    expect((await fetch(`${gw.url}/events?${new URLSearchParams({ source: '/fidelity', id })}`)).status).toBe(404);
  });

  it('utf-8 and us-ascii are accepted', async () => {
    for (const charset of ['UTF-8', 'us-ascii']) {
      const id = nextId('json-charset');
      const res = await postEventsRaw(
        gw.url,
        { 'content-type': `application/cloudevents+json; charset=${charset}` },
        JSON.stringify({ ...event(id), data: 'é' }),
      );
      expect(res.status).toBe(202);
      expect((await readBack(id)).data).toBe('é');
    }
  });
});

describe('structured text data', () => {
  it('holding a lone surrogate is refused: binary delivery sends UTF-8, which cannot carry it', async () => {
    const res = await structured({
      specversion: '1.0',
      id: nextId('surrogate'),
      source: '/fidelity',
      type: 'com.example.fidelity',
      datacontenttype: 'text/plain',
      data: 'a\ud800b',
    });
    expect(res.status).toBe(400);
    expect(res.body.errors).toEqual([expect.objectContaining({ attribute: 'data', message: expect.stringContaining('lone surrogate') })]);
  });

  it('holding a lone surrogate as a JSON string is kept (JSON escapes it)', async () => {
    const id = nextId('surrogate-json');
    const res = await structured({ specversion: '1.0', id, source: '/fidelity', type: 'com.example.fidelity', data: 'a\ud800b' });
    expect(res.status).toBe(202);
    expect((await readBack(id)).data).toBe('a\ud800b');
  });
});
