import { CloudEvent, isJsonMediaType, isTextMediaType, utf8Charset } from './event';
import { encodeHeaderValue } from './headers';
import { MAX_JSON_DEPTH_CEILING, jsonTextProblem } from './json-depth';
import { isStringPayload } from './validate';

// ignoreBOM: a byte-order mark is part of the data as sent, kept like any other character.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The event in the JSON format. Bytes received in binary mode come back as JSON when `datacontenttype`
 * declares JSON and they parse into the same value (no number a double cannot hold, not too deep to
 * write), as a string when it declares text, and as `data_base64` otherwise, or when it declares a
 * charset other than UTF-8 (a JSON string is Unicode: bytes in another charset are kept as they are).
 * @see cloudevents/formats/json-format.md §3.1.1
 */
export function toStructured(event: CloudEvent): Record<string, unknown> {
  const out: Record<string, unknown> = { ...event.attributes };
  const data = event.data;
  const contentType = event.attributes.datacontenttype as string | undefined;
  switch (data.kind) {
    case 'none':
      break;
    case 'json':
      out.data = data.value;
      break;
    case 'base64':
      out.data_base64 = data.bytes.toString('base64');
      break;
    case 'bytes': {
      const text = utf8Charset(contentType) ? decodeUtf8(data.bytes) : undefined;
      if (text !== undefined && isJsonMediaType(contentType)) {
        // Deeper than any HERALD_MAX_JSON_DEPTH allows, or holding `1e400`: stored before ingest checked
        // a ce-datacontenttype header's JSON. Rendered, it would throw or change: it stays bytes.
        if (jsonTextProblem(data.bytes, MAX_JSON_DEPTH_CEILING) === undefined) {
          try {
            out.data = JSON.parse(text);
            break;
          } catch {
            // Not JSON after all: fall through to base64 so no byte is lost.
          }
        }
      } else if (text !== undefined && isTextMediaType(contentType) && escapedFits(text)) {
        out.data = text;
        break;
      }
      out.data_base64 = data.bytes.toString('base64');
      break;
    }
  }
  return out;
}

/** The payload bytes a binary-mode request carries, and its `Content-Type`. */
export function dataBytes(event: CloudEvent): { body: Buffer; contentType?: string } {
  const data = event.data;
  const contentType = event.attributes.datacontenttype as string | undefined;
  switch (data.kind) {
    case 'none':
      return { body: Buffer.alloc(0), contentType };
    case 'bytes':
    case 'base64':
      return { body: data.bytes, contentType };
    case 'json':
      // Stored JSON is sent as the log holds it (what JSON.stringify wrote); a string value (text
      // starting with a quote) may go out unquoted, so it takes the path below.
      if (data.text !== undefined && data.text[0] !== 0x22) return { body: data.text, contentType: contentType ?? 'application/json' };
      if (isStringPayload(event)) return { body: Buffer.from(data.value as string, 'utf8'), contentType };
      // JSON format §3.1.2: an absent datacontenttype means application/json; say so explicitly.
      return { body: Buffer.from(JSON.stringify(data.value), 'utf8'), contentType: contentType ?? 'application/json' };
  }
}

/** Headers and body of the event in HTTP binary content mode; the headers go into `headers` when given. */
export function toBinaryMessage(
  event: CloudEvent,
  headers: Record<string, string> = {},
): { headers: Record<string, string>; body: Buffer } {
  const { attributes } = event;
  for (const name in attributes) {
    if (name === 'datacontenttype' || !Object.hasOwn(attributes, name)) continue;
    headers[`ce-${name}`] = encodeHeaderValue(attributes[name]!);
  }
  const { body, contentType } = dataBytes(event);
  if (contentType !== undefined) headers['content-type'] = contentType;
  return { headers, body };
}

/** Headers and body of the event in HTTP structured content mode. */
export function toStructuredMessage(event: CloudEvent): { headers: Record<string, string>; body: Buffer } {
  let json: string;
  try {
    json = JSON.stringify(toStructured(event));
  } catch {
    // Data JSON cannot write (nested past the stack): its stored bytes as data_base64 rather than an
    // exception that stops delivery. `toStructured` already keeps such bytes out; this guards what it misses.
    json = JSON.stringify({ ...event.attributes, data_base64: dataBytes(event).body.toString('base64') });
  }
  return { headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' }, body: Buffer.from(json, 'utf8') };
}

/**
 * V8's longest string, with room for the event's attributes: text data whose JSON escapes would pass
 * it (control characters become six characters each) could not be written into any answer.
 */
const MAX_JSON_CHARS = 2 ** 29 - 2 ** 20;

/** Whether `text` written as a JSON string stays under {@link MAX_JSON_CHARS}; counted only for large ones. */
function escapedFits(text: string): boolean {
  if (text.length * 6 < MAX_JSON_CHARS) return true;
  let chars = text.length + 2;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // \b \t \n \f \r take two characters, other control characters six (\u0001), `"` and `\` two.
    if (c < 0x20) chars += c >= 0x08 && c <= 0x0d && c !== 0x0b ? 1 : 5;
    else if (c === 0x22 || c === 0x5c) chars += 1;
  }
  return chars < MAX_JSON_CHARS;
}

function decodeUtf8(bytes: Buffer): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}
