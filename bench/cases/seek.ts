/**
 * seek (issue 12 §2): `POST /subscriptions/{id}/seek {"time": …}` over a
 * 1 GiB log (32 MiB with --quick). Each partition restarts at its first
 * event stored at or after the time, found by a binary search over the
 * partition's offsets by `storedAt` (a handful of record reads per
 * partition). Measured: the seek's answer time, for times at 10 %, 50 % and
 * 90 % of the log's writing and before it. Target: under 100 ms. Checked:
 * each partition's committed offset after the seek is the first event
 * stored at or after the time (verified against the partition's records).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { httpJson, startGateway } from '../lib/children';
import { addCheck, baseReport, below, newDir, removeDir, uniqueTag, type CaseReport, type Ctx } from '../lib/common';
import { runLoad } from '../lib/load';
import { logBytes, scanLog } from '../lib/log-scan';
import { round } from '../lib/stats';
import { BATCH } from './ingest-batch';

const TARGET_MS = 100;

interface PartitionStats {
  partition: number;
  committedOffset: number;
  headOffset: number;
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('seek', ctx);
  const target = ctx.quick ? 32 * 2 ** 20 : 2 ** 30;
  const dir = newDir(ctx, 'seek');
  const gw = await startGateway({ dataDir: dir, fsync: 'never' });
  try {
    ctx.log(`seek: writing ${round(target / 2 ** 30, 3)} GiB of log`);
    const port = Number(new URL(gw.url).port);
    const started = Date.now();
    let events = 0;
    for (let i = 0; i < 2 && logBytes(dir) < target; i++) {
      const perEvent = i === 0 ? undefined : logBytes(dir) / events;
      const requests = perEvent === undefined ? 100 : Math.ceil((target - logBytes(dir)) / perEvent / BATCH);
      const r = await runLoad({
        port,
        kind: 'batch',
        batchSize: BATCH,
        connections: 8,
        maxRequests: requests,
        tag: uniqueTag('s'),
        drainTimeoutMs: 30_000,
      });
      events += r.okEvents;
    }
    const finished = Date.now();
    // The log was written with fsync=never to fill it fast: let the kernel write it back first, so the
    // seeks are not measured behind a gigabyte of writeback (a seek on a busy disk is another case).
    execFileSync('sync');
    const sub = await httpJson<{ id: string }>('POST', `${gw.url}/subscriptions`, { sink: 'http://127.0.0.1:9/never', startAt: 'latest' });
    if (sub.status !== 201) throw new Error(`creating the subscription answered ${sub.status}`);
    // Paused, so nothing is ever sent to the closed port it names.
    await httpJson('POST', `${gw.url}/subscriptions/${sub.body.id}/pause`);

    const timings: Record<string, number> = {};
    const again: Record<string, number> = {};
    let correct = true;
    for (const [label, fraction] of [
      ['before the log', -0.1],
      ['10 %', 0.1],
      ['50 %', 0.5],
      ['90 %', 0.9],
    ] as const) {
      const time = new Date(started + fraction * (finished - started)).toISOString();
      // Cold where the machine lets us (root): the page cache dropped, so index and log pages come from disk.
      const cold = dropCaches();
      const t0 = performance.now();
      const res = await httpJson<{ stats: { partitions: PartitionStats[] } }>('POST', `${gw.url}/subscriptions/${sub.body.id}/seek`, {
        time,
      });
      timings[cold ? `${label} (cold cache)` : label] = round(performance.now() - t0, 2);
      // The same seek again: the difference is what the first one paid for pages not yet read (index and log).
      const t1 = performance.now();
      await httpJson('POST', `${gw.url}/subscriptions/${sub.body.id}/seek`, { time });
      again[label] = round(performance.now() - t1, 2);
      if (cold) report.notes = ['every first seek ran with the page cache dropped (/proc/sys/vm/drop_caches)'];
      if (res.status !== 200) {
        correct = false;
        continue;
      }
      const heads = new Map(res.body.stats.partitions.map((p) => [p.partition, p.headOffset]));
      const expected = expectedOffsets(dir, Date.parse(time), heads);
      for (const p of res.body.stats.partitions) if (expected.get(p.partition) !== p.committedOffset) correct = false;
    }
    const worst = Math.max(...Object.values(timings));
    report.results = { logBytes: logBytes(dir), events, seekMs: timings, repeatedSeekMs: again, worstMs: worst };
    report.targets.push(below('seek by time, worst answer (ms)', worst, TARGET_MS, ' ms'));
    addCheck(report, { name: 'each partition restarts at its first event stored at or after the time', ok: correct });
  } finally {
    await gw.stop();
    removeDir(dir);
  }
  return report;
}

/**
 * Per partition, the first offset stored at or after `time` (the head when none is), read from the
 * segment files by the suite's own decoder, independent of the gateway.
 */
function expectedOffsets(dir: string, time: number, heads: Map<number, number>): Map<number, number> {
  const first = new Map<number, number>();
  scanLog(dir, (_id, partition, offset, storedAt) => {
    if (storedAt >= time && !first.has(partition)) first.set(partition, offset);
  });
  for (const [partition, head] of heads) if (!first.has(partition)) first.set(partition, head);
  return first;
}

/** Drops the kernel's page cache when allowed (root); false otherwise. */
function dropCaches(): boolean {
  try {
    execFileSync('sync');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}
