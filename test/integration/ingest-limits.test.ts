import net from 'node:net';
import zlib from 'node:zlib';
import request from 'supertest';
import { startTestGateway, type TestGateway as Gw } from '../helpers/gateway';
import { postEventsRaw, rawExchange, sendRaw, type RawReply as Reply } from '../helpers/http';
import { cleanupTmpDirs } from '../helpers/tmp';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * POST /events. With `chunked`, the body goes out in 16 KiB chunks without Content-Length,
 * so the gateway cannot refuse it up front and must count as it reads. The gateway may answer 413
 * before the whole body is sent; the response is what the test checks.
 */
const post = (url: string, headers: Record<string, string>, body: Buffer, chunked = false) =>
  postEventsRaw(url, headers, body, { chunked, tolerateEarlyReply: true });

const ce = (id: string) => ({
  'ce-specversion': '1.0',
  'ce-id': id,
  'ce-source': '/limits',
  'ce-type': 'com.example.limits',
  'content-type': 'application/octet-stream',
});

/** A structured event whose JSON body is exactly `size` bytes, padded through its data string. */
function structuredOfSize(id: string, size: number): Buffer {
  const empty = JSON.stringify({
    specversion: '1.0',
    id,
    source: '/limits',
    type: 'com.example.limits',
    datacontenttype: 'text/plain',
    data: '',
  });
  const body = Buffer.from(
    JSON.stringify({
      specversion: '1.0',
      id,
      source: '/limits',
      type: 'com.example.limits',
      datacontenttype: 'text/plain',
      data: 'x'.repeat(size - empty.length),
    }),
  );
  expect(body.length).toBe(size);
  return body;
}

const heads = async (gw: Gw) => (await request(gw.url).get('/partitions')).body;

function expectTooLarge(res: Reply) {
  expect(res.status).toBe(413);
  expect(res.contentType).toBe('application/problem+json');
  expect(res.body).toEqual({
    type: 'urn:herald:problem:payload_too_large',
    title: expect.any(String),
    status: 413,
    detail: expect.any(String),
    code: 'payload_too_large',
    errors: expect.any(Array),
  });
}

afterAll(cleanupTmpDirs);

describe('request body limit at the default of 1 MiB', () => {
  let gw: Gw;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('accepts a binary body of exactly 1 MiB and stores it byte for byte', async () => {
    const body = Buffer.alloc(MiB, 0xab);
    const res = await post(gw.url, ce('exactly-1mib'), body);
    expect(res.status).toBe(202);
    const read = await request(gw.url).get('/events').query({ source: '/limits', id: 'exactly-1mib' });
    expect(Buffer.from(read.body.event.data_base64, 'base64').equals(body)).toBe(true);
  });

  it('answers 413 for a body one byte over 1 MiB and stores nothing', async () => {
    const before = await heads(gw);
    expectTooLarge(await post(gw.url, ce('over-1mib'), Buffer.alloc(MiB + 1)));
    expect(await heads(gw)).toEqual(before);
  });

  it('answers 413 for an oversized chunked body sent without Content-Length', async () => {
    const before = await heads(gw);
    expectTooLarge(await post(gw.url, ce('chunked-over'), Buffer.alloc(MiB + 64 * KiB), true));
    expect(await heads(gw)).toEqual(before);
  });

  it('accepts a chunked body within the limit', async () => {
    expect((await post(gw.url, ce('chunked-within'), Buffer.alloc(200 * KiB, 1), true)).status).toBe(202);
  });

  it('answers 413 for an oversized structured batch and stores none of it', async () => {
    const before = await heads(gw);
    const events = Array.from({ length: 20 }, (_, i) => ({
      specversion: '1.0',
      id: `big-${i}`,
      source: '/limits',
      type: 't',
      data: 'y'.repeat(64 * KiB),
    }));
    expectTooLarge(await post(gw.url, { 'content-type': 'application/cloudevents-batch+json' }, Buffer.from(JSON.stringify(events))));
    expect(await heads(gw)).toEqual(before);
  });

  it('answers a batch of 400,000 invalid events with the first 100 violations and the count, in a small body', async () => {
    const n = 400_000;
    const body = `[${Array(n).fill('1').join(',')}]`; // 0.8 MB
    expect(body.length).toBeLessThan(MiB);
    const res = await sendRaw(gw.url, 'POST', '/events', { headers: { 'content-type': 'application/cloudevents-batch+json' }, body });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.text.length).toBeLessThan(32 * KiB);
    expect(res.body).toMatchObject({
      code: 'invalid_event',
      truncated: true,
      totalErrors: n,
      detail: `${n} of ${n} events in the batch are invalid; none was stored`,
    });
    expect(res.body.errors).toHaveLength(100);
    expect(res.body.errors[99]).toEqual({ index: 99, message: expect.any(String) });
  });

  it('lists every violation, without truncated or totalErrors, when there are at most 100', async () => {
    const res = await sendRaw(gw.url, 'POST', '/events', {
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify(Array(100).fill(1)),
    });
    expect(res.status).toBe(400);
    expect(res.body.errors).toHaveLength(100);
    expect(res.body).not.toHaveProperty('truncated');
    expect(res.body).not.toHaveProperty('totalErrors');
  });
});

describe('request body limit at its 64 KiB minimum', () => {
  let gw: Gw;
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_MAX_BODY_BYTES: String(64 * KiB) });
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('accepts a 64 KiB binary-mode event', async () => {
    expect((await post(gw.url, ce('b-64k'), Buffer.alloc(64 * KiB, 7))).status).toBe(202);
  });

  it('accepts a 64 KiB structured event', async () => {
    const body = structuredOfSize('s-64k', 64 * KiB);
    const res = await post(gw.url, { 'content-type': 'application/cloudevents+json' }, body);
    expect(res.status).toBe(202);
    const read = await request(gw.url).get('/events').query({ source: '/limits', id: 's-64k' });
    // Compare lengths, not the strings: a failure would otherwise print 64 KiB of padding.
    expect(read.body.event.data.length).toBe(JSON.parse(body.toString()).data.length);
    expect(read.body.event.data === JSON.parse(body.toString()).data).toBe(true);
  });

  it('answers 413 one byte over the configured limit', async () => {
    const before = await heads(gw);
    expectTooLarge(await post(gw.url, { 'content-type': 'application/cloudevents+json' }, structuredOfSize('s-64k-plus', 64 * KiB + 1)));
    expectTooLarge(await post(gw.url, ce('b-64k-plus'), Buffer.alloc(64 * KiB + 1)));
    expect(await heads(gw)).toEqual(before);
  });
});

describe('HERALD_INGEST_BUFFER_BYTES: body bytes of publishes held at once', () => {
  let gw: Gw;
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_INGEST_BUFFER_BYTES: '64KiB', HERALD_PARTITIONS: '1' });
  });
  afterAll(async () => {
    await gw.close();
  });

  /** A publish whose headers and first bytes are sent, the rest held back until `finish`. */
  async function stalled(id: string, length: number, sent = length - 10, on = gw) {
    const { hostname, port } = new URL(on.url);
    const socket = net.connect(Number(port), hostname);
    let answer = '';
    socket.on('data', (c: Buffer) => (answer += c.toString()));
    const closed = new Promise((r) => socket.once('close', r));
    socket.setTimeout(20_000, () => socket.destroy()); // bounded, should the gateway never answer
    const head = Object.entries(ce(id))
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    socket.write(`POST /events HTTP/1.1\r\nHost: x\r\n${head}content-length: ${length}\r\nconnection: close\r\n\r\n`);
    socket.write(Buffer.alloc(sent, 0x61));
    await new Promise((r) => setTimeout(r, 200)); // the gateway holds what was sent
    return {
      finish: async () => {
        socket.write(Buffer.alloc(length - sent, 0x61)); // not end(): a half-closed socket is closed before its answer
        await closed;
        return answer.split('\r\n')[0];
      },
      /** Sends nothing more; the gateway's answer, once it closed the connection. */
      abandoned: async () => {
        await closed;
        return answer;
      },
    };
  }

  it('refuses a publish that would pass it with 503 and Retry-After before its body is read, takes one that fits, and takes it again once room is made (ingest probe: 1,000 publishes of 1 MiB held 3.5 GB)', async () => {
    const first = await stalled('held', 40 * KiB);
    const refused = await fetch(`${gw.url}/events`, { method: 'POST', headers: ce('refused'), body: Buffer.alloc(40 * KiB, 0x62) });
    expect([refused.status, refused.headers.get('retry-after'), ((await refused.json()) as { code: string }).code]).toEqual([
      503,
      '1',
      'unavailable',
    ]);
    expect((await post(gw.url, ce('fits'), Buffer.alloc(1 * KiB, 0x63))).status).toBe(202);
    expect(await first.finish()).toBe('HTTP/1.1 202 Accepted');
    expect((await post(gw.url, ce('refused'), Buffer.alloc(40 * KiB, 0x62))).status).toBe(202);
    // Nothing of the refused attempt was stored: its one event is stored once, by the retry.
    const read = await request(gw.url).get('/partitions/0/events?from=0&limit=10').expect(200);
    expect(read.body.events.map((e: { event: { id: string } }) => e.event.id)).toEqual(['fits', 'held', 'refused']);
  });

  it('counts what a publish has sent, not what it declares: stalled publishes do not shut ingest out', async () => {
    const slow = await Promise.all([stalled('slow-1', 60 * KiB, 1 * KiB), stalled('slow-2', 60 * KiB, 1 * KiB)]);
    expect((await post(gw.url, ce('beside-slow'), Buffer.alloc(40 * KiB, 0x64))).status).toBe(202);
    for (const s of slow) expect(await s.finish()).toBe('HTTP/1.1 202 Accepted');
  });

  it('holds a compressed body at its decoded size (re-probe: 4 KB of gzip decoding to 4 MB passed the bound)', async () => {
    const first = await stalled('held-for-gzip', 40 * KiB);
    const gzipped = zlib.gzipSync(Buffer.alloc(60 * KiB, 0x65)); // about 100 bytes on the wire
    const refused = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { ...ce('gzip-big'), 'content-encoding': 'gzip' },
      body: gzipped,
    });
    expect(refused.status).toBe(503);
    expect(await first.finish()).toBe('HTTP/1.1 202 Accepted');
    const taken = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { ...ce('gzip-big'), 'content-encoding': 'gzip' },
      body: gzipped,
    });
    expect(taken.status).toBe(202);
  });

  it("answers a publish whose body stops coming with 408 and closes its connection, freeing what it held (re-probe: held until node's 300 s request timeout)", async () => {
    const impatient = await startTestGateway({
      HERALD_INGEST_BUFFER_BYTES: '64KiB',
      HERALD_PARTITIONS: '1',
      HERALD_BODY_IDLE_TIMEOUT_MS: '1000',
    });
    try {
      const first = await stalled('gone-quiet', 40 * KiB, 40 * KiB - 10, impatient);
      expect((await post(impatient.url, ce('behind-quiet'), Buffer.alloc(40 * KiB, 0x66))).status).toBe(503);
      const answer = await first.abandoned(); // HERALD_BODY_IDLE_TIMEOUT_MS is 1 s here
      const [head, body] = answer.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 408 /);
      expect(head).toMatch(/connection: close/i);
      expect(JSON.parse(body!)).toMatchObject({ status: 408, code: 'request_timeout' });
      expect((await post(impatient.url, ce('behind-quiet'), Buffer.alloc(40 * KiB, 0x66))).status).toBe(202);
      expect((await request(impatient.url).get('/events?source=/limits&id=gone-quiet')).status).toBe(404);
    } finally {
      await impatient.close();
    }
  });

  it('under Expect: 100-continue, a publish that cannot fit is refused before its body is asked for (was: a 100, then the 503)', async () => {
    const first = await stalled('held-for-expect', 40 * KiB);
    const head = Object.entries(ce('expecting'))
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    const answer = await rawExchange(
      gw.url,
      `POST /events HTTP/1.1\r\nHost: x\r\n${head}Expect: 100-continue\r\ncontent-length: ${40 * KiB}\r\n\r\n`,
    );
    expect(answer).not.toMatch(/100 Continue/);
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer).toMatch(/connection: close/i);
    expect(await first.finish()).toBe('HTTP/1.1 202 Accepted');
    const invited = await rawExchange(
      gw.url,
      `POST /events HTTP/1.1\r\nHost: x\r\n${head}Expect: 100-continue\r\ncontent-length: 2\r\nconnection: close\r\n\r\nab`,
    );
    expect(invited).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 202 /);
  });
});
