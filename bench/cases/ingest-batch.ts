/**
 * ingest-batch: `application/cloudevents-batch+json`, 100 events of 1 KiB per
 * request, fsync=always — against raw appends: one coalesced write plus
 * fdatasync per 100 records of 1 KiB, in the same directory.
 */
import { runJson } from '../lib/children';
import { atLeast, baseReport, baselineLabel, ratio, side, type CaseReport, type Ctx, type RunMetrics } from '../lib/common';
import type { LoadSpec } from '../lib/load';
import { attachProfile, wantProfile } from '../lib/profiled';
import type { LatencySummary } from '../lib/stats';
import { heraldIngestRun, ingestTimes } from './ingest-single';

export const BATCH = 100;
/** Concurrent batch requests: enough for group commit to matter, 1.6 MB in flight at most. */
export const BATCH_CONNECTIONS = 16;

export const batchSpec = (port: number, durationMs: number, tag: string): LoadSpec => ({
  port,
  kind: 'batch',
  batchSize: BATCH,
  connections: BATCH_CONNECTIONS,
  durationMs,
  tag,
  track: true,
});

interface AppendResult {
  records: number;
  groups: number;
  seconds: number;
  recordsPerSec: number;
  syncMs: LatencySummary;
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('ingest-batch', ctx);
  const { warmupMs, runMs } = ingestTimes(ctx);
  const raw = async (ms: number): Promise<RunMetrics> => {
    const r = await runJson<AppendResult>('append-ceiling', [ctx.tmpRoot, String(ms), String(BATCH), '1024'], ms + 30_000);
    // Per-group write+fdatasync latency stands in for request latency.
    return {
      rps: r.groups / r.seconds,
      eventsPerSec: r.recordsPerSec,
      p50: r.syncMs.p50,
      p99: r.syncMs.p99,
      max: r.syncMs.max,
      non2xx: 0,
      errors: 0,
      records: r.records,
      seconds: r.seconds,
    };
  };
  const herald = async (ms: number, withReport: boolean, warmupMs?: number, baseline?: boolean) =>
    (
      await heraldIngestRun(ctx, withReport ? report : undefined, (port, tag) => batchSpec(port, ms, tag), {
        batchSize: BATCH,
        warmupMs,
        baseline,
      })
    ).metrics;
  ctx.log('ingest-batch: warm-up');
  await raw(warmupMs);
  await herald(warmupMs, false, 0);
  if (ctx.baseline) await herald(warmupMs, false, 0, true);
  const runs = { raw: [] as RunMetrics[], herald: [] as RunMetrics[], baseline: [] as RunMetrics[] };
  for (let i = 0; i < ctx.rounds; i++) {
    ctx.log(`ingest-batch: round ${i + 1}/${ctx.rounds}`);
    runs.raw.push(await raw(runMs));
    runs.herald.push(await herald(runMs, true));
    if (ctx.baseline) runs.baseline.push(await herald(runMs, true, undefined, true));
  }
  report.ceiling = side('raw append: 100 × 1 KiB coalesced write + fdatasync (rps = groups/s, latency = per group)', runs.raw);
  report.herald = side('Herald POST /events batch of 100, fsync=always, 16 connections', runs.herald);
  report.ratios = { herald_events_vs_raw_records: ratio(report.herald.median.eventsPerSec, report.ceiling.median.eventsPerSec) };
  if (ctx.baseline) {
    report.baseline = side(baselineLabel(ctx, 'POST /events batch of 100, fsync=always, 16 connections'), runs.baseline);
    report.ratios.herald_vs_baseline = ratio(report.herald.median.eventsPerSec, report.baseline.median.eventsPerSec);
    report.ratios.baseline_events_vs_raw_records = ratio(report.baseline.median.eventsPerSec, report.ceiling.median.eventsPerSec);
  }
  report.targets.push(atLeast('Herald events/s ÷ raw records/s', report.ratios.herald_events_vs_raw_records ?? null, 0.4));
  if (wantProfile(ctx, report)) {
    await attachProfile(ctx, report, async (profDir) => {
      const { windowUs } = await heraldIngestRun(ctx, undefined, (port, tag) => batchSpec(port, runMs, tag), {
        batchSize: BATCH,
        cpuProfDir: profDir,
      });
      return [{ fromUs: windowUs[0], toUs: windowUs[1] }];
    });
  }
  return report;
}
