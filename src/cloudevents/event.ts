/** Attribute values as the JSON format allows them: String (and string-encoded types), Integer, Boolean. */
export type AttributeValue = string | number | boolean;

/**
 * Event payload as received, so it can be delivered back exactly:
 * - `json`: the `data` member of a structured event (any JSON value, `null` included);
 * - `bytes`: the body of a binary-mode request, byte for byte;
 * - `base64`: decoded `data_base64` of a structured event (returned as `data_base64` again).
 *
 * `json` read back from the log also carries `text`, its serialisation exactly as `JSON.stringify(value)`
 * wrote it: a delivery sends those bytes instead of parsing and serialising them again.
 */
export type EventData =
  { kind: 'none' } | { kind: 'json'; value: unknown; text?: Buffer } | { kind: 'bytes'; bytes: Buffer } | { kind: 'base64'; bytes: Buffer };

/**
 * Stored `json` data: its text as written, parsed only when the value itself is asked for (filters
 * never ask). `text` is not enumerable: the data still compares and serialises as `{ kind, value }`.
 * The text passed the record's keyed checksum, so it is what `JSON.stringify` wrote and parses.
 */
export function storedJson(text: Buffer): EventData {
  let parsed = false;
  let value: unknown;
  const data = {
    kind: 'json' as const,
    get value(): unknown {
      if (!parsed) {
        value = JSON.parse(text.toString('utf8'));
        parsed = true;
      }
      return value;
    },
  };
  return Object.defineProperty(data, 'text', { value: text });
}

/** A validated CloudEvent: every context attribute and extension as received, plus its data. */
export interface CloudEvent {
  attributes: Record<string, AttributeValue>;
  data: EventData;
}

export const REQUIRED_ATTRIBUTES = ['id', 'source', 'specversion', 'type'] as const;
/**
 * Attributes whose type is String: the core ones, the partitioning extension's `partitionkey`, and the
 * distributed tracing extension's `traceparent` and `tracestate`.
 */
export const STRING_ATTRIBUTES = new Set([
  'id',
  'source',
  'specversion',
  'type',
  'datacontenttype',
  'dataschema',
  'subject',
  'time',
  'partitionkey',
  'traceparent',
  'tracestate',
]);

export function eventId(event: CloudEvent): string {
  return event.attributes.id as string;
}

export function eventSource(event: CloudEvent): string {
  return event.attributes.source as string;
}

/** Media type without parameters, lower-cased: `Application/JSON; charset=utf-8` → `application/json`. */
export function mediaType(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  return contentType.split(';', 1)[0]!.trim().toLowerCase();
}

/** The `charset` parameter `contentType` names, in lower case (`''` for an empty one); undefined for none. */
export function charsetOf(contentType: string | undefined): string | undefined {
  return contentType === undefined ? undefined : CHARSET.exec(contentType)?.[1]?.toLowerCase();
}

/** Whether text declared by `contentType` is UTF-8: no charset (or an empty one), `utf-8`, or its subset `us-ascii`. */
export function utf8Charset(contentType: string | undefined): boolean {
  const charset = charsetOf(contentType);
  return !charset || charset === 'utf-8' || charset === 'utf8' || charset === 'us-ascii';
}

const CHARSET = /;\s*charset\s*=\s*"?([^";\s]*)/i;

/** `*\/json` or `*\/*+json`, per the JSON format §3.1.1. */
export function isJsonMediaType(contentType: string | undefined): boolean {
  const type = mediaType(contentType);
  if (type === undefined) return false;
  const subtype = type.slice(type.indexOf('/') + 1);
  return subtype === 'json' || subtype.endsWith('+json');
}

export function isTextMediaType(contentType: string | undefined): boolean {
  const type = mediaType(contentType);
  if (type === undefined) return false;
  return type.startsWith('text/') || type === 'application/xml' || type.endsWith('+xml');
}
