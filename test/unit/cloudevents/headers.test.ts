import fc from 'fast-check';
import { HeaderDecodeError, decodeHeaderValue, encodeHeaderValue } from '../../../src/cloudevents/headers';

/** How node:http hands a header value to the server: each received byte becomes one latin1 code unit. */
const asReceived = (utf8Text: string) => Buffer.from(utf8Text, 'utf8').toString('latin1');

describe('decodeHeaderValue', () => {
  it('returns a plain ASCII value unchanged', () => {
    expect(decodeHeaderValue('/mycontext/subcontext')).toBe('/mycontext/subcontext');
    expect(decodeHeaderValue('')).toBe('');
  });

  it('unquotes an RFC 9110 quoted-string, honouring backslash escapes', () => {
    expect(decodeHeaderValue('"hello world"')).toBe('hello world');
    expect(decodeHeaderValue('"say \\"hi\\""')).toBe('say "hi"');
    expect(decodeHeaderValue('"back\\\\slash"')).toBe('back\\slash');
    expect(decodeHeaderValue('""')).toBe('');
  });

  it('percent-decodes after unquoting', () => {
    expect(decodeHeaderValue('"a%20b"')).toBe('a b');
    expect(decodeHeaderValue('"%22"')).toBe('"');
  });

  it('keeps a lone double quote or an unbalanced quote as literal text', () => {
    expect(decodeHeaderValue('"')).toBe('"');
    expect(decodeHeaderValue('"abc')).toBe('"abc');
    expect(decodeHeaderValue('abc"')).toBe('abc"');
  });

  it('refuses a quoted-string with an unescaped inner quote or a trailing lone backslash', () => {
    expect(() => decodeHeaderValue('"a"b"')).toThrow(HeaderDecodeError);
    expect(() => decodeHeaderValue('"ab\\"')).toThrow(HeaderDecodeError);
  });

  it('decodes percent escapes as UTF-8, in either hex case', () => {
    expect(decodeHeaderValue('caf%C3%A9')).toBe('café');
    expect(decodeHeaderValue('caf%c3%a9')).toBe('café');
    expect(decodeHeaderValue('%F0%9F%8C%8E')).toBe('🌎');
    expect(decodeHeaderValue('100%25')).toBe('100%');
  });

  it('percent-decodes exactly once', () => {
    expect(decodeHeaderValue('%2541')).toBe('%41');
  });

  it('takes a % not followed by two hex digits literally, as senders that do not percent-encode mean it', () => {
    expect(decodeHeaderValue('%')).toBe('%');
    expect(decodeHeaderValue('abc%')).toBe('abc%');
    expect(decodeHeaderValue('%4')).toBe('%4');
    expect(decodeHeaderValue('%G1')).toBe('%G1');
    expect(decodeHeaderValue('%%41')).toBe('%A');
    expect(decodeHeaderValue('a%2')).toBe('a%2');
    expect(decodeHeaderValue('50% off')).toBe('50% off');
    expect(decodeHeaderValue(asReceived('café 50% off'))).toBe('café 50% off');
    expect(decodeHeaderValue('"50% off"')).toBe('50% off');
  });

  it('still refuses invalid UTF-8 next to a literal %', () => {
    expect(() => decodeHeaderValue('50% %FF')).toThrow(/UTF-8/);
    expect(() => decodeHeaderValue('50% caf\u00e9')).toThrow(/UTF-8/);
  });

  it('refuses bytes that are not valid UTF-8 once decoded', () => {
    for (const raw of ['%FF', '%C3', '%C3%28', '%ED%A0%80', '%C0%AF']) {
      expect(() => decodeHeaderValue(raw)).toThrow(/UTF-8/);
    }
  });

  it('decodes raw (unescaped) UTF-8 bytes received in a header as UTF-8', () => {
    expect(decodeHeaderValue(asReceived('café'))).toBe('café');
    expect(decodeHeaderValue(asReceived('🌎 %21'))).toBe('🌎 !');
  });

  it('refuses raw bytes that are not valid UTF-8 even without a percent escape', () => {
    expect(() => decodeHeaderValue('caf\u00e9')).toThrow(HeaderDecodeError);
  });

  it('refuses characters that cannot be bytes of a received header', () => {
    expect(() => decodeHeaderValue('\u0101')).toThrow(HeaderDecodeError);
  });

  it('throws nothing but HeaderDecodeError for arbitrary input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.stringMatching(/^"?[%"\\A-Fa-f0-9\x80-\xff]*"?$/)), (raw) => {
        try {
          const decoded = decodeHeaderValue(raw);
          expect(typeof decoded).toBe('string');
        } catch (err) {
          expect(err).toBeInstanceOf(HeaderDecodeError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('encodeHeaderValue', () => {
  it('leaves visible ASCII other than " and % as is', () => {
    expect(encodeHeaderValue('/a/b?c=d&e#f,g;h')).toBe('/a/b?c=d&e#f,g;h');
  });

  it('percent-encodes space, double quote, percent, controls, DEL and non-ASCII as UTF-8', () => {
    expect(encodeHeaderValue('a b')).toBe('a%20b');
    expect(encodeHeaderValue('"q"')).toBe('%22q%22');
    expect(encodeHeaderValue('50%')).toBe('50%25');
    expect(encodeHeaderValue('line\nbreak\ttab')).toBe('line%0Abreak%09tab');
    expect(encodeHeaderValue('\u007f')).toBe('%7F');
    expect(encodeHeaderValue('Hello, 🌎!')).toBe('Hello,%20%F0%9F%8C%8E!');
  });

  it('stringifies booleans and integers', () => {
    expect(encodeHeaderValue(true)).toBe('true');
    expect(encodeHeaderValue(false)).toBe('false');
    expect(encodeHeaderValue(-2147483648)).toBe('-2147483648');
  });

  it('produces only visible ASCII, which node:http sends unchanged', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (value) => {
        expect(encodeHeaderValue(value)).toMatch(/^[\x21-\x7e]*$/);
      }),
    );
  });

  it('round-trips any string through decodeHeaderValue', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' })), (value) => {
        expect(decodeHeaderValue(encodeHeaderValue(value))).toBe(value);
      }),
      { numRuns: 2000 },
    );
  });
});
