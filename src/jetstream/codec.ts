import type { CloudEvent, EventData } from '../cloudevents/event';
import { AppError } from '../errors';

/**
 * The payload of one event message in a partition stream (little-endian):
 *
 *   u8 version (1) | u8 dataKind | u32 attrsLength | attributes JSON | data
 *
 * the same body as the local log's records without what JetStream already records for every
 * message (its partition is the stream, its offset the stream sequence − 1, its stored time the
 * message timestamp; the server checksums what it stores). Data is kept byte for byte, as received.
 */
const VERSION = 1;
const FIXED_BYTES = 1 + 1 + 4;
const DATA_KINDS = ['none', 'json', 'bytes', 'base64'] as const;

export function encodeEventMessage(event: CloudEvent): Buffer {
  const attrs = Buffer.from(JSON.stringify(event.attributes), 'utf8');
  const data = event.data;
  const dataBytes =
    data.kind === 'json' ? Buffer.from(JSON.stringify(data.value), 'utf8') : data.kind === 'none' ? Buffer.alloc(0) : data.bytes;
  const head = Buffer.allocUnsafe(FIXED_BYTES);
  head.writeUInt8(VERSION, 0);
  head.writeUInt8(DATA_KINDS.indexOf(data.kind), 1);
  head.writeUInt32LE(attrs.length, 2);
  return Buffer.concat([head, attrs, dataBytes]);
}

/**
 * The NATS header by which a Herald writing another message format names it (`Herald-Format: 2`).
 * This version writes format 1 without it; a message without it is format 1.
 */
export const FORMAT_HEADER = 'Herald-Format';

/**
 * The NATS header carrying when the node made the publish (epoch ms, its clock). A message stored
 * much later (a node frozen with it unsent) was past JetStream's de-duplication window: see
 * {@link publishedAtOf} and the delivery engine's late-copy check.
 */
export const PUBLISHED_AT_HEADER = 'Herald-Published-At';

/** When the message's publish was made, from {@link PUBLISHED_AT_HEADER}; undefined without one. */
export function publishedAtOf(headers: { get(name: string): string } | undefined): number | undefined {
  const value = headers?.get(PUBLISHED_AT_HEADER);
  return value && /^[0-9]{1,16}$/.test(value) ? Number(value) : undefined;
}

/** The format a message's headers name (1 without the header, or with a value that is no number). */
export function formatOf(headers: { get(name: string): string } | undefined): number {
  const value = headers?.get(FORMAT_HEADER);
  return value && /^[0-9]{1,9}$/.test(value) ? Number(value) : VERSION;
}

/**
 * An event message of a later format: a newer Herald node wrote it (a rolling upgrade), and said so
 * in {@link FORMAT_HEADER}. Not damage: it is read by an upgraded node.
 */
export class NewerFormatError extends Error {
  override name = 'NewerFormatError';
  constructor(readonly version: number) {
    super(`an event message of format ${version}, newer than this Herald reads (${VERSION})`);
  }
}

/**
 * @param format what the message's headers name ({@link formatOf})
 * @throws NewerFormatError for a message of a later format; Error when `payload` is not an event
 * message at all (never served then).
 */
export function decodeEventMessage(payload: Uint8Array, format = VERSION): CloudEvent {
  if (format > VERSION) throw new NewerFormatError(format);
  const buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (buf.length < FIXED_BYTES || buf.readUInt8(0) !== VERSION) throw new Error('not a Herald event message');
  const kind = DATA_KINDS[buf.readUInt8(1)];
  const attrsEnd = FIXED_BYTES + buf.readUInt32LE(2);
  if (kind === undefined || attrsEnd > buf.length) throw new Error('malformed Herald event message');
  const attributes = JSON.parse(buf.toString('utf8', FIXED_BYTES, attrsEnd)) as CloudEvent['attributes'];
  if (typeof attributes !== 'object' || attributes === null || typeof attributes.id !== 'string' || typeof attributes.source !== 'string')
    throw new Error('malformed Herald event message attributes');
  const rest = buf.subarray(attrsEnd);
  let data: EventData;
  switch (kind) {
    case 'json':
      data = { kind, value: JSON.parse(rest.toString('utf8')) };
      break;
    case 'bytes':
    case 'base64':
      data = { kind, bytes: Buffer.from(rest) };
      break;
    default:
      if (rest.length > 0) throw new Error('malformed Herald event message: data after an event without data');
      data = { kind: 'none' };
  }
  return { attributes, data };
}

/** A bucket value's JSON, or undefined when it is not JSON (a value written behind Herald's back). */
export function jsonOrUndefined(value: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(value).toString('utf8')) as unknown;
  } catch {
    return undefined;
  }
}

/** An idempotency record in `<prefix>_idem`: the partition claimed, then its offset (`o`) once settled. */
export interface Claim {
  p: number;
  o?: number;
  /** How many times the record was claimed again after its event was gone (absent: never); part of the publish's message id. */
  g?: number;
}

/**
 * An idempotency record as Herald wrote it.
 * @throws AppError `corrupt_record` for anything else (the bucket written behind Herald's back)
 */
export function decodeClaim(value: Uint8Array): Claim {
  const claim = jsonOrUndefined(value) as Partial<Claim> | null | undefined;
  if (
    typeof claim !== 'object' ||
    claim === null ||
    !Number.isInteger(claim.p) ||
    (claim.o !== undefined && !Number.isInteger(claim.o)) ||
    (claim.g !== undefined && !Number.isInteger(claim.g))
  )
    throw new AppError('corrupt_record', "the event's idempotency record on the cluster is not one Herald wrote");
  return claim as Claim;
}
