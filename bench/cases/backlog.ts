/**
 * backlog: 1,000,000 events of 1 KiB stored while the subscriber is down
 * (its receiver is not running; the subscription retries with backoff capped
 * at 1 s), then the receiver comes up and the backlog drains while ingest-single
 * load continues. The gateway's VmRSS is sampled every 100 ms throughout.
 *
 * When `recovery` runs in the same invocation it takes over this data dir
 * (over 1 GiB of log) instead of filling its own.
 */
import { forkRpc, freePort, httpJson, sampleRss, startGateway, type GatewayChild, type RpcChild } from '../lib/children';
import {
  addCheck,
  atLeast,
  atMost,
  baseReport,
  baselineLabel,
  fromLoad,
  newDir,
  ratio,
  removeDir,
  side,
  uniqueTag,
  type CaseReport,
  type Ctx,
} from '../lib/common';
import type { History } from '../lib/history';
import { runLoad, type LoadResult } from '../lib/load';
import { logBytes } from '../lib/log-scan';
import { attachProfile, wantProfile } from '../lib/profiled';
import { nowMs, round } from '../lib/stats';
import type { ReceiverStats } from '../procs/receiver';
import { BATCH } from './ingest-batch';
import { ingestTimes, singleSpec } from './ingest-single';

export interface RecoveryFixture {
  dir: string;
  gw: GatewayChild;
  history: History;
}

const RSS_LIMIT_MB = 300;

async function lagOf(gw: GatewayChild, id: string): Promise<number> {
  const res = await httpJson<{ stats: { partitions: { lag: number }[] } }>('GET', `${gw.url}/subscriptions/${id}`);
  return res.body.stats.partitions.reduce((n, p) => n + p.lag, 0);
}

interface SideResult {
  before: LoadResult;
  during: LoadResult;
  drained: number;
  drainSeconds: number;
  maxRss: number;
  info: Record<string, unknown>;
  fixture?: RecoveryFixture;
  /** The receiver, still up (the backlog keeps draining) when the gateway was kept. */
  receiver?: RpcChild;
}

/**
 * One gateway through the whole scenario: baseline ingest, fill with the subscriber down, drain while ingesting.
 * `baseline` runs the `--baseline` build; checks go to `report` either way. When `handOver`, the gateway, its
 * data dir and the receiver are kept (for the profile and for recovery); otherwise stopped and removed.
 */
async function scenario(ctx: Ctx, report: CaseReport, baseline: boolean, handOver: boolean): Promise<SideResult> {
  const who = baseline ? `baseline ${ctx.baseline}` : 'Herald';
  const total = ctx.quick ? 20_000 : 1_000_000;
  const { runMs } = ingestTimes(ctx);
  const drainMs = ctx.quick ? 2000 : 15_000;
  const dir = newDir(ctx, baseline ? 'backlog-baseline' : 'backlog');
  const history: History = { loads: [] };
  const gw = await startGateway({ dataDir: dir, fsync: 'always', baseline });
  let rss = sampleRss(gw.pid);
  const rssRuns: { phase: string; maxMb: number; samplesEverySecond: { t: number; mb: number }[] }[] = [];
  let receiver: RpcChild | undefined;
  let handedOver = false;
  try {
    const receiverPort = await freePort();
    const sink = `http://127.0.0.1:${receiverPort}/backlog`;
    const sub = await httpJson<{ id: string }>('POST', `${gw.url}/subscriptions`, {
      sink,
      delivery: { ordering: 'none', maxInFlight: 64, retry: { maxAttempts: 1000, initialDelayMs: 100, maxDelayMs: 1000 } },
      startAt: 'earliest',
    });
    if (sub.status !== 201) throw new Error(`POST /subscriptions answered ${sub.status}: ${JSON.stringify(sub.body)}`);
    const port = () => Number(new URL(gw.url).port);

    ctx.log(`backlog (${who}): baseline ingest (subscriber down, log empty)`);
    const baseTag = uniqueTag('b');
    const before = await runLoad(singleSpec(port(), runMs, baseTag));
    history.loads.push({ tag: baseTag, result: before });

    const remaining = Math.max(0, total - before.okEvents);
    ctx.log(`backlog (${who}): storing ${remaining} more events in batches of ${BATCH} (subscriber down)`);
    const fillTag = uniqueTag('f');
    const fillStart = nowMs();
    const fill = await runLoad({
      port: port(),
      kind: 'batch',
      batchSize: BATCH,
      connections: 8,
      maxRequests: Math.ceil(remaining / BATCH),
      tag: fillTag,
      track: true,
      drainTimeoutMs: 30_000,
    });
    history.loads.push({ tag: fillTag, result: fill, batchSize: BATCH });
    const fillSeconds = (nowMs() - fillStart) / 1000;
    const stored = before.okEvents + fill.okEvents;
    const lagBefore = await lagOf(gw, sub.body.id);
    rssRuns.push({ phase: 'baseline + fill (subscriber down)', ...rss.stop() });
    rss = sampleRss(gw.pid);

    ctx.log(
      `backlog (${who}): ${stored} events stored (${round(logBytes(dir) / 2 ** 30, 2)} GiB of log); subscriber comes up, ingest continues for ${drainMs / 1000} s`,
    );
    receiver = await forkRpc('receiver');
    await receiver.call('listen', { port: receiverPort });
    const drainTag = uniqueTag('g');
    const drainStart = nowMs();
    const during = await runLoad(singleSpec(port(), drainMs, drainTag));
    history.loads.push({ tag: drainTag, result: during });
    const drainSeconds = (nowMs() - drainStart) / 1000;
    const { stats } = await receiver.call<{ stats: ReceiverStats }>('stats', { key: '/backlog' });
    const lagAfter = await lagOf(gw, sub.body.id);
    rssRuns.push({ phase: 'draining while ingesting', ...rss.stop() });

    const maxRss = Math.max(...rssRuns.map((r) => r.maxMb));
    const info = {
      events: stored,
      logGiB: round(logBytes(dir) / 2 ** 30, 3),
      fillSeconds: round(fillSeconds, 1),
      fillEventsPerSec: round(fill.okEvents / fillSeconds, 1),
      fillErrors: fill.errors,
      fillNon2xx: fill.non2xx,
      lagWhenSubscriberCameUp: lagBefore,
      lagAfterDrainPhase: lagAfter,
      drainPhaseSeconds: round(drainSeconds, 1),
      rss: rssRuns,
      maxRssMb: maxRss,
    };
    addCheck(report, {
      name: `${who} fill: every batch answered 2xx`,
      ok: fill.errors === 0 && fill.non2xx === 0,
      detail: { non2xx: fill.non2xx, errors: fill.errors },
    });

    const result: SideResult = { before, during, drained: stats.distinct, drainSeconds, maxRss, info };
    if (handOver) {
      result.fixture = { dir, gw, history };
      result.receiver = receiver;
      receiver = undefined;
      handedOver = true;
    }
    return result;
  } finally {
    rss.stop();
    await receiver?.stop();
    if (!handedOver) {
      await gw.stop();
      removeDir(dir);
    }
  }
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('backlog', ctx);
  const drainMs = ctx.quick ? 2000 : 15_000;
  const h = await scenario(ctx, report, false, true);
  const hfx = h.fixture!;
  let b: SideResult | undefined;
  const release = async (r: SideResult | undefined, keep: boolean) => {
    await r?.receiver?.stop();
    if (r?.fixture && !keep) {
      await r.fixture.gw.stop();
      removeDir(r.fixture.dir);
    }
  };
  const keepForRecovery = ctx.cases.includes('recovery');
  try {
    const metrics = (r: SideResult) =>
      fromLoad(r.during, { drainedEvents: r.drained, drainEventsPerSec: round(r.drained / r.drainSeconds, 1), maxRssMb: r.maxRss });
    const single = ctx.reports.get('ingest-single')?.herald?.median.rps ?? null;
    report.herald = side('Herald ingest-single load while the backlog drains', [metrics(h)]);
    report.ceiling = side('Herald ingest-single load on the same gateway before the backlog (baseline)', [fromLoad(h.before)]);
    report.backlog = h.info;
    report.ratios = {
      during_drain_vs_ingest_single: ratio(h.during.rps, single),
      during_drain_vs_baseline: ratio(h.during.rps, h.before.rps),
    };
    report.targets.push(atMost('gateway VmRSS max (MB)', h.maxRss, RSS_LIMIT_MB, ' MB'));
    report.targets.push(
      atLeast(
        single !== null
          ? 'ingest req/s while draining ÷ ingest-single Herald median'
          : 'ingest req/s while draining ÷ baseline on this gateway',
        single !== null ? report.ratios.during_drain_vs_ingest_single! : report.ratios.during_drain_vs_baseline!,
        0.7,
      ),
    );
    report.notes = [
      `RSS covers the baseline, the fill and ${drainMs / 1000} s of draining with ingest; the full drain of ${h.info.events} events is not waited for (it would take lag ÷ drain rate).`,
    ];
    if (wantProfile(ctx, report)) {
      await attachProfile(ctx, report, async (profDir) => {
        await hfx.gw.stop();
        hfx.gw = await startGateway({ dataDir: hfx.dir, fsync: 'always', cpuProfDir: profDir });
        const tag = uniqueTag('p');
        const r = await runLoad(singleSpec(Number(new URL(hfx.gw.url).port), ctx.quick ? 1000 : 5000, tag));
        hfx.history.loads.push({ tag, result: r });
        await hfx.gw.stop();
        hfx.gw = await startGateway({ dataDir: hfx.dir, fsync: 'always' });
        return [{ fromUs: r.windowUs[0], toUs: r.windowUs[1], label: 'ingest while the backlog drains' }];
      });
    }
    if (ctx.baseline) {
      // The Herald gateway is stopped (SIGTERM) while the baseline runs, so they do not share the machine; recovery restarts it.
      await h.receiver?.stop();
      h.receiver = undefined;
      if (keepForRecovery) await hfx.gw.stop();
      b = await scenario(ctx, report, true, true);
      report.baseline = side(baselineLabel(ctx, 'ingest-single load while the backlog drains'), [metrics(b)]);
      report.others = { baselineBefore: side(baselineLabel(ctx, 'ingest-single load before the backlog'), [fromLoad(b.before)]) };
      report.baselineBacklog = b.info;
      const bSingle = ctx.reports.get('ingest-single')?.baseline?.median.rps ?? null;
      report.ratios.herald_vs_baseline = ratio(h.during.rps, b.during.rps);
      report.ratios.herald_vs_baseline_rss = ratio(h.maxRss, b.maxRss);
      report.ratios.herald_vs_baseline_drain_rate = ratio(
        report.herald.median.drainEventsPerSec as number,
        report.baseline.median.drainEventsPerSec as number,
      );
      report.ratios.baseline_during_drain_vs_its_ingest_single = ratio(b.during.rps, bSingle);
      if (keepForRecovery) hfx.gw = await startGateway({ dataDir: hfx.dir, fsync: 'always' });
    }
  } finally {
    await release(h, keepForRecovery);
    await release(b, keepForRecovery);
  }
  if (keepForRecovery) {
    ctx.shared.recoveryFixture = hfx;
    if (b?.fixture) ctx.shared.recoveryFixtureBaseline = b.fixture;
  }
  return report;
}
