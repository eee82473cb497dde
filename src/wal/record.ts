import { crc32 } from 'node:zlib';
import { storedJson, type CloudEvent, type EventData } from '../cloudevents/event';

/**
 * On-disk record frame (little-endian):
 *
 *   u32 bodyLength | u32 crc32(bodyLength bytes ++ body, seeded with the log's key) | body
 *   body = u8 version | u8 dataKind | u16 partition | f64 offset | f64 storedAt | u32 attrsLength | attrs JSON | data
 *
 * Version 2 (written now) seeds the checksum with a secret random key kept
 * beside the segments (`wal/frame.key`). Event data is stored byte for byte,
 * so a producer can put a well-formed frame inside its data; without the key
 * it cannot give that frame a valid checksum, so recovery, which looks for the
 * next intact frame after damage, never mistakes event bytes for a record.
 * Version 1 (logs written before) has an unseeded checksum and is still read.
 *
 * A padding frame (version {@link PADDING_VERSION}, any body after it) holds no
 * event: recovery writes one over unreadable bytes it was allowed to set aside
 * (`HERALD_RECOVERY=skip-corrupt`), so positions after it stay where they were.
 *
 * The checksum covers the length too, so a torn length is caught as surely as a
 * torn body. Offsets are f64: exact up to 2^53, far beyond any real partition.
 */
export const FRAME_HEADER_BYTES = 8;
const BODY_FIXED_BYTES = 1 + 1 + 2 + 8 + 8 + 4;
const VERSION = 2;
const LEGACY_VERSION = 1;
export const PADDING_VERSION = 0xff;

/** The log's checksum seed; `LEGACY_FRAME_KEY` writes version-1 frames (tests of old logs only). */
export interface FrameKey {
  seed: number;
  version: number;
}

/** A key from the log's 16 secret bytes. */
export function frameKey(secret: Buffer): FrameKey {
  return { seed: crc32(secret), version: VERSION };
}

export const LEGACY_FRAME_KEY: FrameKey = Object.freeze({ seed: 0, version: LEGACY_VERSION });
/** The smallest frame: a padding frame whose body is its version byte alone. */
export const MIN_FRAME_BYTES = FRAME_HEADER_BYTES + 1;
/** Anything longer is garbage, not a record: no request body can be this large. */
export const MAX_RECORD_BYTES = 512 * 1024 * 1024;

const DATA_KINDS = ['none', 'json', 'bytes', 'base64'] as const;

export interface LogRecord {
  partition: number;
  offset: number;
  storedAt: number;
  event: CloudEvent;
}

export function encodeRecord(record: LogRecord, key: FrameKey): Buffer {
  // Strings are measured and written straight into the one frame buffer: no intermediate buffers to
  // allocate, copy and collect (the encoder is on the ingest thread, once per event).
  const attrs = JSON.stringify(record.event.attributes);
  const attrsLength = Buffer.byteLength(attrs, 'utf8');
  const data = record.event.data;
  const dataText = data.kind === 'json' ? JSON.stringify(data.value) : undefined;
  const dataBytes = data.kind === 'bytes' || data.kind === 'base64' ? data.bytes : undefined;
  const dataLength = dataText !== undefined ? Buffer.byteLength(dataText, 'utf8') : (dataBytes?.length ?? 0);
  const bodyLength = BODY_FIXED_BYTES + attrsLength + dataLength;
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + bodyLength);
  frame.writeUInt32LE(bodyLength, 0);
  let at = FRAME_HEADER_BYTES;
  at = frame.writeUInt8(key.version, at);
  at = frame.writeUInt8(DATA_KINDS.indexOf(data.kind), at);
  at = frame.writeUInt16LE(record.partition, at);
  at = frame.writeDoubleLE(record.offset, at);
  at = frame.writeDoubleLE(record.storedAt, at);
  at = frame.writeUInt32LE(attrsLength, at);
  at += frame.write(attrs, at, attrsLength, 'utf8');
  if (dataText !== undefined) frame.write(dataText, at, dataLength, 'utf8');
  else dataBytes?.copy(frame, at);
  frame.writeUInt32LE(checksum(frame, bodyLength, key.seed), 4);
  return frame;
}

function checksum(frame: Buffer, bodyLength: number, seed: number): number {
  const lengthCrc = crc32(frame.subarray(0, 4), seed);
  return crc32(frame.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + bodyLength), lengthCrc);
}

export type FrameCheck =
  | { status: 'ok'; length: number; padding: boolean; legacy: boolean }
  | { status: 'incomplete' }
  | { status: 'corrupt'; reason: string }
  /** Intact (its checksum verifies under the log's key) but of a later format: a newer Herald wrote it. */
  | { status: 'newer'; version: number };

/**
 * Checks the frame that starts at `at` in `buf` without decoding it. A frame
 * checksummed with `key` is version 2 (or padding); with `allowLegacy`, an
 * unseeded version-1 frame is accepted too. Recovery's search for the next
 * record after damage allows legacy frames only in segments written before
 * the key existed, where no producer can have planted one that passes.
 */
export function checkFrame(buf: Buffer, at: number, key: FrameKey, allowLegacy = true): FrameCheck {
  if (buf.length - at < FRAME_HEADER_BYTES) return { status: 'incomplete' };
  const bodyLength = buf.readUInt32LE(at);
  if (bodyLength < 1 || bodyLength > MAX_RECORD_BYTES) return { status: 'corrupt', reason: `implausible length ${bodyLength}` };
  const length = FRAME_HEADER_BYTES + bodyLength;
  if (buf.length - at < length) return { status: 'incomplete' };
  const frame = buf.subarray(at, at + length);
  const stored = frame.readUInt32LE(4);
  const version = frame.readUInt8(FRAME_HEADER_BYTES);
  if (checksum(frame, bodyLength, key.seed) === stored) {
    if (version === PADDING_VERSION) return { status: 'ok', length, padding: true, legacy: false };
    if (version === key.version && bodyLength >= BODY_FIXED_BYTES) return { status: 'ok', length, padding: false, legacy: key.seed === 0 };
    // Only a writer holding the key makes this checksum: a later format, never torn bytes to cut.
    if (version > key.version && key.seed !== 0) return { status: 'newer', version };
    return { status: 'corrupt', reason: 'unknown record version' };
  }
  if (allowLegacy && key.seed !== 0 && checksum(frame, bodyLength, 0) === stored) {
    if (version === LEGACY_VERSION && bodyLength >= BODY_FIXED_BYTES) return { status: 'ok', length, padding: false, legacy: true };
    return { status: 'corrupt', reason: 'unknown record version' };
  }
  return { status: 'corrupt', reason: 'checksum mismatch' };
}

/** A frame that holds no event and covers exactly `length` bytes (at least {@link MIN_FRAME_BYTES}). */
export function encodePadding(length: number, key: FrameKey): Buffer {
  if (length < MIN_FRAME_BYTES) throw new RangeError(`a padding frame needs at least ${MIN_FRAME_BYTES} bytes`);
  const frame = Buffer.alloc(length);
  const bodyLength = length - FRAME_HEADER_BYTES;
  frame.writeUInt32LE(bodyLength, 0);
  frame.writeUInt8(PADDING_VERSION, FRAME_HEADER_BYTES);
  frame.writeUInt32LE(checksum(frame, bodyLength, key.seed), 4);
  return frame;
}

/**
 * Verifies that `frame` is one intact event record of `partition` at `offset`
 * (what the index says lies there) and decodes it; undefined when it is not.
 * Every read goes through this: a record whose bytes changed is never served.
 */
export function verifyAndDecode(frame: Buffer, partition: number, offset: number, key: FrameKey): LogRecord | undefined {
  const place = intactRecordPlace(frame, key);
  if (place?.partition !== partition || place.offset !== offset) return undefined;
  try {
    return decodeRecord(frame);
  } catch {
    return undefined;
  }
}

/**
 * Where an intact record says it belongs, for a frame {@link verifyAndDecode} refused: undefined when the
 * bytes are not an intact record (a bad checksum, padding, a cut frame). An intact record found where the
 * index said another offset lies means the index is wrong, not the log.
 */
export function intactRecordPlace(frame: Buffer, key: FrameKey): { partition: number; offset: number } | undefined {
  const check = checkFrame(frame, 0, key);
  if (check.status !== 'ok' || check.padding || check.length !== frame.length) return undefined;
  const { partition, offset } = readFixed(frame);
  return { partition, offset };
}

/** The fixed part of a body, and where the attributes JSON lies, shared by both decoders. */
function readFixed(frame: Buffer) {
  const at = FRAME_HEADER_BYTES;
  const attrsStart = at + BODY_FIXED_BYTES;
  return {
    kind: DATA_KINDS[frame.readUInt8(at + 1)],
    partition: frame.readUInt16LE(at + 2),
    offset: frame.readDoubleLE(at + 4),
    storedAt: frame.readDoubleLE(at + 12),
    attrsStart,
    attrsEnd: attrsStart + frame.readUInt32LE(at + 20),
  };
}

/** Decodes a frame already known to be an intact event record (`checkFrame` said ok and not padding). */
export function decodeRecord(frame: Buffer): LogRecord {
  const { kind, partition, offset, storedAt, attrsStart, attrsEnd } = readFixed(frame);
  const attributes = JSON.parse(frame.toString('utf8', attrsStart, attrsEnd));
  const dataBytes = frame.subarray(attrsEnd);
  let data: EventData;
  switch (kind) {
    case 'json':
      // A copy, required: the frame may be a span of many records, which the event must not keep alive, or a
      // window of the log whose buffer is read into again (log-windows.ts).
      data = storedJson(Buffer.from(dataBytes));
      break;
    case 'bytes':
    case 'base64':
      data = { kind, bytes: Buffer.from(dataBytes) };
      break;
    default:
      data = { kind: 'none' };
  }
  return { partition, offset, storedAt, event: { attributes, data } };
}

/** Partition, offset, storedAt and the idempotency key, without parsing the data. */
export function decodeRecordHeader(frame: Buffer): { partition: number; offset: number; storedAt: number; source: string; id: string } {
  const { partition, offset, storedAt, attrsStart, attrsEnd } = readFixed(frame);
  const attributes = JSON.parse(frame.toString('utf8', attrsStart, attrsEnd)) as { source: string; id: string };
  return { partition, offset, storedAt, source: attributes.source, id: attributes.id };
}
