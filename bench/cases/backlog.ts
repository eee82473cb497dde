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
import { atLeast, atMost, baseReport, fromLoad, newDir, ratio, removeDir, side, uniqueTag, type CaseReport, type Ctx } from '../lib/common';
import type { History } from '../lib/history';
import { runLoad } from '../lib/load';
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

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('backlog', ctx);
  const total = ctx.quick ? 20_000 : 1_000_000;
  const { runMs } = ingestTimes(ctx);
  const drainMs = ctx.quick ? 2000 : 15_000;
  const dir = newDir(ctx, 'backlog');
  const history: History = { loads: [] };
  let gw = await startGateway({ dataDir: dir, fsync: 'always' });
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

    ctx.log('backlog: baseline ingest (subscriber down, log empty)');
    const baseTag = uniqueTag('b');
    const baseline = await runLoad(singleSpec(port(), runMs, baseTag));
    history.loads.push({ tag: baseTag, result: baseline });

    const remaining = Math.max(0, total - baseline.okEvents);
    ctx.log(`backlog: storing ${remaining} more events in batches of ${BATCH} (subscriber down)`);
    const fillTag = uniqueTag('f');
    const fillStart = nowMs();
    const fill = await runLoad({ port: port(), kind: 'batch', batchSize: BATCH, connections: 8, maxRequests: Math.ceil(remaining / BATCH), tag: fillTag, track: true, drainTimeoutMs: 30_000 });
    history.loads.push({ tag: fillTag, result: fill, batchSize: BATCH });
    const fillSeconds = (nowMs() - fillStart) / 1000;
    const stored = baseline.okEvents + fill.okEvents;
    const lagBefore = await lagOf(gw, sub.body.id);
    rssRuns.push({ phase: 'baseline + fill (subscriber down)', ...rss.stop() });
    rss = sampleRss(gw.pid);

    ctx.log(`backlog: ${stored} events stored (${round(logBytes(dir) / 2 ** 30, 2)} GiB of log); subscriber comes up, ingest continues for ${drainMs / 1000} s`);
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
    const single = ctx.reports.get('ingest-single')?.herald?.median.rps ?? null;
    report.herald = side('Herald ingest-single load while the backlog drains', [fromLoad(during, { drainedEvents: stats.distinct, drainEventsPerSec: round(stats.distinct / drainSeconds, 1) })]);
    report.ceiling = side('Herald ingest-single load on the same gateway before the backlog (baseline)', [fromLoad(baseline)]);
    report.backlog = {
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
    report.ratios = {
      during_drain_vs_ingest_single: ratio(during.rps, single),
      during_drain_vs_baseline: ratio(during.rps, baseline.rps),
    };
    report.targets.push(atMost('gateway VmRSS max (MB)', maxRss, RSS_LIMIT_MB, ' MB'));
    report.targets.push(
      atLeast(
        single !== null ? 'ingest req/s while draining ÷ ingest-single Herald median' : 'ingest req/s while draining ÷ baseline on this gateway',
        single !== null ? report.ratios.during_drain_vs_ingest_single! : report.ratios.during_drain_vs_baseline!,
        0.7,
      ),
    );
    report.notes = [
      `RSS covers the baseline, the fill and ${drainMs / 1000} s of draining with ingest; the full drain of ${stored} events is not waited for (it would take lag ÷ drain rate).`,
    ];
    report.correctness.checks.push({ name: 'fill: every batch answered 2xx', ok: fill.errors === 0 && fill.non2xx === 0, detail: { non2xx: fill.non2xx, errors: fill.errors } });
    if (fill.errors > 0 || fill.non2xx > 0) report.correctness.ok = false;

    if (wantProfile(ctx, report)) {
      await attachProfile(ctx, report, async (profDir) => {
        await gw.stop();
        gw = await startGateway({ dataDir: dir, fsync: 'always', cpuProfDir: profDir });
        const tag = uniqueTag('p');
        const r = await runLoad(singleSpec(port(), ctx.quick ? 1000 : 5000, tag));
        history.loads.push({ tag, result: r });
        await gw.stop();
        gw = await startGateway({ dataDir: dir, fsync: 'always' });
        return [{ fromUs: r.windowUs[0], toUs: r.windowUs[1], label: 'ingest while the backlog drains' }];
      });
    }
    if (ctx.cases.includes('recovery')) {
      const fx: RecoveryFixture = { dir, gw, history };
      ctx.shared.recoveryFixture = fx;
      handedOver = true;
    }
  } finally {
    rss.stop();
    await receiver?.stop();
    if (!handedOver) {
      await gw.stop();
      removeDir(dir);
    }
  }
  return report;
}
