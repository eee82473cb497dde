import { Pool } from 'undici';

export interface SendResult {
  /** null for a connection error or timeout. */
  status: number | null;
  retryAfter?: string;
  /** Response-body excerpt (≤ 1 KiB) or the error message. */
  error?: string;
}

const EXCERPT_BYTES = 1024;
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Posts webhook requests through one keep-alive undici Pool per sink origin.
 * Redirects are never followed. `timeoutMs` bounds the wait for the answer's
 * headers and each gap in its body (undici's own timers: an AbortSignal per
 * request cost 4 % of delivery CPU); connecting is bounded separately.
 */
export function createHttpSender(opts: { connectionsPerOrigin?: number } = {}) {
  const pools = new Map<string, Pool>();

  function poolFor(origin: string): Pool {
    let pool = pools.get(origin);
    if (!pool) {
      pool = new Pool(origin, { connections: opts.connectionsPerOrigin ?? 64, keepAliveTimeout: 30_000, connectTimeout: CONNECT_TIMEOUT_MS });
      pools.set(origin, pool);
    }
    return pool;
  }

  async function send(sink: string, headers: Record<string, string>, body: Buffer, timeoutMs: number): Promise<SendResult> {
    const url = new URL(sink);
    try {
      const res = await poolFor(url.origin).request({
        method: 'POST',
        path: url.pathname + url.search,
        headers,
        body,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const excerpt = await readExcerpt(res.body);
      const retryAfter = res.headers['retry-after'];
      return {
        status: res.statusCode,
        retryAfter: Array.isArray(retryAfter) ? retryAfter[0] : retryAfter,
        error: res.statusCode >= 300 ? excerpt : undefined,
      };
    } catch (err) {
      const e = err as Error & { code?: string };
      const timedOut = e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT';
      return { status: null, error: timedOut ? `no answer within ${timeoutMs} ms` : `${e.code ?? e.name}: ${e.message}` };
    }
  }

  return {
    send,
    async close(): Promise<void> {
      await Promise.all([...pools.values()].map((p) => p.close().catch(() => p.destroy())));
      pools.clear();
    },
  };
}
export type HttpSender = ReturnType<typeof createHttpSender>;

async function readExcerpt(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    if (size < EXCERPT_BYTES) chunks.push(chunk);
    size += chunk.length;
  }
  return Buffer.concat(chunks).subarray(0, EXCERPT_BYTES).toString('utf8');
}
