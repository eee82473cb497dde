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

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACKET = 0x5d;
const CLOSE_BRACE = 0x7d;

/**
 * Nesting depth of JSON text, without parsing it: one pass counting brackets
 * outside strings. For binary-mode bodies declared as JSON, which are stored
 * as bytes and parsed only when read or delivered in structured mode.
 * Malformed text is measured the same way (it is stored as bytes regardless).
 */
export function jsonTextDepthExceeds(bytes: Uint8Array, max: number): boolean {
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
      if (++depth > max) return true;
    } else if ((b === CLOSE_BRACKET || b === CLOSE_BRACE) && depth > 0) {
      depth--;
    }
  }
  return false;
}
