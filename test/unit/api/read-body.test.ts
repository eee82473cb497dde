import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { readBody } from '../../../src/api/read-body';

/** A request body as node hands it over: chunks of any size, read back byte for byte. */
function requestOf(chunks: Buffer[]): IncomingMessage {
  const stream = new PassThrough();
  const req = Object.assign(stream, { headers: {} }) as unknown as IncomingMessage;
  setImmediate(() => {
    for (const chunk of chunks) stream.write(chunk);
    stream.end();
  });
  return req;
}

describe('readBody', () => {
  it('gives back the exact bytes whatever the chunks: one, many tiny ones, and small and large mixed', async () => {
    const sizes = [[5000], Array<number>(3000).fill(1), [1, 2, 3, 2000, 1, 1, 5000, 700, 1023, 1024, 1025, 1, 40_000, 3]];
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 1500;
    sizes.push(Array.from({ length: 400 }, () => 1 + random()));
    for (const list of sizes) {
      const chunks = list.map((n) => randomBytes(n));
      const body = await readBody(requestOf(chunks), {} as ServerResponse, { limit: 1 << 20, idleMs: 5000 });
      expect(body.equals(Buffer.concat(chunks))).toBe(true);
    }
  });
});
