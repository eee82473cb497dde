import { HTTP, type CloudEvent } from 'cloudevents';
import { createHmac } from 'node:crypto';
import request from 'supertest';
import { Webhook } from 'standardwebhooks';
import { useDeliveryFixture } from '../helpers/delivery';
import { waitFor, type ReceivedRequest } from '../helpers/receiver';

/**
 * What a receiver gets: the event exactly as ingested (every attribute, every
 * extension, the data bytes) in binary or structured mode, signed per
 * Standard Webhooks, with Herald's headers. Checked with the official SDK and
 * the reference verifier.
 */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });
const subs: Record<'binary' | 'structured', { id: string; secret: string }> = {} as never;
const TIME = '2024-01-02T03:04:05.678Z';
const BYTES = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0x0a, 0x0d, 0xc3]);
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00]);
const base = (id: string) => ({ specversion: '1.0', id, source: '/fmt', type: 'fmt.test', time: TIME, partitionkey: 'fmt' });

/** Each event in the JSON format, as the gateway must hand it back. */
const expected: Record<string, Record<string, unknown>> = {
  json: {
    ...base('json'),
    subject: 'order 7',
    dataschema: 'https://example.com/s.json',
    datacontenttype: 'application/json',
    comexampleext: 'value',
    extint: 42,
    extbool: true,
    data: { hello: 'world', list: [1, 2, 3] },
  },
  bytes: {
    ...base('bytes'),
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    datacontenttype: 'application/octet-stream',
    data_base64: BYTES.toString('base64'),
  },
  text: { ...base('text'), datacontenttype: 'text/plain; charset=utf-8', data: 'hello, wörld' },
  nodata: { ...base('nodata'), comexampleext: 'no data here' },
  base64: { ...base('base64'), datacontenttype: 'image/png', data_base64: PNG.toString('base64') },
  encoded: { ...base('encoded'), comment: 'hello wörld 100% "quoted"', datacontenttype: 'application/json', data: [1, 'two', null] },
  // Bytes with no datacontenttype: binary mode would have to invent a Content-Type (it sent application/octet-stream).
  untyped: { ...base('untyped'), data_base64: PNG.toString('base64') },
  // A 20 KB extension: as a ce- header, the receiver (Node, 16 KiB of headers) answered 431 and it was dead-lettered.
  bigext: { ...base('bigext'), bigext: 'x'.repeat(20_000), datacontenttype: 'application/json', data: { a: 1 } },
  // Trace values of 9,000 characters (ingest checks only that they are strings): copied to W3C `traceparent`
  // and `tracestate` headers as well, the header block passed 16 KiB, the receiver answered 431 and the event
  // was dead-lettered (API probe).
  bigtrace: {
    ...base('bigtrace'),
    traceparent: 'p'.repeat(9000),
    tracestate: 's'.repeat(9000),
    datacontenttype: 'application/json',
    data: 1,
  },
  // Empty data: in binary mode an empty body, which reads back as no data (spec probe: was sent so).
  emptytext: { ...base('emptytext'), datacontenttype: 'text/plain', data: '' },
  emptybytes: { ...base('emptybytes'), datacontenttype: 'application/octet-stream', data_base64: '' },
};
const order = ['json', 'bytes', 'text', 'nodata', 'base64', 'encoded', 'untyped', 'bigext', 'bigtrace', 'emptytext', 'emptybytes'];
/** Events binary mode cannot carry as they are: they go structured whatever the subscription's format. */
const alwaysStructured = new Set(['nodata', 'untyped', 'bigext', 'bigtrace', 'emptytext', 'emptybytes']);
const appended: Record<string, { partition: number; offset: number }> = {};

async function ingest(name: string): Promise<void> {
  let res: request.Response;
  if (name === 'bytes') {
    const { data_base64: _d, datacontenttype, ...attrs } = expected.bytes!;
    const headers = Object.fromEntries(Object.entries(attrs).map(([k, v]) => [`ce-${k}`, String(v)]));
    res = await request(gw.url)
      .post('/events')
      .set({ ...headers, 'content-type': String(datacontenttype) })
      .send(BYTES);
  } else if (name === 'text') {
    const { data, datacontenttype, ...attrs } = expected.text!;
    const headers = Object.fromEntries(Object.entries(attrs).map(([k, v]) => [`ce-${k}`, String(v)]));
    res = await request(gw.url)
      .post('/events')
      .set({ ...headers, 'content-type': String(datacontenttype) })
      .send(Buffer.from(String(data), 'utf8'));
  } else {
    res = await request(gw.url).post('/events').set('content-type', 'application/cloudevents+json').send(JSON.stringify(expected[name]));
  }
  expect(res.status).toBe(202);
  appended[name] = res.body.results[0];
}

beforeAll(async () => {
  for (const format of ['binary', 'structured'] as const) {
    const res = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, filters: [{ exact: { source: '/fmt' } }], delivery: { format, retry: { initialDelayMs: 10 } } })
      .expect(201);
    subs[format] = { id: res.body.id, secret: res.body.secret };
  }
  for (const name of order) await ingest(name);
  await waitFor(() => receiver.requests.length >= 2 * order.length, { what: 'every delivery' });
});

const requestsOf = (format: 'binary' | 'structured') =>
  receiver.requests.filter((q) => q.headers['herald-subscription-id'] === subs[format].id);
const header = (q: ReceivedRequest, name: string) => q.headers[name] as string | undefined;
const isUtf8 = (b: Buffer) => {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
};

/** The delivered request as the SDK reads it. Textual bodies go in as strings (the SDK parses JSON only from strings). */
function sdkEvent(q: ReceivedRequest): CloudEvent<unknown> {
  const type = header(q, 'content-type') ?? '';
  const textual = /json|^text\//.test(type);
  return HTTP.toEvent({
    headers: q.headers as Record<string, string>,
    body: textual ? q.body.toString('utf8') : q.body,
  }) as CloudEvent<unknown>;
}

/** Binary mode carries attributes as strings, percent-encoded; the SDK does not decode them, so do it here. */
function fromBinaryHeaders(event: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(event).map(([k, v]) => [k, typeof v === 'string' && k !== 'data' && k !== 'data_base64' ? decodeURIComponent(v) : v]),
  );
}
const asHeaderStrings = (event: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(event).map(([k, v]) => [k, k === 'data' || k === 'data_base64' ? v : String(v)]));

describe.each(['binary', 'structured'] as const)('%s delivery', (format) => {
  it('delivers every event once, in offset order, as a first attempt', () => {
    const got = requestsOf(format);
    expect(got.map((q) => header(q, 'herald-offset'))).toEqual(order.map((n) => String(appended[n]!.offset)));
    expect(got.every((q) => header(q, 'herald-attempt') === '1')).toBe(true);
  });

  it('signs every request so that standardwebhooks verifies it (and an HMAC over the raw bytes agrees)', () => {
    const key = Buffer.from(subs[format].secret.slice('whsec_'.length), 'base64');
    for (const q of requestsOf(format)) {
      const id = header(q, 'webhook-id')!;
      const ts = header(q, 'webhook-timestamp')!;
      const mac = createHmac('sha256', key).update(`${id}.${ts}.`).update(q.body).digest('base64');
      expect(header(q, 'webhook-signature')).toBe(`v1,${mac}`);
      // standardwebhooks reads the payload as UTF-8 text: it can only check bodies that are.
      if (isUtf8(q.body))
        expect(() =>
          new Webhook(subs[format].secret).verify(q.body, q.headers as Record<string, string>, { jsonParse: false }),
        ).not.toThrow();
      expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(300);
    }
  });

  it('sets the Herald headers: subscription, partition, offset, previous offset chain, delivery id and ack URL', () => {
    let previous: number | undefined;
    for (const [i, q] of requestsOf(format).entries()) {
      const stored = appended[order[i]!]!;
      const deliveryId = header(q, 'herald-delivery-id')!;
      expect(deliveryId).toMatch(/^dlv_/);
      expect(q.headers).toMatchObject({
        'herald-subscription-id': subs[format].id,
        'herald-partition': String(stored.partition),
        'herald-offset': String(stored.offset),
        'herald-ack-url': `${gw.url}/deliveries/${deliveryId}/ack`,
        'webhook-id': expect.stringMatching(/^msg_/),
      });
      expect(header(q, 'herald-previous-offset')).toBe(previous === undefined ? undefined : String(previous));
      expect(header(q, 'herald-redelivery')).toBeUndefined();
      previous = stored.offset;
    }
  });

  it.each(order)('the SDK reads event "%s" back equal to the ingested one', (name) => {
    const q = requestsOf(format).find((r) => r.body.includes(`"id":"${name}"`) || header(r, 'ce-id') === name)!;
    const got = sdkEvent(q).toJSON() as Record<string, unknown>;
    const structured = (header(q, 'content-type') ?? '').startsWith('application/cloudevents+json');
    expect(structured).toBe(format === 'structured' || alwaysStructured.has(name));
    // The SDK drops an empty `data` or `data_base64` (it tests them for truth): the document itself is read.
    if (structured) expect(name.startsWith('empty') ? JSON.parse(q.body.toString()) : got).toEqual(expected[name]);
    else expect(fromBinaryHeaders(got)).toEqual(asHeaderStrings(expected[name]!));
  });
});

describe('binary mode on the wire', () => {
  it('percent-encodes header values and sends data bytes untouched', () => {
    const byName = (name: string) => requestsOf('binary').find((q) => header(q, 'ce-id') === name)!;
    expect(header(byName('encoded'), 'ce-comment')).toBe('hello%20w%C3%B6rld%20100%25%20%22quoted%22');
    expect(byName('bytes').body.equals(BYTES)).toBe(true);
    expect(header(byName('bytes'), 'content-type')).toBe('application/octet-stream');
    expect(byName('base64').body.equals(PNG)).toBe(true);
    expect(header(byName('base64'), 'content-type')).toBe('image/png');
    expect(byName('text').body.toString('utf8')).toBe('hello, wörld');
    expect(header(byName('json'), 'ce-extint')).toBe('42');
  });

  it('copies trace values to W3C headers only when they are of a usable length (the event carries them either way)', () => {
    for (const format of ['binary', 'structured'] as const) {
      const sent = (name: string) => requestsOf(format).find((q) => q.body.includes(`"id":"${name}"`) || header(q, 'ce-id') === name)!;
      expect(header(sent('bytes'), 'traceparent')).toBe(expected.bytes!.traceparent);
      expect(header(sent('bigtrace'), 'traceparent')).toBeUndefined();
      expect(header(sent('bigtrace'), 'tracestate')).toBeUndefined();
    }
  });

  it('keeps typed extensions typed in structured mode', () => {
    const q = requestsOf('structured').find((r) => JSON.parse(r.body.toString()).id === 'json')!;
    expect(JSON.parse(q.body.toString())).toEqual(expected.json);
  });
});

describe('a datacontenttype that cannot be an HTTP header value', () => {
  it('is refused at ingest, so no stored event is undeliverable in binary mode', async () => {
    for (const datacontenttype of ['text/plain; note="5 €"', 'text/plain; a=b\r\nx-injected: 1']) {
      const odd = { ...base('odd'), source: '/fmt-odd', datacontenttype, data: 'price' };
      const res = await request(gw.url).post('/events').set('content-type', 'application/cloudevents+json').send(JSON.stringify(odd));
      expect(res.status).toBe(400);
      expect(res.body.errors).toEqual([expect.objectContaining({ attribute: 'datacontenttype' })]);
    }
  });
});
