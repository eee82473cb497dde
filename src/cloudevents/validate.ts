import { isIPv6 } from 'node:net';
import type { Violation } from '../errors';
import { AttributeValue, CloudEvent, EventData, REQUIRED_ATTRIBUTES, STRING_ATTRIBUTES, isJsonMediaType } from './event';

const ATTRIBUTE_NAME = /^[a-z0-9]+$/;

/**
 * Whether an event can carry an attribute of this name: lower-case letters a-z and digits 0-9, and
 * not `data` (reserved for the event's data).
 * @see cloudevents/spec.md "Attribute Naming Convention"
 */
export function isAttributeName(name: string): boolean {
  return ATTRIBUTE_NAME.test(name) && name !== 'data';
}
/**
 * The code points Unicode names noncharacters, as UTF-16: U+FDD0–U+FDEF, and the last two of each plane (U+FFFE,
 * U+FFFF, U+1FFFE … U+10FFFF, whose high surrogates are D83F, D87F … DBFF). The String type disallows them.
 * @see cloudevents/spec.md "Type System" (String)
 */
const NONCHARACTER =
  /[\uFDD0-\uFDEF\uFFFE\uFFFF]|[\uD83F\uD87F\uD8BF\uD8FF\uD93F\uD97F\uD9BF\uD9FF\uDA3F\uDA7F\uDABF\uDAFF\uDB3F\uDB7F\uDBBF\uDBFF][\uDFFE\uDFFF]/;
const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
// RFC 3986 characters; `%` only as a valid escape (checked separately).
const URI_CHARS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]*$/;
const BAD_PERCENT = /%(?![0-9A-Fa-f]{2})/;
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|([+-])(\d{2}):(\d{2}))$/;
// Parameters may be any printable ASCII: no control characters (a header could not carry them) and no raw non-ASCII.
const MEDIA_TYPE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+\/[!#$%&'*+.^_`|~0-9A-Za-z-]+[\t ]*(;[\t\x20-\x7e]*)?$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** An authority's IP-literal host (RFC 3986 §3.2.2), with an optional port. */
const IP_LITERAL = /^\[(?:v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+|([0-9A-Fa-f:.]+))\](?::\d*)?$/;
const AUTHORITY = /^(?:[A-Za-z][A-Za-z0-9+.-]*:)?\/\/([^/?#]*)/;
/** A reg-name or IPv4 host and an optional port (RFC 3986 §3.2.2, §3.2.3). */
const REG_NAME_PORT = /^[A-Za-z0-9\-._~!$&'()*+,;=%]*(?::\d*)?$/;

/**
 * `#` at most once (a fragment cannot hold another), and `[` `]` only around an authority's
 * IP-literal host: `http://[::1` and `a]b[c` have only URI characters and are no URIs.
 */
function delimitersInPlace(value: string): boolean {
  if (value.indexOf('#') !== value.lastIndexOf('#')) return false;
  if (!value.includes('[') && !value.includes(']')) return true;
  const authority = AUTHORITY.exec(value);
  if (!authority) return false;
  const hostPort = authority[1]!.slice(authority[1]!.lastIndexOf('@') + 1);
  const literal = IP_LITERAL.exec(hostPort);
  if (!literal || (literal[1] !== undefined && !isIPv6(literal[1]))) return false;
  const outside = authority[1]!.slice(0, authority[1]!.length - hostPort.length) + value.slice(authority[0].length);
  return !outside.includes('[') && !outside.includes(']');
}

/**
 * An authority's user info holds no `@`, and a host that is not an IP literal (checked above) holds no
 * `:` but before a port of digits (RFC 3986 §3.2): `http://h:x/`, `http://h:80:90/` and `http://a@b@c/`
 * are no URIs (spec probe: taken).
 */
function authorityWellFormed(value: string): boolean {
  const authority = AUTHORITY.exec(value);
  if (!authority) return true;
  const text = authority[1]!;
  const at = text.lastIndexOf('@');
  if (at > 0 && text.lastIndexOf('@', at - 1) !== -1) return false;
  const hostPort = text.slice(at + 1);
  return hostPort.startsWith('[') || REG_NAME_PORT.test(hostPort);
}

/** RFC 3986 URI-reference: allowed characters, valid escapes, and a well-formed scheme and authority if given. */
export function isUriReference(value: string): boolean {
  if (!URI_CHARS.test(value) || BAD_PERCENT.test(value) || !delimitersInPlace(value) || !authorityWellFormed(value)) return false;
  const firstDelimiter = value.search(/[/?#]/);
  const colon = value.indexOf(':');
  // A colon before any delimiter means a scheme, which must be well-formed.
  if (colon !== -1 && (firstDelimiter === -1 || colon < firstDelimiter)) return SCHEME.test(value);
  return true;
}

/** Absolute URI (RFC 3986 §4.3): a URI-reference with a scheme and no fragment. */
export function isAbsoluteUri(value: string): boolean {
  return SCHEME.test(value) && !value.includes('#') && isUriReference(value);
}

/** RFC 3339 `date-time`, with calendar and clock ranges checked (leap second allowed). */
export function isRfc3339(value: string): boolean {
  const m = RFC3339.exec(value);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map(Number) as number[] as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 1 || month > 12 || day < 1) return false;
  // setUTCFullYear, not Date.UTC: Date.UTC maps years 0-99 to 1900-1999, and 1900 is not a leap year but 0000 is.
  const daysInMonth = new Date(new Date(0).setUTCFullYear(year, month, 0)).getUTCDate();
  if (day > daysInMonth || hour > 23 || minute > 59 || second > 60) return false;
  if (m[9] !== undefined && (Number(m[10]) > 23 || Number(m[11]) > 59)) return false;
  // A leap second is the last of a UTC day (RFC 3339 §5.7): 23:59:60 once the offset is taken off.
  if (second === 60) {
    const offset = m[9] === undefined ? 0 : (m[9] === '+' ? 1 : -1) * (Number(m[10]) * 60 + Number(m[11]));
    if ((((hour * 60 + minute - offset) % 1440) + 1440) % 1440 !== 1439) return false;
  }
  return true;
}

/**
 * The instant an RFC 3339 `date-time` names, in epoch ms; undefined when it is not one. A leap second
 * (`23:59:60`) is the instant after `23:59:59.999`, as POSIX time counts it.
 */
export function rfc3339ToEpochMs(value: string): number | undefined {
  if (!isRfc3339(value)) return undefined;
  const leap = RFC3339.exec(value)![6] === '60';
  const normal = value.toUpperCase().replace(/:60(?=[.Z+-])/, ':59');
  const ms = Date.parse(normal);
  if (Number.isNaN(ms)) return undefined;
  return leap ? Math.floor(ms / 1000) * 1000 + 1000 : ms;
}

export function isBase64(value: string): boolean {
  return BASE64.test(value);
}

/**
 * Checks every rule the CloudEvents 1.0 spec states as MUST on a set of
 * context attributes (extensions included). Null values must already be
 * removed (the JSON format treats them as unset).
 * @see cloudevents/spec.md §2, §3
 */
export function validateAttributes(attributes: Record<string, unknown>, index?: number): Violation[] {
  const violations: Violation[] = [];
  const fail = (attribute: string, message: string) => violations.push(withIndex({ attribute, message }, index));

  for (const name of REQUIRED_ATTRIBUTES) {
    if (attributes[name] === undefined) fail(name, `required attribute "${name}" is missing`);
  }
  // for-in, not Object.entries (no array of pairs per event); the attributes are a plain or prototype-less record.
  for (const name in attributes) {
    if (!Object.hasOwn(attributes, name)) continue;
    const value = attributes[name];
    if (!ATTRIBUTE_NAME.test(name)) {
      fail(name, 'attribute names must consist of lower-case letters a-z and digits 0-9');
      continue;
    }
    if (name === 'data') {
      fail(name, '"data" is reserved and cannot be an attribute name');
      continue;
    }
    if (typeof value === 'string' && !value.isWellFormed()) {
      // UTF-8 cannot carry a lone surrogate (JSON's "\ud800"): stored, it would become U+FFFD and could equal another id.
      fail(name, `"${name}" must be valid Unicode (it holds a lone surrogate)`);
      continue;
    }
    if (typeof value === 'string' && NONCHARACTER.test(value)) {
      fail(name, `"${name}" must not hold a Unicode noncharacter (U+FDD0–U+FDEF, or U+FFFE and U+FFFF of any plane)`);
      continue;
    }
    if (STRING_ATTRIBUTES.has(name)) {
      if (typeof value !== 'string') {
        fail(name, `"${name}" must be a string`);
        continue;
      }
      const problem = checkCoreAttribute(name, value);
      if (problem) fail(name, problem);
      continue;
    }
    if (typeof value === 'string' || typeof value === 'boolean') continue;
    if (typeof value === 'number') {
      if (!Number.isInteger(value) || value < INT32_MIN || value > INT32_MAX) {
        fail(name, 'integer extension values must be whole numbers within the signed 32-bit range');
      }
      continue;
    }
    fail(name, 'extension values must be a string, a boolean or an integer');
  }
  return violations;
}

function checkCoreAttribute(name: string, value: string): string | undefined {
  switch (name) {
    case 'id':
    case 'type':
    case 'subject':
    case 'partitionkey': // the partitioning extension: "MUST be a non-empty string"
    case 'traceparent': // the distributed tracing extension: the same
      return value === '' ? `"${name}" must be a non-empty string` : undefined;
    case 'specversion':
      return value === '1.0' ? undefined : `unsupported specversion "${value}"; only "1.0" is accepted`;
    case 'source':
      if (value === '') return '"source" must be a non-empty URI-reference';
      return isUriReference(value) ? undefined : '"source" must be a URI-reference (RFC 3986)';
    case 'dataschema':
      return isAbsoluteUri(value) ? undefined : '"dataschema" must be an absolute URI (RFC 3986)';
    case 'time':
      return isRfc3339(value) ? undefined : '"time" must be an RFC 3339 timestamp';
    case 'datacontenttype':
      return MEDIA_TYPE.test(value) ? undefined : '"datacontenttype" must be a media type (RFC 2046), such as application/json';
    default:
      return undefined;
  }
}

function withIndex(v: Violation, index: number | undefined): Violation {
  return index === undefined ? v : { index, ...v };
}

export type ParseOutcome = { ok: true; event: CloudEvent } | { ok: false; violations: Violation[] };

/**
 * Validates one event in the JSON format (a structured body, or an element of a batch).
 * @see cloudevents/formats/json-format.md §2.2, §3.1
 */
export function parseJsonEvent(input: unknown, index?: number): ParseOutcome {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    return { ok: false, violations: [withIndex({ message: 'an event must be a JSON object' }, index)] };
  }
  // No prototype: a "__proto__" member must be an ordinary (invalid) attribute, not replace the prototype.
  const attributes: Record<string, AttributeValue> = Object.create(null);
  let hasData = false;
  let dataValue: unknown;
  let base64: unknown;
  for (const [name, value] of Object.entries(input as Record<string, unknown>)) {
    if (name === 'data') {
      hasData = true;
      dataValue = value;
    } else if (name === 'data_base64') {
      base64 = value;
    } else if (value !== null) {
      attributes[name] = value as AttributeValue;
    }
  }
  const violations = validateAttributes(attributes, index);
  let data: EventData = { kind: 'none' };
  if (hasData && base64 !== undefined && base64 !== null) {
    violations.push(withIndex({ attribute: 'data_base64', message: '"data" and "data_base64" must not both be present' }, index));
  } else if (base64 !== undefined && base64 !== null) {
    if (typeof base64 !== 'string' || !isBase64(base64)) {
      violations.push(withIndex({ attribute: 'data_base64', message: '"data_base64" must be a base64 string (RFC 4648)' }, index));
    } else {
      data = { kind: 'base64', bytes: Buffer.from(base64, 'base64') };
    }
  } else if (hasData) {
    data = { kind: 'json', value: dataValue };
    // Text data goes out as UTF-8 bytes in binary mode, which cannot carry a lone surrogate (it would become U+FFFD).
    if (isStringPayload({ attributes, data }) && !(dataValue as string).isWellFormed()) {
      violations.push(withIndex({ attribute: 'data', message: '"data" must be valid Unicode text (it holds a lone surrogate)' }, index));
    }
  }
  if (violations.length > 0) return { ok: false, violations };
  return { ok: true, event: { attributes, data } };
}

/** True when the structured `data` member is the payload text itself rather than a JSON value. */
export function isStringPayload(event: CloudEvent): boolean {
  const contentType = event.attributes.datacontenttype;
  // Not a string: an invalid event, already refused for it (a probe's `"datacontenttype": 1` was a 500 here).
  return (
    event.data.kind === 'json' && typeof event.data.value === 'string' && typeof contentType === 'string' && !isJsonMediaType(contentType)
  );
}
