import { AttributeValue } from './event';

const utf8 = new TextDecoder('utf-8', { fatal: true });

export class HeaderDecodeError extends Error {
  override name = 'HeaderDecodeError';
}

/**
 * Decodes a binary-mode `ce-*` header value: an RFC 9110 quoted-string is
 * unquoted first, then `%XX` escapes are decoded once, and the bytes read as UTF-8.
 * A `%` not followed by two hex digits is a literal `%`: senders that do not
 * percent-encode (the official JavaScript SDK among them) send `50% off` as is.
 * @see cloudevents/bindings/http-protocol-binding.md §3.1.3.2
 * @throws HeaderDecodeError for a malformed quoted-string or invalid UTF-8
 */
export function decodeHeaderValue(raw: string): string {
  let value = raw;
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    value = unquote(value.slice(1, -1));
  }
  return percentDecodeUtf8(value);
}

/**
 * `%XX` escapes decoded once and the bytes read as UTF-8; a `%` not followed by two hex digits is a
 * literal `%`. `value` is a latin1 string from node:http (a header value, a request target): a code
 * unit is a byte, and raw bytes >= 0x80 are read as UTF-8 too.
 * @throws HeaderDecodeError for invalid UTF-8 (or a code unit that is no byte)
 */
export function percentDecodeUtf8(value: string): string {
  // Only pure ASCII may skip decoding.
  if (!/[%\u0080-\uffff]/.test(value)) return value;
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const ch = value.charCodeAt(i);
    if (ch === 0x25 /* % */) {
      const hex = value.slice(i + 1, i + 3);
      if (/^[0-9A-Fa-f]{2}$/.test(hex)) {
        bytes.push(parseInt(hex, 16));
        i += 2;
      } else {
        bytes.push(ch);
      }
    } else {
      // Node gives header values as latin1 strings; a code unit is a byte.
      if (ch > 0xff) throw new HeaderDecodeError(`character at position ${i} is not a byte; header values are latin1 strings`);
      bytes.push(ch);
    }
  }
  try {
    return utf8.decode(Uint8Array.from(bytes));
  } catch {
    throw new HeaderDecodeError('value is not valid UTF-8 after percent-decoding');
  }
}

function unquote(inner: string): string {
  let out = '';
  for (let i = 0; i < inner.length; i++) {
    const ch = inner[i]!;
    if (ch === '\\') {
      if (i + 1 >= inner.length) throw new HeaderDecodeError('quoted string ends with a lone backslash');
      out += inner[++i];
    } else if (ch === '"') {
      throw new HeaderDecodeError('unescaped double quote inside a quoted string');
    } else {
      out += ch;
    }
  }
  return out;
}

/** Printable ASCII but space, `"` and `%`: what `encodeHeaderValue` leaves as it is. */
const HEADER_SAFE = /^[\x21\x23\x24\x26-\x7e]*$/;

/**
 * Encodes an attribute value for a `ce-*` header: space, `"`, `%`, controls
 * and every non-ASCII character are percent-encoded as UTF-8.
 * @see cloudevents/bindings/http-protocol-binding.md §3.1.3.2
 */
export function encodeHeaderValue(value: AttributeValue): string {
  const text = String(value);
  // Most values (ids, sources, types, times) need no escape: no byte-by-byte copy for them.
  if (HEADER_SAFE.test(text)) return text;
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    if (byte <= 0x20 || byte === 0x22 || byte === 0x25 || byte >= 0x7f) {
      out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
    } else {
      out += String.fromCharCode(byte);
    }
  }
  return out;
}
