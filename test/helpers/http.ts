import http from 'node:http';
import net from 'node:net';

/** What `POST /events` answered: status, Content-Type and the parsed JSON body. */
export interface RawReply {
  status: number;
  contentType?: string;
  body: any;
}

/** Options for {@link postEventsRaw}; each defaults to off. */
export interface RawPostOptions {
  /**
   * Send the body in 16 KiB chunks without Content-Length, so the gateway cannot refuse it
   * up front and must count as it reads.
   */
  chunked?: boolean;
  /**
   * Ignore EPIPE and ECONNRESET while sending: the gateway may answer (413) before the whole body
   * is sent, and the response is what the test checks.
   */
  tolerateEarlyReply?: boolean;
  /** Answer `body: undefined` for an empty response body instead of failing to parse it as JSON. */
  allowEmptyBody?: boolean;
}

const CHUNK_BYTES = 16 * 1024;

/**
 * POSTs to `${baseUrl}/events` with headers and body exactly as given, over node:http: supertest
 * JSON-serialises Buffers sent with a JSON Content-Type, so raw bytes cannot go through it.
 * Content-Length is set from the body (unless `chunked`); an array header value is sent as that
 * many separate header lines. The response body must be JSON (or empty, with `allowEmptyBody`).
 */
export function postEventsRaw(
  baseUrl: string,
  headers: Record<string, string | string[]>,
  body: string | Buffer = '',
  options: RawPostOptions = {},
): Promise<RawReply> {
  const sentHeaders = options.chunked ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) };
  return new Promise((resolve, reject) => {
    const req = http.request(`${baseUrl}/events`, { method: 'POST', headers: sentHeaders }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          const parsed = options.allowEmptyBody && !text ? undefined : JSON.parse(text);
          resolve({ status: res.statusCode!, contentType: res.headers['content-type'], body: parsed });
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (options.tolerateEarlyReply && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) return;
      reject(err);
    });
    if (options.chunked) {
      const bytes = Buffer.from(body);
      for (let at = 0; at < bytes.length; at += CHUNK_BYTES) req.write(bytes.subarray(at, at + CHUNK_BYTES));
      req.end();
    } else {
      req.end(body);
    }
  });
}

/** What {@link sendRaw} got back: status, headers, the body as text and, when it is JSON, parsed. */
export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: any;
}

/**
 * Sends one request over node:http with the request target exactly as given (`fetch` and supertest
 * normalise URLs, so absolute-form targets, `#fragments` or `%`-escaped letters would not reach the
 * server as written). Sets Content-Length from `body` when there is one.
 */
export function sendRaw(
  baseUrl: string,
  method: string,
  target: string,
  opts: { headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.body !== undefined) headers['content-length'] = String(Buffer.byteLength(opts.body));
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path: target, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      // A live stream (GET /events/stream) never ends by itself: its first chunk is the answer, then it is closed.
      const streaming = /^text\/event-stream/.test(res.headers['content-type'] ?? '');
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (streaming) {
          res.destroy();
          resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(chunks).toString('utf8'), body: undefined });
        }
      });
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const json = /^application\/(?:[\w.+-]+\+)?json/.test(res.headers['content-type'] ?? '');
        let body: unknown = text;
        try {
          if (json && text) body = JSON.parse(text);
        } catch (err) {
          reject(err);
          return;
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, body });
      });
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/**
 * Writes `text` as it is to a fresh connection (malformed framing, repeated headers: what node:http will not
 * send) and resolves with everything the gateway answers until it closes the connection (send `Connection: close`
 * with a valid request), or, with `until`, as soon as what came so far satisfies it (the connection is then
 * destroyed: for answers the gateway sends while it keeps the connection open for a body never sent).
 * Bounded: the connection is destroyed after 5 s.
 */
export function rawExchange(baseUrl: string, text: string, opts: { until?: (answer: string) => boolean } = {}): Promise<string> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.write(text));
    let answer = '';
    socket.on('data', (c: Buffer) => {
      answer += c.toString();
      if (opts.until?.(answer)) {
        resolve(answer);
        socket.destroy();
      }
    });
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
    socket.setTimeout(5000, () => socket.destroy());
  });
}

/**
 * For {@link rawExchange}'s `until`: true once `answer` holds a whole final answer (1xx interim ones skipped): its
 * head and all the body its Content-Length declares.
 */
export function holdsWholeAnswer(answer: string): boolean {
  let rest = answer;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) return false;
    const head = rest.slice(0, end);
    const status = /^HTTP\/1\.[01] (\d)\d\d /.exec(head);
    if (!status) return false;
    rest = rest.slice(end + 4);
    if (status[1] === '1') continue;
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    return length !== null && Buffer.byteLength(rest) >= Number(length[1]);
  }
}

/** A JSON call to the gateway's API: the status and the parsed body (undefined when empty). */
export async function api(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}
