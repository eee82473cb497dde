/**
 * filters (issue 8, defects 7 and 8): adversarial subscription filters at the
 * size limits (4,096-character `sql`, 64 filter objects, depth 16), evaluated
 * in-process against events whose one large attribute nearly fills a 1 MiB
 * body. Measured: the worst single evaluation of a subscription's filter list
 * against one event (aim: under 10 ms). Every evaluation must return without
 * throwing; the costly ones must not match and must be reported as filter
 * errors, and filters over the limits must be refused with a 400.
 *
 * Runs the snapshot's compiled `filters/filter.js` (dist-bench/gateway),
 * the code the other cases run; no gateway process is started. `--baseline`
 * is ignored here: a gateway without the limits would block for seconds per
 * evaluation or crash, which defect 8 already records.
 */
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { MAIN_JS } from '../lib/children';
import { addCheck, atMost, baseReport, type CaseReport, type Ctx } from '../lib/common';
import { round, summarize } from '../lib/stats';

const AIM_MS = 10;

type Attributes = Record<string, string | number | boolean>;
type Matcher = (attributes: Attributes) => boolean;
interface FilterError extends Error {
  reason?: string;
}
/** What this case uses of src/filters/filter.ts (not imported: bench/ compiles on its own). */
interface FilterModule {
  compileFilters(filters: unknown, options?: { onError?: (err: FilterError) => void }): Matcher;
  MAX_SQL_LENGTH: number;
  MAX_FILTER_NODES: number;
  MAX_FILTER_DEPTH: number;
}

interface Scenario {
  name: string;
  filters: unknown[];
  /** `never`: matches no event (a budget error is allowed); `error`: a budget error on the large values, never a match; `no-error`: no filter error. */
  expect?: 'never' | 'error' | 'no-error';
}

const KB = 1024;
/** One large attribute per event: JSON body ≤ HERALD_MAX_BODY_BYTES (1 MiB by default) with the other attributes. */
const BIG = 900 * KB;

function events(): { name: string; attributes: Attributes }[] {
  const base = { specversion: '1.0', id: 'bench-1', source: '/bench/filters', type: 'com.example.bench' };
  let letters = '';
  for (let i = 0; letters.length < BIG; i++) letters += 'abcdefghijklmnopqrstuvwxyz'[(i * 7919) % 26];
  const half = 'a'.repeat(450 * KB);
  return [
    { name: 'a×900K', attributes: { ...base, a: 'a'.repeat(BIG) } },
    { name: 'letters 900K', attributes: { ...base, a: letters } },
    { name: 'digits 900K', attributes: { ...base, a: `${'0'.repeat(BIG - 1)}7` } },
    // 4 bytes of UTF-8 each: 230K emoji is 920 KB of body, 460K UTF-16 units.
    { name: 'emoji 230K', attributes: { ...base, a: '😀'.repeat(230 * KB) } },
    // Case mapping beyond ASCII is the costliest work per character (ICU): 2 bytes of UTF-8 each.
    { name: 'İ 450K', attributes: { ...base, a: 'İ'.repeat(450 * KB) } },
    { name: 'mixed aΣ😀ß 900 KB', attributes: { ...base, a: 'aΣ😀ß '.repeat(90 * KB) } },
    { name: 'a, b 450K each, differing at the end', attributes: { ...base, a: `${half}1`, b: `${half}2` } },
  ];
}

/** Repeats `unit` (joined by `sep`) as often as fits in `room` characters. */
function fill(unit: string, sep: string, room: number): string {
  const n = Math.max(1, Math.floor((room + sep.length) / (unit.length + sep.length)));
  return Array.from({ length: n }, () => unit).join(sep);
}

function scenarios(mod: FilterModule): Scenario[] {
  const L = mod.MAX_SQL_LENGTH;
  const sql = (text: string) => {
    if (text.length > L) throw new Error(`bench scenario over the sql limit: ${text.length} > ${L}`);
    return { sql: text };
  };
  /** `a LIKE '<pattern>'` with the pattern made to fill the sql limit from `make(room)`. */
  const like = (make: (room: number) => string) => sql(`a LIKE '${make(L - "a LIKE ''".length)}'`);
  const as = (n: number) => 'a'.repeat(Math.max(0, n));
  const list = (one: unknown) => Array.from({ length: mod.MAX_FILTER_NODES }, () => one);

  const single: Scenario[] = [
    { name: 'LIKE %a…ab% (issue 8)', filters: [like((r) => `%${as(r - 3)}b%`)], expect: 'never' },
    { name: 'LIKE %a…aba…a% (V8 indexOf worst case)', filters: [like((r) => `%${as((r - 3) / 2)}b${as((r - 3) / 2)}%`)], expect: 'never' },
    { name: 'LIKE %a…(127)b% (longest indexOf segment)', filters: [like(() => `%${as(127)}b%`)], expect: 'never' },
    { name: 'LIKE a…ab%', filters: [like((r) => `${as(r - 2)}b%`)], expect: 'never' },
    { name: 'LIKE %ba…a', filters: [like((r) => `%b${as(r - 2)}`)], expect: 'never' },
    { name: 'LIKE a…a%a…ab', filters: [like((r) => `${as(r / 2 - 1)}%${as(r / 2 - 1)}b`)], expect: 'never' },
    { name: 'LIKE %a%a%…%!% (2,000 segments)', filters: [like((r) => `%${fill('a', '%', r - 3)}%!%`)], expect: 'never' },
    { name: 'LIKE %aa…ab%aa…ab%… (31 segments of 128)', filters: [like((r) => `%${fill(`${as(127)}b`, '%', r - 2)}%`)], expect: 'never' },
    { name: 'LIKE %_…_b% (4,000 _)', filters: [like((r) => `%${'_'.repeat(r - 3)}b%`)] },
    { name: 'LIKE %_a_a…_b%', filters: [like((r) => `%${fill('_a', '', r - 3)}b%`)] },
    { name: 'LIKE %_%_%…%b', filters: [like((r) => `${fill('%_', '', r - 1)}b`)] },
    { name: 'LIKE _…_% (anchored _ run)', filters: [like((r) => `${'_'.repeat(r - 1)}%`)], expect: 'no-error' },
    { name: 'LIKE %_…_ (anchored _ run at the end)', filters: [like((r) => `%${'_'.repeat(r - 1)}`)], expect: 'no-error' },
    { name: 'CONCAT(a × 600) = z (issue 7)', filters: [sql(`CONCAT(${fill('a', ', ', 600 * 3 - 2)}) = 'z'`)], expect: 'error' },
    { name: 'CONCAT(a × max) LIKE %b%', filters: [sql(`CONCAT(${fill('a', ',', L - 30)}) LIKE '%b%'`)], expect: 'error' },
    {
      name: 'nested LOWER/UPPER/TRIM chain (96 calls)',
      filters: [sql(`${'LOWER(UPPER(TRIM('.repeat(32)}a${')))'.repeat(32)} = 'x'`)],
    },
    {
      name: 'nested SUBSTRING/LEFT/RIGHT chain',
      filters: [sql(`LENGTH(${'SUBSTRING(LEFT(RIGHT('.repeat(32)}a${', 900000), 900000), 2)'.repeat(32)}) = 1`)],
    },
    { name: 'LENGTH(a) = 1 OR … (OR chain of scans)', filters: [sql(fill('LENGTH(a) = 1', ' OR ', L))], expect: 'error' },
    { name: 'INT(a) = 1 OR … (casts of long strings)', filters: [sql(fill('INT(a) = 1', ' OR ', L))] },
    { name: 'a IN (b, b, …) (comparisons of equal-length strings)', filters: [sql(`a IN (${fill('b', ',', L - 8)})`)] },
    { name: 'a = b OR a = b OR …', filters: [sql(fill('a = b', ' OR ', L))] },
    { name: 'IS_BOOL(a) OR …', filters: [sql(fill('IS_BOOL(a)', ' OR ', L))], expect: 'never' },
  ];

  const lists: Scenario[] = [
    { name: `${mod.MAX_FILTER_NODES} × LIKE %a…aba…a%`, filters: list(like((r) => `%${as((r - 3) / 2)}b${as((r - 3) / 2)}%`)) },
    { name: `${mod.MAX_FILTER_NODES} × LIKE %a…(127)b%`, filters: list(like(() => `%${as(127)}b%`)) },
    { name: `${mod.MAX_FILTER_NODES} × LOWER(a) != 'x'`, filters: list(sql("LOWER(a) != 'x'")) },
    { name: `${mod.MAX_FILTER_NODES} × UPPER(a) != 'x'`, filters: list(sql("UPPER(a) != 'x'")) },
    {
      name: `${mod.MAX_FILTER_NODES} × x IN (m, m, …) (missing attributes)`,
      filters: list(sql(`x IN (${fill('m', ',', L - 8)})`)),
      expect: 'never',
    },
    { name: `${mod.MAX_FILTER_NODES} × FALSE OR FALSE OR …`, filters: list(sql(fill('FALSE', ' OR ', L))), expect: 'never' },
    {
      name: `${mod.MAX_FILTER_NODES} × type = 'x' OR … (short comparisons)`,
      filters: list(sql(fill("type = 'x'", ' OR ', L))),
      expect: 'never',
    },
    { name: `${mod.MAX_FILTER_NODES} × exact a = 16 KB of a`, filters: list({ exact: { a: as(16 * KB) } }), expect: 'never' },
    {
      name: `nested any/all/not to depth ${mod.MAX_FILTER_DEPTH}, sql leaves`,
      filters: (() => {
        const leaf = like((r) => `%${as((r - 3) / 2)}b${as((r - 3) / 2)}%`);
        let f: unknown = leaf;
        for (let d = 0; d < mod.MAX_FILTER_DEPTH; d++) f = d % 2 === 0 ? { not: f } : { any: [f, leaf] };
        return [f];
      })(),
    },
  ];
  return [...single, ...lists];
}

/** Filters just over each limit: each must be refused with a 400 naming the limit. */
function overLimits(mod: FilterModule): { name: string; filters: unknown[]; limit: string }[] {
  let deep: unknown = { exact: { type: 'x' } };
  for (let i = 0; i <= mod.MAX_FILTER_DEPTH; i++) deep = { not: deep };
  return [
    {
      name: `sql of ${mod.MAX_SQL_LENGTH + 1} characters`,
      filters: [{ sql: `a LIKE '%${'a'.repeat(mod.MAX_SQL_LENGTH - 10)}%'` }],
      limit: String(mod.MAX_SQL_LENGTH),
    },
    {
      name: `${mod.MAX_FILTER_NODES + 1} filter objects`,
      filters: Array.from({ length: mod.MAX_FILTER_NODES + 1 }, () => ({ exact: { type: 'x' } })),
      limit: String(mod.MAX_FILTER_NODES),
    },
    { name: `depth ${mod.MAX_FILTER_DEPTH + 1}`, filters: [deep], limit: String(mod.MAX_FILTER_DEPTH) },
  ];
}

/**
 * A full collection between scenarios, so that the large strings one
 * scenario left behind are not collected during the next one's timings.
 * Collections a scenario causes itself are still measured.
 */
function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (() => void) | undefined;
  return typeof gc === 'function' ? gc : () => undefined;
}

/** Times `rounds` evaluations of one scenario on one event (after `warmup` untimed ones), noting each outcome. */
function measure(matcher: Matcher, errors: FilterError[], attributes: Attributes, warmup: number, rounds: number) {
  const samples: number[] = [];
  const outcomes = new Set<string>();
  let threw: unknown;
  for (let i = 0; i < warmup + rounds; i++) {
    errors.length = 0;
    let matched = false;
    const start = process.hrtime.bigint();
    try {
      matched = matcher(attributes);
    } catch (err) {
      threw = err;
    }
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    outcomes.add(matched ? 'match' : errors.length > 0 ? `error:${errors[0]!.reason ?? '?'}` : 'no-match');
    if (i >= warmup) samples.push(ms);
  }
  return { samples, max: Math.max(...samples), outcomes, threw };
}

interface Compiled {
  scenario: Scenario;
  matcher: Matcher;
  errors: FilterError[];
  compileMs: number;
  /** Per event: the largest sample of each sweep. */
  sweepMax: number[][];
  samples: number[];
  outcomes: Set<string>;
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const gc = collector();
  const report = baseReport('filters', ctx);
  // src/filters/ since the twenty-third session; a baseline from before has it in src/subscriptions/.
  const moved = path.join(path.dirname(MAIN_JS), 'filters', 'filter.js');
  const modulePath = fs.existsSync(moved) ? moved : path.join(path.dirname(MAIN_JS), 'subscriptions', 'filter.js');
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the built module, loaded at run time
  const mod = require(modulePath) as FilterModule;
  const plan = ctx.quick ? { warmup: 1, rounds: 3, sweeps: 2 } : { warmup: 3, rounds: 10, sweeps: 3 };
  const evs = events();

  const compiled: Compiled[] = [];
  for (const scenario of scenarios(mod)) {
    const errors: FilterError[] = [];
    const t0 = process.hrtime.bigint();
    try {
      const matcher = mod.compileFilters(scenario.filters, { onError: (err) => errors.push(err) });
      const compileMs = Number(process.hrtime.bigint() - t0) / 1e6;
      compiled.push({ scenario, matcher, errors, compileMs, sweepMax: evs.map(() => []), samples: [], outcomes: new Set() });
    } catch (err) {
      addCheck(report, { name: `${scenario.name}: compiles within the limits`, ok: false, detail: (err as Error).message });
    }
  }

  // Whole sweeps over every scenario, repeated: an evaluation's own worst
  // shows in every sweep, while a burst of work from another process on the
  // machine rarely hits the same scenario and event in sweeps seconds apart.
  for (let sweep = 0; sweep < plan.sweeps; sweep++) {
    ctx.log(`filters: sweep ${sweep + 1}/${plan.sweeps}`);
    for (const c of compiled) {
      gc();
      evs.forEach((ev, e) => {
        const m = measure(c.matcher, c.errors, ev.attributes, plan.warmup, plan.rounds);
        if (m.threw !== undefined)
          addCheck(report, { name: `${c.scenario.name} on ${ev.name}: the matcher does not throw`, ok: false, detail: String(m.threw) });
        for (const o of m.outcomes) c.outcomes.add(o);
        c.samples.push(...m.samples);
        c.sweepMax[e]!.push(m.max);
      });
    }
  }

  const results: Record<string, unknown>[] = [];
  let worst = { ms: 0, scenario: '', event: '' };
  let rawWorst = 0;
  for (const c of compiled) {
    const s = c.scenario;
    let scenarioWorst = { ms: 0, event: '' };
    let scenarioRaw = 0;
    evs.forEach((ev, e) => {
      const maxima = c.sweepMax[e]!;
      scenarioRaw = Math.max(scenarioRaw, ...maxima);
      if (Math.min(...maxima) > scenarioWorst.ms) scenarioWorst = { ms: Math.min(...maxima), event: ev.name };
    });
    rawWorst = Math.max(rawWorst, scenarioRaw);
    if (scenarioWorst.ms > worst.ms) worst = { ms: scenarioWorst.ms, scenario: s.name, event: scenarioWorst.event };
    const seen = [...c.outcomes].sort();
    if (s.expect === 'never') addCheck(report, { name: `${s.name}: never matches`, ok: !seen.includes('match'), detail: seen });
    if (s.expect === 'error')
      addCheck(report, {
        name: `${s.name}: reported as a budget error on large values`,
        ok: seen.includes('error:budget') && !seen.includes('match'),
        detail: seen,
      });
    if (s.expect === 'no-error')
      addCheck(report, { name: `${s.name}: no filter error`, ok: !seen.some((o) => o.startsWith('error')), detail: seen });
    const p50 = summarize(c.samples).p50;
    results.push({
      scenario: s.name,
      worstMs: round(scenarioWorst.ms, 3),
      rawMaxMs: round(scenarioRaw, 3),
      p50Ms: p50,
      on: scenarioWorst.event,
      compileMs: round(c.compileMs, 3),
      outcomes: seen,
    });
    ctx.log(
      `filters: ${s.name.padEnd(58)} worst ${String(round(scenarioWorst.ms, 2)).padStart(5)} ms (raw ${String(round(scenarioRaw, 2)).padStart(5)}), p50 ${String(p50).padStart(6)} ms (${scenarioWorst.event}) ${seen.join(',')}`,
    );
  }

  for (const o of overLimits(mod)) {
    let refusal: { code?: string; details?: { message: string }[] } | undefined;
    try {
      mod.compileFilters(o.filters);
    } catch (err) {
      refusal = err as typeof refusal;
    }
    const ok = refusal?.code === 'invalid_request' && (refusal.details ?? []).some((d) => d.message.includes(o.limit));
    addCheck(report, { name: `${o.name}: refused with 400 naming the limit ${o.limit}`, ok, detail: refusal?.details });
  }

  const summary = summarize(compiled.flatMap((c) => c.samples));
  report.herald = {
    name: 'Herald filter evaluation (in-process)',
    runs: [],
    median: { rps: null, p50: summary.p50, p99: summary.p99, max: summary.max, non2xx: 0, errors: 0, evaluations: summary.count },
  };
  report.ratios = { worst_evaluation_ms: round(worst.ms, 3), worst_raw_ms: round(rawWorst, 3) };
  report.targets.push(atMost('worst single filter-list evaluation (ms)', round(worst.ms, 3), AIM_MS, ' ms'));
  report.worst = worst;
  report.scenarios = results;
  report.notes = [
    `${results.length} scenarios × ${evs.length} events × ${plan.sweeps} sweeps of ${plan.rounds} timed evaluations (after ${plan.warmup} untimed)`,
    "worst_evaluation_ms: per scenario and event the smallest of the sweeps' maxima, then the largest of those; worst_raw_ms: largest single sample, pauses from other processes included",
  ];
  if (ctx.baseline) report.notes.push("--baseline ignored: the case runs this checkout's filters in-process");
  return report;
}
