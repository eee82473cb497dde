import type { IncomingMessage } from 'node:http';
import { AppError } from '../errors';

/**
 * Reads a request body up to `limit` bytes. Refuses early on a larger
 * `Content-Length`, and stops reading as soon as a chunked body passes the limit.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new AppError('payload_too_large', `the request body is larger than ${limit} bytes (HERALD_MAX_BODY_BYTES)`);
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(tooLarge());
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    req.on('error', (err) => reject(new AppError('invalid_request', 'the request body could not be read', { cause: err })));
  });
}
