import {
  INT_MAX,
  INT_MIN,
  type Context,
  type ParamType,
  type Value,
  type ValueType,
  parseBoolean,
  parseInteger,
  toBoolean,
  toInteger,
  toStringValue,
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

// Only strings with surrogate pairs need the slower code point path; the
// spec counts characters, and a UTF-16 length would count an emoji twice.
const SURROGATE = /[\uD800-\uDFFF]/;

function length(s: string): number {
  if (!SURROGATE.test(s)) return s.length;
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function slice(s: string, start: number, end?: number): string {
  return SURROGATE.test(s) ? Array.from(s).slice(start, end).join('') : s.slice(start, end);
}

function fail(ctx: Context, message: string): void {
  ctx.errors.push({ kind: 'functionEvaluation', message });
}

const str = (v: Value | undefined) => v as string;
const int = (v: Value | undefined) => v as number;

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
  LENGTH: [{ params: ['string'], returns: 'integer', call: ([x]) => length(str(x)) }],
  CONCAT: [{ params: [], variadic: 'string', returns: 'string', call: (xs) => xs.join('') }],
  CONCAT_WS: [{ params: ['string'], variadic: 'string', returns: 'string', call: ([sep, ...xs]) => xs.join(str(sep)) }],
  LOWER: [{ params: ['string'], returns: 'string', call: ([x]) => str(x).toLowerCase() }],
  UPPER: [{ params: ['string'], returns: 'string', call: ([x]) => str(x).toUpperCase() }],
  TRIM: [{ params: ['string'], returns: 'string', call: ([x]) => str(x).trim() }],
  LEFT: [
    {
      params: ['string', 'integer'],
      returns: 'string',
      call: ([x, y], ctx) => {
        if (int(y) >= 0) return slice(str(x), 0, int(y));
        fail(ctx, `LEFT length ${int(y)} is negative`);
        return str(x);
      },
    },
  ],
  RIGHT: [
    {
      params: ['string', 'integer'],
      returns: 'string',
      call: ([x, y], ctx) => {
        if (int(y) < 0) {
          fail(ctx, `RIGHT length ${int(y)} is negative`);
          return str(x);
        }
        const n = length(str(x));
        return int(y) >= n ? str(x) : slice(str(x), n - int(y));
      },
    },
  ],
  SUBSTRING: [
    { params: ['string', 'integer'], returns: 'string', call: ([x, pos], ctx) => substring(str(x), int(pos), undefined, ctx) },
    { params: ['string', 'integer', 'integer'], returns: 'string', call: ([x, pos, len], ctx) => substring(str(x), int(pos), int(len), ctx) },
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
  IS_INT: [{ params: ['string'], returns: 'boolean', call: ([x]) => parseInteger(str(x)) !== undefined }],
  IS_BOOL: [{ params: ['string'], returns: 'boolean', call: ([x]) => parseBoolean(str(x)) !== undefined }],
};

/** The overload of `name` (upper case) that takes `arity` arguments, if any. */
export function resolveFunction(name: string, arity: number): FunctionDefinition | undefined {
  const overloads = Object.prototype.hasOwnProperty.call(BUILTINS, name) ? BUILTINS[name] : undefined;
  return overloads?.find((f) => (f.variadic === undefined ? f.params.length === arity : arity >= f.params.length));
}
