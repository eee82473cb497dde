import type { Budget } from './values';

const ANY_ONE = -1;
const BACKSLASH = 0x5c;
const PERCENT = 0x25;
const UNDERSCORE = 0x5f;

/**
 * Longest plain segment searched with `String.prototype.indexOf`. V8's search
 * is linear in the value for patterns of up to about 250 UTF-16 units and can
 * take time proportional to value × pattern above that (a `%aa…ab…aa%`
 * pattern of 4,000 characters scans a 900 KB value in 0.7 s); longer
 * segments use the Knuth–Morris–Pratt search below, linear for any pattern.
 */
const INDEXOF_MAX = 128;

/**
 * Budget units per value character LIKE reads while searching (indexOf, KMP
 * or the `_` walk). On adversarial values these loops cost 5–6 ns per
 * character, about twice what a unit stands for, and the budget bounds time.
 */
const SEARCH_WEIGHT = 2;

/** For callers that keep no account of work (tests, tools): never runs out. */
const UNLIMITED: Budget = { limit: Infinity, remaining: Infinity };

/** A LIKE matcher. `budget` is charged with the value characters it examines; it returns false once the budget runs out. */
export type LikeMatcher = (value: string, budget?: Budget) => boolean;

/**
 * A run of the pattern between two `%`: fixed length in characters.
 * `tokens` are code points, or ANY_ONE for `_`. `text` is set when the
 * segment is plain (no `_`, no lone surrogate): it is then searched as a
 * string, which cannot match half of a surrogate pair because a well-formed
 * text neither starts with a low surrogate nor ends with a high one.
 */
interface Segment {
  readonly tokens: readonly number[];
  readonly text: string | undefined;
  /** Knuth–Morris–Pratt search state, for plain segments longer than INDEXOF_MAX. */
  readonly kmp: Kmp | undefined;
}

/** `units` are the segment's UTF-16 units: reading a typed array is about twice as fast as `charCodeAt` in the search loop. */
interface Kmp {
  readonly units: Uint16Array;
  readonly table: Int32Array;
}

/**
 * Compiles a LIKE pattern, once per expression, to a matcher.
 *
 * `%` matches any run of characters, `_` exactly one character (a Unicode
 * code point, as LENGTH counts), and `\%` / `\_` match the sign itself.
 * A backslash before anything else is an ordinary character, so `'ab\c'`
 * matches the value `ab\c` (a TCK case).
 *
 * The pattern is split at `%` into fixed-length segments. The first is
 * matched at the start of the value and the last at its end (unless the
 * pattern starts or ends with `%`); each middle one at its leftmost place
 * after the previous one. Leftmost is always right: a segment has a fixed
 * length, so its leftmost match also ends first and leaves the most room to
 * the rest. For patterns without `_` (`%x%`, `x%`, `%x`, `a%b%c`) every
 * search is linear, so a match costs time linear in the value. A middle
 * segment with `_` is tried at each position, which can cost value × segment
 * steps; every step is charged to the budget, which bounds it. The pattern
 * comes from whoever created the subscription, so no regular expression
 * (backtracking on `a%b%c%…`) and no unbounded walk.
 * @see cesql/spec.md §3.4.3
 */
export function compileLike(pattern: string): LikeMatcher {
  const segments = split(pattern);
  if (segments.length === 1) {
    const only = segments[0]!;
    return (value, budget = UNLIMITED) => budget.remaining >= 0 && matchAt(only, value, 0, value.length, budget) === value.length;
  }
  const first = segments[0]!;
  const last = segments[segments.length - 1]!;
  const middle = segments.slice(1, -1).filter((s) => s.tokens.length > 0);
  return (value, budget = UNLIMITED) => {
    if (budget.remaining < 0) return false;
    let from = 0;
    let to = value.length;
    if (first.tokens.length > 0) {
      from = matchAt(first, value, 0, to, budget);
      if (from < 0) return false;
    }
    if (last.tokens.length > 0) {
      to = matchEnd(last, value, from, budget);
      if (to < 0) return false;
    }
    for (const segment of middle) {
      from = find(segment, value, from, to, budget);
      if (from < 0) return false;
    }
    return true;
  };
}

/** The segments between `%` signs, first and last possibly empty (a pattern starting or ending with `%`). */
function split(pattern: string): Segment[] {
  const runs: number[][] = [[]];
  const chars = Array.from(pattern, (c) => c.codePointAt(0)!);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    const following = chars[i + 1];
    if (c === BACKSLASH && (following === PERCENT || following === UNDERSCORE)) {
      runs[runs.length - 1]!.push(following);
      i++;
    } else if (c === PERCENT) {
      runs.push([]);
    } else {
      runs[runs.length - 1]!.push(c === UNDERSCORE ? ANY_ONE : c);
    }
  }
  return runs.map(segment);
}

function segment(tokens: number[]): Segment {
  const plain = tokens.every((t) => t !== ANY_ONE && (t < 0xd800 || t > 0xdfff));
  const text = plain ? tokens.map((t) => String.fromCodePoint(t)).join('') : undefined;
  return { tokens, text, kmp: text !== undefined && text.length > INDEXOF_MAX ? prepareKmp(text) : undefined };
}

/** Takes `n` from the budget; when it is not there, marks the budget exhausted. */
function spend(budget: Budget, n: number): boolean {
  if (budget.remaining >= n) {
    budget.remaining -= n;
    return true;
  }
  budget.remaining = -1;
  return false;
}

/** Matches `segment` starting at `at`, within `[at, limit)`: the offset where it ends, or -1. */
function matchAt(segment: Segment, value: string, at: number, limit: number, budget: Budget): number {
  const { text } = segment;
  if (text !== undefined) {
    const end = at + text.length;
    if (end > limit || !spend(budget, text.length)) return -1;
    return value.startsWith(text, at) ? end : -1;
  }
  return walk(segment.tokens, value, at, limit, budget);
}

/** Matches `segment` ending at the end of the value and starting at `from` or later: the offset where it starts, or -1. */
function matchEnd(segment: Segment, value: string, from: number, budget: Budget): number {
  const { text, tokens } = segment;
  if (text !== undefined) {
    const start = value.length - text.length;
    if (start < from || !spend(budget, text.length)) return -1;
    return value.endsWith(text) ? start : -1;
  }
  if (!spend(budget, tokens.length)) return -1;
  // Step back one character per token; a low surrogate preceded by a high one is one character.
  let start = value.length;
  for (let k = 0; k < tokens.length; k++) {
    if (start <= from) return -1;
    const low = value.charCodeAt(start - 1);
    start -= (low & 0xfc00) === 0xdc00 && start - 2 >= from && (value.charCodeAt(start - 2) & 0xfc00) === 0xd800 ? 2 : 1;
  }
  return walk(tokens, value, start, value.length, budget) === value.length ? start : -1;
}

/** The leftmost match of `segment` in `[from, to)`: the offset where it ends, or -1. */
function find(segment: Segment, value: string, from: number, to: number, budget: Budget): number {
  const { text, tokens } = segment;
  if (text === undefined) {
    for (let start = from; start < to; start += width(value, start)) {
      // Each attempt also costs about one character's worth of setting up.
      if (!spend(budget, SEARCH_WEIGHT)) return -1;
      const end = walk(tokens, value, start, to, budget);
      if (end >= 0) return end;
      if (budget.remaining < 0) return -1;
    }
    return -1;
  }
  // Search no further than the budget pays for, then charge what was scanned.
  const affordable = Math.min(to, from + Math.floor(budget.remaining / SEARCH_WEIGHT));
  let at: number;
  if (segment.kmp !== undefined) {
    at = searchKmp(segment.kmp, value, from, affordable);
  } else {
    at = (affordable < value.length ? value.slice(0, affordable) : value).indexOf(text, from);
  }
  if (at >= 0) {
    const end = at + text.length;
    budget.remaining -= SEARCH_WEIGHT * (end - from);
    return end;
  }
  if (affordable < to) budget.remaining = -1;
  else budget.remaining -= SEARCH_WEIGHT * (to - from);
  return -1;
}

/**
 * Matches code point tokens from `at` within `[at, limit)`: the end offset,
 * or -1. Charged {@link SEARCH_WEIGHT} per UTF-16 unit compared (a character
 * beyond the BMP is two units, and costs about twice as much here).
 * The budget is read once and written back once: this is the hottest loop.
 */
function walk(tokens: readonly number[], value: string, at: number, limit: number, budget: Budget): number {
  const n = tokens.length;
  const affordable = at + Math.floor(budget.remaining / SEARCH_WEIGHT);
  let i = at;
  for (let k = 0; k < n; k++) {
    if (i >= limit) {
      budget.remaining -= SEARCH_WEIGHT * (i - at);
      return -1;
    }
    // codePointAt, inlined: most characters are not surrogates.
    let c = value.charCodeAt(i);
    let next = i + 1;
    if ((c & 0xfc00) === 0xd800) {
      const low = value.charCodeAt(next);
      if ((low & 0xfc00) === 0xdc00) {
        c = ((c - 0xd800) << 10) + (low - 0xdc00) + 0x10000;
        next++;
      }
    }
    if (next > affordable) {
      budget.remaining = -1;
      return -1;
    }
    const t = tokens[k]!;
    if (t !== ANY_ONE && t !== c) {
      budget.remaining -= SEARCH_WEIGHT * (next - at);
      return -1;
    }
    i = next;
  }
  budget.remaining -= SEARCH_WEIGHT * (i - at);
  return i <= limit ? i : -1;
}

function width(value: string, i: number): number {
  return value.codePointAt(i)! > 0xffff ? 2 : 1;
}

/** The failure table: for each prefix of the segment, the length of its longest proper border (a prefix that is also a suffix). */
function prepareKmp(text: string): Kmp {
  const units = new Uint16Array(text.length);
  for (let i = 0; i < text.length; i++) units[i] = text.charCodeAt(i);
  const table = new Int32Array(units.length);
  let k = 0;
  for (let i = 1; i < units.length; i++) {
    const c = units[i]!;
    while (k > 0 && c !== units[k]) k = table[k - 1]!;
    if (c === units[k]) k++;
    table[i] = k;
  }
  return { units, table };
}

/** Knuth–Morris–Pratt: the first occurrence lying wholly in `[from, to)`, or -1; at most 2 × (to − from) comparisons. */
function searchKmp({ units, table }: Kmp, value: string, from: number, to: number): number {
  const m = units.length;
  let k = 0;
  for (let i = from; i < to; i++) {
    const c = value.charCodeAt(i);
    while (k > 0 && c !== units[k]) k = table[k - 1]!;
    if (c === units[k] && ++k === m) return i - m + 1;
  }
  return -1;
}
