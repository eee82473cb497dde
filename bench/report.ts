/**
 * Markdown tables from a results file, for BENCHMARKS.md:
 *   node dist-bench/report.js bench/results/<time>.jsonl > tables.md
 */
import fs from 'node:fs';
import type { CaseReport, RunMetrics, Side } from './lib/common';
import type { ProfileSummary } from './lib/profile';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node dist-bench/report.js <results.jsonl>\n');
  process.exit(2);
}

const fmt = (v: unknown, digits = 1): string => {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'number')
    return Number.isInteger(v) ? v.toLocaleString('en-US') : v.toLocaleString('en-US', { maximumFractionDigits: digits });
  return String(v);
};

/** Columns that carry numbers for this case, in a fixed order. */
const COLUMNS: [key: string, title: string][] = [
  ['rps', 'req/s'],
  ['eventsPerSec', 'events/s'],
  ['scanMBps', 'MB/s'],
  ['readyMs', 'ready ms'],
  ['p50', 'p50 ms'],
  ['p99', 'p99 ms'],
  ['max', 'max ms'],
  ['p2rP99', 'publish→receipt p99 ms'],
  ['maxRssMb', 'VmRSS max MB'],
  ['drainEventsPerSec', 'drained events/s'],
  ['non2xx', 'non-2xx'],
  ['errors', 'errors'],
  ['dropped', 'dropped'],
  ['duplicates', 'duplicates'],
];

function table(sides: Side[]): string {
  const rows: { label: string; m: RunMetrics }[] = [];
  for (const s of sides) {
    s.runs.forEach((m, i) => rows.push({ label: `${s.name} — run ${i + 1}`, m }));
    if (s.runs.length > 1) rows.push({ label: `**${s.name} — median**`, m: s.median });
  }
  const cols = COLUMNS.filter(([k]) => rows.some((r) => typeof r.m[k] === 'number'));
  const head = `| run | ${cols.map(([, t]) => t).join(' | ')} |\n| --- | ${cols.map(() => '---:').join(' | ')} |`;
  const body = rows.map((r) => `| ${r.label} | ${cols.map(([k]) => fmt(r.m[k])).join(' | ')} |`).join('\n');
  return `${head}\n${body}\n\n(In median rows, non-2xx, errors and dropped are totals over the runs.)`;
}

function profile(p: ProfileSummary, top = 12): string {
  const lines = [
    `Profile \`${p.file.split('/').pop()}\` (${p.scope}): busy ${fmt(p.busyMs)} ms, idle ${fmt(p.idleMs)} ms, GC ${fmt(p.gcMs)} ms.`,
    '',
    '| self ms | % of busy | function | where |',
    '| ---: | ---: | --- | --- |',
  ];
  for (const t of p.top.slice(0, top)) lines.push(`| ${fmt(t.selfMs)} | ${fmt(t.pct)} | \`${t.fn}\` | ${t.where || '(native)'} |`);
  return lines.join('\n');
}

const out: string[] = [];
for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  const r = JSON.parse(line) as CaseReport & { machine?: unknown };
  if (!r.case) continue;
  out.push(`### ${r.case}`, '');
  if (r.error) out.push('```', String(r.error), '```', '');
  const sides = [r.ceiling, r.herald, r.baseline, ...Object.values(r.others ?? {})].filter((s): s is Side => s !== undefined);
  if (sides.length > 0) out.push(table(sides), '');
  const ratios = Object.entries(r.ratios).map(([k, v]) => `\`${k}\` = **${fmt(v, 3)}**`);
  if (ratios.length > 0) out.push(`Ratios: ${ratios.join(', ')}.`, '');
  for (const t of r.targets)
    out.push(`- ${t.pass ? '✅ holds' : '❌ missed'}: ${t.name} ${t.want} — got ${fmt(t.value, 3)}${t.shortBy ? ` (${t.shortBy})` : ''}`);
  if (r.targets.length > 0) out.push('');
  const failed = r.correctness.checks.filter((c) => !c.ok);
  out.push(
    `Correctness: ${r.correctness.checks.length} checks, ${failed.length === 0 ? 'all passed' : `${failed.length} FAILED: ${failed.map((c) => c.name).join('; ')}`}.`,
    '',
  );
  for (const p of [r.profile, ...((r.moreProfiles as ProfileSummary[] | undefined) ?? [])]) {
    if (p && 'top' in p) out.push(profile(p), '');
  }
}
process.stdout.write(`${out.join('\n')}\n`);
