/**
 * peer-jetstream: Herald against NATS JetStream with the same client shape —
 * one Node process, 50 concurrent loops, each sending one 1 KiB event and
 * awaiting its acknowledgement before the next, for `--peer-seconds` (10 s)
 * per run after a short warm-up.
 *
 * JetStream: `nats-server -js` (found on PATH or at /usr/sbin/nats-server;
 * the case is skipped without it, and installs nothing), a fresh server and
 * store dir per run, one stream with R1 file storage on one subject and a
 * 2-minute de-duplication window, each event published with a unique
 * `Nats-Msg-Id` by the official nats.js client (procs/natsgen.ts), awaiting
 * its PubAck. Herald: the ingest-single load (binary mode, unique ids) on a
 * fresh gateway with HERALD_FSYNC=always.
 *
 * Both sides' numbers count only with their durability check of the same run:
 * JetStream's stream holds exactly the distinct ids acknowledged (no
 * duplicates) and sampled acknowledged events are at the sequence their
 * PubAck named; Herald's partition heads add up to the events answered 2xx
 * and sampled acknowledged events are found by `GET /events?source&id`.
 */
import fs from 'node:fs';
import { nanos, StorageType, type JetStreamManager, type NatsConnection } from 'nats';
import { forkRpc, type RpcChild } from '../lib/children';
import {
  addCheck,
  ackedIds,
  atLeast,
  baseReport,
  baselineLabel,
  fromLoad,
  newDir,
  ratio,
  removeDir,
  side,
  uniqueTag,
  type CaseReport,
  type Check,
  type Ctx,
  type RunMetrics,
} from '../lib/common';
import { connectWhenUp, findNatsServer, natsServerVersion, startNatsServer } from '../lib/nats';
import { DATA_BYTES } from '../lib/payload';
import { attachProfile, wantProfile } from '../lib/profiled';
import { nowMs } from '../lib/stats';
import type { NatsLoadResult, NatsLoadSpec } from '../procs/natsgen';
import { CONNECTIONS, heraldIngestRun, inRunWarmupMs, singleSpec } from './ingest-single';

const STREAM = 'HERALD_BENCH';
const SUBJECT = 'herald.bench.events';
const DEDUP_WINDOW_MS = 2 * 60_000;
export const SKIP_HINT = 'install with apt-get install -y nats-server';

export function peerTimes(ctx: Ctx) {
  return ctx.quick ? { warmupMs: 300, runMs: Math.min(2, ctx.peerSeconds) * 1000 } : { warmupMs: 2000, runMs: ctx.peerSeconds * 1000 };
}

function natsClientVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(require.resolve('nats/package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** Acknowledged → stored, read back by the PubAck's sequence: the right Nats-Msg-Id and the whole payload. */
async function checkSamples(jsm: JetStreamManager, samples: { id: string; seq: number }[]): Promise<Check> {
  const picked =
    samples.length <= 20 ? samples : Array.from({ length: 20 }, (_, i) => samples[Math.floor((i * (samples.length - 1)) / 19)]!);
  const missing: string[] = [];
  for (const { id, seq } of picked) {
    try {
      const sm = await jsm.streams.getMessage(STREAM, { seq });
      const got = sm.header?.get('Nats-Msg-Id');
      if (got !== id || sm.data.length !== DATA_BYTES) missing.push(`${id} at seq ${seq}: found ${got} (${sm.data.length} bytes)`);
    } catch (err) {
      missing.push(`${id} at seq ${seq}: ${(err as Error).message}`);
    }
  }
  return {
    name: `JetStream: the stream holds ${picked.length} sampled acknowledged events at their PubAck sequence`,
    ok: missing.length === 0 && picked.length > 0,
    detail: missing.length > 0 ? { missing } : undefined,
  };
}

/**
 * One JetStream run on a fresh nats-server and store dir: create the stream, a warm-up load and the
 * measured load from the same client process, then the durability checks over both (into `report`).
 */
async function jetstreamRun(ctx: Ctx, report: CaseReport | undefined, bin: string, runMs: number, warmupMs: number): Promise<RunMetrics> {
  const dir = newDir(ctx, 'jetstream');
  const server = await startNatsServer(bin, dir);
  let nc: NatsConnection | undefined;
  let gen: RpcChild | undefined;
  try {
    nc = await connectWhenUp(server.url, nowMs() + 10_000);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({
      name: STREAM,
      subjects: [SUBJECT],
      storage: StorageType.File,
      num_replicas: 1,
      duplicate_window: nanos(DEDUP_WINDOW_MS),
    });
    gen = await forkRpc('natsgen');
    const load = async (tag: string, durationMs: number) => {
      const spec: NatsLoadSpec = { url: server.url, subject: SUBJECT, connections: CONNECTIONS, durationMs, tag, dataBytes: DATA_BYTES };
      return (await gen!.call<{ result: NatsLoadResult }>('start', { spec })).result;
    };
    const warmTag = uniqueTag('w');
    const warm = warmupMs > 0 ? await load(warmTag, warmupMs) : undefined;
    const tag = uniqueTag('j');
    const r = await load(tag, runMs);
    if (report) {
      const info = await jsm.streams.info(STREAM);
      const messages = info.state.messages;
      const acknowledged = r.okEvents + (warm?.okEvents ?? 0);
      const unknownFate = r.errors + (warm?.errors ?? 0);
      const distinct = new Set<string>();
      if (warm) for (const id of ackedIds(warmTag, warm)) distinct.add(id);
      for (const id of ackedIds(tag, r)) distinct.add(id);
      const duplicates = r.duplicates + (warm?.duplicates ?? 0);
      const detail = { messages, acknowledged, distinctIdsAcknowledged: distinct.size, duplicatePubAcks: duplicates, unknownFate };
      addCheck(report, { name: 'JetStream: stream messages >= events acknowledged', ok: messages >= acknowledged, detail });
      addCheck(report, {
        name: 'JetStream: stream messages = distinct ids acknowledged, no duplicate PubAck',
        ok: duplicates === 0 && distinct.size === acknowledged && messages >= distinct.size && messages <= distinct.size + unknownFate,
        detail,
      });
      addCheck(report, await checkSamples(jsm, r.ackSamples));
    }
    return fromLoad(r, { duplicates: r.duplicates });
  } finally {
    await gen?.stop();
    await nc?.close().catch(() => undefined);
    await server.stop();
    removeDir(dir);
  }
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('peer-jetstream', ctx);
  const bin = findNatsServer();
  if (!bin) {
    report.skipped = `nats-server not found on PATH or at /usr/sbin/nats-server: ${SKIP_HINT}`;
    report.notes = [`skipped: ${report.skipped}. The suite installs nothing itself.`];
    ctx.log(`peer-jetstream: skipped (${report.skipped})`);
    return report;
  }
  const version = natsServerVersion(bin);
  const { warmupMs, runMs } = peerTimes(ctx);
  const inRun = inRunWarmupMs(ctx);
  // Herald's checks go to the report prefixed, so that both sides' checks read apart.
  const heraldRun = async (into: CaseReport | undefined, ms: number, opts: { warmupMs?: number; baseline?: boolean } = {}) => {
    const scratch = into ? baseReport('scratch', ctx) : undefined;
    const { metrics } = await heraldIngestRun(ctx, scratch, (port, tag) => singleSpec(port, ms, tag), opts);
    for (const check of scratch?.correctness.checks ?? [])
      addCheck(into!, { ...check, name: `${opts.baseline ? 'baseline' : 'Herald'}: ${check.name}` });
    return metrics;
  };

  ctx.log(`peer-jetstream: nats-server ${version} (${bin}); warm-up`);
  await jetstreamRun(ctx, undefined, bin, warmupMs, 0);
  await heraldRun(undefined, warmupMs, { warmupMs: 0 });
  if (ctx.baseline) await heraldRun(undefined, warmupMs, { warmupMs: 0, baseline: true });
  const runs = { jetstream: [] as RunMetrics[], herald: [] as RunMetrics[], baseline: [] as RunMetrics[] };
  for (let i = 0; i < ctx.rounds; i++) {
    ctx.log(`peer-jetstream: round ${i + 1}/${ctx.rounds} (${runMs / 1000} s each)`);
    runs.jetstream.push(await jetstreamRun(ctx, report, bin, runMs, inRun));
    runs.herald.push(await heraldRun(report, runMs));
    if (ctx.baseline) runs.baseline.push(await heraldRun(report, runMs, { baseline: true }));
  }
  report.ceiling = side(`NATS JetStream ${version}: R1 file stream, js.publish with Nats-Msg-Id, awaiting each PubAck`, runs.jetstream);
  report.herald = side('Herald POST /events binary, fsync=always', runs.herald);
  const h = report.herald.median;
  const j = report.ceiling.median;
  report.ratios = {
    herald_vs_jetstream: ratio(h.eventsPerSec, j.eventsPerSec),
    // Latency: below 1 is better.
    herald_vs_jetstream_p50_latency: ratio(h.p50, j.p50),
    herald_vs_jetstream_p99_latency: ratio(h.p99, j.p99),
  };
  if (ctx.baseline) {
    report.baseline = side(baselineLabel(ctx, 'POST /events binary, fsync=always'), runs.baseline);
    report.ratios.herald_vs_baseline = ratio(h.eventsPerSec, report.baseline.median.eventsPerSec);
    report.ratios.baseline_vs_jetstream = ratio(report.baseline.median.eventsPerSec, j.eventsPerSec);
  }
  report.targets.push(atLeast('Herald events/s ÷ JetStream events/s', report.ratios.herald_vs_jetstream ?? null, 1.0));
  report.targets.push(atLeast('Herald events/s ÷ JetStream events/s (stretch)', report.ratios.herald_vs_jetstream ?? null, 1.5));
  report.peer = {
    server: `nats-server ${version}`,
    bin,
    command: `${bin} -js -a 127.0.0.1 -p <free port> -sd <temp dir>`,
    client: `nats ${natsClientVersion()} (nats.js), one connection, ${CONNECTIONS} concurrent publish loops`,
    stream: { name: STREAM, subjects: [SUBJECT], storage: 'file', replicas: 1, duplicateWindowMs: DEDUP_WINDOW_MS },
    event: `${DATA_BYTES} bytes of JSON data, ce-* headers, unique Nats-Msg-Id`,
  };
  report.notes = [
    `Each side: ${ctx.rounds} run(s) of ${runMs / 1000} s on a fresh server and data dir, after ${inRun / 1000} s of unmeasured load on it; median of the runs.`,
    'Durability differs: Herald (HERALD_FSYNC=always) answers only after an fsync covering the event; JetStream acknowledges once the message is written to its file store, with no fsync per message (it syncs on a timer; the `sync_interval` setting, `always` included, exists only from nats-server 2.10 on, and 2.9 rejects it). The peer figure is what JetStream delivers as installed, not an fsync-per-ack equivalent.',
    'Client shape is the same (one Node process, 50 loops each awaiting its answer); transport differs: 50 HTTP/1.1 keep-alive connections for Herald, one NATS connection carrying 50 loops for JetStream, as nats.js is meant to be used.',
  ];
  if (wantProfile(ctx, report)) {
    await attachProfile(ctx, report, async (profDir) => {
      const { windowUs } = await heraldIngestRun(ctx, undefined, (port, tag) => singleSpec(port, runMs, tag), { cpuProfDir: profDir });
      return [{ fromUs: windowUs[0], toUs: windowUs[1] }];
    });
  }
  return report;
}
