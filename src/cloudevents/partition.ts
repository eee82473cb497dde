import { crc32 } from 'node:zlib';
import { CloudEvent } from './event';

/**
 * Partition of an event: CRC-32 (IEEE, as zlib/PNG) of the UTF-8 `partitionkey`
 * modulo the partition count; without a key, of `source` + NUL + `id`, which
 * spreads unrelated events evenly. Stable across versions and platforms.
 * @see cloudevents/extensions/partitioning.md
 */
export function partitionOf(event: CloudEvent, partitions: number): number {
  const key = event.attributes.partitionkey;
  const material = key !== undefined ? String(key) : `${event.attributes.source as string}\u0000${event.attributes.id as string}`;
  return crc32(Buffer.from(material, 'utf8')) % partitions;
}
