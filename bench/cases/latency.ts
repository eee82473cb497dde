/**
 * latency: open loop at a constant rate — half of the ingest-single ceiling —
 * for 30 s (`--latency-seconds`), binary-mode events carrying their send time
 * as the `sentat` extension, with a healthy receiver subscribed. The ceiling is
 * the bare node:http handler at the same rate.
 *
 * Latency is measured from the moment a request was due (not when a free
 * connection picked it up), so a server that falls behind cannot hide it.
 */
import { httpJson, startGateway, startServer, stopChild } from '../lib/children';
import {
  addCheck,
  atMost,
  baseReport,
  baselineLabel,
  below,
  ratio,
  checkIngest,
  fromLoad,
  newDir,
  removeDir,
  side,
  uniqueTag,
  type CaseReport,
  type Ctx,
  type RunMetrics,
} from '../lib/common';
import { runLoad, type LoadSpec } from '../lib/load';
import { attachProfile, wantProfile } from '../lib/profiled';
import { round } from '../lib/stats';
import type { ReceiverStats } from '../procs/receiver';
import { startReceiver } from './deliver';
import { CONNECTIONS, heraldIngestRun, singleSpec } from './ingest-single';

const OPEN_LOOP_CONNECTIONS = 64;

const openSpec = (port: number, rate: number, durationMs: number, tag: string): LoadSpec => ({
  port,
  kind: 'binary',
  connections: OPEN_LOOP_CONNECTIONS,
  rate,
  durationMs,
  tag,
  sentAt: true,
  track: true,
  drainTimeoutMs: 30_000,
});

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('latency', ctx);
  const runMs = (ctx.quick ? Math.min(3, ctx.latencySeconds) : ctx.latencySeconds) * 1000;
  const warmupMs = ctx.quick ? 500 : 3000;
  const bare = await startServer('http-ceiling', ['bare']);
  const receiver = await startReceiver(ctx);
  try {
    let ceilingRps = ctx.reports.get('ingest-single')?.ceiling?.median.rps ?? null;
    if (!ceilingRps) {
      ctx.log('latency: measuring the ingest-single ceiling for the rate');
      ceilingRps = (await runLoad(singleSpec(bare.port, ctx.quick ? 1000 : 3000, uniqueTag('r')))).rps;
      report.notes = [
        `rate from a ${ctx.quick ? 1 : 3} s closed-loop run of the bare handler with ${CONNECTIONS} connections (ingest-single did not run)`,
      ];
    }
    const rate = Math.max(100, Math.round(ceilingRps / 2));
    report.rate = rate;

    let lastWindowUs: [number, number] = [0, 0];
    const ceilingRun = async (ms: number) => fromLoad(await runLoad(openSpec(bare.port, rate, ms, uniqueTag('c'))));
    const heraldRun = async (
      ms: number,
      withReport: boolean,
      cpuProfDir?: string,
      atRate = rate,
      baseline = false,
    ): Promise<RunMetrics> => {
      const dir = newDir(ctx, 'latency');
      const gw = await startGateway({ dataDir: dir, fsync: 'always', cpuProfDir, baseline });
      const key = `/lat-${uniqueTag('')}`;
      try {
        const sub = await httpJson('POST', `${gw.url}/subscriptions`, {
          sink: `http://127.0.0.1:${receiver.port}${key}`,
          delivery: { ordering: 'none', maxInFlight: 64 },
          startAt: 'latest',
        });
        if (sub.status !== 201) throw new Error(`POST /subscriptions answered ${sub.status}`);
        const tag = uniqueTag('l');
        const r = await runLoad(openSpec(Number(new URL(gw.url).port), atRate, ms, tag));
        lastWindowUs = r.windowUs;
        const { stats } = await receiver.call<{ stats: ReceiverStats }>('wait', { key, count: r.okEvents, timeoutMs: 60_000 });
        await receiver.call('forget', { key });
        if (withReport) {
          for (const check of await checkIngest(gw, r, tag)) addCheck(report, check);
          addCheck(report, {
            name: 'every acknowledged event reached the receiver',
            ok: stats.distinct >= r.okEvents,
            detail: { acknowledged: r.okEvents, delivered: stats.distinct },
          });
        }
        return fromLoad(r, {
          achievedRate: round(r.requests / r.seconds, 1),
          delivered: stats.distinct,
          publishToReceiptMs: stats.publishToReceiptMs,
          p2rP99: stats.publishToReceiptMs.p99,
        });
      } finally {
        await gw.stop();
        removeDir(dir);
      }
    };

    ctx.log(`latency: warm-up at ${rate} req/s`);
    await ceilingRun(warmupMs);
    await heraldRun(warmupMs, false);
    if (ctx.baseline) await heraldRun(warmupMs, false, undefined, rate, true);
    const runs = { ceiling: [] as RunMetrics[], herald: [] as RunMetrics[], baseline: [] as RunMetrics[] };
    for (let i = 0; i < ctx.rounds; i++) {
      ctx.log(`latency: round ${i + 1}/${ctx.rounds} (${runMs / 1000} s each at ${rate} req/s)`);
      runs.ceiling.push(await ceilingRun(runMs));
      runs.herald.push(await heraldRun(runMs, true));
      if (ctx.baseline) runs.baseline.push(await heraldRun(runMs, true, undefined, rate, true));
    }
    report.ceiling = side(`bare node:http handler, open loop ${rate} req/s`, runs.ceiling);
    report.herald = side(
      `Herald POST /events binary, fsync=always, open loop ${rate} req/s, subscriber ordering=none maxInFlight 64`,
      runs.herald,
    );
    const c99 = report.ceiling.median.p99;
    const h99 = report.herald.median.p99;
    report.ratios = { herald_p99_minus_ceiling_p99_ms: h99 !== null && c99 !== null ? round(h99 - c99, 3) : null };
    if (ctx.baseline) {
      report.baseline = side(
        baselineLabel(ctx, `POST /events binary, fsync=always, open loop ${rate} req/s, subscriber attached`),
        runs.baseline,
      );
      const b = report.baseline.median;
      // Latency: below 1 is better. achievedRate: above 1 is better.
      report.ratios.herald_vs_baseline = ratio(h99, b.p99);
      report.ratios.herald_vs_baseline_p2r_p99 = ratio(report.herald.median.p2rP99 as number | undefined, b.p2rP99 as number | undefined);
      report.ratios.herald_vs_baseline_achieved_rate = ratio(
        report.herald.median.achievedRate as number | undefined,
        b.achievedRate as number | undefined,
      );
    }
    report.targets.push(atMost('Herald ingest p99 (ms), ceiling p99 + 2 ms', h99, (c99 ?? NaN) + 2, ' ms'));
    report.targets.push(below('publish-to-receipt p99 (ms)', (report.herald.median.p2rP99 as number | undefined) ?? null, 50, ' ms'));

    // Not a target: the same measurement at half of Herald's own ingest-single rate, which tells
    // "adds latency" apart from "cannot keep up with the rate" when the targets above are missed.
    let own = ctx.reports.get('ingest-single')?.herald?.median.rps ?? null;
    if (!own) {
      ctx.log('latency: measuring Herald ingest-single capacity for the informational run');
      own = (await heraldIngestRun(ctx, undefined, (port, tag) => singleSpec(port, ctx.quick ? 1000 : 3000, tag))).metrics.rps;
    }
    const ownRate = Math.max(100, Math.round((own ?? 0) / 2));
    const ownMs = Math.min(runMs, 10_000);
    ctx.log(`latency: informational run at half of Herald's own capacity, ${ownRate} req/s for ${ownMs / 1000} s`);
    const atOwn = await heraldRun(ownMs, true, undefined, ownRate);
    report.others = {
      heraldAtHalfItsOwnCapacity: side(`Herald at ${ownRate} req/s (half its ingest-single median), ${ownMs / 1000} s, not a target`, [
        atOwn,
      ]),
    };
    if (wantProfile(ctx, report)) {
      await attachProfile(ctx, report, async (profDir) => {
        await heraldRun(Math.min(runMs, 10_000), false, profDir);
        return [{ fromUs: lastWindowUs[0], toUs: lastWindowUs[1] }];
      });
    }
  } finally {
    await stopChild(bare.child);
  }
  return report;
}
