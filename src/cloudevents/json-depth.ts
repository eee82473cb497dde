/**
 * Nesting limits for event data. `JSON.parse` copes with any depth, but
 * `JSON.stringify` (used to store and deliver the event) recurses and throws
 * a `RangeError` past a few thousand levels: a deep document must be refused
 * at ingest, before it is given an offset.
 */

/**
 * What is wrong with parsed JSON event data, if anything: nesting deeper than `max`, or a number JSON cannot
 * carry (`JSON.parse` turns `1e400` into Infinity, which `JSON.stringify` would store as `null`: the event
 * stored would not be the one sent). One iterative walk.
 */
export function jsonDataProblem(value: unknown, max: number): 'too_deep' | 'not_finite' | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : 'not_finite';
  const stack: { value: unknown; depth: number }[] = [{ value, depth: 0 }];
  while (stack.length > 0) {
    const { value: v, depth } = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    const inner = depth + 1;
    if (inner > max) return 'too_deep';
    const children = Array.isArray(v) ? v : Object.values(v);
    for (const child of children) {
      if (typeof child === 'object' && child !== null) stack.push({ value: child, depth: inner });
      else if (typeof child === 'number' && !Number.isFinite(child)) return 'not_finite';
    }
  }
  return undefined;
}

/** The most `HERALD_MAX_JSON_DEPTH` may be: data this deep still writes as JSON within the stack. */
export const MAX_JSON_DEPTH_CEILING = 1000;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACKET = 0x5d;
const CLOSE_BRACE = 0x7d;

const MINUS = 0x2d;
const ZERO = 0x30;
const NINE = 0x39;
/** A number token this long (without an exponent) may already overflow a double: checked. */
const LONG_NUMBER = 300;

/** Whether `b` can continue a JSON number token (digits, sign, point, exponent). */
const inNumber = (b: number) => (b >= ZERO && b <= NINE) || b === 0x2e || b === 0x2b || b === MINUS || b === 0x65 || b === 0x45;

/**
 * What is wrong with JSON text, if anything, without parsing it: nesting deeper than `max`, or a number
 * a double cannot hold (`1e400`, which a JSON reader turns into Infinity and a writer into `null`). One
 * pass over the bytes outside strings. For binary-mode bodies declared as JSON, which are stored as bytes
 * and parsed only when read back or delivered in structured mode. Malformed text is measured the same way.
 */
export function jsonTextProblem(bytes: Uint8Array, max: number): 'too_deep' | 'not_finite' | undefined {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) inString = false;
    } else if (b === QUOTE) {
      inString = true;
    } else if (b === OPEN_BRACKET || b === OPEN_BRACE) {
      if (++depth > max) return 'too_deep';
    } else if ((b === CLOSE_BRACKET || b === CLOSE_BRACE) && depth > 0) {
      depth--;
    } else if ((b >= ZERO && b <= NINE) || b === MINUS) {
      const start = i;
      let exponent = false;
      while (i + 1 < bytes.length && inNumber(bytes[i + 1]!)) {
        i++;
        if ((bytes[i]! | 0x20) === 0x65) exponent = true;
      }
      // Only an exponent or a very long run of digits can leave a double's range.
      // (A malformed token reads as NaN: malformed text is not this check's business.)
      if (
        (exponent || i - start >= LONG_NUMBER) &&
        Math.abs(Number(Buffer.from(bytes.subarray(start, i + 1)).toString('latin1'))) === Infinity
      ) {
        return 'not_finite';
      }
    }
  }
  return undefined;
}
