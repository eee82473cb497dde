/**
 * recovery: a gateway with 1 GiB of log is SIGKILLed under ingest load and
 * restarted. Measured: spawn → GET /readyz 200, and the gateway's own
 * "log recovered" line (scannedBytes, ms) as a scan rate, against a
 * sequential read + crc32 of the same segment files. Afterwards the log is
 * read independently: every event ever answered 2xx is there exactly once.
 */
import { delay, runJson, startGateway, waitReady } from '../lib/children';
import {
  addCheck,
  atLeast,
  atMost,
  baseReport,
  baselineLabel,
  headsSum,
  newDir,
  ratio,
  removeDir,
  sampleAcked,
  side,
  spotCheck,
  uniqueTag,
  type CaseReport,
  type Ctx,
  type RunMetrics,
} from '../lib/common';
import { verifyLog, type History } from '../lib/history';
import { runLoad, startLoad } from '../lib/load';
import { logBytes, segmentFiles } from '../lib/log-scan';
import { attachProfile, wantProfile } from '../lib/profiled';
import { round } from '../lib/stats';
import type { RecoveryFixture } from './backlog';
import { BATCH } from './ingest-batch';
import { singleSpec } from './ingest-single';

const READY_LIMIT_MS = 2000;

async function ownFixture(ctx: Ctx, baseline = false): Promise<RecoveryFixture> {
  const target = ctx.quick ? 32 * 2 ** 20 : 2 ** 30;
  const dir = newDir(ctx, baseline ? 'recovery-baseline' : 'recovery');
  const gw = await startGateway({ dataDir: dir, fsync: 'always', baseline });
  const history: History = { loads: [] };
  ctx.log(`recovery${baseline ? ' (baseline)' : ''}: writing ${round(target / 2 ** 30, 3)} GiB of log`);
  const port = Number(new URL(gw.url).port);
  // A first slice measures bytes per event; the second fills up to the target.
  for (let i = 0; i < 2 && logBytes(dir) < target; i++) {
    const perEvent = i === 0 ? undefined : logBytes(dir) / history.loads.reduce((n, l) => n + l.result.okEvents, 0);
    const requests = perEvent === undefined ? 100 : Math.ceil((target - logBytes(dir)) / perEvent / BATCH);
    const tag = uniqueTag('w');
    const r = await runLoad({
      port,
      kind: 'batch',
      batchSize: BATCH,
      connections: 8,
      maxRequests: requests,
      tag,
      track: true,
      drainTimeoutMs: 30_000,
    });
    history.loads.push({ tag, result: r, batchSize: BATCH });
  }
  return { dir, gw, history };
}

interface Recovered {
  scannedBytes: number;
  truncatedBytes: number;
  rebuiltRecords: number;
  ms: number;
}

/** One gateway's data dir through crash/restart rounds (Herald, or the `--baseline` build). */
class Crasher {
  constructor(
    private ctx: Ctx,
    public fx: RecoveryFixture,
    private baseline: boolean,
  ) {}

  /** Ingest load, SIGKILL mid-flight, then restart; returns the restart's figures. */
  async crashAndRestart(cpuProfDir?: string): Promise<RunMetrics> {
    const { fx } = this;
    const tag = uniqueTag('k');
    const load = await startLoad({ ...singleSpec(Number(new URL(fx.gw.url).port), 60_000, tag), drainTimeoutMs: 2000 });
    await delay(this.ctx.quick ? 300 : 1000);
    await fx.gw.kill();
    await load.stop();
    const killed = await load.result;
    fx.history.loads.push({ tag, result: killed });
    const bytes = logBytes(fx.dir);
    // Recovery takes tens of milliseconds: sample every 50 µs rather than every 1 ms.
    fx.gw = await startGateway({
      dataDir: fx.dir,
      fsync: 'always',
      cpuProfDir,
      cpuProfIntervalUs: cpuProfDir ? 50 : undefined,
      baseline: this.baseline,
    });
    const gw = fx.gw;
    const readyAt = await waitReady(gw.url, 60_000);
    const line = gw.logs().find((l) => l.msg === 'log recovered') as unknown as Recovered | undefined;
    if (!line) throw new Error('the gateway logged no "log recovered" line (HERALD_LOG_LEVEL must be info)');
    return {
      rps: null,
      p50: null,
      p99: null,
      max: null,
      non2xx: 0,
      errors: 0,
      readyMs: round(readyAt - gw.spawnedAt, 1),
      listeningMs: round(gw.listeningMs, 1),
      logBytes: bytes,
      scannedBytes: line.scannedBytes,
      scanMs: line.ms,
      scanMBps: line.ms > 0 ? round(line.scannedBytes / 2 ** 20 / (line.ms / 1000), 1) : null,
      truncatedBytes: line.truncatedBytes,
      rebuiltRecords: line.rebuiltRecords,
      acknowledgedBeforeKill: killed.okEvents,
    };
  }

  /** Every event ever answered 2xx on this data dir is in the log exactly once. Stops the gateway. */
  async verify(report: CaseReport, label: string): Promise<void> {
    const { fx } = this;
    const samples = fx.history.loads.flatMap((l) => sampleAcked(l.tag, l.result, 4, l.batchSize));
    const spot = await spotCheck(fx.gw, samples);
    addCheck(report, { ...spot, name: `${label}${spot.name}` });
    const heads = await headsSum(fx.gw);
    await fx.gw.stop();
    for (const check of verifyLog(fx.dir, fx.history, heads)) addCheck(report, { ...check, name: `${label}${check.name}` });
  }
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('recovery', ctx);
  const fx = (ctx.shared.recoveryFixture as RecoveryFixture | undefined) ?? (await ownFixture(ctx));
  delete ctx.shared.recoveryFixture;
  const herald = new Crasher(ctx, fx, false);
  let base: Crasher | undefined;
  const dir = fx.dir;

  const raw = async (): Promise<RunMetrics> => {
    const r = await runJson<{ bytes: number; seconds: number; bytesPerSec: number }>('readcrc-ceiling', segmentFiles(dir), 120_000);
    return {
      rps: null,
      p50: null,
      p99: null,
      max: null,
      non2xx: 0,
      errors: 0,
      bytes: r.bytes,
      seconds: r.seconds,
      scanMBps: round(r.bytesPerSec / 2 ** 20, 1),
    };
  };

  let finished = false;
  try {
    if (ctx.baseline) {
      const bfx = (ctx.shared.recoveryFixtureBaseline as RecoveryFixture | undefined) ?? (await ownFixture(ctx, true));
      delete ctx.shared.recoveryFixtureBaseline;
      base = new Crasher(ctx, bfx, true);
    }
    ctx.log(
      `recovery: ${round(logBytes(dir) / 2 ** 30, 3)} GiB of log${base ? ` (baseline: ${round(logBytes(base.fx.dir) / 2 ** 30, 3)} GiB)` : ''}; warm-up`,
    );
    await raw();
    const runs = { raw: [] as RunMetrics[], herald: [] as RunMetrics[], baseline: [] as RunMetrics[] };
    for (let i = 0; i < ctx.rounds; i++) {
      ctx.log(`recovery: round ${i + 1}/${ctx.rounds}`);
      runs.raw.push(await raw());
      runs.herald.push(await herald.crashAndRestart());
      if (base) runs.baseline.push(await base.crashAndRestart());
    }
    report.ceiling = side('sequential read + crc32 of every segment file (8 MiB reads)', runs.raw);
    report.herald = side(
      'Herald restart after SIGKILL under load: spawn → /readyz 200; scan rate from its "log recovered" line',
      runs.herald,
    );
    report.ratios = { scan_vs_read_crc: ratio(report.herald.median.scanMBps as number, report.ceiling.median.scanMBps as number) };
    if (base) {
      report.baseline = side(baselineLabel(ctx, 'restart after SIGKILL under load (its own data dir from backlog)'), runs.baseline);
      // Scan rate: above 1 is better. Ready ms: below 1 is better.
      report.ratios.herald_vs_baseline = ratio(report.herald.median.scanMBps as number, report.baseline.median.scanMBps as number);
      report.ratios.herald_vs_baseline_ready_ms = ratio(report.herald.median.readyMs as number, report.baseline.median.readyMs as number);
      report.ratios.baseline_scan_vs_read_crc = ratio(report.baseline.median.scanMBps as number, report.ceiling.median.scanMBps as number);
    }
    report.targets.push(
      atMost('ready after restart (ms)', (report.herald.median.readyMs as number | undefined) ?? null, READY_LIMIT_MS, ' ms'),
    );
    report.targets.push(atLeast('recovery scan MB/s ÷ read+crc MB/s', report.ratios.scan_vs_read_crc ?? null, 0.3));
    report.notes = [
      'Herald scans from where its SQLite index ends (at most the active segment plus any unindexed tail), so scannedBytes is far less than the log; the ratio compares rates, not totals.',
      'Both sides read from the page cache: the log was just written and the machine has the memory to hold it.',
    ];

    if (wantProfile(ctx, report)) {
      await attachProfile(ctx, report, async (profDir) => {
        await herald.crashAndRestart(profDir);
        await fx.gw.stop();
        fx.gw = await startGateway({ dataDir: dir, fsync: 'always' });
        await waitReady(fx.gw.url, 60_000);
        return [
          { under: 'recoverLog', label: 'log recovery' },
          { under: 'startGateway', label: 'start-up' },
        ];
      });
    }

    ctx.log('recovery: checking every acknowledged event');
    await herald.verify(report, '');
    if (base) await base.verify(report, 'baseline: ');
    finished = true;
  } finally {
    if (!finished) {
      await fx.gw.stop();
      if (base) await base.fx.gw.stop();
    }
    removeDir(dir);
    if (base) removeDir(base.fx.dir);
  }
  return report;
}
