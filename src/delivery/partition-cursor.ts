import type { EventStore, StoredEvent } from '../log/event-store';
import type { OffsetRow } from '../store/delivery-state-repo';
import type { Pending } from './pending';

/** Where one subscription stands in one partition. Owned by its worker. */
export interface PartitionCursor {
  partition: number;
  /** Every offset below is finished. */
  committed: number;
  committedLastMatched: number | null;
  /** Next offset to examine. */
  cursor: number;
  lastMatched: number | null;
  /** Finished offsets above `committed` (ordering none), with whether they matched. */
  finished: Map<number, boolean>;
  pending: Map<number, Pending>;
  buffer: StoredEvent[];
  bufferAt: number;
}

/** Events are read from the log a page at a time: a backlog stays on disk. */
const PAGE = 64;

export function createCursor(partition: number, saved: OffsetRow | undefined): PartitionCursor {
  const committed = saved?.committedOffset ?? 0;
  const lastMatched = saved?.lastMatchedOffset ?? null;
  return { partition, committed, committedLastMatched: lastMatched, cursor: committed, lastMatched, finished: new Map(), pending: new Map(), buffer: [], bufferAt: 0 };
}

/** The stored event at the cursor, from the page buffer (refilled from the log when empty), or undefined at the head. */
export function eventAtCursor(part: PartitionCursor, store: EventStore): StoredEvent | undefined {
  if (part.bufferAt >= part.buffer.length) {
    if (part.cursor >= store.heads()[part.partition]!) return undefined;
    part.buffer = store.read(part.partition, part.cursor, PAGE);
    part.bufferAt = 0;
  }
  const event = part.buffer[part.bufferAt];
  if (event === undefined || event.offset !== part.cursor) {
    part.buffer = [];
    part.bufferAt = 0;
    return undefined;
  }
  part.bufferAt++;
  return event;
}

/**
 * Marks an offset finished and moves `committed` over every contiguous
 * finished offset. Returns the offset row to save when it moved.
 */
export function finishOffset(part: PartitionCursor, offset: number, matched: boolean): OffsetRow | undefined {
  if (offset < part.committed) return undefined;
  part.finished.set(offset, matched);
  const before = part.committed;
  while (part.finished.has(part.committed)) {
    if (part.finished.get(part.committed)) part.committedLastMatched = part.committed;
    part.finished.delete(part.committed);
    part.committed++;
  }
  if (part.committed === before) return undefined;
  return { partition: part.partition, committedOffset: part.committed, lastMatchedOffset: part.committedLastMatched };
}
