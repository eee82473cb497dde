/**
 * retention: 3 GiB of events (`--retention-total`) written through a gateway
 * started with HERALD_MAX_LOG_BYTES=1GiB (`--retention-limit`) and
 * HERALD_SEGMENT_BYTES=64MiB (`--retention-segment`), with the ingest-single
 * client shape (50 connections, binary mode, unique ids, fsync=always) and
 * 16 KiB of JSON data per event (`--retention-event-bytes`), so that 3 GiB
 * takes minutes rather than an hour.
 *
 * While it writes, the data dir's disk usage — `wal/*.seg` plus `herald.db`,
 * `herald.db-wal` and `herald.db-shm` — is sampled every 200 ms; its maximum
 * must stay within limit + 2 segments + 64 MiB. The ingest rate over the run
 * is compared with the same load against a gateway with no limit
 * (HERALD_MAX_LOG_BYTES=0, same segment size) for a shorter bounded time
 * (`--retention-unlimited-seconds`, 20 s), measured first in the same run.
 *
 * Correctness at the end: `GET /partitions` reports a `firstOffset` above 0 in
 * some partitions (retention deleted their oldest events) and heads adding up
 * to the events answered 2xx, and the last event each of several connections
 * had acknowledged is found by `GET /events?source&id`.
 *
 * The sizes go to the gateway as byte counts (what `1GiB`, `64MiB` mean).
 * One run per side whatever `--rounds` says: the limited run is minutes long.
 */
import fs from 'node:fs';
import path from 'node:path';
import { httpJson, startGateway, type GatewayChild } from '../lib/children';
import {
  addCheck,
  atLeast,
  atMost,
  baseReport,
  checkIngest,
  formatSize,
  fromLoad,
  headsSum,
  newDir,
  ratio,
  removeDir,
  side,
  spotCheck,
  uniqueTag,
  type CaseReport,
  type Check,
  type Ctx,
  type RunMetrics,
} from '../lib/common';
import { runLoad, type LoadResult, type LoadSpec } from '../lib/load';
import { SOURCE, eventId } from '../lib/payload';
import { nowMs, round } from '../lib/stats';
import { inRunWarmupMs, singleSpec } from './ingest-single';

const KiB = 2 ** 10;
const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** What the disk bound allows beyond the log limit and two segments: SQLite's files (index, idempotency, WAL). */
const DB_ALLOWANCE = 64 * MiB;
const SAMPLE_EVERY_MS = 200;
/** Connections whose last acknowledged event is looked up at the end. */
const RECENT_LOOKUPS = 10;

export interface ResolvedRetention {
  totalBytes: number;
  limitBytes: number;
  segmentBytes: number;
  eventBytes: number;
  unlimitedSeconds: number;
}

/** `--retention-*` as given, the rest defaulted (smaller with `--quick`). */
export function retentionParams(ctx: Ctx): ResolvedRetention {
  const p = ctx.retention;
  return {
    totalBytes: p.totalBytes ?? (ctx.quick ? 64 * MiB : 3 * GiB),
    limitBytes: p.limitBytes ?? (ctx.quick ? 16 * MiB : GiB),
    segmentBytes: p.segmentBytes ?? (ctx.quick ? 4 * MiB : 64 * MiB),
    eventBytes: p.eventBytes ?? 16 * KiB,
    unlimitedSeconds: p.unlimitedSeconds ?? (ctx.quick ? 2 : 20),
  };
}

export interface DiskUsage {
  total: number;
  segmentBytes: number;
  segments: number;
  /** Name of the oldest segment file (names are zero-padded, so they sort), when there is one. */
  oldest?: string;
  dbBytes: number;
  /** herald.db, herald.db-wal, herald.db-shm. */
  dbFiles: [number, number, number];
}

const sizeOf = (file: string) => fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;

/** Bytes of `wal/*.seg` plus herald.db, herald.db-wal and herald.db-shm (a file deleted meanwhile counts 0). */
export function diskUsage(dataDir: string): DiskUsage {
  const wal = path.join(dataDir, 'wal');
  let names: string[] = [];
  try {
    names = fs.readdirSync(wal);
  } catch {
    // not created yet
  }
  let segmentBytes = 0;
  let segments = 0;
  let oldest: string | undefined;
  for (const name of names) {
    if (!name.endsWith('.seg')) continue;
    segmentBytes += sizeOf(path.join(wal, name));
    segments++;
    if (oldest === undefined || name < oldest) oldest = name;
  }
  const dbFiles = ['herald.db', 'herald.db-wal', 'herald.db-shm'].map((f) => sizeOf(path.join(dataDir, f))) as [number, number, number];
  const dbBytes = dbFiles[0] + dbFiles[1] + dbFiles[2];
  return { total: segmentBytes + dbBytes, segmentBytes, segments, oldest, dbBytes, dbFiles };
}

/**
 * Samples `diskUsage` every `everyMs`; `stop()` returns the maximum, when the first segment was
 * retired (the oldest segment file changed), and a 1 s timeline.
 */
function sampleDisk(dataDir: string, everyMs = SAMPLE_EVERY_MS) {
  const started = nowMs();
  let max: DiskUsage & { atSeconds: number } = { ...diskUsage(dataDir), total: -1, atSeconds: 0 };
  let samples = 0;
  let firstOldest: string | undefined;
  let firstRetiredAt: number | undefined;
  let lastPoint = -Infinity;
  const timeline: { t: number; MiB: number; segments: number }[] = [];
  const read = () => {
    const now = nowMs();
    const u = diskUsage(dataDir);
    samples++;
    if (u.total > max.total) max = { ...u, atSeconds: round((now - started) / 1000, 1) };
    firstOldest ??= u.oldest;
    if (firstRetiredAt === undefined && u.oldest !== undefined && u.oldest !== firstOldest) firstRetiredAt = now;
    if (now - lastPoint >= 1000) {
      timeline.push({ t: round((now - started) / 1000, 1), MiB: round(u.total / MiB, 1), segments: u.segments });
      lastPoint = now;
    }
  };
  read();
  const timer = setInterval(read, everyMs);
  let stopped = false;
  return {
    stop() {
      if (!stopped) {
        stopped = true;
        clearInterval(timer);
        read();
      }
      return { max, samples, everyMs, started, firstRetiredAt, timeline };
    },
  };
}

/** Polls the sum of partition heads once a second (one GET /partitions, skipped while one is in flight). */
function sampleHeads(gw: GatewayChild) {
  const points: { at: number; heads: number }[] = [];
  let busy = false;
  const poll = () => {
    if (busy) return;
    busy = true;
    headsSum(gw)
      .then((heads) => points.push({ at: nowMs(), heads }))
      .catch(() => undefined)
      .finally(() => (busy = false));
  };
  const timer = setInterval(poll, 1000);
  return {
    stop() {
      clearInterval(timer);
      return points;
    },
  };
}

/** The last sequence number each of the first `n` connections had answered 2xx. */
function lastAcked(tag: string, r: LoadResult, n: number): string[] {
  const ids: string[] = [];
  for (const [conn, t] of (r.tracks ?? []).entries()) {
    if (ids.length >= n) break;
    const failed = new Set(t.failed);
    for (let seq = t.sent - 1; seq >= 0; seq--) {
      if (!failed.has(seq)) {
        ids.push(eventId(tag, conn, seq));
        break;
      }
    }
  }
  return ids;
}

const spec = (p: ResolvedRetention, port: number, durationMs: number, tag: string, maxRequests?: number): LoadSpec => ({
  ...singleSpec(port, durationMs, tag),
  dataBytes: p.eventBytes,
  maxRequests,
  drainTimeoutMs: 30_000,
});

const env = (p: ResolvedRetention, limit: number) => ({
  HERALD_MAX_LOG_BYTES: String(limit),
  HERALD_SEGMENT_BYTES: String(p.segmentBytes),
});

const mibPerSec = (r: LoadResult, eventBytes: number) => (r.seconds > 0 ? round((r.okEvents * eventBytes) / MiB / r.seconds, 1) : null);

/** The same load against a gateway with no limit, for `unlimitedSeconds` (and at most the total). */
async function unlimitedRun(ctx: Ctx, report: CaseReport, p: ResolvedRetention): Promise<RunMetrics> {
  const dir = newDir(ctx, 'retention-nolimit');
  const gw = await startGateway({ dataDir: dir, fsync: 'always', env: env(p, 0) });
  try {
    const port = Number(new URL(gw.url).port);
    const warm = await runLoad(spec(p, port, inRunWarmupMs(ctx), uniqueTag('w')));
    const tag = uniqueTag('u');
    const r = await runLoad(spec(p, port, p.unlimitedSeconds * 1000, tag, Math.ceil(p.totalBytes / p.eventBytes)));
    for (const check of await checkIngest(gw, r, tag, undefined, warm)) addCheck(report, { ...check, name: `no limit: ${check.name}` });
    const disk = diskUsage(dir);
    return fromLoad(r, { MiBPerSec: mibPerSec(r, p.eventBytes), diskMiBAtEnd: round(disk.total / MiB, 1) });
  } finally {
    await gw.stop();
    removeDir(dir);
  }
}

interface PartitionRow {
  partition: number;
  headOffset: number;
  firstOffset?: number;
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('retention', ctx);
  const p = retentionParams(ctx);
  const bound = p.limitBytes + 2 * p.segmentBytes + DB_ALLOWANCE;
  const wanted = Math.ceil(p.totalBytes / p.eventBytes);
  report.retention = {
    ...p,
    readable: {
      total: formatSize(p.totalBytes),
      limit: formatSize(p.limitBytes),
      segment: formatSize(p.segmentBytes),
      event: formatSize(p.eventBytes),
      diskBound: `${formatSize(bound)} (limit + 2 segments + ${formatSize(DB_ALLOWANCE)})`,
    },
    events: wanted,
  };

  ctx.log(`retention: no limit, ${p.unlimitedSeconds} s of ${formatSize(p.eventBytes)} events`);
  const unlimited = await unlimitedRun(ctx, report, p);
  const unlimitedMiBPerSec = unlimited.MiBPerSec as number | null;
  const unlimitedBytesPerSec = unlimitedMiBPerSec ? unlimitedMiBPerSec * MiB : null;
  // Bounded in time as well as in count: three times what the unlimited rate needs, from 1 to 60 minutes.
  const capMs = Math.round(
    Math.min(60 * 60_000, Math.max(60_000, unlimitedBytesPerSec ? (3 * p.totalBytes * 1000) / unlimitedBytesPerSec : 30 * 60_000)),
  );

  ctx.log(
    `retention: writing ${formatSize(p.totalBytes)} (${wanted} events) through HERALD_MAX_LOG_BYTES=${formatSize(p.limitBytes)}, ` +
      `HERALD_SEGMENT_BYTES=${formatSize(p.segmentBytes)} (at most ${round(capMs / 60_000, 1)} min)`,
  );
  const dir = newDir(ctx, 'retention');
  const gw = await startGateway({ dataDir: dir, fsync: 'always', env: env(p, p.limitBytes) });
  const disk = sampleDisk(dir);
  const heads = sampleHeads(gw);
  try {
    const port = Number(new URL(gw.url).port);
    const warmTag = uniqueTag('w');
    const warm = await runLoad(spec(p, port, inRunWarmupMs(ctx), warmTag));
    const remaining = Math.max(1, wanted - warm.requests);
    const tag = uniqueTag('r');
    const r = await runLoad(spec(p, port, capMs, tag, remaining));
    const headPoints = heads.stop();
    const d = disk.stop();
    const runEnd = nowMs();

    // Rate once retention deletes: from the first heads sample after the first segment was retired, to the end.
    const after = d.firstRetiredAt === undefined ? undefined : headPoints.find((h) => h.at >= d.firstRetiredAt!);
    const endHeads = await headsSum(gw);
    const afterSeconds = after ? (runEnd - after.at) / 1000 : 0;
    const eventsPerSecRetiring = after && afterSeconds >= 1 ? round((endHeads - after.heads) / afterSeconds, 1) : null;

    const limited = fromLoad(r, {
      MiBPerSec: mibPerSec(r, p.eventBytes),
      eventsPerSecRetiring,
      maxDiskMiB: round(d.max.total / MiB, 1),
      writtenMiB: round(((warm.okEvents + r.okEvents) * p.eventBytes) / MiB, 1),
    });
    report.ceiling = side(
      `Herald, no limit (HERALD_MAX_LOG_BYTES=0), ${p.unlimitedSeconds} s, ${formatSize(p.eventBytes)} events, fsync=always`,
      [unlimited],
    );
    report.herald = side(
      `Herald, HERALD_MAX_LOG_BYTES=${formatSize(p.limitBytes)}, ${formatSize(p.totalBytes)} of ${formatSize(p.eventBytes)} events, fsync=always`,
      [limited],
    );
    report.ratios = {
      limited_vs_unlimited: ratio(r.eventsPerSec, unlimited.eventsPerSec as number | null),
      retiring_vs_unlimited: ratio(eventsPerSecRetiring, unlimited.eventsPerSec as number | null),
    };
    report.disk = {
      maxBytes: d.max.total,
      maxMiB: round(d.max.total / MiB, 1),
      boundBytes: bound,
      boundMiB: round(bound / MiB, 1),
      atMax: {
        seconds: d.max.atSeconds,
        segmentMiB: round(d.max.segmentBytes / MiB, 1),
        segments: d.max.segments,
        dbMiB: round(d.max.dbBytes / MiB, 1),
        dbFilesMiB: {
          'herald.db': round(d.max.dbFiles[0] / MiB, 1),
          'herald.db-wal': round(d.max.dbFiles[1] / MiB, 1),
          'herald.db-shm': round(d.max.dbFiles[2] / MiB, 1),
        },
      },
      firstSegmentRetiredAfterSeconds: d.firstRetiredAt === undefined ? null : round((d.firstRetiredAt - d.started) / 1000, 1),
      samples: d.samples,
      everyMs: d.everyMs,
      atEnd: diskUsage(dir),
      timeline: d.timeline,
    };

    // ---- correctness ----
    addCheck(report, {
      name: `every event of the ${formatSize(p.totalBytes)} answered 2xx within the time cap`,
      ok: warm.okEvents + r.okEvents >= wanted,
      detail: {
        wanted,
        acknowledged: warm.okEvents + r.okEvents,
        non2xx: warm.non2xx + r.non2xx,
        errors: warm.errors + r.errors,
        errorSamples: r.errorSamples.slice(0, 3),
      },
    });
    addCheck(report, {
      name: `disk usage (wal/*.seg + herald.db*) never above limit + 2 segments + ${formatSize(DB_ALLOWANCE)}`,
      ok: d.max.total <= bound,
      detail: { maxBytes: d.max.total, boundBytes: bound, samples: d.samples },
    });
    const partitions = (await httpJson<{ partitions: PartitionRow[] }>('GET', `${gw.url}/partitions`)).body.partitions;
    const withFirst = partitions.filter((row) => typeof row.firstOffset === 'number');
    const aboveZero = withFirst.filter((row) => row.firstOffset! > 0);
    const inRange = withFirst.every((row) => row.firstOffset! >= 0 && row.firstOffset! <= row.headOffset);
    addCheck(report, {
      name: 'GET /partitions: firstOffset > 0 in some partitions (oldest events retired), 0 <= firstOffset <= headOffset in all',
      ok: withFirst.length === partitions.length && aboveZero.length > 0 && inRange,
      detail: {
        partitions: partitions.length,
        withFirstOffset: withFirst.length,
        firstOffsetAboveZero: aboveZero.length,
        rows: partitions.map((row) => [row.partition, row.firstOffset ?? null, row.headOffset]),
      },
    });
    const sum = partitions.reduce((n, row) => n + row.headOffset, 0);
    const acknowledged = warm.okEvents + r.okEvents;
    const unknownFate = warm.errors + r.errors;
    addCheck(report, {
      name: 'sum of partition heads = events answered 2xx',
      ok: sum >= acknowledged && sum <= acknowledged + unknownFate,
      detail: { heads: sum, acknowledged, unknownFate },
    });
    const recent: Check = await spotCheck(gw, lastAcked(tag, r, RECENT_LOOKUPS));
    addCheck(report, { ...recent, name: `${recent.name} (each connection's last acknowledged, in the last seconds)` });
    // Informational: whether the very first event is still found (after retention it should not be).
    const firstId = eventId(warmTag, 0, 0);
    const oldest = await httpJson('GET', `${gw.url}/events?source=${encodeURIComponent(SOURCE)}&id=${encodeURIComponent(firstId)}`);
    (report.retention as Record<string, unknown>).oldestEventLookupStatus = oldest.status;

    report.targets.push(atMost('max disk usage (MiB)', round(d.max.total / MiB, 1), round(bound / MiB, 1), ' MiB'));
    report.targets.push(atLeast('ingest events/s with the limit ÷ without', report.ratios.limited_vs_unlimited ?? null, 0.9));
    report.notes = [
      `One run per side. The limited rate is over the whole run (${formatSize(p.totalBytes)}, of which the first ${formatSize(p.limitBytes)} fill the log before anything is retired); retiring_vs_unlimited is the rate from when the first segment was retired (heads polled every second).`,
      `Disk usage is st_size of wal/*.seg, herald.db, herald.db-wal and herald.db-shm, sampled every ${SAMPLE_EVERY_MS} ms; a spike shorter than that can be missed.`,
      'HERALD_MAX_LOG_BYTES and HERALD_SEGMENT_BYTES are passed as byte counts.',
    ];
  } finally {
    heads.stop();
    disk.stop();
    await gw.stop();
    removeDir(dir);
  }
  return report;
}
