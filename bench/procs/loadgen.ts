/**
 * Load generator, run as its own process (fork) so load never shares a core's
 * event loop with the server under test.
 *
 * Raw HTTP/1.1 over keep-alive sockets rather than undici or autocannon: each
 * request needs a unique `ce-id` (and in the latency case a send timestamp),
 * the open-loop mode needs its own schedule, and a closed-loop run must stop
 * issuing at the deadline and then wait for what is in flight, so that every
 * 2xx is counted and the durability check can be exact. Per request this costs
 * a few microseconds: the generator is never the bottleneck of a 1-core server.
 *
 * IPC (see lib/children.ts): `start { spec }` → `{ result }`; `stop` makes a
 * running `start` stop issuing, wait for what is in flight, and answer.
 */
import net from 'node:net';
import { SampleBuffer, nowMs, round, summarize, type LatencySummary } from '../lib/stats';
import { SOURCE, TYPE, eventId, jsonData, partitionKey, structuredEvent } from '../lib/payload';

export interface LoadSpec {
  port: number;
  kind: 'binary' | 'batch';
  connections: number;
  /** Stop issuing after this long (ms). */
  durationMs?: number;
  /** Stop issuing after this many requests. */
  maxRequests?: number;
  /** Open loop at this many requests/s; closed loop (each connection sends as soon as answered) when absent. */
  rate?: number;
  /** Events per request in batch mode. */
  batchSize?: number;
  /** Makes ids unique across runs against one data dir. */
  tag: string;
  /** Carry the send time (ms since the epoch, fractional) as the `sentat` extension. */
  sentAt?: boolean;
  /** Report per-connection sequence numbers that were not answered 2xx (for durability checks). */
  track?: boolean;
  /** How long to wait for requests in flight once issuing stops (ms). */
  drainTimeoutMs?: number;
  /** Size of each event's JSON data in bytes (1 KiB when absent). */
  dataBytes?: number;
}

export interface ConnTrack {
  /** Requests issued on this connection: sequence numbers 0..sent-1. */
  sent: number;
  /** Sequence numbers answered non-2xx or lost to an error: not acknowledged. */
  failed: number[];
}

export interface LoadResult {
  requests: number;
  ok: number;
  okEvents: number;
  non2xx: number;
  errors: number;
  /** Open loop only: requests that could not even be queued (the server fell > 1 s behind). */
  dropped: number;
  statusCounts: Record<string, number>;
  errorSamples: string[];
  seconds: number;
  rps: number;
  eventsPerSec: number;
  latencyMs: LatencySummary;
  /** CLOCK_MONOTONIC µs (the clock of V8 CPU profiles) at the first request and when the run ended. */
  windowUs: [number, number];
  tracks?: ConnTrack[];
}

const monoUs = () => Number(process.hrtime.bigint() / 1000n);

const HEAD_END = Buffer.from('\r\n\r\n');

interface Parsed {
  consumed: number;
  status: number;
  close: boolean;
  bodyStart: number;
}

/** Parses one complete response at the start of `buf`, or returns null if more bytes are needed. */
function parseResponse(buf: Buffer): Parsed | null | 'unsupported' {
  const headEnd = buf.indexOf(HEAD_END);
  if (headEnd === -1) return null;
  const head = buf.toString('latin1', 0, headEnd).toLowerCase();
  const status = Number(head.slice(9, 12));
  const close = /\r\nconnection:\s*close/.test(head);
  const bodyStart = headEnd + 4;
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) return { consumed: bodyStart, status, close, bodyStart };
  const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
  if (cl) {
    const end = bodyStart + Number(cl[1]);
    return buf.length >= end ? { consumed: end, status, close, bodyStart } : null;
  }
  if (/\r\ntransfer-encoding:\s*chunked/.test(head)) {
    let pos = bodyStart;
    for (;;) {
      const lineEnd = buf.indexOf('\r\n', pos);
      if (lineEnd === -1) return null;
      const size = parseInt(buf.toString('latin1', pos, lineEnd), 16);
      pos = lineEnd + 2;
      if (size === 0) return buf.length >= pos + 2 ? { consumed: pos + 2, status, close, bodyStart } : null;
      if (buf.length < pos + size + 2) return null;
      pos += size + 2;
    }
  }
  return 'unsupported';
}

function run(spec: LoadSpec, stopSignal: { stopped: boolean; wake: () => void }): Promise<LoadResult> {
  const data = Buffer.from(jsonData(spec.dataBytes));
  const batchSize = spec.batchSize ?? 100;
  const samples = new SampleBuffer();
  const statusCounts: Record<string, number> = {};
  const errorSamples: string[] = [];
  const tracks: ConnTrack[] = [];
  let requests = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let dropped = 0;
  let keyCounter = 0;
  let issuing = true;
  let lastDone = 0;
  const start = nowMs();
  const startUs = monoUs();
  const host = `127.0.0.1:${spec.port}`;
  const eventsPerRequest = spec.kind === 'batch' ? batchSize : 1;

  function sample(msg: string): void {
    if (errorSamples.length < 8) errorSamples.push(msg.slice(0, 300));
  }

  function build(conn: number, seq: number): Buffer[] {
    if (spec.kind === 'binary') {
      const id = eventId(spec.tag, conn, seq);
      const sentAt = spec.sentAt ? `ce-sentat: ${nowMs().toFixed(3)}\r\n` : '';
      const head =
        `POST /events HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nce-specversion: 1.0\r\n` +
        `ce-id: ${id}\r\nce-source: ${SOURCE}\r\nce-type: ${TYPE}\r\nce-partitionkey: ${partitionKey(keyCounter++)}\r\n${sentAt}` +
        `Content-Length: ${data.length}\r\n\r\n`;
      return [Buffer.from(head, 'latin1'), data];
    }
    const parts: string[] = new Array(batchSize);
    const dataText = data.toString('utf8');
    for (let i = 0; i < batchSize; i++) parts[i] = structuredEvent(eventId(spec.tag, conn, seq, i), partitionKey(keyCounter++), dataText);
    const body = Buffer.from(`[${parts.join(',')}]`, 'utf8');
    const head = `POST /events HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/cloudevents-batch+json\r\nContent-Length: ${body.length}\r\n\r\n`;
    return [Buffer.from(head, 'latin1'), body];
  }

  // ---- connections ----------------------------------------------------------
  interface Conn {
    index: number;
    socket: net.Socket | null;
    connecting: boolean;
    busy: boolean;
    buf: Buffer;
    seq: number;
    currentSeq: number;
    t0: number;
    retryTimer?: NodeJS.Timeout;
  }
  const conns: Conn[] = [];
  const queue: number[] = []; // open loop: intended send times
  let queueHead = 0;

  function openSocket(c: Conn): void {
    c.connecting = true;
    const socket = net.connect({ host: '127.0.0.1', port: spec.port });
    socket.setNoDelay(true);
    c.socket = socket;
    c.buf = Buffer.alloc(0);
    socket.on('connect', () => {
      c.connecting = false;
      pump(c);
    });
    socket.on('data', (chunk: Buffer) => {
      c.buf = c.buf.length === 0 ? chunk : Buffer.concat([c.buf, chunk]);
      for (;;) {
        if (!c.busy) {
          if (c.buf.length > 0) fail(c, 'bytes without a request');
          return;
        }
        const parsed = parseResponse(c.buf);
        if (parsed === null) return;
        if (parsed === 'unsupported') {
          fail(c, 'response without length');
          return;
        }
        const done = nowMs();
        lastDone = done;
        samples.push(done - c.t0);
        statusCounts[parsed.status] = (statusCounts[parsed.status] ?? 0) + 1;
        if (parsed.status >= 200 && parsed.status < 300) ok++;
        else {
          non2xx++;
          tracks[c.index]?.failed.push(c.currentSeq);
          sample(`HTTP ${parsed.status}: ${c.buf.toString('utf8', parsed.bodyStart, Math.min(parsed.consumed, parsed.bodyStart + 200))}`);
        }
        c.buf = c.buf.subarray(parsed.consumed);
        c.busy = false;
        if (parsed.close) {
          socket.destroy();
          c.socket = null;
          if (issuing) openSocket(c);
          else finishedCheck();
          return;
        }
        pump(c);
      }
    });
    const onGone = (err?: Error) => {
      if (c.socket !== socket) return;
      c.socket = null;
      c.connecting = false;
      if (c.busy) fail(c, err ? `${(err as NodeJS.ErrnoException).code ?? err.message}` : 'connection closed before the response');
      else if (err) {
        errors++;
        sample(`connect: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
      }
      if (issuing) {
        c.retryTimer = setTimeout(() => issuing && openSocket(c), 20); // bounded pace when the server is down
      }
      finishedCheck();
    };
    socket.on('error', (err) => onGone(err));
    socket.on('close', () => onGone());
  }

  function fail(c: Conn, reason: string): void {
    if (c.busy) {
      errors++;
      tracks[c.index]?.failed.push(c.currentSeq);
      c.busy = false;
      sample(reason);
    }
    lastDone = nowMs();
    const s = c.socket;
    c.socket = null;
    s?.destroy();
    if (issuing) c.retryTimer = setTimeout(() => issuing && openSocket(c), 20);
    finishedCheck();
  }

  function send(c: Conn, intendedAt?: number): void {
    const seq = c.seq++;
    if (tracks[c.index]) tracks[c.index]!.sent = c.seq;
    const bufs = build(c.index, seq);
    c.busy = true;
    c.currentSeq = seq;
    c.t0 = intendedAt ?? nowMs();
    requests++;
    const s = c.socket!;
    s.cork();
    for (const b of bufs) s.write(b);
    s.uncork();
  }

  function canIssue(): boolean {
    if (!issuing) return false;
    if (spec.maxRequests !== undefined && requests >= spec.maxRequests) {
      stopIssuing();
      return false;
    }
    return true;
  }

  /** Gives an idle, connected connection its next request. */
  function pump(c: Conn): void {
    if (c.busy || c.connecting || !c.socket) return;
    if (!canIssue()) {
      finishedCheck();
      return;
    }
    if (spec.rate === undefined) send(c);
    else if (queueHead < queue.length) {
      send(c, queue[queueHead++]);
      if (queueHead > 4096 && queueHead * 2 > queue.length) {
        queue.splice(0, queueHead);
        queueHead = 0;
      }
    }
  }

  for (let i = 0; i < spec.connections; i++) {
    const c: Conn = { index: i, socket: null, connecting: false, busy: false, buf: Buffer.alloc(0), seq: 0, currentSeq: -1, t0: 0 };
    conns.push(c);
    if (spec.track) tracks.push({ sent: 0, failed: [] });
    openSocket(c);
  }

  // ---- open-loop schedule ---------------------------------------------------
  let generated = 0;
  let tickTimer: NodeJS.Timeout | undefined;
  if (spec.rate !== undefined) {
    const rate = spec.rate;
    const maxQueue = Math.max(100, Math.ceil(rate)); // one second behind: count the rest as dropped
    const tick = () => {
      if (!issuing) return;
      const now = nowMs();
      const due = Math.floor(((now - start) * rate) / 1000);
      for (; generated < due; generated++) {
        if (queue.length - queueHead >= maxQueue) dropped++;
        else queue.push(now); // intended at this tick: latency includes any wait for a free connection
      }
      for (const c of conns) {
        if (queueHead >= queue.length) break;
        pump(c);
      }
      tickTimer = setTimeout(tick, 1);
    };
    tick();
  }

  let resolveDone!: (r: LoadResult) => void;
  const done = new Promise<LoadResult>((r) => (resolveDone = r));
  let finished = false;
  let drainTimer: NodeJS.Timeout | undefined;
  let stopAt = 0;

  function stopIssuing(): void {
    if (!issuing) return;
    issuing = false;
    stopAt = nowMs();
    if (tickTimer) clearTimeout(tickTimer);
    for (const c of conns) if (c.retryTimer) clearTimeout(c.retryTimer);
    drainTimer = setTimeout(() => {
      for (const c of conns) if (c.busy) fail(c, 'no answer before the drain timeout');
      finish();
    }, spec.drainTimeoutMs ?? 10_000);
    finishedCheck();
  }

  function finishedCheck(): void {
    if (issuing || finished) return;
    if (conns.some((c) => c.busy)) return;
    finish();
  }

  function finish(): void {
    if (finished) return;
    finished = true;
    if (drainTimer) clearTimeout(drainTimer);
    for (const c of conns) {
      if (c.retryTimer) clearTimeout(c.retryTimer);
      c.socket?.destroy();
      c.socket = null;
    }
    const end = spec.rate === undefined ? Math.max(lastDone, start + 1) : stopAt;
    const seconds = (end - start) / 1000;
    const completed = ok + non2xx;
    resolveDone({
      requests,
      ok,
      okEvents: ok * eventsPerRequest,
      non2xx,
      errors,
      dropped,
      statusCounts,
      errorSamples,
      seconds: round(seconds),
      rps: round(completed / seconds, 1),
      eventsPerSec: round((ok * eventsPerRequest) / seconds, 1),
      latencyMs: summarize(samples.values()),
      windowUs: [startUs, monoUs()],
      tracks: spec.track ? tracks : undefined,
    });
  }

  if (spec.durationMs !== undefined) setTimeout(stopIssuing, spec.durationMs);
  stopSignal.wake = stopIssuing;
  if (stopSignal.stopped) stopIssuing();
  return done;
}

if (require.main === module) {
  const stopSignal = { stopped: false, wake: () => undefined as void };
  process.on('message', (msg: { rid: number; type: string; spec?: LoadSpec }) => {
    if (msg.type === 'stop') {
      stopSignal.stopped = true;
      stopSignal.wake();
      process.send!({ rid: msg.rid });
    } else if (msg.type === 'start' && msg.spec) {
      run(msg.spec, stopSignal).then(
        (result) => process.send!({ rid: msg.rid, result }),
        (err: Error) => process.send!({ rid: msg.rid, error: err.stack ?? String(err) }),
      );
    }
  });
  process.send!({ type: 'ready' });
}
