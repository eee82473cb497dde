/**
 * What the load generator sends: 1 KiB JSON data, unique ids, 64 partition keys.
 * The same bytes go to Herald and to every ceiling.
 */

export const DATA_BYTES = 1024;
export const PARTITION_KEYS = 64;
export const SOURCE = '/herald-bench';
export const TYPE = 'bench.event';

/** A JSON object whose serialisation is exactly `bytes` long. */
export function jsonData(bytes = DATA_BYTES): string {
  const skeleton = JSON.stringify({ kind: 'bench', seq: 0, pad: '' });
  const pad = 'x'.repeat(Math.max(0, bytes - skeleton.length));
  const out = JSON.stringify({ kind: 'bench', seq: 0, pad });
  if (Buffer.byteLength(out) !== bytes) throw new Error(`payload is ${Buffer.byteLength(out)} bytes, wanted ${bytes}`);
  return out;
}

export const partitionKey = (n: number): string => `key-${n % PARTITION_KEYS}`;

/** Event id: run tag, connection, sequence (and index within a batch). Parsed back by `parseId`. */
export const eventId = (tag: string, conn: number, seq: number, index?: number): string =>
  index === undefined ? `${tag}-${conn}-${seq}` : `${tag}-${conn}-${seq}-${index}`;

export function parseId(id: string): { tag: string; conn: number; seq: number; index?: number } | undefined {
  const m = /^(.+?)-(\d+)-(\d+)(?:-(\d+))?$/.exec(id);
  if (!m) return undefined;
  return { tag: m[1]!, conn: Number(m[2]), seq: Number(m[3]), index: m[4] === undefined ? undefined : Number(m[4]) };
}

/** One event of a `application/cloudevents-batch+json` array, `data` pasted in as raw JSON. */
export function structuredEvent(id: string, key: string, data: string): string {
  return `{"specversion":"1.0","id":"${id}","source":"${SOURCE}","type":"${TYPE}","partitionkey":"${key}","datacontenttype":"application/json","data":${data}}`;
}
