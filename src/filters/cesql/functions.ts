import {
  INT_MAX,
  INT_MIN,
  charge,
  type Context,
  type ParamType,
  type Value,
  type ValueType,
  parseBoolean,
  parseInteger,
  toBoolean,
  toInteger,
  toStringValue,
  zeroOf,
} from './values';

/**
 * A built-in function overload. Arguments arrive already cast to `params`
 * (and `variadic` for the rest), so an implementation only handles its own
 * failures, which it reports on `ctx` while still returning a value.
 */
export interface FunctionDefinition {
  readonly params: readonly ParamType[];
  readonly variadic?: ParamType;
  readonly returns: ValueType;
  readonly call: (args: readonly Value[], ctx: Context) => Value;
}

// The spec counts characters, and a UTF-16 length would count an emoji twice.
// Only strings with surrogates need the code point walk; the test is a fast scan.
const SURROGATE = /[\uD800-\uDFFF]/;

/** Whether a surrogate pair (one code point in two UTF-16 units) starts at `i`; lone surrogates count as one character, as in `Array.from`. */
function pairAt(s: string, i: number): boolean {
  const c = s.charCodeAt(i);
  return c >= 0xd800 && c <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
}

function length(s: string): number {
  if (!SURROGATE.test(s)) return s.length;
  let n = 0;
  for (let i = 0; i < s.length; i += pairAt(s, i) ? 2 : 1) n++;
  return n;
}

/** UTF-16 offset of code point `index` (clamped to the end). Walks the string instead of building an array of it. */
function offsetOf(s: string, index: number): number {
  let i = 0;
  for (let n = 0; n < index && i < s.length; n++) i += pairAt(s, i) ? 2 : 1;
  return i;
}

/** `slice` by code point indices (both ≥ 0). */
function slice(s: string, start: number, end?: number): string {
  if (!SURROGATE.test(s)) return s.slice(start, end);
  const from = offsetOf(s, start);
  return end === undefined ? s.slice(from) : s.slice(from, offsetOf(s, end));
}

function fail(ctx: Context, message: string): void {
  ctx.errors.push({ kind: 'functionEvaluation', message });
}

const str = (v: Value | undefined) => v as string;
const int = (v: Value | undefined) => v as number;

/**
 * A string function whose work is proportional to its string argument: the
 * argument's length times `weight` is charged to the evaluation's budget
 * first, and the function returns its zero value if the budget cannot pay.
 */
function scanning(
  params: readonly ParamType[],
  returns: ValueType,
  body: (args: readonly Value[], ctx: Context) => Value,
  weight: (s: string) => number = () => 1,
): FunctionDefinition {
  const zero = zeroOf(returns);
  return {
    params,
    returns,
    call: (args, ctx) => {
      const s = str(args[0]);
      // The base charge first: working out the weight reads the string too.
      if (!charge(ctx, s.length)) return zero;
      const extra = weight(s) - 1;
      return extra <= 0 || charge(ctx, s.length * extra) ? body(args, ctx) : zero;
    },
  };
}

// Weights keep a unit of budget within the cost of one character of a native
// scan (a few nanoseconds), so that the budget bounds time. Code points are
// counted by walking the string in JavaScript, up to three times for
// SUBSTRING (length, start, end); full Unicode case mapping (ICU) costs up
// to 40 times the ASCII fast path per character (lowercasing "İ" expands it).
// eslint-disable-next-line no-control-regex -- \x00 is the bottom of the ASCII range, not a stray control character
const NON_ASCII = /[^\x00-\x7f]/;
const WHITE_SPACE = /^\p{White_Space}$/u;
/** Without white space at either end; one pass from each end (a regex `\s+$` is quadratic on inner runs). */
function trimUnicode(s: string): string {
  let start = 0;
  let end = s.length;
  // Every White_Space character is in the BMP: one UTF-16 unit each.
  while (start < end && WHITE_SPACE.test(s[start]!)) start++;
  while (end > start && WHITE_SPACE.test(s[end - 1]!)) end--;
  return s.slice(start, end);
}
const byCodePoint = (s: string) => (SURROGATE.test(s) ? 3 : 1);
const caseMapping = (s: string) => (NON_ASCII.test(s) ? 6 : 1);

/**
 * Joins strings after charging their total length: checked before joining,
 * so that `CONCAT(big, big, …)` never builds a string longer than the budget
 * (V8 throws a RangeError past about 2^29 characters).
 */
function join(parts: readonly Value[], separator: string, ctx: Context): string {
  let total = separator.length * Math.max(0, parts.length - 1);
  for (const part of parts) total += str(part).length;
  return charge(ctx, total) ? parts.join(separator) : '';
}

function substring(x: string, pos: number, len: number | undefined, ctx: Context): string {
  const n = length(x);
  if (pos > n || pos < -n) {
    fail(ctx, `SUBSTRING position ${pos} is outside a string of length ${n}`);
    return '';
  }
  if (len !== undefined && len < 0) {
    fail(ctx, `SUBSTRING length ${len} is negative`);
    return '';
  }
  if (pos === 0) return '';
  const start = pos > 0 ? pos - 1 : n + pos;
  return slice(x, start, len === undefined ? n : Math.min(n, start + len));
}

/**
 * The built-in functions every CESQL engine MUST support, by upper-case name.
 * Overloads differ by arity only (§3.5), so a call is resolved from its name
 * and argument count when the expression is compiled.
 * @see cesql/spec.md §3.5
 */
const BUILTINS: Readonly<Record<string, readonly FunctionDefinition[]>> = {
  // §3.5.1 String manipulation
  LENGTH: [scanning(['string'], 'integer', ([x]) => length(str(x)), byCodePoint)],
  CONCAT: [{ params: [], variadic: 'string', returns: 'string', call: (xs, ctx) => join(xs, '', ctx) }],
  CONCAT_WS: [{ params: ['string'], variadic: 'string', returns: 'string', call: ([sep, ...xs], ctx) => join(xs, str(sep), ctx) }],
  LOWER: [scanning(['string'], 'string', ([x]) => str(x).toLowerCase(), caseMapping)],
  UPPER: [scanning(['string'], 'string', ([x]) => str(x).toUpperCase(), caseMapping)],
  // Unicode White_Space (§3.5.1), not JavaScript's trim set: U+0085 is trimmed, U+FEFF is not.
  TRIM: [scanning(['string'], 'string', ([x]) => trimUnicode(str(x)))],
  LEFT: [
    scanning(
      ['string', 'integer'],
      'string',
      ([x, y], ctx) => {
        if (int(y) >= 0) return slice(str(x), 0, int(y));
        fail(ctx, `LEFT length ${int(y)} is negative`);
        return str(x);
      },
      byCodePoint,
    ),
  ],
  RIGHT: [
    scanning(
      ['string', 'integer'],
      'string',
      ([x, y], ctx) => {
        if (int(y) < 0) {
          fail(ctx, `RIGHT length ${int(y)} is negative`);
          return str(x);
        }
        const n = length(str(x));
        return int(y) >= n ? str(x) : slice(str(x), n - int(y));
      },
      byCodePoint,
    ),
  ],
  SUBSTRING: [
    scanning(['string', 'integer'], 'string', ([x, pos], ctx) => substring(str(x), int(pos), undefined, ctx), byCodePoint),
    scanning(['string', 'integer', 'integer'], 'string', ([x, pos, len], ctx) => substring(str(x), int(pos), int(len), ctx), byCodePoint),
  ],
  // §3.5.2 Math
  ABS: [
    {
      params: ['integer'],
      returns: 'integer',
      call: ([x], ctx) => {
        if (int(x) !== INT_MIN) return Math.abs(int(x));
        ctx.errors.push({ kind: 'math', message: 'ABS(-2147483648) overflows the 32-bit range' });
        return INT_MAX;
      },
    },
  ],
  // Casting functions. Unlike implicit casts, BOOL accepts integers
  // (non-zero is true), as the TCK's BOOL(100) and BOOL(-50) require.
  INT: [{ params: ['any'], returns: 'integer', call: ([x], ctx) => toInteger(x!, ctx) }],
  BOOL: [{ params: ['any'], returns: 'boolean', call: ([x], ctx) => (typeof x === 'number' ? x !== 0 : toBoolean(x!, ctx)) }],
  STRING: [{ params: ['any'], returns: 'string', call: ([x]) => toStringValue(x!) }],
  IS_INT: [scanning(['string'], 'boolean', ([x]) => parseInteger(str(x)) !== undefined)],
  IS_BOOL: [{ params: ['string'], returns: 'boolean', call: ([x]) => parseBoolean(str(x)) !== undefined }],
};

/** The overload of `name` (upper case) that takes `arity` arguments, if any. */
export function resolveFunction(name: string, arity: number): FunctionDefinition | undefined {
  const overloads = Object.prototype.hasOwnProperty.call(BUILTINS, name) ? BUILTINS[name] : undefined;
  return overloads?.find((f) => (f.variadic === undefined ? f.params.length === arity : arity >= f.params.length));
}
