/**
 * deliver / deliver-ordered: 100k events already stored; one subscription
 * (startAt earliest) delivers them all to a receiver answering 204 in its own
 * process. Ceiling: an undici Pool posting the same bodies to the same
 * receiver at the same concurrency. Both cases share one filled gateway.
 */
import { forkRpc, httpJson, runJson, startGateway, type GatewayChild, type RpcChild } from '../lib/children';
import {
  addCheck,
  atLeast,
  baseReport,
  baselineLabel,
  headsSum,
  newDir,
  ratio,
  removeDir,
  side,
  uniqueTag,
  type CaseReport,
  type Ctx,
  type RunMetrics,
} from '../lib/common';
import { runLoad } from '../lib/load';
import { monoUs } from '../lib/profile';
import { attachProfile, wantProfile } from '../lib/profiled';
import type { LatencySummary } from '../lib/stats';
import { nowMs, round } from '../lib/stats';
import type { ReceiverStats } from '../procs/receiver';

/** maxInFlight of the subscription and concurrency of the ceiling. */
export const CONCURRENCY = 64;

interface Fixture {
  dir: string;
  gw: GatewayChild;
  receiver: RpcChild;
  receiverPort: number;
  events: number;
  restart(cpuProfDir?: string): Promise<void>;
}

async function fixture(ctx: Ctx, baseline = false): Promise<Fixture> {
  const sharedKey = baseline ? 'deliverFixtureBaseline' : 'deliverFixture';
  const existing = ctx.shared[sharedKey] as Fixture | undefined;
  if (existing) return existing;
  const events = ctx.quick ? 5_000 : 100_000;
  const receiver = await startReceiver(ctx);
  const dir = newDir(ctx, baseline ? 'deliver-baseline' : 'deliver');
  const fx: Fixture = {
    dir,
    gw: await startGateway({ dataDir: dir, fsync: 'always', baseline }),
    receiver,
    receiverPort: receiver.port,
    events,
    async restart(cpuProfDir?: string) {
      await fx.gw.stop();
      fx.gw = await startGateway({ dataDir: dir, fsync: 'always', cpuProfDir, baseline });
    },
  };
  ctx.defer(async () => {
    await fx.gw.stop();
    removeDir(dir);
  });
  ctx.log(`deliver: storing ${events} events (batches of 100)${baseline ? ' in the baseline gateway' : ''}`);
  const fill = await runLoad({
    port: Number(new URL(fx.gw.url).port),
    kind: 'batch',
    batchSize: 100,
    connections: 8,
    maxRequests: events / 100,
    tag: uniqueTag('d'),
  });
  const heads = await headsSum(fx.gw);
  if (fill.okEvents !== events || heads !== events)
    throw new Error(`deliver fixture: stored ${heads} of ${events} events (${fill.non2xx} non-2xx, ${fill.errors} errors)`);
  ctx.shared[sharedKey] = fx;
  return fx;
}

/** One receiver process for the suite. */
export async function startReceiver(ctx: Ctx): Promise<RpcChild & { port: number }> {
  const existing = ctx.shared.receiver as (RpcChild & { port: number }) | undefined;
  if (existing) return existing;
  const rpc = await forkRpc('receiver');
  const { port } = await rpc.call<{ port: number }>('listen', {});
  const receiver = Object.assign(rpc, { port });
  ctx.shared.receiver = receiver;
  ctx.defer(() => rpc.stop());
  return receiver;
}

const gapMetrics = (s: ReceiverStats) => ({ p50: s.turnaroundMs.p50, p99: s.turnaroundMs.p99, max: s.turnaroundMs.max });

async function ceilingRun(fx: Fixture, count: number): Promise<RunMetrics> {
  const key = `/c-${uniqueTag('')}`;
  const r = await runJson<{ ok: number; non2xx: number; errors: number; seconds: number; rps: number; latencyMs: LatencySummary }>(
    'deliver-ceiling',
    [`http://127.0.0.1:${fx.receiverPort}${key}`, String(count), String(CONCURRENCY)],
    300_000,
  );
  const { stats } = await fx.receiver.call<{ stats: ReceiverStats }>('stats', { key });
  await fx.receiver.call('forget', { key });
  return {
    rps: r.rps,
    ...gapMetrics(stats),
    non2xx: r.non2xx,
    errors: r.errors,
    delivered: stats.distinct,
    seconds: r.seconds,
    clientLatencyMs: r.latencyMs,
  };
}

async function heraldRun(fx: Fixture, ordering: 'none' | 'partition', count: number, report?: CaseReport): Promise<RunMetrics> {
  const key = `/h-${ordering}-${uniqueTag('')}`;
  const t0 = nowMs();
  const created = await httpJson<{ id: string }>('POST', `${fx.gw.url}/subscriptions`, {
    sink: `http://127.0.0.1:${fx.receiverPort}${key}`,
    delivery: { ordering, maxInFlight: CONCURRENCY },
    startAt: 'earliest',
  });
  if (created.status !== 201) throw new Error(`POST /subscriptions answered ${created.status}: ${JSON.stringify(created.body)}`);
  const id = created.body.id;
  const { stats } = await fx.receiver.call<{ stats: ReceiverStats }>('wait', { key, count, timeoutMs: 300_000 });
  const seconds = (stats.lastAt - t0) / 1000;
  if (report) {
    // Every stored event arrived; the subscription's committed offsets reach the heads.
    let lag = -1;
    for (let i = 0; i < 100 && lag !== 0; i++) {
      const sub = await httpJson<{ stats: { partitions: { lag: number }[] } }>('GET', `${fx.gw.url}/subscriptions/${id}`);
      lag = sub.body.stats.partitions.reduce((n, p) => n + p.lag, 0);
      if (lag !== 0) await new Promise((r) => setTimeout(r, 50));
    }
    addCheck(report, {
      name: `all ${count} stored events delivered (distinct partition/offset at the receiver)`,
      ok: stats.distinct >= count,
      detail: { distinct: stats.distinct, requests: stats.requests },
    });
    addCheck(report, { name: 'subscription lag 0 after delivery (GET /subscriptions/{id})', ok: lag === 0, detail: { lag } });
  }
  const deleted = await httpJson('DELETE', `${fx.gw.url}/subscriptions/${id}`);
  if (deleted.status !== 204) throw new Error(`DELETE /subscriptions/${id} answered ${deleted.status}`);
  await fx.receiver.call('forget', { key });
  return {
    rps: round(Math.min(stats.distinct, count) / seconds, 1),
    ...gapMetrics(stats),
    non2xx: 0,
    errors: stats.distinct < count ? count - stats.distinct : 0,
    delivered: stats.distinct,
    duplicates: stats.requests - stats.distinct,
    seconds: round(seconds),
  };
}

async function runCase(ctx: Ctx, name: 'deliver' | 'deliver-ordered', ordering: 'none' | 'partition'): Promise<CaseReport> {
  const report = baseReport(name, ctx);
  const fx = await fixture(ctx);
  const bfx = ctx.baseline ? await fixture(ctx, true) : undefined;
  const n = fx.events;
  ctx.log(`${name}: warm-up`);
  await ceilingRun(fx, n / 5);
  await heraldRun(fx, ordering, n / 5);
  if (bfx) await heraldRun(bfx, ordering, n / 5);
  const runs = { ceiling: [] as RunMetrics[], herald: [] as RunMetrics[], baseline: [] as RunMetrics[] };
  for (let i = 0; i < ctx.rounds; i++) {
    ctx.log(`${name}: round ${i + 1}/${ctx.rounds}`);
    runs.ceiling.push(await ceilingRun(fx, n));
    runs.herald.push(await heraldRun(fx, ordering, n, report));
    if (bfx) runs.baseline.push(await heraldRun(bfx, ordering, n, report));
  }
  report.ceiling = side(
    `undici Pool, ${CONCURRENCY} concurrent POSTs of the same bodies (p50/p99/max: receiver-side connection turnaround)`,
    runs.ceiling,
  );
  report.herald = side(
    `Herald subscription ordering=${ordering}, maxInFlight ${CONCURRENCY}, ${n} events from earliest (p50/p99/max: receiver-side connection turnaround)`,
    runs.herald,
  );
  const key = ordering === 'none' ? 'herald_vs_undici' : 'ordered_vs_deliver_ceiling';
  report.ratios = { [key]: ratio(report.herald.median.rps, report.ceiling.median.rps) };
  if (bfx) {
    report.baseline = side(
      baselineLabel(ctx, `subscription ordering=${ordering}, maxInFlight ${CONCURRENCY}, ${n} events from earliest`),
      runs.baseline,
    );
    report.ratios.herald_vs_baseline = ratio(report.herald.median.rps, report.baseline.median.rps);
    report.ratios.baseline_vs_ceiling = ratio(report.baseline.median.rps, report.ceiling.median.rps);
  }
  if (ordering === 'none') report.targets.push(atLeast('Herald events/s ÷ undici Pool req/s', report.ratios[key] ?? null, 0.5));
  if (ordering === 'partition') {
    const deliver = ctx.reports.get('deliver');
    if (deliver?.herald?.median.rps) report.ratios.ordered_vs_unordered_herald = ratio(report.herald.median.rps, deliver.herald.median.rps);
    report.notes = [
      `ordering=partition allows one event in flight per partition: at most ${16} concurrent requests with 16 partitions, against ${CONCURRENCY} for the ceiling.`,
    ];
  }
  if (wantProfile(ctx, report)) {
    await attachProfile(ctx, report, async (profDir) => {
      await fx.restart(profDir);
      const fromUs = monoUs();
      await heraldRun(fx, ordering, n);
      const toUs = monoUs();
      await fx.restart();
      return [{ fromUs, toUs }];
    });
  }
  return report;
}

export const runDeliver = (ctx: Ctx) => runCase(ctx, 'deliver', 'none');
export const runDeliverOrdered = (ctx: Ctx) => runCase(ctx, 'deliver-ordered', 'partition');
