import { type ErrorRecord, quote } from './errors';

/** A CESQL value: _String_, _Integer_ (a 32-bit signed integer held in a JS number) or _Boolean_. */
export type Value = string | number | boolean;

/** The CESQL primitive types, and `any` for parameters that take every type (the casting functions). */
export type ValueType = 'string' | 'integer' | 'boolean';
export type ParamType = ValueType | 'any';

/** State of one evaluation: the event read from and the errors collected so far. */
export interface Context {
  readonly attributes: Readonly<Record<string, unknown>>;
  readonly errors: ErrorRecord[];
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
