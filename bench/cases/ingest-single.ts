/**
 * ingest-single: POST /events in binary mode, 1 KiB JSON data, unique ids, 64
 * partition keys, 50 connections, HERALD_FSYNC=always — against a bare
 * node:http handler and an express 5 handler that parse the same body and answer 202.
 */
import { startGateway, startServer, stopChild } from '../lib/children';
import {
  addCheck,
  atLeast,
  baseReport,
  baselineLabel,
  checkIngest,
  fromLoad,
  newDir,
  ratio,
  removeDir,
  side,
  uniqueTag,
  type CaseReport,
  type Ctx,
  type RunMetrics,
} from '../lib/common';
import { runLoad, type LoadSpec } from '../lib/load';
import { attachProfile, wantProfile } from '../lib/profiled';

export const CONNECTIONS = 50;

export function ingestTimes(ctx: Ctx) {
  return ctx.quick ? { warmupMs: 300, runMs: 1000 } : { warmupMs: 2000, runMs: 5000 };
}

export function singleSpec(port: number, durationMs: number, tag: string): LoadSpec {
  return { port, kind: 'binary', connections: CONNECTIONS, durationMs, tag, track: true };
}

/** Load before each measured Herald run on its fresh gateway, so that both sides are measured with a warm JIT. */
export const inRunWarmupMs = (ctx: Ctx) => (ctx.quick ? 200 : 1000);

/**
 * One Herald run on a fresh gateway and data dir: a short warm-up load, the
 * measured load, then the durability check over both (see `checkIngest`).
 */
export async function heraldIngestRun(
  ctx: Ctx,
  report: CaseReport | undefined,
  spec: (port: number, tag: string) => LoadSpec,
  opts: { batchSize?: number; cpuProfDir?: string; warmupMs?: number; baseline?: boolean } = {},
): Promise<{ metrics: RunMetrics; windowUs: [number, number] }> {
  const dir = newDir(ctx, 'ingest');
  const gw = await startGateway({ dataDir: dir, fsync: 'always', cpuProfDir: opts.cpuProfDir, baseline: opts.baseline });
  try {
    const port = Number(new URL(gw.url).port);
    const warmupMs = opts.warmupMs ?? inRunWarmupMs(ctx);
    const warm = warmupMs > 0 ? await runLoad({ ...spec(port, uniqueTag('w')), durationMs: warmupMs }) : undefined;
    const tag = uniqueTag('i');
    const r = await runLoad(spec(port, tag));
    if (report) for (const check of await checkIngest(gw, r, tag, opts.batchSize, warm)) addCheck(report, check);
    return { metrics: fromLoad(r), windowUs: r.windowUs };
  } finally {
    await gw.stop();
    removeDir(dir);
  }
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('ingest-single', ctx);
  const { warmupMs, runMs } = ingestTimes(ctx);
  const bare = await startServer('http-ceiling', ['bare']);
  const express = await startServer('http-ceiling', ['express']);
  try {
    const ceilingRun = async (port: number, ms: number) => fromLoad(await runLoad(singleSpec(port, ms, uniqueTag('c'))));
    ctx.log('ingest-single: warm-up');
    await ceilingRun(bare.port, warmupMs);
    await heraldIngestRun(ctx, undefined, (port, tag) => singleSpec(port, warmupMs, tag), { warmupMs: 0 });
    if (ctx.baseline)
      await heraldIngestRun(ctx, undefined, (port, tag) => singleSpec(port, warmupMs, tag), { warmupMs: 0, baseline: true });
    await ceilingRun(express.port, warmupMs);
    const runs = { bare: [] as RunMetrics[], herald: [] as RunMetrics[], baseline: [] as RunMetrics[], express: [] as RunMetrics[] };
    for (let i = 0; i < ctx.rounds; i++) {
      ctx.log(`ingest-single: round ${i + 1}/${ctx.rounds}`);
      runs.bare.push(await ceilingRun(bare.port, runMs));
      runs.herald.push((await heraldIngestRun(ctx, report, (port, tag) => singleSpec(port, runMs, tag))).metrics);
      if (ctx.baseline)
        runs.baseline.push((await heraldIngestRun(ctx, report, (port, tag) => singleSpec(port, runMs, tag), { baseline: true })).metrics);
      runs.express.push(await ceilingRun(express.port, runMs));
    }
    report.ceiling = side('bare node:http handler, JSON.parse, 202', runs.bare);
    report.herald = side('Herald POST /events binary, fsync=always', runs.herald);
    const expressSide = side('express 5 + express.json(), 202', runs.express);
    report.others = { express: expressSide };
    report.ratios = {
      herald_vs_bare: ratio(report.herald.median.rps, report.ceiling.median.rps),
      herald_vs_express: ratio(report.herald.median.rps, expressSide.median.rps),
    };
    if (ctx.baseline) {
      report.baseline = side(baselineLabel(ctx, 'POST /events binary, fsync=always'), runs.baseline);
      report.ratios.herald_vs_baseline = ratio(report.herald.median.rps, report.baseline.median.rps);
      report.ratios.baseline_vs_bare = ratio(report.baseline.median.rps, report.ceiling.median.rps);
    }
    report.targets.push(atLeast('Herald req/s ÷ bare node:http req/s', report.ratios.herald_vs_bare ?? null, 0.5));
  } finally {
    await stopChild(bare.child);
    await stopChild(express.child);
  }
  if (wantProfile(ctx, report)) {
    await attachProfile(ctx, report, async (profDir) => {
      const { windowUs } = await heraldIngestRun(ctx, undefined, (port, tag) => singleSpec(port, runMs, tag), { cpuProfDir: profDir });
      return [{ fromUs: windowUs[0], toUs: windowUs[1] }];
    });
  }
  return report;
}
