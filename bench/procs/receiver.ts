/**
 * Webhook receiver, its own process: answers 204 to every POST and keeps, per
 * request path (one path per subscription or ceiling run), the count of
 * requests, the distinct (partition, offset) pairs seen, the first and last
 * receipt times, and publish-to-receipt latency from the `ce-sentat` header.
 *
 * IPC requests carry `rid`, answered with the same `rid` (see lib/children.ts):
 * `listen { port? }` → `{ port }`; `wait { key, count, timeoutMs }` → `{ stats }` once
 * `count` distinct events (or requests, without herald headers) arrived, or at the timeout;
 * `stats { key }` → `{ stats }`; `forget { key }`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SampleBuffer, nowMs, summarize, type LatencySummary } from '../lib/stats';

interface KeyState {
  requests: number;
  distinct: Set<number>;
  firstAt: number;
  lastAt: number;
  latency: SampleBuffer;
  gaps: SampleBuffer;
  waiters: { count: number; reply: () => void }[];
}

export interface ReceiverStats {
  key: string;
  requests: number;
  distinct: number;
  firstAt: number;
  lastAt: number;
  /** Receipt time minus `ce-sentat`, ms; empty when no request carried it. */
  publishToReceiptMs: LatencySummary;
  /**
   * Per connection: time from answering one request to the arrival of the next
   * on the same connection, ms — how long the sender takes to turn a connection around.
   */
  turnaroundMs: LatencySummary;
}

const keys = new Map<string, KeyState>();

function stateOf(key: string): KeyState {
  let s = keys.get(key);
  if (!s) {
    s = { requests: 0, distinct: new Set(), firstAt: 0, lastAt: 0, latency: new SampleBuffer(), gaps: new SampleBuffer(), waiters: [] };
    keys.set(key, s);
  }
  return s;
}

function statsOf(key: string): ReceiverStats {
  const s = stateOf(key);
  return {
    key,
    requests: s.requests,
    distinct: s.distinct.size || s.requests,
    firstAt: s.firstAt,
    lastAt: s.lastAt,
    publishToReceiptMs: summarize(Float64Array.from(s.latency.values())),
    turnaroundMs: summarize(Float64Array.from(s.gaps.values())),
  };
}

/** Per socket: the key and time of the last answer. A gap counts only within one key (one run). */
const lastAnswered = new WeakMap<object, { key: string; at: number }>();

const server = http.createServer((req, res) => {
  const arrived = nowMs();
  const last = lastAnswered.get(req.socket);
  const previous = last !== undefined && last.key === (req.url ?? '/') ? last.at : undefined;
  req.on('data', () => undefined);
  req.on('end', () => {
    const at = nowMs();
    const s = stateOf(req.url ?? '/');
    s.requests++;
    if (s.firstAt === 0) s.firstAt = at;
    s.lastAt = at;
    const partition = req.headers['herald-partition'];
    const offset = req.headers['herald-offset'];
    // Offsets stay below 2^32 here; partition * 2^32 + offset is an exact integer key.
    if (typeof partition === 'string' && typeof offset === 'string') s.distinct.add(Number(partition) * 2 ** 32 + Number(offset));
    const sentAt = req.headers['ce-sentat'];
    if (typeof sentAt === 'string') s.latency.push(at - Number(sentAt));
    if (previous !== undefined) s.gaps.push(arrived - previous);
    res.writeHead(204);
    res.end();
    lastAnswered.set(req.socket, { key: req.url ?? '/', at: nowMs() });
    if (s.waiters.length > 0) {
      const have = s.distinct.size || s.requests;
      s.waiters = s.waiters.filter((w) => {
        if (have < w.count) return true;
        w.reply();
        return false;
      });
    }
  });
});
server.keepAliveTimeout = 120_000;

process.on('message', (msg: { rid: number; type: string; key?: string; count?: number; timeoutMs?: number; port?: number }) => {
  const answer = (body: object) => process.send!({ rid: msg.rid, ...body });
  switch (msg.type) {
    case 'listen':
      server.listen(msg.port ?? 0, '127.0.0.1', () => answer({ port: (server.address() as AddressInfo).port }));
      return;
    case 'stats':
      answer({ stats: statsOf(msg.key!) });
      return;
    case 'forget':
      keys.delete(msg.key!);
      answer({});
      return;
    case 'wait': {
      const key = msg.key!;
      const s = stateOf(key);
      let answered = false;
      const reply = () => {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        answer({ stats: statsOf(key) });
      };
      const timer = setTimeout(reply, msg.timeoutMs ?? 60_000);
      if ((s.distinct.size || s.requests) >= msg.count!) reply();
      else s.waiters.push({ count: msg.count!, reply });
      return;
    }
  }
});
process.send!({ type: 'ready' });
