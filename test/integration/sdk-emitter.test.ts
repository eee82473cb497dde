import { CloudEvent, HTTP, Mode, emitterFor, httpTransport, type Message } from 'cloudevents';
import request from 'supertest';
import { useGatewayForFile } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';

/** Events built and serialised by the official CloudEvents JavaScript SDK must be accepted and read back identical. */

const gw = useGatewayForFile();
let seq = 0;
const nextId = () => `sdk-${++seq}`;

const TIME = '2024-01-02T03:04:05.678Z';
const extensions = { comexampleext: 'value', extbool: true, extint: 42 };

/** Sends an SDK message as is (the SDK's own transport does not report the status code). */
function send(message: Message) {
  // A binary-mode event without data has no body at all.
  const body = message.body === undefined ? Buffer.alloc(0) : Buffer.from(message.body as string | Uint8Array);
  return postEventsRaw(gw.url, message.headers as Record<string, string>, body);
}

async function readBack(event: CloudEvent<unknown>): Promise<Record<string, unknown>> {
  const res = await request(gw.url).get('/events').query({ source: event.source, id: event.id });
  expect(res.status).toBe(200);
  return res.body.event;
}

/** The read-back event, deserialised again by the SDK from the JSON format. */
const asSdkEvent = (structured: Record<string, unknown>) =>
  HTTP.toEvent({ headers: { 'content-type': 'application/cloudevents+json' }, body: JSON.stringify(structured) }) as CloudEvent<unknown>;

/** Binary-mode headers carry every attribute as a string, so typed extensions come back as their string form. */
const asHeaderStrings = (ext: Record<string, unknown>) => Object.fromEntries(Object.entries(ext).map(([k, v]) => [k, String(v)]));

const base = (id: string) => ({
  id,
  source: '/sdk',
  type: 'com.example.sdk',
  time: TIME,
  subject: 'order 7',
  dataschema: 'https://example.com/schema.json',
});
const wireAttributes = (id: string) => ({ specversion: '1.0', ...base(id) });

describe('CloudEvents SDK emitter over HTTP', () => {
  it('delivers a binary-mode event with JSON data and extensions through emitterFor(httpTransport)', async () => {
    const event = new CloudEvent({ ...base(nextId()), data: { hello: 'world', list: [1, 2, 3] }, ...extensions });
    const emit = emitterFor(httpTransport(`${gw.url}/events`), { mode: Mode.BINARY });
    const response = (await emit(event)) as { body: string };
    expect(JSON.parse(response.body).results).toEqual([
      { id: event.id, source: '/sdk', partition: expect.any(Number), offset: expect.any(Number), duplicate: false },
    ]);
    expect(await readBack(event)).toEqual({
      ...wireAttributes(event.id),
      ...asHeaderStrings(extensions),
      datacontenttype: 'application/json; charset=utf-8',
      data: { hello: 'world', list: [1, 2, 3] },
    });
  });

  it('delivers a structured-mode event with JSON data and typed extensions through emitterFor(httpTransport)', async () => {
    const event = new CloudEvent({ ...base(nextId()), datacontenttype: 'application/json', data: { hello: 'world' }, ...extensions });
    const emit = emitterFor(httpTransport(`${gw.url}/events`), { mode: Mode.STRUCTURED });
    const response = (await emit(event)) as { body: string };
    expect(JSON.parse(response.body).results[0]).toMatchObject({ id: event.id, duplicate: false });
    const stored = await readBack(event);
    expect(stored).toEqual(JSON.parse(event.toString()));
    expect(asSdkEvent(stored).toJSON()).toEqual(event.toJSON());
  });
});

describe('CloudEvents SDK messages', () => {
  it('accepts attribute values the SDK sends without percent-encoding them, a literal % included', async () => {
    const event = new CloudEvent({ ...base(nextId()), subject: 'Save 50% off, 100%25 sure', data: { ok: true } });
    const message = HTTP.binary(event);
    expect((message.headers as Record<string, string>)['ce-subject']).toBe('Save 50% off, 100%25 sure'); // sent as is
    const res = await send(message);
    expect(res.status).toBe(202);
    // A valid escape is still decoded, as the HTTP binding says (a sender meaning "%25" must encode it as %2525).
    expect((await readBack(event)).subject).toBe('Save 50% off, 100% sure');
  });

  it.each([Mode.BINARY, Mode.STRUCTURED])(
    'accepts string data with a text content type in %s mode and reads it back as the same text',
    async (mode) => {
      const event = new CloudEvent({ ...base(nextId()), datacontenttype: 'text/plain; charset=utf-8', data: 'Hello, 🌎!\nsecond line' });
      const res = await send(mode === Mode.BINARY ? HTTP.binary(event) : HTTP.structured(event));
      expect(res.status).toBe(202);
      const stored = await readBack(event);
      expect(stored).toEqual({
        ...wireAttributes(event.id),
        datacontenttype: 'text/plain; charset=utf-8',
        data: 'Hello, 🌎!\nsecond line',
      });
      expect(asSdkEvent(stored).data).toBe(event.data);
    },
  );

  it.each([
    ['Uint8Array', new Uint8Array([0, 1, 2, 127, 128, 254, 255])],
    ['Buffer', Buffer.from('binary\u0000payload\u00ff', 'latin1')],
  ])('accepts %s data in binary mode byte for byte and reads it back as data_base64', async (_label, data) => {
    const event = new CloudEvent({ ...base(nextId()), datacontenttype: 'application/octet-stream', data });
    const message = HTTP.binary(event);
    const res = await send(message);
    expect(res.status).toBe(202);
    const stored = await readBack(event);
    expect(stored).toEqual({
      ...wireAttributes(event.id),
      datacontenttype: 'application/octet-stream',
      data_base64: Buffer.from(data).toString('base64'),
    });
    expect(stored.data_base64).toBe(event.data_base64);
  });

  it.each([
    ['Uint8Array', new Uint8Array([0, 1, 2, 127, 128, 254, 255])],
    ['Buffer', Buffer.from([9, 8, 7, 0, 255])],
  ])('accepts %s data in structured mode as data_base64 and reads it back unchanged', async (_label, data) => {
    const event = new CloudEvent({ ...base(nextId()), datacontenttype: 'application/octet-stream', data, ...extensions });
    const res = await send(HTTP.structured(event));
    expect(res.status).toBe(202);
    const stored = await readBack(event);
    expect(stored).toEqual({
      ...wireAttributes(event.id),
      ...extensions,
      datacontenttype: 'application/octet-stream',
      data_base64: Buffer.from(data).toString('base64'),
    });
    expect(Buffer.from(asSdkEvent(stored).data as Uint8Array)).toEqual(Buffer.from(data));
  });

  it.each([Mode.BINARY, Mode.STRUCTURED])('accepts a minimal SDK event (generated id and time, no data) in %s mode', async (mode) => {
    const event = new CloudEvent({ source: '/sdk/minimal', type: 'com.example.sdk.minimal' });
    const message = mode === Mode.BINARY ? HTTP.binary(event) : HTTP.structured(event);
    expect((await send(message)).status).toBe(202);
    const stored = await readBack(event);
    const expected: Record<string, unknown> = {
      specversion: '1.0',
      id: event.id,
      source: '/sdk/minimal',
      type: 'com.example.sdk.minimal',
      time: event.time,
    };
    // In binary mode the SDK always sends a Content-Type, which becomes datacontenttype.
    if (mode === Mode.BINARY) expected.datacontenttype = 'application/json; charset=utf-8';
    expect(stored).toEqual(expected);
  });

  it('answers 200 with the original position when the SDK re-sends the same event in the other mode', async () => {
    const event = new CloudEvent({ ...base(nextId()), data: { n: 1 } });
    const first = await send(HTTP.structured(event));
    const again = await send(HTTP.binary(event));
    expect(first.status).toBe(202);
    expect(again.status).toBe(200);
    expect(again.body.results).toEqual([{ ...first.body.results[0], duplicate: true }]);
  });
});
