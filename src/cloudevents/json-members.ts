const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const OPEN_BRACKET = 0x5b;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACKET = 0x5d;
const CLOSE_BRACE = 0x7d;

/**
 * The member names an event object of a JSON body gives more than once, by the event's index (0 for
 * a structured body), or undefined when none does. `JSON.parse` keeps the last of them without a word,
 * but "each context attribute MUST only appear at most once in a CloudEvent" (spec.md, Context
 * Attributes), as binary mode's repeated `ce-` header is refused. Names are compared as JSON reads
 * them (`"\u0069d"` is `id`). Only the event objects' own members are looked at, not those inside
 * `data`. `text` must be valid JSON (parsed already): one pass over its characters.
 * @param batch the body is a batch: its events are the elements of the top-level array
 */
export function repeatedMembers(text: string, batch: boolean): Map<number, string[]> | undefined {
  const eventDepth = batch ? 2 : 1;
  let depth = 0;
  let index = 0;
  let expectName = false;
  /** The event's member names so far, each with whether it was reported repeated already (a list's `includes` was quadratic). */
  let names: Map<string, boolean> | undefined;
  let repeated: Map<number, string[]> | undefined;
  const length = text.length;
  /** The first backslash at or after the string being read (-1: none left), found again only once passed. */
  let backslash = 0;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const start = i;
      let escaped = false;
      // Strings without a backslash end at the next quote, found natively; others are walked.
      if (backslash !== -1 && backslash <= start) backslash = text.indexOf('\\', start + 1);
      const quote = text.indexOf('"', start + 1);
      if (backslash === -1 || backslash > quote) i = quote;
      else {
        escaped = true;
        for (i = backslash; i < length; i++) {
          const d = text.charCodeAt(i);
          if (d === QUOTE) break;
          if (d === BACKSLASH) i++;
        }
      }
      if (expectName && depth === eventDepth && names !== undefined) {
        const name: string = escaped ? JSON.parse(text.slice(start, i + 1)) : text.slice(start + 1, i);
        const reported = names.get(name);
        if (reported === undefined) names.set(name, false);
        else if (!reported) {
          names.set(name, true);
          repeated ??= new Map();
          const list = repeated.get(index);
          if (list === undefined) repeated.set(index, [name]);
          else list.push(name);
        }
        expectName = false;
      }
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
      if (depth === eventDepth) {
        names = c === OPEN_BRACE ? new Map() : undefined;
        expectName = c === OPEN_BRACE;
      }
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    } else if (c === COMMA) {
      if (depth === eventDepth) expectName = names !== undefined;
      else if (batch && depth === 1) index++;
    }
  }
  return repeated;
}
