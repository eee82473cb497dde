/**
 * Herald's benchmark suite (`npm run bench`, issue 5). Every figure is a ratio
 * to a ceiling measured in the same run on the same machine; ceilings and
 * Herald alternate (warm-up, then `--rounds` measured runs each, median).
 *
 *   npm run bench                              all cases (about 13 minutes: peer-jetstream adds about 1½, retention about 2–3)
 *   npm run bench -- ingest-single deliver     a subset
 *   npm run bench -- filters                   adversarial subscription filters, in-process (issue 8)
 *   npm run bench -- seek                      seek by time over a 1 GiB log (issue 12)
 *   npm run bench -- metrics                   CPU cost of one /metrics scrape per second with 100 subscriptions (issue 11)
 *   npm run bench -- index-design              the indexer's index structures compared in-process: CPU per event, size, lookups
 *   npm run bench -- peer-jetstream            Herald against NATS JetStream (nats-server on PATH or /usr/sbin; skipped without it)
 *   npm run bench -- retention                 3 GiB through HERALD_MAX_LOG_BYTES=1GiB: disk stays bounded, ingest rate ÷ no limit
 *   npm run bench -- --quick                   smoke run: checks the scripts work, numbers mean nothing
 *   options: --rounds=N (3)  --latency-seconds=S (30)  --profile=auto|always|never (auto: on a missed target)
 *            --out=FILE (bench/results/<time>.jsonl)
 *            --peer-seconds=S (10): measured seconds of each peer-jetstream run
 *            --retention-total=SIZE (3GiB)  --retention-limit=SIZE (1GiB)  --retention-segment=SIZE (64MiB)
 *            --retention-event-bytes=SIZE (16KiB)  --retention-unlimited-seconds=S (20)
 *              (sizes in bytes or with KiB/MiB/GiB; with --quick the ones not given are 64MiB, 16MiB, 4MiB, 16KiB and 2 s)
 *            --baseline=<git-ref>: build that ref's gateway into dist-bench/baseline/ and run it in every round
 *              right after Herald (ceiling, Herald, baseline, …); each case gets a baseline side and `herald_vs_baseline`
 *
 * stdout: one JSON line per case, then one `{"summary":…}` line. stderr: progress and a table.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as backlog from './cases/backlog';
import * as deliver from './cases/deliver';
import * as filters from './cases/filters';
import * as indexDesign from './cases/index-design';
import * as ingestBatch from './cases/ingest-batch';
import * as ingestSingle from './cases/ingest-single';
import * as jetstream from './cases/jetstream';
import * as latency from './cases/latency';
import * as metrics from './cases/metrics';
import * as peerJetstream from './cases/peer-jetstream';
import * as seek from './cases/seek';
import * as recovery from './cases/recovery';
import * as retention from './cases/retention';
import { execFileSync } from 'node:child_process';
import { MAIN_JS, ROOT, buildBaseline, killAll, snapshotGateway } from './lib/children';
import type { CaseReport, Ctx, Options } from './lib/common';
import { baseReport, formatSize, parseSize } from './lib/common';
import { formatProfile, type ProfileSummary } from './lib/profile';

const CASES: Record<string, (ctx: Ctx) => Promise<CaseReport>> = {
  'ingest-single': ingestSingle.run,
  'ingest-batch': ingestBatch.run,
  deliver: deliver.runDeliver,
  'deliver-ordered': deliver.runDeliverOrdered,
  latency: latency.run,
  backlog: backlog.run,
  recovery: recovery.run,
  filters: filters.run,
  metrics: metrics.run,
  seek: seek.run,
  'index-design': indexDesign.run,
  'peer-jetstream': peerJetstream.run,
  retention: retention.run,
  jetstream: jetstream.run,
};
const ORDER = Object.keys(CASES);

function usage(msg: string): never {
  process.stderr.write(
    `bench: ${msg}\nusage: npm run bench -- [${ORDER.join('|')} …] [--quick] [--rounds=N] [--latency-seconds=S] [--profile=auto|always|never] [--out=FILE] [--baseline=<git-ref>]\n` +
      `       [--peer-seconds=S] [--retention-total=SIZE] [--retention-limit=SIZE] [--retention-segment=SIZE] [--retention-event-bytes=SIZE] [--retention-unlimited-seconds=S]\n`,
  );
  process.exit(2);
}

export function parseArgs(argv: string[]): Options & { out?: string } {
  const opts: Options & { out?: string } = {
    cases: [],
    quick: false,
    rounds: 3,
    latencySeconds: 30,
    profile: 'auto',
    peerSeconds: 10,
    retention: {},
  };
  for (const arg of argv) {
    const [flag, value] = arg.split('=', 2) as [string, string | undefined];
    const num = () => {
      const n = Number(value);
      if (!value || !Number.isInteger(n) || n < 1 || n > 600) usage(`${flag} needs a whole number from 1 to 600`);
      return n;
    };
    const size = (min: number, max: number) => {
      const n = value === undefined ? undefined : parseSize(value);
      if (n === undefined || n < min || n > max)
        usage(`${flag} needs a size from ${formatSize(min)} to ${formatSize(max)} (bytes, or with KiB, MiB, GiB)`);
      return n;
    };
    if (flag === '--quick') opts.quick = true;
    else if (flag === '--rounds') opts.rounds = num();
    else if (flag === '--latency-seconds') opts.latencySeconds = num();
    else if (flag === '--peer-seconds') opts.peerSeconds = num();
    else if (flag === '--retention-total') opts.retention.totalBytes = size(2 ** 20, 2 ** 40);
    else if (flag === '--retention-limit') opts.retention.limitBytes = size(2 ** 20, 2 ** 40);
    else if (flag === '--retention-segment') opts.retention.segmentBytes = size(64 * 2 ** 10, 4 * 2 ** 30);
    else if (flag === '--retention-event-bytes') opts.retention.eventBytes = size(64, 512 * 2 ** 10);
    else if (flag === '--retention-unlimited-seconds') opts.retention.unlimitedSeconds = num();
    else if (flag === '--profile') {
      if (value !== 'auto' && value !== 'always' && value !== 'never') usage('--profile is auto, always or never');
      opts.profile = value;
    } else if (flag === '--out' && value) opts.out = value;
    else if (flag === '--baseline') {
      if (!value || value.startsWith('-')) usage('--baseline needs a git ref (a commit, tag or branch)');
      opts.baseline = value;
    } else if (flag === '--help' || flag === '-h') usage('help');
    else if (flag.startsWith('-')) usage(`unknown option ${arg}`);
    else if (!(flag in CASES)) usage(`unknown case "${flag}"`);
    else opts.cases.push(flag);
  }
  if (opts.quick && !argv.some((a) => a.startsWith('--rounds'))) opts.rounds = 1;
  // Canonical order: later cases reuse earlier figures and fixtures (latency's rate, backlog's log for recovery).
  opts.cases = opts.cases.length === 0 ? ORDER : ORDER.filter((c) => opts.cases.includes(c));
  return opts;
}

/** Which code ran: the commit, and whether src/ or migrations/ differed from it (read-only git). */
function revision() {
  const git = (args: string[]) => {
    try {
      return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return undefined;
    }
  };
  const dirty = git(['status', '--porcelain', '--', 'src', 'migrations']);
  return { commit: git(['rev-parse', '--short', 'HEAD']) ?? 'unknown', srcDirty: dirty === undefined ? null : dirty.length > 0 };
}

function machine() {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  return {
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: `${os.type()} ${os.release()}`,
    tmpdir: os.tmpdir(),
  };
}

function tableLine(r: CaseReport): string {
  const fmt = (v: unknown) => (typeof v === 'number' ? String(v) : v === null || v === undefined ? '-' : String(v));
  const ratios = Object.entries(r.ratios)
    .map(([k, v]) => `${k}=${fmt(v)}`)
    .join(' ');
  const targets = r.targets.map((t) => `${t.pass ? 'PASS' : 'MISS'} ${t.name} ${t.want} (got ${fmt(t.value)})`).join('; ');
  const medians = (label: string, m: Record<string, unknown> | undefined) => {
    if (!m) return '';
    const keys = ['rps', 'eventsPerSec', 'p99', 'p2rP99', 'scanMBps', 'readyMs', 'maxRssMb'].filter((k) => typeof m[k] === 'number');
    return `\n${' '.repeat(17)}${label} median: ${keys.map((k) => `${k}=${fmt(m[k])}`).join(' ')}`;
  };
  const base = r.baseline ? medians('Herald', r.herald?.median) + medians(r.baseline.name.split(' — ')[0]!, r.baseline.median) : '';
  if (typeof r.skipped === 'string') return `${r.case.padEnd(16)} SKIPPED: ${r.skipped}`;
  return `${r.case.padEnd(16)} ${ratios}${base}\n${' '.repeat(17)}${targets || 'no target'}; correctness ${r.correctness.ok ? 'ok' : 'FAILED'}`;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(MAIN_JS)) usage(`${MAIN_JS} is missing: run npm run build first`);
  const rev = revision();
  const snapshot = snapshotGateway();
  const baseline = opts.baseline ? buildBaseline(opts.baseline, (msg) => process.stderr.write(`[bench] ${msg}\n`)) : undefined;
  const resultsDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(resultsDir, { recursive: true });
  const out = opts.out ?? path.join(resultsDir, `${new Date().toISOString().replace(/[:.]/g, '-')}${opts.quick ? '-quick' : ''}.jsonl`);
  const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-bench-'));
  const deferred: (() => Promise<unknown> | unknown)[] = [];
  const started = Date.now();
  if (baseline) opts.baseline = baseline.commit;
  const ctx: Ctx = {
    ...opts,
    tmpRoot,
    resultsDir,
    reports: new Map(),
    shared: {},
    log: (msg) => process.stderr.write(`[bench +${Math.round((Date.now() - started) / 1000)}s] ${msg}\n`),
    defer: (fn) => deferred.push(fn),
  };
  const cleanup = () => {
    killAll();
    fs.rmSync(tmpRoot, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    cleanup();
    process.exit(130);
  });

  const emit = (line: object) => {
    const text = JSON.stringify(line);
    process.stdout.write(`${text}\n`);
    fs.appendFileSync(out, `${text}\n`);
  };
  const info = machine();
  emit({
    machine: info,
    revision: rev,
    gateway: snapshot,
    ...(baseline ? { baseline } : {}),
    options: opts,
    started: new Date(started).toISOString(),
  });
  let failed = false;
  try {
    for (const name of opts.cases) {
      ctx.log(`${name}: start`);
      let report: CaseReport;
      try {
        report = await CASES[name]!(ctx);
      } catch (err) {
        failed = true;
        report = baseReport(name, ctx);
        report.error = (err as Error).stack ?? String(err);
        report.correctness.ok = false;
        ctx.log(`${name}: FAILED: ${(err as Error).message}`);
      }
      report.seconds = Math.round((Date.now() - started) / 1000);
      ctx.reports.set(name, report);
      emit(report);
      for (const p of [report.profile, ...((report.moreProfiles as ProfileSummary[] | undefined) ?? [])]) {
        if (p && 'top' in p) process.stderr.write(`${formatProfile(p)}\n`);
      }
    }
  } finally {
    for (const fn of deferred.reverse()) await Promise.resolve(fn()).catch(() => undefined);
    cleanup();
  }
  const reports = [...ctx.reports.values()];
  const summary = {
    summary: reports.map((r) => ({
      case: r.case,
      ratios: r.ratios,
      targets: r.targets.map((t) => ({ name: t.name, want: t.want, value: t.value, pass: t.pass })),
      correct: r.correctness.ok,
      error: r.error ? true : undefined,
      skipped: typeof r.skipped === 'string' ? r.skipped : undefined,
    })),
    seconds: Math.round((Date.now() - started) / 1000),
    results: out,
  };
  emit(summary);
  process.stderr.write(
    `\n${info.cpuModel}, ${info.cpus} CPUs, Node ${info.node}${opts.quick ? ' — QUICK RUN, numbers mean nothing' : ''}\n`,
  );
  for (const r of reports) process.stderr.write(`${tableLine(r)}\n`);
  process.stderr.write(`results: ${out} (${summary.seconds} s)\n`);
  if (failed || reports.some((r) => !r.correctness.ok)) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`bench: ${(err as Error).stack}\n`);
    killAll();
    process.exit(1);
  });
}
