/**
 * JetStream load generator for peer-jetstream, run as its own process (fork)
 * like loadgen: one NATS connection, `connections` concurrent loops, each
 * publishing one event and awaiting its PubAck (`js.publish`) before the next.
 * The event is the one loadgen sends Herald: the same JSON data bytes, its
 * CloudEvents attributes as `ce-*` headers (the NATS protocol binding's
 * binary mode) and its id as `Nats-Msg-Id`, so the stream de-duplicates.
 *
 * Ids are loadgen's (`tag-loop-seq`), and the result is a loadgen
 * `LoadResult` (requests are publishes, a 2xx is a PubAck), so the suite's
 * reports and `ackedIds` work on both. Every loop is bounded by the duration
 * (or a request count) and every publish by its ack timeout.
 *
 * IPC (see lib/children.ts): `start { spec }` → `{ result }`; `stop` ends issuing early.
 * Several `start`s may run one after another in the same process (warm-up, then the measured run).
 */
import { connect, headers, type JetStreamClient, type MsgHdrs, type NatsConnection } from 'nats';
import type { ConnTrack, LoadResult } from './loadgen';
import { SOURCE, TYPE, eventId, jsonData, partitionKey } from '../lib/payload';
import { SampleBuffer, nowMs, round, summarize } from '../lib/stats';

export interface NatsLoadSpec {
  /** `127.0.0.1:<port>` of nats-server. */
  url: string;
  subject: string;
  /** Concurrent publish loops on the one connection. */
  connections: number;
  durationMs?: number;
  maxRequests?: number;
  tag: string;
  /** How long one publish waits for its PubAck (ms). */
  ackTimeoutMs?: number;
  dataBytes?: number;
}

export interface NatsLoadResult extends LoadResult {
  /** PubAcks that said `duplicate` (the stream already had that Nats-Msg-Id): 0 when every id is new. */
  duplicates: number;
  /** The first and last acknowledged publish of each loop, with the stream sequence its PubAck named. */
  ackSamples: { id: string; seq: number }[];
}

const monoUs = () => Number(process.hrtime.bigint() / 1000n);

let nc: NatsConnection | undefined;
let js: JetStreamClient | undefined;

async function client(url: string): Promise<JetStreamClient> {
  if (!nc || nc.isClosed()) {
    nc = await connect({ servers: url, timeout: 10_000, reconnect: false, name: 'herald-bench natsgen' });
    js = nc.jetstream();
  }
  return js!;
}

async function run(spec: NatsLoadSpec, stopSignal: { stopped: boolean; wake: () => void }): Promise<NatsLoadResult> {
  const jsc = await client(spec.url);
  const data = Buffer.from(jsonData(spec.dataBytes));
  const samples = new SampleBuffer();
  const errorSamples: string[] = [];
  const tracks: ConnTrack[] = [];
  const ackSamples: { id: string; seq: number }[] = [];
  let requests = 0;
  let ok = 0;
  let errors = 0;
  let duplicates = 0;
  let keyCounter = 0;
  let issuing = true;
  let lastDone = 0;
  const start = nowMs();
  const startUs = monoUs();
  const stopIssuing = () => {
    issuing = false;
  };
  const timer = spec.durationMs !== undefined ? setTimeout(stopIssuing, spec.durationMs) : undefined;
  stopSignal.wake = stopIssuing;
  if (stopSignal.stopped) stopIssuing();

  const hdrs = (id: string): MsgHdrs => {
    const h = headers();
    h.set('ce-specversion', '1.0');
    h.set('ce-id', id);
    h.set('ce-source', SOURCE);
    h.set('ce-type', TYPE);
    h.set('ce-partitionkey', partitionKey(keyCounter++));
    h.set('content-type', 'application/json');
    return h;
  };

  const loop = async (conn: number) => {
    const track: ConnTrack = { sent: 0, failed: [] };
    tracks[conn] = track;
    let first: { id: string; seq: number } | undefined;
    let last: { id: string; seq: number } | undefined;
    for (let seq = 0; issuing && (spec.maxRequests === undefined || requests < spec.maxRequests); seq++) {
      const id = eventId(spec.tag, conn, seq);
      track.sent = seq + 1;
      requests++;
      const t0 = nowMs();
      try {
        const ack = await jsc.publish(spec.subject, data, { msgID: id, headers: hdrs(id), timeout: spec.ackTimeoutMs ?? 10_000 });
        const done = nowMs();
        lastDone = done;
        samples.push(done - t0);
        ok++;
        if (ack.duplicate) duplicates++;
        last = { id, seq: ack.seq };
        first ??= last;
      } catch (err) {
        lastDone = nowMs();
        errors++;
        track.failed.push(seq);
        if (errorSamples.length < 8) errorSamples.push(String((err as Error).message ?? err).slice(0, 300));
        if (nc?.isClosed()) stopIssuing(); // the server is gone: no point spinning on errors
      }
    }
    if (first) ackSamples.push(first);
    if (last && last !== first) ackSamples.push(last);
  };
  await Promise.all(Array.from({ length: spec.connections }, (_, i) => loop(i)));
  if (timer) clearTimeout(timer);
  const seconds = (Math.max(lastDone, start + 1) - start) / 1000;
  return {
    requests,
    ok,
    okEvents: ok,
    non2xx: 0,
    errors,
    dropped: 0,
    statusCounts: { puback: ok },
    errorSamples,
    seconds: round(seconds),
    rps: round(ok / seconds, 1),
    eventsPerSec: round(ok / seconds, 1),
    latencyMs: summarize(samples.values()),
    windowUs: [startUs, monoUs()],
    tracks,
    duplicates,
    ackSamples,
  };
}

if (require.main === module) {
  const stopSignal = { stopped: false, wake: () => undefined as void };
  process.on('message', (msg: { rid: number; type: string; spec?: NatsLoadSpec }) => {
    if (msg.type === 'stop') {
      stopSignal.stopped = true;
      stopSignal.wake();
      process.send!({ rid: msg.rid });
    } else if (msg.type === 'start' && msg.spec) {
      stopSignal.stopped = false;
      run(msg.spec, stopSignal).then(
        (result) => process.send!({ rid: msg.rid, result }),
        (err: Error) => process.send!({ rid: msg.rid, error: err.stack ?? String(err) }),
      );
    }
  });
  // SIGTERM from forkRpc's stop: close the connection so nats-server does not log a broken pipe.
  process.on('SIGTERM', () => {
    const closing = nc && !nc.isClosed() ? nc.close() : Promise.resolve();
    void closing.finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
  process.send!({ type: 'ready' });
}
