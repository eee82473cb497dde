/**
 * latency: open loop at a constant rate — half of Herald's own ingest-single
 * median from the same invocation — for 30 s (`--latency-seconds`), binary-mode
 * events carrying their send time as the `sentat` extension, with one healthy
 * receiver subscribed (`ordering: none`, `maxInFlight: 64`). When ingest-single
 * did not run in this invocation, the rate comes from one closed-loop run of
 * Herald of the ingest-single shape (50 connections, fresh data dir, 5 s; 1 s
 * with `--quick`), and the report's notes say so.
 *
 * Each round runs, at that same rate and in this order: the bare node:http
 * handler (the ceiling's p99), the raw fdatasync measurement (the
 * `append-ceiling` child of ingest-batch with one 30 KiB record per group —
 * one write of 30 KiB, then fdatasync, timed — for 2 s, in a fresh directory
 * beside the gateway's data dirs), Herald, then the `--baseline` gateway if
 * one was given. Medians over `--rounds`. Targets (storage and delivery issues):
 *   - sustains the rate: 2xx answers per second of the schedule ≥ 0.98 × the rate;
 *   - Herald ingest p99 ≤ bare p99 + raw fdatasync p99 + 2 ms;
 *   - publish→receipt p99 < 50 ms.
 *
 * Kept as an informational extra, not a target: Herald alone at half of the
 * bare ceiling's closed-loop rate (the case's old rate), one run of at most
 * 10 s — it shows how Herald behaves above its own capacity.
 *
 * Latency is measured from the moment a request was due (not when a free
 * connection picked it up), so a server that falls behind cannot hide it.
 * Each measured gateway (Herald's and the baseline's) is a fresh process with a
 * fresh data dir, warmed for 3 s at the same rate (its events delivered) before
 * the measured window.
 */
import { httpJson, runJson, startGateway, startServer, stopChild } from '../lib/children';
import {
  addCheck,
  atLeast,
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
  type Side,
} from '../lib/common';
import { runLoad, type LoadSpec } from '../lib/load';
import { attachProfile, wantProfile } from '../lib/profiled';
import { round, type LatencySummary } from '../lib/stats';
import type { ReceiverStats } from '../procs/receiver';
import { startReceiver } from './deliver';
import { CONNECTIONS, heraldIngestRun, ingestTimes, singleSpec } from './ingest-single';

const OPEN_LOOP_CONNECTIONS = 64;
/** Bytes written before each timed fdatasync of the raw measurement. */
const FSYNC_WRITE_BYTES = 30 * 1024;
/** "Sustains the rate": 2xx answers per second of the schedule at least this share of the rate. */
const SUSTAIN_SHARE = 0.98;
/** Slack of the ingest p99 target over bare p99 + fdatasync p99. */
const P99_SLACK_MS = 2;

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

/** What `procs/append-ceiling` prints. */
interface AppendResult {
  records: number;
  groups: number;
  seconds: number;
  recordsPerSec: number;
  syncMs: LatencySummary;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('latency', ctx);
  const notes: string[] = [];
  const runMs = (ctx.quick ? Math.min(3, ctx.latencySeconds) : ctx.latencySeconds) * 1000;
  const warmupMs = ctx.quick ? 500 : 3000;
  const fsyncMs = ctx.quick ? 300 : 2000;
  const bare = await startServer('http-ceiling', ['bare']);
  const receiver = await startReceiver(ctx);
  try {
    // The rate: half of Herald's own ingest-single median, from this invocation.
    let ownRps = num(ctx.reports.get('ingest-single')?.herald?.median.rps);
    if (ownRps !== null) report.rateFrom = 'ingest-single Herald median of this invocation';
    else {
      const ms = ingestTimes(ctx).runMs;
      ctx.log(`latency: ingest-single did not run; measuring Herald's ingest-single rate (${ms / 1000} s closed loop)`);
      ownRps = num((await heraldIngestRun(ctx, undefined, (port, tag) => singleSpec(port, ms, tag))).metrics.rps) ?? 0;
      report.rateFrom = `one ${ms / 1000} s closed-loop run of Herald, ingest-single shape`;
      notes.push(
        `ingest-single did not run in this invocation: the rate is half of ${round(ownRps, 1)} req/s from one ${ms / 1000} s closed-loop run of Herald ` +
          `(POST /events binary, fsync=always, ${CONNECTIONS} connections, fresh data dir, after an in-run warm-up), not a median of ingest-single rounds`,
      );
    }
    report.heraldIngestSingleRps = ownRps;
    const rate = Math.max(100, Math.round(ownRps / 2));
    report.rate = rate;

    let lastWindowUs: [number, number] = [0, 0];
    const ceilingRun = async (ms: number, atRate = rate) => fromLoad(await runLoad(openSpec(bare.port, atRate, ms, uniqueTag('c'))));
    const fsyncRun = async (ms: number): Promise<RunMetrics> => {
      const dir = newDir(ctx, 'fdatasync');
      try {
        const r = await runJson<AppendResult>('append-ceiling', [dir, String(ms), '1', String(FSYNC_WRITE_BYTES)], ms + 30_000);
        return {
          rps: round(r.groups / r.seconds, 1),
          p50: r.syncMs.p50,
          p99: r.syncMs.p99,
          max: r.syncMs.max,
          non2xx: 0,
          errors: 0,
          samples: r.groups,
          seconds: r.seconds,
        };
      } finally {
        removeDir(dir);
      }
    };
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
        const port = Number(new URL(gw.url).port);
        // The measured process is warmed first, at the same rate: a fresh gateway's first seconds
        // (code not yet optimised) put it seconds behind an open-loop schedule, which is start-up, not latency.
        const warm = await runLoad(openSpec(port, atRate, warmupMs, uniqueTag('w')));
        await receiver.call('wait', { key, count: warm.okEvents, timeoutMs: 60_000 });
        await receiver.call('forget', { key });
        const tag = uniqueTag('l');
        const r = await runLoad(openSpec(port, atRate, ms, tag));
        lastWindowUs = r.windowUs;
        const { stats } = await receiver.call<{ stats: ReceiverStats }>('wait', { key, count: r.okEvents, timeoutMs: 60_000 });
        await receiver.call('forget', { key });
        if (withReport) {
          for (const check of await checkIngest(gw, r, tag, undefined, warm)) addCheck(report, check);
          addCheck(report, {
            name: 'every acknowledged event reached the receiver',
            ok: stats.distinct >= r.okEvents,
            detail: { acknowledged: r.okEvents, delivered: stats.distinct },
          });
        }
        return fromLoad(r, {
          askedRate: atRate,
          // 2xx answers per second of the schedule (one event per request): what "sustains the rate" compares.
          achievedRate: round(r.okEvents / r.seconds, 1),
          issuedRate: round(r.requests / r.seconds, 1),
          delivered: stats.distinct,
          publishToReceiptMs: stats.publishToReceiptMs,
          p2rP99: stats.publishToReceiptMs.p99,
        });
      } finally {
        await gw.stop();
        removeDir(dir);
      }
    };

    ctx.log(`latency: warm-up at ${rate} req/s (half of Herald's ingest-single ${round(ownRps, 1)} req/s)`);
    await ceilingRun(warmupMs);
    await heraldRun(warmupMs, false);
    if (ctx.baseline) await heraldRun(warmupMs, false, undefined, rate, true);
    const runs = { ceiling: [] as RunMetrics[], fsync: [] as RunMetrics[], herald: [] as RunMetrics[], baseline: [] as RunMetrics[] };
    for (let i = 0; i < ctx.rounds; i++) {
      ctx.log(`latency: round ${i + 1}/${ctx.rounds} (${runMs / 1000} s each at ${rate} req/s, raw fdatasync ${fsyncMs / 1000} s)`);
      runs.ceiling.push(await ceilingRun(runMs));
      runs.fsync.push(await fsyncRun(fsyncMs));
      runs.herald.push(await heraldRun(runMs, true));
      if (ctx.baseline) runs.baseline.push(await heraldRun(runMs, true, undefined, rate, true));
    }
    report.ceiling = side(`bare node:http handler, open loop ${rate} req/s`, runs.ceiling);
    report.herald = side(
      `Herald POST /events binary, fsync=always, open loop ${rate} req/s (half its ingest-single rate), subscriber ordering=none maxInFlight 64`,
      runs.herald,
    );
    const fsyncSide = side(
      `raw fdatasync: write ${FSYNC_WRITE_BYTES / 1024} KiB then fdatasync (timed), ${fsyncMs / 1000} s, beside the gateway's data dirs (rps = syncs/s)`,
      runs.fsync,
    );
    const others: Record<string, Side> = { fdatasync: fsyncSide };
    report.others = others;
    const c99 = report.ceiling.median.p99;
    const h99 = report.herald.median.p99;
    const f99 = fsyncSide.median.p99;
    const achieved = num(report.herald.median.achievedRate);
    const budget = c99 !== null && f99 !== null ? c99 + f99 + P99_SLACK_MS : NaN;
    report.ratios = {
      achieved_vs_asked_rate: ratio(achieved, rate),
      herald_p99_minus_ceiling_p99_ms: h99 !== null && c99 !== null ? round(h99 - c99, 3) : null,
      fdatasync_p99_ms: f99,
      herald_p99_minus_budget_ms: h99 !== null && Number.isFinite(budget) ? round(h99 - budget, 3) : null,
    };
    if (ctx.baseline) {
      report.baseline = side(
        baselineLabel(ctx, `POST /events binary, fsync=always, open loop ${rate} req/s, subscriber attached`),
        runs.baseline,
      );
      const b = report.baseline.median;
      // Latency: below 1 is better. achievedRate: above 1 is better.
      report.ratios.herald_vs_baseline = ratio(h99, b.p99);
      report.ratios.herald_vs_baseline_p2r_p99 = ratio(num(report.herald.median.p2rP99), num(b.p2rP99));
      report.ratios.herald_vs_baseline_achieved_rate = ratio(achieved, num(b.achievedRate));
    }
    report.targets.push(
      atLeast(
        `Herald achieved rate ÷ asked rate (${rate} req/s, 2xx answers/s)`,
        report.ratios.achieved_vs_asked_rate ?? null,
        SUSTAIN_SHARE,
      ),
    );
    report.targets.push(atMost(`Herald ingest p99 (ms), bare p99 + fdatasync p99 + ${P99_SLACK_MS} ms`, h99, budget, ' ms'));
    report.targets.push(below('publish-to-receipt p99 (ms)', num(report.herald.median.p2rP99), 50, ' ms'));

    // Not a target: Herald alone at half of the bare ceiling's closed-loop rate (the case's old rate), at most
    // 10 s — above Herald's own capacity it shows "cannot keep up" (dropped requests, p99 in seconds).
    let ceilingRps = num(ctx.reports.get('ingest-single')?.ceiling?.median.rps);
    if (ceilingRps === null) {
      const ms = ctx.quick ? 1000 : 3000;
      ctx.log(`latency: measuring the bare handler's closed-loop rate (${ms / 1000} s) for the informational run`);
      ceilingRps = (await runLoad(singleSpec(bare.port, ms, uniqueTag('r')))).rps;
      notes.push(`informational run: the bare ceiling's rate is from one ${ms / 1000} s closed-loop run with ${CONNECTIONS} connections`);
    }
    const ceilingRate = Math.max(100, Math.round(ceilingRps / 2));
    const infoMs = Math.min(runMs, 10_000);
    ctx.log(`latency: informational run at half of the bare ceiling, ${ceilingRate} req/s for ${infoMs / 1000} s`);
    report.ceilingRate = ceilingRate;
    others.heraldAtHalfTheCeiling = side(
      `Herald at ${ceilingRate} req/s (half the bare ceiling's ingest-single rate), ${infoMs / 1000} s, not a target`,
      [await heraldRun(infoMs, true, undefined, ceilingRate)],
    );
    if (notes.length > 0) report.notes = notes;

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
