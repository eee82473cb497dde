import zlib from 'node:zlib';
import { lookupEvent, partitionHeads, useGatewayForFile } from '../helpers/gateway';
import { createContractChecker, createContractClient, loadContract } from '../helpers/openapi';

/**
 * `POST /events` with a `Content-Encoding` (RFC 9110 §8.4): gzip, deflate and br bodies are decoded
 * before the CloudEvents binding reads them, so a binary-mode event's data is what the producer
 * compressed (before, the compressed bytes were stored as the data). The decoded body is held to
 * HERALD_MAX_BODY_BYTES like any body; other codings are a 415 naming the accepted ones. Nothing
 * refused uses an offset.
 */

const gw = useGatewayForFile({ HERALD_PARTITIONS: '1', HERALD_MAX_BODY_BYTES: '65536' });
const checker = createContractChecker(loadContract());
const call = (headers: Record<string, string>, body: Buffer) => createContractClient(gw.url, checker)('POST', '/events', { headers, body });

const binary = (id: string, encoding: string) => ({
  'ce-specversion': '1.0',
  'ce-id': id,
  'ce-source': '/encoded',
  'ce-type': 't',
  'content-type': 'application/json',
  'content-encoding': encoding,
});

describe('Content-Encoding on POST /events', () => {
  it.each([
    ['gzip', zlib.gzipSync],
    ['x-gzip', zlib.gzipSync],
    ['deflate', zlib.deflateSync],
    ['br', zlib.brotliCompressSync],
    ['GZIP', zlib.gzipSync],
    ['identity', (b: Buffer) => b],
  ] as const)('%s: a binary-mode event stores the decoded bytes as its data', async (encoding, encode) => {
    const data = { order: encoding, lines: Array.from({ length: 50 }, (_, i) => `line ${i}`) };
    const res = await call(binary(`b-${encoding}`, encoding), encode(Buffer.from(JSON.stringify(data))));
    expect(res.status).toBe(202);
    const stored = await lookupEvent(gw.url, { source: '/encoded', id: `b-${encoding}` });
    expect(stored.body.event.data).toEqual(data);
  });

  it('decodes a structured batch', async () => {
    const batch = [1, 2, 3].map((i) => ({ specversion: '1.0', id: `s-${i}`, source: '/encoded', type: 't', data: { i } }));
    const res = await call(
      { 'content-type': 'application/cloudevents-batch+json', 'content-encoding': 'gzip' },
      zlib.gzipSync(JSON.stringify(batch)),
    );
    expect(res.status).toBe(202);
    expect(res.body.results).toHaveLength(3);
    expect((await lookupEvent(gw.url, { source: '/encoded', id: 's-2' })).body.event.data).toEqual({ i: 2 });
  });

  it('refuses what it cannot decode, or what decodes past the body limit, without using an offset', async () => {
    const before = await partitionHeads(gw.url);
    const unsupported = await call(binary('r-1', 'compress'), Buffer.from('{}'));
    expect(unsupported.status).toBe(415);
    expect(unsupported.headers.get('accept-encoding')).toBe('gzip, deflate, br');
    expect(unsupported.body.errors).toEqual([expect.objectContaining({ attribute: 'content-encoding' })]);
    expect((await call(binary('r-2', 'gzip, br'), Buffer.from('{}'))).status).toBe(415);
    // A gzip bomb: 2 KiB on the wire, 4 MiB decoded, past the 64 KiB limit.
    const bomb = zlib.gzipSync(Buffer.alloc(4 * 1024 * 1024, 0x20));
    expect(bomb.length).toBeLessThan(65536);
    const tooLarge = await call(binary('r-3', 'gzip'), bomb);
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.body.code).toBe('payload_too_large');
    const notGzip = await call(binary('r-4', 'gzip'), Buffer.from('{"plain":"json"}'));
    expect(notGzip.status).toBe(400);
    expect(notGzip.body.detail).toBe('the request body is not valid gzip');
    const truncated = zlib.gzipSync(Buffer.from('{"cut":"short"}')).subarray(0, 12);
    expect((await call(binary('r-5', 'gzip'), truncated)).status).toBe(400);
    expect(await partitionHeads(gw.url)).toEqual(before);
  });

  it.each([
    ['deflate', zlib.deflateSync],
    ['br', zlib.brotliCompressSync],
    ['gzip', zlib.gzipSync],
  ] as const)(
    '%s: bytes after the end of the compressed data are a 400, not dropped (probe: two deflate streams were stored as the first, with a 202)',
    async (encoding, encode) => {
      const before = await partitionHeads(gw.url);
      const first = encode(Buffer.from('{"part":1}'));
      const tails: [string, Buffer][] = [
        [`t-${encoding}-1`, Buffer.from('trailing garbage')],
        // gzip: zero padding, then a member that node dropped with it
        [`t-${encoding}-2`, Buffer.concat([Buffer.alloc(4), encode(Buffer.from('{"part":2}'))])],
      ];
      // A second deflate or br stream (gzip members back to back are one body: below).
      if (encoding !== 'gzip') tails.push([`t-${encoding}-3`, encode(Buffer.from('{"part":2}'))]);
      for (const [id, tail] of tails) {
        const res = await call(binary(id, encoding), Buffer.concat([first, tail]));
        expect(res.status).toBe(400);
        expect(res.body.detail).toBe(`the request body is not valid ${encoding}`);
        expect((await lookupEvent(gw.url, { source: '/encoded', id })).status).toBe(404);
      }
      expect(await partitionHeads(gw.url)).toEqual(before);
      // Zero padding alone (gzip tools write it, and read past it) is taken.
      const padded = await call(binary(`t-${encoding}-padded`, encoding), Buffer.concat([first, Buffer.alloc(8)]));
      expect(padded.status).toBe(202);
      expect((await lookupEvent(gw.url, { source: '/encoded', id: `t-${encoding}-padded` })).body.event.data).toEqual({ part: 1 });
    },
  );

  it('gzip members back to back are one body (RFC 1952 §2.2)', async () => {
    const body = Buffer.concat([zlib.gzipSync(Buffer.from('{"a":')), zlib.gzipSync(Buffer.from('1}'))]);
    expect((await call(binary('members', 'gzip'), body)).status).toBe(202);
    expect((await lookupEvent(gw.url, { source: '/encoded', id: 'members' })).body.event.data).toEqual({ a: 1 });
  });
});
