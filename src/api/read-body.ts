import type { IncomingMessage } from 'node:http';
import zlib from 'node:zlib';
import { AppError } from '../errors';

/**
 * Reads a request body up to `limit` bytes. Refuses early on a larger `Content-Length`, and as
 * soon as a chunked body passes the limit (the server reads on a bounded amount of what follows, see http-server.ts).
 * `onChunk` is told of each chunk before it is kept; what it throws refuses the body there.
 */
export function readBody(req: IncomingMessage, limit: number, onChunk?: (bytes: number) => void): Promise<Buffer> {
  const tooLarge = (headers?: Record<string, string>) =>
    new AppError('payload_too_large', `the request body is larger than ${limit} bytes (HERALD_MAX_BODY_BYTES)`, { headers });
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(tooLarge(closeIfNotInvited(req)));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (err: AppError) => {
      req.removeAllListeners('data');
      req.resume();
      reject(err);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return stop(tooLarge());
      try {
        onChunk?.(chunk.length);
      } catch (err) {
        return stop(err as AppError);
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    req.on('error', (err) => reject(new AppError('invalid_request', 'the request body could not be read', { cause: err })));
  });
}

/**
 * For a refusal answered before the body is read: under `Expect: 100-continue` the body was never
 * invited, so the connection cannot carry another request and closes. Otherwise it stays open and the
 * server reads on what the client sends (bounded, see http-server.ts): a `Connection: close` makes
 * node destroy the socket at once, and a client still streaming its body then got EPIPE, not its answer.
 */
export function closeIfNotInvited(req: IncomingMessage): Record<string, string> | undefined {
  return /^100-continue$/i.test(req.headers.expect ?? '') ? { connection: 'close' } : undefined;
}

/** The content codings `POST /events` decodes (RFC 9110 §8.4.1), and node's decoder of each. */
const DECODERS: Record<string, (buf: Buffer, options: zlib.ZlibOptions & zlib.BrotliOptions, cb: zlib.CompressCallback) => void> = {
  gzip: zlib.gunzip,
  'x-gzip': zlib.gunzip,
  deflate: zlib.inflate,
  br: zlib.brotliDecompress,
};
export const ACCEPTED_ENCODINGS = 'gzip, deflate, br';

/**
 * The body with its `Content-Encoding` undone, at most `limit` bytes once decoded (so a small
 * compressed body cannot expand past what an uncompressed one may be). Decoded off the event loop,
 * in libuv's thread pool. One coding (or `identity`); anything else is a 415 naming those accepted.
 */
export function decodeBody(body: Buffer, contentEncoding: string | undefined, limit: number): Promise<Buffer> {
  const coding = (contentEncoding ?? '').trim().toLowerCase();
  if (coding === '' || coding === 'identity') return Promise.resolve(body);
  const decode = DECODERS[coding];
  if (!decode)
    return Promise.reject(
      new AppError(
        'unsupported_media_type',
        `Content-Encoding ${JSON.stringify(coding)} is not supported; use one of ${ACCEPTED_ENCODINGS}`,
        {
          details: [{ attribute: 'content-encoding', message: `not one of ${ACCEPTED_ENCODINGS}, identity` }],
          headers: { 'accept-encoding': ACCEPTED_ENCODINGS },
        },
      ),
    );
  return new Promise((resolve, reject) => {
    decode(body, { maxOutputLength: limit }, (err, out) => {
      if (!err) return resolve(out);
      if (err instanceof RangeError || (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE')
        return reject(
          new AppError('payload_too_large', `the request body is larger than ${limit} bytes once decoded (HERALD_MAX_BODY_BYTES)`),
        );
      reject(
        new AppError('invalid_request', `the request body is not valid ${coding}`, {
          details: [{ message: `not valid ${coding}: ${err.message}` }],
          cause: err,
        }),
      );
    });
  });
}
