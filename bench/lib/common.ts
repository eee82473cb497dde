/** What every case shares: options, the report shape, per-run metrics and their medians, ingest checks. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { GatewayChild } from './children';
import { httpJson } from './children';
import type { LoadResult } from './load';
import { SOURCE, eventId } from './payload';
import type { ProfileSummary } from './profile';
import { median, round } from './stats';

export interface Options {
  cases: string[];
  quick: boolean;
  /** Measured runs per side (median taken); 3 by default. */
  rounds: number;
  latencySeconds: number;
  profile: 'auto' | 'always' | 'never';
  /** `--baseline=<git-ref>`: also run that ref's gateway after every Herald run. */
  baseline?: string;
  /** `--peer-seconds`: measured seconds of each run of peer-jetstream (10). */
  peerSeconds: number;
  /** retention's sizes and times (`--retention-total=3GiB` …); those not given take the case's defaults (small ones with `--quick`). */
  retention: RetentionParams;
}

export interface RetentionParams {
  /** Event data written through the limited gateway, bytes. */
  totalBytes?: number;
  /** HERALD_MAX_LOG_BYTES of the limited gateway. */
  limitBytes?: number;
  /** HERALD_SEGMENT_BYTES of both gateways. */
  segmentBytes?: number;
  /** JSON data per event, bytes. */
  eventBytes?: number;
  /** How long the unlimited gateway is written to, seconds. */
  unlimitedSeconds?: number;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** `1073741824`, `1GiB`, `64MiB`, `16KiB`, `1.5GiB` → bytes (whole); undefined when not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) return undefined;
  const bytes = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Bytes as the largest binary unit that keeps them readable: `1 GiB`, `192 MiB`, `1.5 KiB`. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ['GiB', 2 ** 30],
    ['MiB', 2 ** 20],
    ['KiB', 2 ** 10],
  ] as const) {
    if (Math.abs(bytes) >= size) return `${round(bytes / size, 2)} ${unit}`;
  }
  return `${bytes} B`;
}

export interface Ctx extends Options {
  tmpRoot: string;
  resultsDir: string;
  reports: Map<string, CaseReport>;
  /** State one case hands to a later one in the same invocation (see deliver and backlog → recovery). */
  shared: Record<string, unknown>;
  log(msg: string): void;
  /** Registers clean-up run at the end of the suite (fixtures kept across cases). */
  defer(fn: () => Promise<unknown> | unknown): void;
}

/** One measured run, whatever was measured: requests/s for HTTP load, events/s, records/s or bytes/s otherwise. */
export interface RunMetrics {
  rps: number | null;
  eventsPerSec?: number | null;
  p50: number | null;
  p99: number | null;
  max: number | null;
  non2xx: number;
  errors: number;
  [extra: string]: unknown;
}

export interface Side {
  name: string;
  runs: RunMetrics[];
  median: RunMetrics;
}

export interface Check {
  name: string;
  ok: boolean;
  detail?: unknown;
}

export interface Target {
  name: string;
  want: string;
  value: number | null;
  pass: boolean;
  /** How far off, as a readable sentence, when it fails. */
  shortBy?: string;
}

export interface CaseReport {
  case: string;
  node: string;
  cpus: number;
  quick: boolean;
  ceiling?: Side;
  herald?: Side;
  /** The `--baseline` gateway's runs, when one was given. */
  baseline?: Side;
  others?: Record<string, Side>;
  ratios: Record<string, number | null>;
  targets: Target[];
  correctness: { ok: boolean; checks: Check[] };
  profile?: ProfileSummary | { error: string };
  notes?: string[];
  [extra: string]: unknown;
}

export function baseReport(name: string, ctx: Ctx): CaseReport {
  return {
    case: name,
    node: process.version,
    cpus: os.cpus().length,
    quick: ctx.quick,
    ratios: {},
    targets: [],
    correctness: { ok: true, checks: [] },
  };
}

export function addCheck(report: CaseReport, check: Check): void {
  report.correctness.checks.push(check);
  if (!check.ok) report.correctness.ok = false;
}

export function fromLoad(r: LoadResult, extra: Record<string, unknown> = {}): RunMetrics {
  return {
    rps: r.rps,
    eventsPerSec: r.eventsPerSec,
    p50: r.latencyMs.p50,
    p99: r.latencyMs.p99,
    max: r.latencyMs.max,
    non2xx: r.non2xx,
    errors: r.errors,
    requests: r.requests,
    okEvents: r.okEvents,
    seconds: r.seconds,
    ...(r.dropped > 0 ? { dropped: r.dropped } : {}),
    ...(r.errorSamples.length > 0 ? { errorSamples: r.errorSamples.slice(0, 3) } : {}),
    ...extra,
  };
}

/** Field-wise median of numeric fields over runs (counts of non-2xx and errors are summed instead). */
export function side(name: string, runs: RunMetrics[]): Side {
  const med: RunMetrics = { rps: null, p50: null, p99: null, max: null, non2xx: 0, errors: 0 };
  const keys = new Set(runs.flatMap((r) => Object.keys(r)));
  for (const key of keys) {
    const values = runs.map((r) => r[key]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
    if (key === 'non2xx' || key === 'errors' || key === 'dropped') med[key] = values.reduce((a, b) => a + b, 0);
    else if (values.length > 0) med[key] = round(median(values), 3);
  }
  return { name, runs, median: med };
}

export function ratio(a: number | null | undefined, b: number | null | undefined): number | null {
  if (a === null || a === undefined || b === null || b === undefined || b === 0) return null;
  return round(a / b, 3);
}

export function atLeast(name: string, value: number | null, min: number): Target {
  const pass = value !== null && value >= min;
  return {
    name,
    want: `>= ${min}`,
    value,
    pass,
    shortBy: pass || value === null ? undefined : `${round(min - value, 3)} below (${round((value / min) * 100, 1)}% of the target)`,
  };
}

export function atMost(name: string, value: number | null, max: number, unit = ''): Target {
  const pass = value !== null && value <= max;
  return {
    name,
    want: `<= ${round(max, 3)}${unit}`,
    value,
    pass,
    shortBy: pass || value === null ? undefined : `${round(value - max, 3)}${unit} over`,
  };
}

export function below(name: string, value: number | null, max: number, unit = ''): Target {
  const pass = value !== null && value < max;
  return {
    name,
    want: `< ${max}${unit}`,
    value,
    pass,
    shortBy: pass || value === null ? undefined : `${round(value - max, 3)}${unit} over`,
  };
}

/** Label of the baseline side: `baseline <ref>`. */
export const baselineLabel = (ctx: Ctx, what: string) => `baseline ${ctx.baseline} — ${what}`;

export function newDir(ctx: Ctx, name: string): string {
  return fs.mkdtempSync(path.join(ctx.tmpRoot, `${name}-`));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

export async function headsSum(gw: GatewayChild): Promise<number> {
  const res = await httpJson<{ partitions: { headOffset: number }[] }>('GET', `${gw.url}/partitions`);
  return res.body.partitions.reduce((n, p) => n + p.headOffset, 0);
}

/** Acknowledged ids of a tracked load: every sequence number issued on a connection and not listed as failed. */
export function* ackedIds(tag: string, r: LoadResult, batchSize?: number): Generator<string> {
  for (const [conn, t] of (r.tracks ?? []).entries()) {
    const failed = new Set(t.failed);
    for (let seq = 0; seq < t.sent; seq++) {
      if (failed.has(seq)) continue;
      if (batchSize === undefined) yield eventId(tag, conn, seq);
      else for (let i = 0; i < batchSize; i++) yield eventId(tag, conn, seq, i);
    }
  }
}

/** Up to `n` acknowledged ids spread over the run (first, last and evenly between). */
export function sampleAcked(tag: string, r: LoadResult, n: number, batchSize?: number): string[] {
  const all: string[] = [];
  for (const id of ackedIds(tag, r, batchSize)) all.push(id);
  if (all.length <= n) return all;
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(all[Math.floor((i * (all.length - 1)) / (n - 1))]!);
  return out;
}

/** `GET /events?source&id` for each id: found, with that id. */
export async function spotCheck(gw: GatewayChild, ids: string[]): Promise<Check> {
  const missing: string[] = [];
  for (const id of ids) {
    const res = await httpJson<{ event?: { id?: string } }>(
      'GET',
      `${gw.url}/events?source=${encodeURIComponent(SOURCE)}&id=${encodeURIComponent(id)}`,
    );
    if (res.status !== 200 || res.body.event?.id !== id) missing.push(`${id} (${res.status})`);
  }
  return {
    name: `GET /events finds ${ids.length} sampled acknowledged events`,
    ok: missing.length === 0 && ids.length > 0,
    detail: missing.length > 0 ? { missing } : undefined,
  };
}

/**
 * The durability check of an ingest run on a fresh data dir: the partition
 * heads add up to the events answered 2xx by this run and the `earlier` one on
 * the same dir (requests lost to a connection error may or may not have been
 * stored: they widen the allowed range), and sampled acknowledged events are found by id.
 */
export async function checkIngest(
  gw: GatewayChild,
  r: LoadResult,
  tag: string,
  batchSize?: number,
  earlier?: LoadResult,
): Promise<Check[]> {
  const heads = await headsSum(gw);
  const perRequest = batchSize ?? 1;
  const acknowledged = r.okEvents + (earlier?.okEvents ?? 0);
  const maxExtra = (r.errors + (earlier?.errors ?? 0)) * perRequest;
  const countCheck: Check = {
    name: 'sum of partition heads = events answered 2xx',
    ok: heads >= acknowledged && heads <= acknowledged + maxExtra,
    detail: { heads, acknowledged, unknownFate: maxExtra },
  };
  return [countCheck, await spotCheck(gw, sampleAcked(tag, r, 20, batchSize))];
}

export const uniqueTag = (prefix: string) => `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
