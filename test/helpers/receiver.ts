import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  receivedAt: number;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string;
  /** Wait this long before answering (for timeouts). */
  delayMs?: number;
  /** Drop the connection without answering. */
  destroy?: boolean;
}

export type Responder = (req: ReceivedRequest, index: number) => Reply | Promise<Reply>;

/**
 * A real webhook receiver on 127.0.0.1:0 (or `port`) that records every request and
 * answers as the test says (`respond` can be swapped at any time).
 */
export async function startReceiver(respond: Responder = () => ({ status: 204 }), port = 0) {
  const requests: ReceivedRequest[] = [];
  const state = { respond };
  // Answers held back (`delayMs`): cleared at close, so a long one never keeps the test process alive after it.
  const delays = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const received: ReceivedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks),
        receivedAt: Date.now(),
      };
      const index = requests.push(received) - 1;
      const reply = await state.respond(received, index);
      if (reply.delayMs)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            delays.delete(timer);
            resolve();
          }, reply.delayMs);
          delays.add(timer);
        });
      if (reply.destroy) {
        req.socket.destroy();
        return;
      }
      if (res.destroyed) return;
      res.writeHead(reply.status, reply.headers);
      res.end(reply.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const listening = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${listening}/hook`,
    requests,
    setResponder(next: Responder) {
      state.respond = next;
    },
    async close() {
      for (const timer of delays) clearTimeout(timer);
      delays.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
export type Receiver = Awaited<ReturnType<typeof startReceiver>>;

/** Polls until `check` returns a truthy value (bounded); returns it. */
/** Returns a `start(respond)` for receivers ({@link startReceiver}) and registers an `afterEach` that closes them. */
export function useReceivers(): (respond?: Responder) => Promise<Receiver> {
  const open: Receiver[] = [];
  afterEach(async () => {
    for (const r of open.splice(0)) await r.close();
  });
  return async (respond) => {
    const r = await startReceiver(respond);
    open.push(r);
    return r;
  };
}

export async function waitFor<T>(
  check: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? 'condition'}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 10));
  }
}
