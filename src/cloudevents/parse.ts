import { AppError, MAX_PROBLEM_ERRORS, Violation } from '../errors';
import { AttributeValue, CloudEvent, isJsonMediaType, mediaType, utf8Charset } from './event';
import { HeaderDecodeError, decodeHeaderValue } from './headers';
import { jsonDataProblem, jsonTextProblem } from './json-depth';
import { repeatedMembers } from './json-members';
import { parseJsonEvent, validateAttributes } from './validate';

export type ContentMode = 'binary' | 'structured' | 'batch';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Picks the content mode from `Content-Type`. Any type prefixed `application/cloudevents` is structured
 * or batched mode (binding §3), so one of a format other than JSON (`…+xml`, `-batch+xml`, or none) is
 * a 415, not a binary-mode event whose attributes are all missing.
 */
export function contentModeOf(contentType: string | undefined): ContentMode {
  const type = mediaType(contentType) ?? '';
  if (type === 'application/cloudevents-batch+json') return 'batch';
  if (type === 'application/cloudevents+json') return 'structured';
  if (type.startsWith('application/cloudevents')) {
    throw new AppError('unsupported_media_type', `event format "${type}" is not supported; use application/cloudevents+json`, {
      details: [
        {
          attribute: 'content-type',
          message: 'supported formats: application/cloudevents+json, application/cloudevents-batch+json, or binary mode',
        },
      ],
    });
  }
  return 'binary';
}

export interface HttpMessage {
  /** `req.headersDistinct`: repeated headers stay separate so they can be refused. */
  headers: Record<string, string[] | undefined>;
  body: Buffer;
}

/**
 * Turns an HTTP request into validated events in any of the three content modes.
 * A batch is all-or-nothing: one bad event fails the request, naming each bad event by index.
 * @see cloudevents/bindings/http-protocol-binding.md §3
 * @throws AppError `invalid_event` (400) or `unsupported_media_type` (415: another format, or a charset other than UTF-8)
 */
export function parseHttpMessage(
  message: HttpMessage,
  limits: ParseLimits = { maxJsonDepth: DEFAULT_MAX_JSON_DEPTH },
): { mode: ContentMode; events: CloudEvent[] } {
  const contentType = single(message.headers, 'content-type');
  const mode = contentModeOf(contentType);
  if (mode === 'binary') {
    const event = parseBinary(message.headers, message.body, contentType);
    // Stored as bytes, but parsed when read back or delivered structured: the same limits apply. Checked
    // against the datacontenttype stored (a `ce-datacontenttype` header stands in for a missing Content-Type).
    // The scan reads UTF-8 bytes; JSON in another charset (UTF-16, say) is never parsed, only read back as `data_base64`.
    const dataType = event.attributes.datacontenttype as string | undefined;
    const problem = isJsonMediaType(dataType) && utf8Charset(dataType) ? jsonTextProblem(message.body, limits.maxJsonDepth) : undefined;
    if (problem) {
      throw invalid('the binary-mode request is not a valid CloudEvent', [problem === 'too_deep' ? tooDeep(limits) : notFinite()]);
    }
    return { mode, events: [event] };
  }
  if (!utf8Charset(contentType)) {
    // RFC 8259 §8.1: JSON exchanged between systems is UTF-8. Read as UTF-8, text in another charset would be
    // stored changed (Latin-1 "Ã©" is valid UTF-8 "é"), so it is refused, as the JSON API routes do.
    throw new AppError('unsupported_media_type', `a ${mode} request must be UTF-8; "${contentType}" declares another charset`, {
      details: [{ attribute: 'content-type', message: 'charset must be utf-8 (or absent)' }],
    });
  }
  const { text, parsed } = parseJsonBody(message.body);
  // Members given twice in an event object (JSON.parse keeps the last one): only when its shape is one.
  const shaped = mode === 'batch' ? Array.isArray(parsed) : typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed);
  const repeated = shaped ? repeatedMembers(text, mode === 'batch') : undefined;
  const parseEvent = (item: unknown, index?: number) => {
    const outcome = parseJsonEvent(item, index);
    const twice = repeated?.get(index ?? 0);
    if (twice !== undefined) {
      const violations: Violation[] = twice.map((name) => ({
        ...(index === undefined ? {} : { index }),
        attribute: name,
        message: `"${name}" is given more than once; each attribute may appear once`,
      }));
      return { ok: false as const, violations: outcome.ok ? violations : [...violations, ...outcome.violations] };
    }
    const problem =
      outcome.ok && outcome.event.data.kind === 'json' ? jsonDataProblem(outcome.event.data.value, limits.maxJsonDepth) : undefined;
    if (problem) {
      const violation = problem === 'too_deep' ? tooDeep(limits) : notFinite();
      return { ok: false as const, violations: [{ ...(index === undefined ? {} : { index }), ...violation }] };
    }
    return outcome;
  };
  if (mode === 'structured') {
    const outcome = parseEvent(parsed);
    if (!outcome.ok) throw invalid('the event is not a valid CloudEvent', outcome.violations);
    return { mode, events: [outcome.event] };
  }
  if (!Array.isArray(parsed)) {
    throw invalid('a batch must be a JSON array of events', [{ message: 'expected a JSON array' }]);
  }
  const events: CloudEvent[] = [];
  // Only the first violations are kept (a problem lists at most MAX_PROBLEM_ERRORS); the rest are counted.
  const violations: Violation[] = [];
  let totalViolations = 0;
  let badEvents = 0;
  parsed.forEach((item, index) => {
    const outcome = parseEvent(item, index);
    if (outcome.ok) {
      if (badEvents === 0) events.push(outcome.event);
      return;
    }
    badEvents++;
    totalViolations += outcome.violations.length;
    for (const v of outcome.violations) {
      if (violations.length >= MAX_PROBLEM_ERRORS) break;
      violations.push(v);
    }
  });
  if (badEvents > 0) {
    throw new AppError('invalid_event', `${badEvents} of ${parsed.length} events in the batch are invalid; none was stored`, {
      details: violations,
      totalErrors: totalViolations,
    });
  }
  return { mode, events };
}

export interface ParseLimits {
  /** Deepest nesting of arrays and objects accepted in `data` (`HERALD_MAX_JSON_DEPTH`). */
  maxJsonDepth: number;
}

export const DEFAULT_MAX_JSON_DEPTH = 64;

function notFinite(): Violation {
  return { attribute: 'data', message: '"data" holds a number too large for JSON (it would be stored as null)' };
}

function tooDeep(limits: ParseLimits): Violation {
  return {
    attribute: 'data',
    message: `"data" nests arrays and objects deeper than ${limits.maxJsonDepth} levels (HERALD_MAX_JSON_DEPTH)`,
  };
}

function parseBinary(headers: HttpMessage['headers'], body: Buffer, contentType: string | undefined): CloudEvent {
  // No prototype: a "ce-__proto__" header must be an ordinary (invalid) attribute, not a prototype assignment.
  const attributes: Record<string, AttributeValue> = Object.create(null);
  const violations: Violation[] = [];
  // for-in, not Object.entries: no array of pairs per request (the headers hold only what the binding reads).
  for (const name in headers) {
    const values = headers[name];
    if (!name.startsWith('ce-') || values === undefined) continue;
    const attribute = name.slice(3);
    if (values.length !== 1) {
      violations.push({ attribute, message: `header "${name}" appears ${values.length} times; each attribute may be sent once` });
      continue;
    }
    try {
      attributes[attribute] = decodeHeaderValue(values[0]!);
    } catch (err) {
      if (!(err instanceof HeaderDecodeError)) throw err;
      violations.push({ attribute, message: `header "${name}": ${err.message}` });
    }
  }
  if (contentType !== undefined) {
    // Binding §3.1.1: Content-Type carries datacontenttype and a ce-datacontenttype header must not be sent too.
    // The same value is harmless; another leaves the data's type unknown (it was dropped without a word).
    const header = attributes.datacontenttype;
    if (header !== undefined && !sameMediaType(String(header), contentType) && !violations.some((v) => v.attribute === 'datacontenttype')) {
      violations.push({
        attribute: 'datacontenttype',
        message: `header "ce-datacontenttype" differs from Content-Type; send the type in Content-Type only`,
      });
    }
    attributes.datacontenttype = contentType;
  }
  const reported = new Set(violations.map((v) => v.attribute));
  violations.push(...validateAttributes(attributes).filter((v) => !reported.has(v.attribute)));
  if (violations.length > 0) throw invalid('the binary-mode request is not a valid CloudEvent', violations);
  return { attributes, data: body.length === 0 ? { kind: 'none' } : { kind: 'bytes', bytes: body } };
}

function parseJsonBody(body: Buffer): { text: string; parsed: unknown } {
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw invalid('the body is not valid UTF-8', [{ message: 'JSON bodies must be UTF-8' }]);
  }
  try {
    return { text, parsed: JSON.parse(text) };
  } catch (err) {
    throw invalid('the body is not valid JSON', [{ message: (err as Error).message }]);
  }
}

function single(headers: HttpMessage['headers'], name: string): string | undefined {
  const values = headers[name];
  if (values === undefined || values.length === 0) return undefined;
  if (values.length > 1) throw invalid(`header "${name}" appears more than once`, [{ attribute: name, message: 'repeated header' }]);
  return values[0];
}

function invalid(message: string, details: Violation[]): AppError {
  return new AppError('invalid_event', message, { details });
}

/**
 * The headers the HTTP binding reads (`ce-*` and `content-type`), each with
 * every value it was sent with, straight from `IncomingMessage.rawHeaders`:
 * cheaper than `headersDistinct`, which copies every header of the request.
 */
export function bindingHeaders(rawHeaders: readonly string[]): Record<string, string[]> {
  const headers: Record<string, string[]> = Object.create(null);
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const first = name.charCodeAt(0) | 0x20;
    // Only names starting with c/C can be ce-* or content-type.
    if (first !== 0x63) continue;
    const lower = name.toLowerCase();
    if (lower !== 'content-type' && !lower.startsWith('ce-')) continue;
    // A one-element array unless the header repeats: `[]` then push reserved room for 16 (per header, per request).
    const values = headers[lower];
    if (values === undefined) headers[lower] = [rawHeaders[i + 1]!];
    else values.push(rawHeaders[i + 1]!);
  }
  return headers;
}

/**
 * Whether two media types are the same (RFC 9110 §8.3.1): type, subtype and parameter names compared
 * without case, the charset's value too; other values exactly (after unquoting); spacing ignored.
 */
function sameMediaType(a: string, b: string): boolean {
  if (a === b) return true;
  const canonical = (value: string) => {
    const [type, ...params] = value.split(';');
    const named = params
      .map((p) => {
        const eq = p.indexOf('=');
        const name = (eq === -1 ? p : p.slice(0, eq)).trim().toLowerCase();
        let v = eq === -1 ? '' : p.slice(eq + 1).trim();
        if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
        return `${name}=${name === 'charset' ? v.toLowerCase() : v}`;
      })
      .filter((p) => p !== '=')
      .sort();
    return [type!.trim().toLowerCase(), ...named].join(';');
  };
  return canonical(a) === canonical(b);
}
