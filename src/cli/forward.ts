import http from 'node:http';
import https from 'node:https';

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) and those that describe this connection or this body's
 * framing: a proxy does not pass them on. `host` is the target's own; `content-length` is set again
 * from the (unchanged) body.
 */
const NOT_FORWARDED = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'content-length',
]);

/** The most of the target's answer relayed to the gateway (it keeps a 1 KiB excerpt of failures anyway). */
const MAX_ANSWER_BYTES = 64 * 1024;

export type ForwardResult = { status: number; headers: Record<string, string>; body: Buffer } | { status: null; error: string };

/**
 * Sends a request on to `target` as it came: same method, the same headers in the same order (as
 * received, duplicates included) but for hop-by-hop ones, the same body bytes. Resolves with the
 * target's status, its `content-type` and `retry-after`, and up to 64 KiB of its body; or with the
 * error when there is no answer within `timeoutMs` or `signal` aborts (the gateway gave up).
 */
export function forwardRequest(
  target: URL,
  request: { method: string; rawHeaders: string[]; body: Buffer },
  options: { timeoutMs: number; signal: AbortSignal },
): Promise<ForwardResult> {
  const headers: string[] = ['Host', target.host];
  for (let i = 0; i + 1 < request.rawHeaders.length; i += 2) {
    const name = request.rawHeaders[i]!;
    if (!NOT_FORWARDED.has(name.toLowerCase())) headers.push(name, request.rawHeaders[i + 1]!);
  }
  headers.push('Content-Length', String(request.body.length));
  const send = target.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve) => {
    let settled = false;
    const settle = (result: ForwardResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal.removeEventListener('abort', onAbort);
      resolve(result);
    };
    // A raw header array (order and duplicates kept) replaces node's defaults: Host is set above.
    const req = send(target, { method: request.method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        if (size < MAX_ANSWER_BYTES) chunks.push(chunk.subarray(0, MAX_ANSWER_BYTES - size));
        size += chunk.length;
      });
      res.on('end', () => {
        const relayed: Record<string, string> = {};
        for (const name of ['content-type', 'retry-after'] as const) {
          const value = res.headers[name];
          if (typeof value === 'string') relayed[name] = value;
        }
        settle({ status: res.statusCode ?? 502, headers: relayed, body: Buffer.concat(chunks) });
      });
      res.on('error', (err) => settle({ status: null, error: err.message }));
    });
    const timer = setTimeout(() => {
      req.destroy();
      settle({ status: null, error: `no answer within ${options.timeoutMs} ms` });
    }, options.timeoutMs);
    const onAbort = () => {
      req.destroy();
      settle({ status: null, error: 'the gateway closed the delivery request' });
    };
    options.signal.addEventListener('abort', onAbort);
    req.on('error', (err: NodeJS.ErrnoException) => settle({ status: null, error: err.code ?? err.message }));
    req.end(request.body);
  });
}
