/**
 * jetstream: the same Herald API on the two engines, in one run. A 3-server nats-server cluster on
 * loopback (R3 streams), with one and with two Herald nodes (HERALD_STORE=jetstream), against the
 * local engine (HERALD_FSYNC=always) on the same machine:
 *
 * - ingest: the ingest-single load (50 connections, binary mode, 1 KiB events, each awaiting its
 *   answer) for the run time; with two nodes the connections are split between them;
 * - delivery: `events` stored first, then one subscription from `earliest` (ordering none, maxInFlight
 *   64) delivers them to a receiver answering 204; with two nodes both deliver (they share the
 *   subscription's consumers), and the subscription is created through the first.
 *
 * Per side: events/s, and CPU per event — user+system time of the Herald processes and of the
 * nats-server processes over the measured window (from /proc/<pid>/stat), divided by the events.
 * This machine has two cores: the cluster's three servers, the Herald nodes, the load generator and
 * the receiver all share them, so a second node cannot show scaling here; the figures say what each
 * engine costs per event. Skipped (one line) without nats-server. No targets: the issue asks for figures.
 */
import { cpuSeconds, forkRpc, httpJson, startGateway, type GatewayChild, type RpcChild } from '../lib/children';
import {
  addCheck,
  baseReport,
  fromLoad,
  newDir,
  removeDir,
  side,
  uniqueTag,
  type CaseReport,
  type Ctx,
  type RunMetrics,
} from '../lib/common';
import { runLoad, type LoadResult } from '../lib/load';
import { findNatsServer, natsServerVersion, startNatsCluster, type NatsClusterProcs } from '../lib/nats';
import { round } from '../lib/stats';
import type { ReceiverStats } from '../procs/receiver';
import { singleSpec } from './ingest-single';
import { SKIP_HINT } from './peer-jetstream';

const cpuOf = (pids: number[]) => pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);

type Engine = 'local' | 'jetstream';

interface Setup {
  engine: Engine;
  nodes: GatewayChild[];
  /** nats-server pids (none on the local engine). */
  natsPids: number[];
  stop(): Promise<void>;
}

async function startSetup(ctx: Ctx, engine: Engine, nodeCount: number, cluster: NatsClusterProcs | undefined): Promise<Setup> {
  const dirs = Array.from({ length: nodeCount }, (_, i) => newDir(ctx, `jetstream-${engine}-${nodeCount}-${i}`));
  const prefix = uniqueTag('bench');
  const env: Record<string, string> =
    engine === 'jetstream'
      ? { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: cluster!.serversEnv, HERALD_NATS_PREFIX: prefix, HERALD_NATS_REPLICAS: '3' }
      : {};
  const nodes: GatewayChild[] = [];
  const stop = async () => {
    for (const node of nodes) await node.stop();
    for (const dir of dirs) removeDir(dir);
  };
  try {
    for (const dir of dirs) nodes.push(await startGateway({ dataDir: dir, fsync: 'always', env }));
  } catch (err) {
    await stop();
    throw err;
  }
  return { engine, nodes, natsPids: engine === 'jetstream' ? cluster!.servers.map((s) => s.child.pid!) : [], stop };
}

const portOf = (gw: GatewayChild) => Number(new URL(gw.url).port);

/** CPU per event, µs, of the Herald processes and of the nats-server processes over a window. */
function cpuWindow(setup: Setup) {
  const heraldPids = setup.nodes.map((n) => n.pid);
  const before = { herald: cpuOf(heraldPids), nats: cpuOf(setup.natsPids) };
  return (events: number) => {
    const herald = cpuOf(heraldPids) - before.herald;
    const nats = cpuOf(setup.natsPids) - before.nats;
    const perEvent = (s: number) => (events > 0 ? round((s * 1e6) / events, 1) : null);
    return { heraldCpuUsPerEvent: perEvent(herald), natsCpuUsPerEvent: perEvent(nats), totalCpuUsPerEvent: perEvent(herald + nats) };
  };
}

/** The ingest-single load split over the setup's nodes; the combined result. */
async function ingestRun(setup: Setup, runMs: number): Promise<RunMetrics> {
  const { nodes } = setup;
  const cpu = cpuWindow(setup);
  const results: LoadResult[] = await Promise.all(
    nodes.map((node) => {
      const spec = singleSpec(portOf(node), runMs, uniqueTag('i'));
      return runLoad({ ...spec, connections: Math.ceil(spec.connections / nodes.length) });
    }),
  );
  const okEvents = results.reduce((n, r) => n + r.okEvents, 0);
  const seconds = Math.max(...results.map((r) => r.seconds));
  const first = fromLoad(results[0]!);
  return {
    ...first,
    rps: round(
      results.reduce((n, r) => n + r.rps, 0),
      1,
    ),
    eventsPerSec: round(okEvents / seconds, 1),
    non2xx: results.reduce((n, r) => n + r.non2xx, 0),
    errors: results.reduce((n, r) => n + r.errors, 0),
    ...cpu(okEvents),
  };
}

/** Stores `events`, then one subscription from earliest delivers them; events/s from its creation to the last receipt. */
async function deliveryRun(setup: Setup, receiver: RpcChild & { port: number }, events: number, report: CaseReport): Promise<RunMetrics> {
  const [first] = setup.nodes;
  const fill = await runLoad({
    port: portOf(first!),
    kind: 'batch',
    batchSize: 100,
    connections: 8,
    maxRequests: events / 100,
    tag: uniqueTag('f'),
  });
  const stored = fill.okEvents;
  const key = `/js-${setup.engine}-${setup.nodes.length}-${uniqueTag('')}`;
  const cpu = cpuWindow(setup);
  const started = Date.now();
  const created = await httpJson<{ id: string }>('POST', `${first!.url}/subscriptions`, {
    sink: `http://127.0.0.1:${receiver.port}${key}`,
    delivery: { ordering: 'none', maxInFlight: 64 },
    startAt: 'earliest',
  });
  if (created.status !== 201) throw new Error(`POST /subscriptions answered ${created.status}: ${JSON.stringify(created.body)}`);
  const { stats } = await receiver.call<{ stats: ReceiverStats }>('wait', { key, count: stored, timeoutMs: 300_000 });
  const seconds = (stats.lastAt > 0 ? Date.now() - started : 0) / 1000;
  addCheck(report, {
    name: `${setup.engine}, ${setup.nodes.length} node(s): every stored event delivered`,
    ok: stats.distinct >= stored,
    detail: { stored, delivered: stats.distinct, requests: stats.requests, fillNon2xx: fill.non2xx, fillErrors: fill.errors },
  });
  await receiver.call('forget', { key });
  await httpJson('DELETE', `${first!.url}/subscriptions/${created.body.id}`);
  return {
    rps: null,
    eventsPerSec: seconds > 0 ? round(stats.distinct / seconds, 1) : null,
    p50: null,
    p99: null,
    max: null,
    non2xx: 0,
    errors: 0,
    delivered: stats.distinct,
    duplicates: stats.requests - stats.distinct,
    seconds: round(seconds, 2),
    ...cpu(stats.distinct),
  };
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('jetstream', ctx);
  const bin = findNatsServer();
  if (!bin) {
    report.skipped = `nats-server not found on PATH or at /usr/sbin/nats-server: ${SKIP_HINT}`;
    report.notes = [`skipped: ${report.skipped}. The suite installs nothing itself.`];
    ctx.log(`jetstream: skipped (${report.skipped})`);
    return report;
  }
  const runMs = ctx.quick ? 2000 : 10_000;
  const events = ctx.quick ? 2_000 : 20_000;
  const clusterDir = newDir(ctx, 'jetstream-cluster');
  ctx.log(`jetstream: starting a 3-server cluster (nats-server ${natsServerVersion(bin)})`);
  const cluster = await startNatsCluster(bin, clusterDir, 3);
  const rpc = await forkRpc('receiver');
  const receiver = Object.assign(rpc, (await rpc.call<{ port: number }>('listen', {})) as { port: number });
  const sides: Record<string, { ingest: RunMetrics[]; deliver: RunMetrics[] }> = {};
  try {
    const plans: [Engine, number][] = [
      ['local', 1],
      ['jetstream', 1],
      ['jetstream', 2],
    ];
    for (let round_ = 0; round_ < ctx.rounds; round_++) {
      for (const [engine, nodes] of plans) {
        const name = `${engine}-${nodes}`;
        ctx.log(`jetstream: round ${round_ + 1}/${ctx.rounds}, ${engine} engine, ${nodes} node(s)`);
        const setup = await startSetup(ctx, engine, nodes, cluster);
        try {
          const entry = (sides[name] ??= { ingest: [], deliver: [] });
          entry.ingest.push(await ingestRun(setup, runMs));
          entry.deliver.push(await deliveryRun(setup, receiver, events, report));
        } finally {
          await setup.stop();
        }
      }
    }
  } finally {
    await rpc.stop();
    await cluster.stop();
    removeDir(clusterDir);
  }
  report.others = {};
  for (const [name, { ingest, deliver }] of Object.entries(sides)) {
    report.others[`ingest ${name}`] = side(`POST /events binary, ${name.replace('-', ' engine, ')} node(s)`, ingest);
    report.others[`deliver ${name}`] = side(
      `${events} stored events delivered from earliest, ${name.replace('-', ' engine, ')} node(s)`,
      deliver,
    );
  }
  const median = (key: string, field: string) => (report.others![key]?.median[field] as number | null | undefined) ?? null;
  for (const what of ['ingest', 'deliver']) {
    const local = median(`${what} local-1`, 'eventsPerSec');
    report.ratios[`${what}_jetstream1_vs_local`] = local ? round((median(`${what} jetstream-1`, 'eventsPerSec') ?? 0) / local, 3) : null;
    report.ratios[`${what}_jetstream2_vs_local`] = local ? round((median(`${what} jetstream-2`, 'eventsPerSec') ?? 0) / local, 3) : null;
  }
  report.cluster = { servers: 3, replicas: 3, version: natsServerVersion(bin) };
  report.notes = [
    `Each side: ${ctx.rounds} round(s); ingest runs ${runMs / 1000} s; delivery drains ${events} events stored just before. Median of the rounds.`,
    'CPU per event is user+system time from /proc/<pid>/stat over the measured window: the Herald processes (all their threads) and, on the jetstream engine, the three nats-server processes.',
    'Durability differs: the local engine answers after an fdatasync covering the event; the jetstream engine after a majority of the three servers stored it (nats-server 2.9.10 flushes to disk on a timer).',
    'Two cores for everything: three nats-servers, the Herald nodes, the load generator and the receiver. A second node adds capacity only where cores are free, which is not here.',
  ];
  return report;
}
