const ANY_ONE = -1;
const ANY_MANY = -2;
const BACKSLASH = 0x5c;
const PERCENT = 0x25;
const UNDERSCORE = 0x5f;

/**
 * Compiles a LIKE pattern, once per expression, to a matcher.
 *
 * `%` matches any run of characters, `_` exactly one character (a Unicode
 * code point, as LENGTH counts), and `\%` / `\_` match the sign itself.
 * A backslash before anything else is an ordinary character, so `'ab\c'`
 * matches the value `ab\c` (a TCK case).
 *
 * Matching does not use a regular expression: `a%b%c%…` patterns make a
 * backtracking regex take polynomial time in the value's length, and the
 * pattern comes from whoever created the subscription. The wildcard walk
 * below is O(value × pattern) at worst. Patterns that are a plain string, a
 * prefix (`abc%`) or a suffix (`%abc`) — the exact/prefix/suffix dialects
 * written in SQL — skip the walk.
 * @see cesql/spec.md §3.4.3
 */
export function compileLike(pattern: string): (value: string) => boolean {
  const tokens: number[] = [];
  const chars = Array.from(pattern, (c) => c.codePointAt(0)!);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    const following = chars[i + 1];
    if (c === BACKSLASH && (following === PERCENT || following === UNDERSCORE)) {
      tokens.push(following);
      i++;
    } else if (c === PERCENT) {
      // Consecutive % mean the same as one; collapsing them keeps the walk simple.
      if (tokens[tokens.length - 1] !== ANY_MANY) tokens.push(ANY_MANY);
    } else {
      tokens.push(c === UNDERSCORE ? ANY_ONE : c);
    }
  }

  const literal = (from: number, to: number) => tokens.slice(from, to).map((c) => String.fromCodePoint(c)).join('');
  const isWildcard = (t: number) => t === ANY_ONE || t === ANY_MANY;
  const wildcards = tokens.filter(isWildcard).length;
  const last = tokens.length - 1;
  if (wildcards === 0) {
    const text = literal(0, tokens.length);
    return (value) => value === text;
  }
  if (wildcards === 1 && tokens[last] === ANY_MANY) {
    const prefix = literal(0, last);
    return (value) => value.startsWith(prefix);
  }
  if (wildcards === 1 && tokens[0] === ANY_MANY) {
    const suffix = literal(1, tokens.length);
    return (value) => value.endsWith(suffix);
  }
  return (value) => matchWildcards(tokens, Array.from(value, (c) => c.codePointAt(0)!));
}

/**
 * Greedy wildcard match that, on a mismatch, retries from the most recent `%`
 * one character further on. Going back only to the latest `%` is enough: any
 * match through an earlier `%` can be rearranged to extend the latest one.
 */
function matchWildcards(pattern: readonly number[], value: readonly number[]): boolean {
  let p = 0;
  let v = 0;
  let starAt = -1;
  let starValue = 0;
  while (v < value.length) {
    const t = pattern[p];
    if (t === ANY_MANY) {
      starAt = p++;
      starValue = v;
    } else if (t !== undefined && (t === ANY_ONE || t === value[v])) {
      p++;
      v++;
    } else if (starAt >= 0) {
      p = starAt + 1;
      v = ++starValue;
    } else {
      return false;
    }
  }
  while (pattern[p] === ANY_MANY) p++;
  return p === pattern.length;
}
