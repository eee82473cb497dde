import fc from 'fast-check';
import { crc32 } from 'node:zlib';
import type { EventData } from '../../../src/cloudevents/event';
import {
  FRAME_HEADER_BYTES,
  MAX_RECORD_BYTES,
  checkFrame,
  decodeRecord,
  decodeRecordHeader,
  LEGACY_FRAME_KEY,
  encodePadding,
  encodeRecord,
  frameKey,
  type LogRecord,
} from '../../../src/wal/record';
import { toBinaryMessage } from '../../../src/cloudevents/format';

const KEY = frameKey(Buffer.alloc(16, 7));

const attributes = {
  specversion: '1.0',
  id: 'r-1',
  source: '/records',
  type: 'com.example.record',
  subject: 'Hello, 🌎!',
  flag: true,
  count: -42,
};
const record = (data: EventData, extra: Partial<LogRecord> = {}): LogRecord => ({
  partition: 3,
  offset: 17,
  storedAt: 1_700_000_000_123,
  event: { attributes, data },
  ...extra,
});

describe('encodeRecord and decodeRecord', () => {
  it.each<[string, EventData]>([
    ['no data', { kind: 'none' }],
    ['JSON data', { kind: 'json', value: { nested: [1, 'two', null, { deep: true }] } }],
    ['JSON null data', { kind: 'json', value: null }],
    ['JSON string data', { kind: 'json', value: '🌎' }],
    ['raw bytes', { kind: 'bytes', bytes: Buffer.from([0, 1, 2, 253, 254, 255]) }],
    ['base64 bytes', { kind: 'base64', bytes: Buffer.from('binary\u0000payload') }],
    ['empty bytes', { kind: 'bytes', bytes: Buffer.alloc(0) }],
  ])('round-trips an event with %s', (_label, data) => {
    const original = record(data);
    expect(decodeRecord(encodeRecord(original, KEY))).toEqual(original);
  });

  it('keeps the largest partition and offsets beyond 32 bits', () => {
    const original = record({ kind: 'none' }, { partition: 65535, offset: 2 ** 40 + 1, storedAt: 0 });
    expect(decodeRecord(encodeRecord(original, KEY))).toEqual(original);
  });

  it('reads partition, offset, storedAt, source and id from the header alone', () => {
    const frame = encodeRecord(record({ kind: 'json', value: { big: 'x'.repeat(1000) } }), KEY);
    expect(decodeRecordHeader(frame)).toEqual({ partition: 3, offset: 17, storedAt: 1_700_000_000_123, source: '/records', id: 'r-1' });
  });

  it('round-trips arbitrary events', () => {
    const data = fc.oneof(
      fc.constant<EventData>({ kind: 'none' }),
      fc.jsonValue().map((v): EventData => ({ kind: 'json', value: JSON.parse(JSON.stringify(v)) })),
      fc.uint8Array().map((b): EventData => ({ kind: 'bytes', bytes: Buffer.from(b) })),
      fc.uint8Array().map((b): EventData => ({ kind: 'base64', bytes: Buffer.from(b) })),
    );
    const attrs = fc.dictionary(
      fc.stringMatching(/^[a-z0-9]{1,10}$/),
      fc.oneof(fc.string({ unit: 'binary' }), fc.boolean(), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
    );
    fc.assert(
      fc.property(
        attrs,
        data,
        fc.integer({ min: 0, max: 65535 }),
        fc.nat({ max: Number.MAX_SAFE_INTEGER }),
        fc.nat(),
        (extra, d, partition, offset, storedAt) => {
          const original: LogRecord = { partition, offset, storedAt, event: { attributes: { ...extra, ...attributes }, data: d } };
          const frame = encodeRecord(original, KEY);
          expect(checkFrame(frame, 0, KEY)).toEqual({ status: 'ok', length: frame.length, padding: false, legacy: false });
          expect(decodeRecord(frame)).toEqual(original);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('checkFrame', () => {
  const frame = encodeRecord(record({ kind: 'json', value: { a: 'b' } }), KEY);

  it('accepts an intact frame and reports its length', () => {
    expect(checkFrame(frame, 0, KEY)).toEqual({ status: 'ok', length: frame.length, padding: false, legacy: false });
  });

  it('checks a frame at an offset inside a larger buffer', () => {
    const second = encodeRecord(record({ kind: 'bytes', bytes: Buffer.from('second') }, { offset: 18 }), KEY);
    const buf = Buffer.concat([frame, second, Buffer.from([1, 2, 3])]);
    expect(checkFrame(buf, frame.length, KEY)).toEqual({ status: 'ok', length: second.length, padding: false, legacy: false });
    expect(decodeRecord(buf.subarray(frame.length, frame.length + second.length)).offset).toBe(18);
  });

  it('detects a flipped bit in any byte of the frame', () => {
    for (let i = 0; i < frame.length; i++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const damaged = Buffer.from(frame);
        damaged[i]! ^= mask;
        const followed = Buffer.concat([damaged, Buffer.alloc(1024)]);
        // A damaged length may point past the end of the data (read as a torn tail); anywhere else it is corrupt.
        const expected = i < 4 ? expect.stringMatching(/^(corrupt|incomplete)$/) : 'corrupt';
        expect({ i, mask, status: checkFrame(followed, 0, KEY).status }).toEqual({ i, mask, status: expected });
        expect({ i, mask, status: checkFrame(damaged, 0, KEY).status }).toEqual({ i, mask, status: expected });
      }
    }
  });

  it('reports every truncated prefix as incomplete', () => {
    for (let n = 0; n < frame.length; n++) {
      expect({ n, check: checkFrame(frame.subarray(0, n), 0, KEY) }).toEqual({ n, check: { status: 'incomplete' } });
    }
  });

  it('reports an implausible length as corrupt without reading further', () => {
    const tooSmall = Buffer.from(frame);
    tooSmall.writeUInt32LE(0, 0);
    expect(checkFrame(tooSmall, 0, KEY)).toEqual({ status: 'corrupt', reason: 'implausible length 0' });
    const tooLarge = Buffer.from(frame);
    tooLarge.writeUInt32LE(MAX_RECORD_BYTES + 1, 0);
    expect(checkFrame(tooLarge, 0, KEY)).toEqual({ status: 'corrupt', reason: `implausible length ${MAX_RECORD_BYTES + 1}` });
    const allOnes = Buffer.alloc(FRAME_HEADER_BYTES, 0xff);
    expect(checkFrame(allOnes, 0, KEY)).toMatchObject({ status: 'corrupt' });
  });

  it('refuses an unknown record version even with a valid checksum', () => {
    const other = Buffer.from(frame);
    other.writeUInt8(2, FRAME_HEADER_BYTES);
    const bodyLength = other.readUInt32LE(0);
    other.writeUInt32LE(crc32(other.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + bodyLength), crc32(other.subarray(0, 4))), 4);
    expect(checkFrame(other, 0, KEY)).toEqual({ status: 'corrupt', reason: 'unknown record version' });
  });

  it('tells a frame of a later format under the log key (a newer Herald wrote it) from damage', () => {
    const later = encodeRecord(record({ kind: 'json', value: { a: 'b' } }), { ...KEY, version: 3 });
    expect(checkFrame(later, 0, KEY)).toEqual({ status: 'newer', version: 3 });
    // Under another key the same bytes are damage: only the key's holder can write a newer frame.
    expect(checkFrame(later, 0, frameKey(Buffer.alloc(16, 8)))).toEqual({ status: 'corrupt', reason: 'checksum mismatch' });
  });

  it('refuses a frame checksummed with another key: event data cannot carry a frame that passes', () => {
    const forged = encodeRecord(record({ kind: 'json', value: { a: 'b' } }), frameKey(Buffer.alloc(16, 8)));
    expect(checkFrame(forged, 0, KEY)).toEqual({ status: 'corrupt', reason: 'checksum mismatch' });
  });

  it('reads version-1 frames of logs written before the key, unless told not to', () => {
    const legacy = encodeRecord(record({ kind: 'json', value: { a: 'b' } }), LEGACY_FRAME_KEY);
    expect(checkFrame(legacy, 0, KEY)).toEqual({ status: 'ok', length: legacy.length, padding: false, legacy: true });
    expect(checkFrame(legacy, 0, KEY, false)).toEqual({ status: 'corrupt', reason: 'checksum mismatch' });
    expect(decodeRecord(legacy).event.data).toEqual({ kind: 'json', value: { a: 'b' } });
  });

  it('checks padding frames with the key too', () => {
    expect(checkFrame(encodePadding(40, KEY), 0, KEY)).toEqual({ status: 'ok', length: 40, padding: true, legacy: false });
    expect(checkFrame(encodePadding(40, LEGACY_FRAME_KEY), 0, KEY, false).status).toBe('corrupt');
  });

  it('reports zero-filled space (a preallocated or torn tail) as corrupt, not as a record', () => {
    expect(checkFrame(Buffer.alloc(64), 0, KEY).status).toBe('corrupt');
  });
});

describe('stored JSON data read back', () => {
  const decoded = (value: unknown, datacontenttype?: string) =>
    decodeRecord(
      encodeRecord(
        {
          partition: 3,
          offset: 17,
          storedAt: 1,
          event: { attributes: { ...attributes, ...(datacontenttype && { datacontenttype }) }, data: { kind: 'json', value } },
        },
        KEY,
      ),
    ).event;

  it.each<[string, unknown, string | undefined, string]>([
    ['an object', { a: [1, 'two', null], é: 1.5e-7 }, 'application/json', '{"a":[1,"two",null],"é":1.5e-7}'],
    ['an array without a datacontenttype', [true, 0], undefined, '[true,0]'],
    ['null', null, 'application/json', 'null'],
    ['a JSON string under a JSON type', 'quoted "text"', 'application/json', '"quoted \\"text\\""'],
    ['a string under a text type (sent unquoted)', 'plain text', 'text/plain', 'plain text'],
  ])('is delivered in binary mode as the bytes JSON.stringify wrote: %s', (_name, value, type, body) => {
    const event = decoded(value, type);
    const message = toBinaryMessage(event);
    expect(message.body.toString('utf8')).toBe(body);
    expect(message.headers['content-type']).toBe(type ?? 'application/json');
    expect(event.data).toEqual({ kind: 'json', value });
  });

  it('keeps the stored text (not a parse and a new serialisation) for the body, and no part of the frame', () => {
    const frame = encodeRecord(record({ kind: 'json', value: { big: 'x'.repeat(100) } }), KEY);
    const event = decodeRecord(frame).event;
    const data = event.data as { text?: Buffer };
    expect(toBinaryMessage(event).body).toBe(data.text);
    frame.fill(0); // a copy: the event keeps no part of the (possibly many records long) read
    expect(JSON.parse(data.text!.toString('utf8'))).toEqual({ big: 'x'.repeat(100) });
    expect(Object.keys(event.data)).toEqual(['kind', 'value']);
  });
});
