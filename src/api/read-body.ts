import type { IncomingMessage, ServerResponse } from 'node:http';
import zlib from 'node:zlib';
import { AppError } from '../errors';

/**
 * Reads a request body up to `limit` bytes. Refuses early on a larger `Content-Length`, and as
 * soon as a chunked body passes the limit (the server reads on a bounded amount of what follows, see http-server.ts).
 * `onChunk` is told of each chunk before it is kept; what it throws refuses the body there. A body
 * that makes no progress for `idleMs` is a 408 and its connection closes: a client that stalled
 * mid-body would otherwise hold what it sent until node's 300 s request timeout.
 * Under `Expect: 100-continue` the body is asked for (`100 Continue`) only once these checks pass.
 */
export function readBody(
  req: IncomingMessage,
  res: ServerResponse,
  opts: { limit: number; idleMs: number; onChunk?: (bytes: number) => void; limitName?: string },
): Promise<Buffer> {
  const { limit, idleMs, onChunk } = opts;
  const tooLarge = () => new AppError('payload_too_large', `the request body is larger than ${describeLimit(limit, opts.limitName)}`);
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.reject(tooLarge());
  }
  inviteBody(res);
  return new Promise((resolve, reject) => {
    const chunks = createChunkList();
    let size = 0;
    const stop = (err: AppError) => {
      clearTimeout(idle);
      req.removeAllListeners('data');
      req.resume();
      reject(err);
    };
    // From now, not from when the 100 goes out: a pipelined request's 100 waits behind the answers before
    // it, and a client waiting for it longer than idleMs gets the 408 (an edge, with idleMs in seconds).
    const idle = setTimeout(() => stop(bodyStalled(idleMs)), idleMs);
    req.on('data', (chunk: Buffer) => {
      idle.refresh();
      size += chunk.length;
      if (size > limit) return stop(tooLarge());
      try {
        onChunk?.(chunk.length);
      } catch (err) {
        return stop(err as AppError);
      }
      chunks.add(chunk);
    });
    req.on('end', () => {
      clearTimeout(idle);
      resolve(chunks.joined(size));
    });
    req.on('error', (err) => {
      clearTimeout(idle);
      reject(new AppError('invalid_request', 'the request body could not be read', { cause: err }));
    });
  });
}

/** Chunks below this size are copied together (see {@link createChunkList}). */
const SMALL_CHUNK_BYTES = 1024;
/** What small chunks are copied into: blocks from 256 bytes, each twice the one before, up to 16 KiB. */
const FIRST_BLOCK_BYTES = 256;
const LARGEST_BLOCK_BYTES = 16 * 1024;

/**
 * A body's chunks, kept at about their size in memory. Each chunk node hands over is a buffer of its
 * own, at a few hundred bytes of cost beside its data: a body sent one byte per chunk took ~380 bytes
 * a byte (6 GB for 16 callbacks of 6 MB on the wire, a probe), where the limits count data bytes. So
 * the first chunk is kept as it is (most bodies are one), and after it chunks below 1 KiB are copied
 * into blocks that grow with the body (a block as large as the body's data at most, so a body of a few
 * small chunks does not hold 16 KiB either).
 */
function createChunkList() {
  const chunks: Buffer[] = [];
  let block: Buffer | undefined;
  let blockUsed = 0;
  let nextBlockBytes = FIRST_BLOCK_BYTES;
  const closeBlock = () => {
    if (block && blockUsed > 0) chunks.push(block.subarray(0, blockUsed));
    block = undefined;
    blockUsed = 0;
  };
  return {
    add(chunk: Buffer): void {
      if (chunks.length === 0 && !block) return void chunks.push(chunk);
      if (chunk.length >= SMALL_CHUNK_BYTES) {
        closeBlock();
        return void chunks.push(chunk);
      }
      if (!block || blockUsed + chunk.length > block.length) {
        closeBlock();
        // Not from node's shared pool: a small slice of it would keep its whole 8 KiB slab.
        block = Buffer.allocUnsafeSlow(Math.max(nextBlockBytes, chunk.length));
        nextBlockBytes = Math.min(LARGEST_BLOCK_BYTES, nextBlockBytes * 2);
      }
      blockUsed += chunk.copy(block, blockUsed);
    },
    /** The whole body (`size` bytes). */
    joined(size: number): Buffer {
      closeBlock();
      return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    },
  };
}

/** `limitName` names where a limit comes from (by default HERALD_MAX_BODY_BYTES, in bytes). */
const describeLimit = (limit: number, limitName?: string) => limitName ?? `${limit} bytes (HERALD_MAX_BODY_BYTES)`;

function bodyStalled(idleMs: number): AppError {
  return new AppError(
    'request_timeout',
    `no byte of the request body came for ${idleMs} ms (HERALD_BODY_IDLE_TIMEOUT_MS); nothing of this request was done or stored, send it again`,
    // The rest of the body may still come: the connection cannot carry another request.
    { headers: { connection: 'close' } },
  );
}

/**
 * Answers under `Expect: 100-continue` whose body has not been asked for yet. Until it is, node answers
 * with `Connection: close` and closes after the answer (its `writeHead` does so for an expectation it
 * has not met): the client may never send the body (RFC 9110 §10.1.1), and read on, the next
 * request's bytes would be taken for it. The tests pin that `Connection: close`.
 */
const uninvited = new WeakMap<ServerResponse, (() => void) | undefined>();

/**
 * Under `Expect: 100-continue`: the body is not asked for until a handler's checks pass (`inviteBody`),
 * which then calls `onInvited`.
 */
export function awaitInvitation(res: ServerResponse, onInvited?: () => void): void {
  uninvited.set(res, onInvited);
}

/** Whether `res` answers a request whose body was held back and never asked for (it closes the connection). */
export function isUninvited(res: ServerResponse): boolean {
  return uninvited.has(res);
}

/** Asks for a body held back by `awaitInvitation` (a `100 Continue`); nothing otherwise. */
export function inviteBody(res: ServerResponse): void {
  if (!uninvited.has(res)) return;
  const onInvited = uninvited.get(res);
  uninvited.delete(res);
  res.writeContinue();
  onInvited?.();
}

/** What node's decoders hand back with `info: true`: the output, and the engine, which counts the input it consumed. */
type DecodeCallback = (err: Error | null, result: { buffer: Buffer; engine: { bytesWritten: number } }) => void;
type Decode = (buf: Buffer, options: zlib.ZlibOptions & zlib.BrotliOptions & { info: true }, cb: DecodeCallback) => void;

/** The content codings `POST /events` decodes (RFC 9110 §8.4.1), and node's decoder of each. */
const DECODERS: Record<string, Decode> = {
  gzip: zlib.gunzip as unknown as Decode,
  'x-gzip': zlib.gunzip as unknown as Decode,
  deflate: zlib.inflate as unknown as Decode,
  br: zlib.brotliDecompress as unknown as Decode,
};
export const ACCEPTED_ENCODINGS = 'gzip, deflate, br';

/** A `Content-Encoding` Herald undoes, and node's decoder of it. */
export interface BodyDecoder {
  coding: string;
  decode: (typeof DECODERS)[string];
}

/**
 * The decoder of a request's `Content-Encoding` (none for none or `identity`), found before its body
 * is read, so that a coding Herald cannot undo is refused without asking for the body (`Expect`).
 * @throws AppError `unsupported_media_type` naming the codings accepted
 */
export function decoderOf(contentEncoding: string | undefined): BodyDecoder | undefined {
  const coding = (contentEncoding ?? '').trim().toLowerCase();
  if (coding === '' || coding === 'identity') return undefined;
  const decode = DECODERS[coding];
  if (decode) return { coding, decode };
  throw new AppError(
    'unsupported_media_type',
    `Content-Encoding ${JSON.stringify(coding)} is not supported; use one of ${ACCEPTED_ENCODINGS}`,
    {
      details: [{ attribute: 'content-encoding', message: `not one of ${ACCEPTED_ENCODINGS}, identity` }],
      headers: { 'accept-encoding': ACCEPTED_ENCODINGS },
    },
  );
}

const ZEROS = Buffer.alloc(64 * 1024);

/** Whether every byte is 0, compared natively a block at a time (a per-byte callback took 2.6 s over 256 MiB). */
function allZero(bytes: Buffer): boolean {
  for (let at = 0; at < bytes.length; at += ZEROS.length) {
    const block = bytes.subarray(at, at + ZEROS.length);
    if (!block.equals(ZEROS.subarray(0, block.length))) return false;
  }
  return true;
}

/**
 * The body with its `Content-Encoding` undone (`decoder`, from {@link decoderOf}), at most `limit`
 * bytes once decoded (so a small compressed body cannot expand past what an uncompressed one may
 * be). Decoded off the event loop, in libuv's thread pool. Bytes after the end of the compressed
 * stream are refused like any other invalid body, but for zero bytes (gzip's padding): node's
 * decoders stop at the end of a deflate or br stream, and of a gzip member followed by zeros, and
 * drop the rest without a word (a probe's two deflate streams back to back were stored as the first
 * one alone, with a 202).
 */
export function decodeBody(body: Buffer, { coding, decode }: BodyDecoder, limit: number, limitName?: string): Promise<Buffer> {
  const invalid = (message: string, cause?: Error) =>
    new AppError('invalid_request', `the request body is not valid ${coding}`, {
      details: [{ message: `not valid ${coding}: ${message}` }],
      cause,
    });
  return new Promise((resolve, reject) => {
    decode(body, { maxOutputLength: limit, info: true }, (err, result) => {
      if (!err) {
        const consumed = result.engine.bytesWritten;
        if (!allZero(body.subarray(consumed)))
          return reject(invalid(`${body.length - consumed} bytes follow the end of the compressed data`));
        return resolve(result.buffer);
      }
      if (err instanceof RangeError || (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE')
        return reject(new AppError('payload_too_large', `the request body is larger than ${describeLimit(limit, limitName)} once decoded`));
      reject(invalid(err.message, err));
    });
  });
}
