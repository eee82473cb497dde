import { type ErrorRecord, quote } from './errors';

/** A CESQL value: _String_, _Integer_ (a 32-bit signed integer held in a JS number) or _Boolean_. */
export type Value = string | number | boolean;

/** The CESQL primitive types, and `any` for parameters that take every type (the casting functions). */
export type ValueType = 'string' | 'integer' | 'boolean';
export type ParamType = ValueType | 'any';

/** State of one evaluation: the event read from, the errors collected so far and the work left. */
export interface Context {
  readonly attributes: Readonly<Record<string, unknown>>;
  readonly errors: ErrorRecord[];
  readonly budget: Budget;
  /** Whether this evaluation has recorded its `budget` error (one is enough). */
  outOfBudget: boolean;
}

/**
 * Work one evaluation may do, in units of about one character read by a
 * native scan: LIKE, string functions, casts of strings to integers and
 * comparisons of equal-length strings charge the characters they read.
 * Loops that cost more per character charge more per character: LIKE's
 * searches 2, code point walks (LENGTH, LEFT, RIGHT, SUBSTRING of text with
 * surrogates) 3, case mapping beyond ASCII 6.
 * Expressions are written by whoever creates a subscription and run on the
 * dispatcher's thread for every event, so their cost must not grow with the
 * product of pattern and value sizes. A million units take about 5 ms at
 * worst (bench case `filters`): enough to search 500,000 characters with
 * LIKE, or to lowercase a million ASCII ones.
 */
export const WORK_BUDGET = 1_000_000;

/**
 * Work left for an evaluation, in units (see {@link WORK_BUDGET}). One budget may be shared by
 * several expressions (all the `sql` filters of a subscription), so that a
 * list of them is bounded as a whole. `remaining` is negative once exhausted.
 */
export interface Budget {
  readonly limit: number;
  remaining: number;
}

export function newBudget(limit: number = WORK_BUDGET): Budget {
  return { limit, remaining: limit };
}

/**
 * Takes `n` units from the evaluation's budget. When they are not there,
 * marks the budget exhausted (every later charge fails at once), records a
 * `budget` error (once per evaluation) and returns false: the caller then
 * returns its zero value without doing the work.
 */
export function charge(ctx: Context, n: number): boolean {
  const budget = ctx.budget;
  if (budget.remaining >= n) {
    budget.remaining -= n;
    return true;
  }
  exhaust(ctx);
  return false;
}

/** Marks the budget exhausted, recording the error if this is where it ran out. */
export function exhaust(ctx: Context): void {
  // Per evaluation, not per budget: a budget shared by several expressions
  // may have run out in an earlier one, and this evaluation still needs its error.
  if (!ctx.outOfBudget) ctx.errors.push(budgetError(ctx.budget));
  ctx.outOfBudget = true;
  ctx.budget.remaining = -1;
}

function budgetError(budget: Budget): ErrorRecord {
  return {
    kind: 'budget',
    message: `the evaluation needed more than its work budget of ${budget.limit} units (about one per character read)`,
  };
}

export const INT_MIN = -2147483648;
export const INT_MAX = 2147483647;

const INTEGER_TEXT = /^[+-]?[0-9]+$/;

export function typeOf(value: Value): ValueType {
  return typeof value === 'number' ? 'integer' : typeof value === 'string' ? 'string' : 'boolean';
}

/** The value an operator or function returns when an operand failed. @see cesql/spec.md §3.4 */
export function zeroOf(type: ValueType): Value {
  return type === 'integer' ? 0 : type === 'string' ? '' : false;
}

/** Decimal text, optionally signed, within the 32-bit range; `undefined` otherwise. */
export function parseInteger(text: string): number | undefined {
  if (!INTEGER_TEXT.test(text)) return undefined;
  const n = Number(text);
  // `| 0` turns "-0" into 0; CESQL has no negative zero.
  return n >= INT_MIN && n <= INT_MAX ? n | 0 : undefined;
}

/** `true`/`false` in any case, as for boolean literals; `undefined` otherwise. */
export function parseBoolean(text: string): boolean | undefined {
  // Checked first so that a long attribute is not lowercased just to be refused.
  if (text.length !== 4 && text.length !== 5) return undefined;
  const lower = text.toLowerCase();
  return lower === 'true' ? true : lower === 'false' ? false : undefined;
}

export function toStringValue(value: Value): string {
  return typeof value === 'string' ? value : String(value);
}

/**
 * Implicit cast to _Integer_. Booleans become 1 and 0 (the TCK adds `5 + TRUE`);
 * a string that is not a 32-bit integer is a cast error and yields 0.
 * @see cesql/spec.md §3.7
 */
export function toInteger(value: Value, ctx: Context): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'boolean') return value ? 1 : 0;
  // Leading zeros keep any length of digits a valid integer, so the scan is charged.
  if (!charge(ctx, value.length)) return 0;
  const n = parseInteger(value);
  if (n !== undefined) return n;
  ctx.errors.push({ kind: 'cast', message: `cannot cast the string ${quote(value)} to Integer` });
  return 0;
}

/**
 * Implicit cast to _Boolean_. Only strings convert ("true"/"false", any case):
 * the TCK makes `NOT 10` a cast error, although `BOOL(10)` is allowed.
 * A failed cast yields `false`.
 */
export function toBoolean(value: Value, ctx: Context): boolean {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string') {
    const b = parseBoolean(value);
    if (b !== undefined) return b;
    ctx.errors.push({ kind: 'cast', message: `cannot cast the string ${quote(value)} to Boolean` });
    return false;
  }
  ctx.errors.push({ kind: 'cast', message: `cannot implicitly cast the Integer ${value} to Boolean; use BOOL()` });
  return false;
}

export function castTo(value: Value, type: ParamType, ctx: Context): Value {
  switch (type) {
    case 'string':
      return toStringValue(value);
    case 'integer':
      return toInteger(value, ctx);
    case 'boolean':
      return toBoolean(value, ctx);
    default:
      return value;
  }
}

/**
 * `===` for CESQL values, charged when it has to compare characters: two
 * strings of equal length (different lengths are unequal at once). Without the
 * charge, `a IN (b, b, b, …)` over two large attributes is a loop of memcmp
 * calls no limit on the expression's size keeps short.
 */
export function same(a: Value, b: Value, ctx: Context): boolean {
  if (typeof a === 'string' && typeof b === 'string' && a.length === b.length && !charge(ctx, a.length)) return false;
  return a === b;
}

/**
 * Keeps an arithmetic result in range. Overflow is not defined by the spec;
 * like ABS (§3.5.2), the result saturates and a math error is raised, so a
 * filter never matches on a wrapped-around number.
 */
export function checkedInteger(n: number, ctx: Context): number {
  if (n > INT_MAX || n < INT_MIN) {
    ctx.errors.push({ kind: 'math', message: `integer overflow: ${n} is outside the 32-bit range` });
    return n > 0 ? INT_MAX : INT_MIN;
  }
  return n | 0;
}

/**
 * Reads a context attribute as a CESQL value, or `undefined` if the event lacks it.
 * Own properties only, so `constructor` or `__proto__` never reach Object.prototype.
 * Integers outside the 32-bit range are not CESQL integers and are read as
 * their decimal text, which keeps them comparable as strings.
 * @see cesql/spec.md §3.2
 */
export function readAttribute(attributes: Readonly<Record<string, unknown>>, name: string): Value | undefined {
  if (!Object.prototype.hasOwnProperty.call(attributes, name)) return undefined;
  const value = attributes[name];
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return Number.isInteger(value) && value >= INT_MIN && value <= INT_MAX ? value | 0 : String(value);
    default:
      return undefined;
  }
}
