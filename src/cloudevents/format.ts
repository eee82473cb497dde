import { CloudEvent, isJsonMediaType, isTextMediaType } from './event';
import { encodeHeaderValue } from './headers';
import { isStringPayload } from './validate';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The event in the JSON format. Bytes received in binary mode come back as
 * JSON when `datacontenttype` declares JSON and they parse, as a string when
 * it declares text, and as `data_base64` otherwise.
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
      const text = decodeUtf8(data.bytes);
      if (text !== undefined && isJsonMediaType(contentType)) {
        try {
          out.data = JSON.parse(text);
          break;
        } catch {
          // Not JSON after all: fall through to base64 so no byte is lost.
        }
      } else if (text !== undefined && isTextMediaType(contentType)) {
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
  return {
    headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' },
    body: Buffer.from(JSON.stringify(toStructured(event)), 'utf8'),
  };
}

function decodeUtf8(bytes: Buffer): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}
