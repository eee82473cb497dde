/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): self time per
 * function, summed over every node of the call tree with the same function,
 * file and line, plus self time per source file or package.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './children';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Which samples count: a CLOCK_MONOTONIC µs window (the measured load), and/or only stacks under a named function. */
export interface ProfileScope {
  fromUs?: number;
  toUs?: number;
  under?: string;
  label?: string;
}

export const monoUs = () => Number(process.hrtime.bigint() / 1000n);

export interface ProfileSummary {
  file: string;
  scope: string;
  wallMs: number;
  /** Sampled time not idle, ms. */
  busyMs: number;
  idleMs: number;
  gcMs: number;
  top: { selfMs: number; pct: number; fn: string; where: string }[];
  byFile: { selfMs: number; pct: number; where: string }[];
}

function shortUrl(url: string): string {
  if (!url) return '(native)';
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(ROOT)) u = path.relative(ROOT, u).replace(/^dist-bench\/gateway\//, ''); // the run's snapshot of dist/
  const nm = u.lastIndexOf('node_modules/');
  if (nm !== -1) u = u.slice(nm + 'node_modules/'.length);
  return u;
}

/** The package or file a frame belongs to: `better-sqlite3`, `undici`, `node:internal/…`, `dist/log/…`. */
function bucket(url: string): string {
  const s = shortUrl(url);
  if (url.includes('node_modules/')) return s.split('/')[0]!.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!;
  return s;
}

export function summarizeProfile(file: string, scope: ProfileScope = {}, topN = 15): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const underMemo = new Map<number, boolean>();
  const isUnder = (id: number): boolean => {
    if (scope.under === undefined) return true;
    const known = underMemo.get(id);
    if (known !== undefined) return known;
    const p = parent.get(id);
    const result = byId.get(id)!.callFrame.functionName === scope.under || (p !== undefined && isUnder(p));
    underMemo.set(id, result);
    return result;
  };
  const selfUs = new Map<number, number>();
  let ts = profile.startTime;
  let windowStart = Infinity;
  let windowEnd = -Infinity;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    ts += profile.timeDeltas[i] ?? 0;
    if (scope.fromUs !== undefined && ts < scope.fromUs) continue;
    if (scope.toUs !== undefined && ts > scope.toUs) continue;
    windowStart = Math.min(windowStart, ts);
    windowEnd = Math.max(windowEnd, ts);
    if (!isUnder(id)) continue;
    // timeDeltas[i] is the time since the previous sample; attribute the next delta to this sample.
    const dt = Math.max(0, profile.timeDeltas[i + 1] ?? 0);
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  }
  const fnTotals = new Map<string, { us: number; fn: string; where: string }>();
  const fileTotals = new Map<string, number>();
  let idleUs = 0;
  let gcUs = 0;
  let totalUs = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    const { functionName, url, lineNumber } = node.callFrame;
    totalUs += us;
    if (functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    if (functionName === '(garbage collector)') gcUs += us;
    const fn = functionName || '(anonymous)';
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : '';
    const key = `${fn}@${where}`;
    const t = fnTotals.get(key) ?? { us: 0, fn, where };
    t.us += us;
    fnTotals.set(key, t);
    const b = url ? bucket(url) : fn.startsWith('(') ? fn : '(native)';
    fileTotals.set(b, (fileTotals.get(b) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const pct = (us: number) => Math.round((us / Math.max(1, busyUs)) * 1000) / 10;
  const ms = (us: number) => Math.round(us / 100) / 10;
  const windowed = scope.fromUs !== undefined || scope.toUs !== undefined;
  const parts = [
    scope.label,
    windowed ? 'samples in the measured window only' : scope.under ? undefined : 'whole process',
    scope.under ? `stacks under ${scope.under}()` : undefined,
  ];
  return {
    file,
    scope: parts.filter(Boolean).join(', '),
    wallMs: ms(Number.isFinite(windowEnd) ? windowEnd - windowStart : 0),
    busyMs: ms(busyUs),
    idleMs: ms(idleUs),
    gcMs: ms(gcUs),
    top: [...fnTotals.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((t) => ({ selfMs: ms(t.us), pct: pct(t.us), fn: t.fn, where: t.where })),
    byFile: [...fileTotals.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, topN)
      .map(([where, us]) => ({ selfMs: ms(us), pct: pct(us), where })),
  };
}

/**
 * The main thread's profile in a directory: node names them
 * `CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile`, and worker threads
 * (the SQLite checkpointer) write their own with a threadId above 0.
 */
export function mainThreadProfile(dir: string): string | undefined {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const main = files.filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f));
  const pick = (main.length > 0 ? main : files)
    .map((f) => path.join(dir, f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  return pick[0];
}

/**
 * The worker threads' profiles in a directory (threadId above 0: the delivery thread, the indexer,
 * the checkpointer), newest first.
 */
export function workerThreadProfiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile') && !/\.\d+\.0\.\d+\.cpuprofile$/.test(f))
    .map((f) => path.join(dir, f));
}

/** Human-readable lines for a summary (used by `profile-summary` and BENCHMARKS.md). */
export function formatProfile(s: ProfileSummary): string {
  const lines = [
    `${path.basename(s.file)} [${s.scope}]: busy ${s.busyMs} ms of ${s.wallMs} ms wall (idle ${s.idleMs} ms, GC ${s.gcMs} ms)`,
    '  self ms    %   function (file:line)',
  ];
  for (const t of s.top) lines.push(`  ${String(t.selfMs).padStart(7)} ${String(t.pct).padStart(5)}  ${t.fn} ${t.where}`);
  lines.push('  by file/package:');
  for (const f of s.byFile) lines.push(`  ${String(f.selfMs).padStart(7)} ${String(f.pct).padStart(5)}  ${f.where}`);
  return lines.join('\n');
}
