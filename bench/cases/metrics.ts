/**
 * metrics (issue 11): what answering Prometheus costs the gateway. With 100
 * subscriptions on 16 partitions (1,600 lag series), the gateway's own CPU
 * time (utime + stime from /proc) over a window in which `/metrics` is
 * scraped once per second, minus the same window idle, as a fraction of one
 * core. Target: under 1 %. Each scrape must answer 200 with every
 * subscription's series.
 */
import os from 'node:os';
import { cpuSeconds, delay, httpJson, startGateway } from '../lib/children';
import { addCheck, baseReport, below, newDir, removeDir, type CaseReport, type Ctx } from '../lib/common';

const SUBSCRIPTIONS = 100;
/** One `herald_subscription_state` series per state and subscription (active, paused, validating). */
const STATES = 3;

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('metrics', ctx);
  const windowSeconds = ctx.quick ? 3 : 30;
  const dir = newDir(ctx, 'metrics');
  const gw = await startGateway({ dataDir: dir });
  try {
    for (let i = 0; i < SUBSCRIPTIONS; i++) {
      // A closed port on loopback: nothing is published, so nothing is ever sent there.
      const res = await httpJson('POST', `${gw.url}/subscriptions`, { sink: 'http://127.0.0.1:9/never' });
      if (res.status !== 201) throw new Error(`creating subscription ${i} answered ${res.status}`);
    }
    await delay(1000);
    const idleStart = cpuSeconds(gw.pid);
    await delay(windowSeconds * 1000);
    const idle = cpuSeconds(gw.pid) - idleStart;

    const scrapeStart = cpuSeconds(gw.pid);
    let scrapes = 0;
    let bytes = 0;
    let complete = true;
    const started = Date.now();
    for (let s = 0; s < windowSeconds; s++) {
      const res = await fetch(`${gw.url}/metrics`);
      const text = await res.text();
      bytes = text.length;
      scrapes++;
      if (res.status !== 200 || (text.match(/^herald_subscription_state\{/gm)?.length ?? 0) !== SUBSCRIPTIONS * STATES) complete = false;
      await delay(Math.max(0, started + (s + 1) * 1000 - Date.now()));
    }
    const busy = cpuSeconds(gw.pid) - scrapeStart;
    const fraction = Math.max(0, busy - idle) / windowSeconds;
    report.results = {
      subscriptions: SUBSCRIPTIONS,
      windowSeconds,
      scrapes,
      scrapeBytes: bytes,
      idleCpuSeconds: idle,
      scrapingCpuSeconds: busy,
      coreFractionForScrapes: Math.round(fraction * 10_000) / 10_000,
      cpus: os.cpus().length,
    };
    report.targets.push(below('CPU for one scrape per second, 100 subscriptions (fraction of one core)', fraction, 0.01));
    addCheck(report, { name: 'every scrape answered 200 with every subscription', ok: complete, detail: `${scrapes} scrapes` });
  } finally {
    await gw.stop();
    removeDir(dir);
  }
  return report;
}
