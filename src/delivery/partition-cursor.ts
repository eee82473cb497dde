import type { EventStore, StoredEvent } from '../wal/event-store';
import type { OffsetRow } from '../store/delivery-state-repo';
import { createPageBudget, type PageBudget } from './page-budget';
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
  /** Seek generation of this position (issue 12 §2): part of every webhook-id in the partition. */
  generation: number;
  /** After `herald restore`: offsets below `below` keep generation `generation` (see {@link generationAt}). */
  kept?: { generation: number; below: number };
  /** Running total of events retention deleted before they were finished here (see `expireCursor`). */
  expired: number;
  /** Finished offsets above `committed` (ordering none), with whether they matched. */
  finished: Map<number, boolean>;
  pending: Map<number, Pending>;
  buffer: StoredEvent[];
  bufferAt: number;
  /** The corrupt record that ended the buffered page, if one did. */
  bufferCorrupt?: number;
  /** The delivery thread's memory for pages, and what the buffered page is charged there. */
  pages: PageBudget;
  bufferCharge: number;
}

/**
 * What the cursor finds next: an event; a record that fails its checksum;
 * or offsets `[from, to)` whose records are not in the log (lost after a
 * power cut or set aside by recovery), which must be skipped, never waited for.
 */
export type CursorItem =
  { kind: 'event'; event: StoredEvent } | { kind: 'corrupt'; offset: number } | { kind: 'missing'; from: number; to: number };

/** Cursors made without a thread's budget (tests, tools): full pages always. */
const UNBOUNDED = createPageBudget(Number.POSITIVE_INFINITY);

export function createCursor(partition: number, saved: OffsetRow | undefined, pages: PageBudget = UNBOUNDED): PartitionCursor {
  const committed = saved?.committedOffset ?? 0;
  const lastMatched = saved?.lastMatchedOffset ?? null;
  return {
    partition,
    committed,
    committedLastMatched: lastMatched,
    cursor: committed,
    lastMatched,
    generation: saved?.seekGeneration ?? 0,
    ...(saved?.keptGeneration != null && saved.keptBelow != null
      ? { kept: { generation: saved.keptGeneration, below: saved.keptBelow } }
      : {}),
    expired: saved?.expired ?? 0,
    finished: new Map(),
    pending: new Map(),
    buffer: [],
    bufferAt: 0,
    pages,
    bufferCharge: 0,
  };
}

/**
 * The seek generation of `offset`'s webhook-id: the position's, except below a restore's kept bound,
 * where the events the backup held keep the ids they were delivered with.
 */
export function generationAt(part: PartitionCursor, offset: number): number {
  return part.kept !== undefined && offset < part.kept.below ? part.kept.generation : part.generation;
}

/**
 * What lies at the cursor, from the page buffer (refilled from the log when
 * empty), or undefined at the head. Does not move the cursor. Events are read
 * from the log a page at a time, as large as the thread's page budget allows
 * (see `createPageBudget`): a backlog stays on disk.
 */
export function itemAtCursor(part: PartitionCursor, store: Pick<EventStore, 'read' | 'heads'>): CursorItem | undefined {
  const head = store.heads()[part.partition]!;
  for (;;) {
    const event = part.buffer[part.bufferAt];
    if (event !== undefined) {
      if (event.offset < part.cursor) {
        part.bufferAt++;
        continue;
      }
      if (event.offset === part.cursor) return { kind: 'event', event };
      return { kind: 'missing', from: part.cursor, to: event.offset };
    }
    const corrupt = part.bufferCorrupt;
    if (corrupt !== undefined && corrupt >= part.cursor) {
      return corrupt === part.cursor ? { kind: 'corrupt', offset: corrupt } : { kind: 'missing', from: part.cursor, to: corrupt };
    }
    // Every event buffered lies behind the cursor: the page is let go of now, not at the next read
    // (a caught-up cursor kept its last page, charged to the budget, until more events came).
    if (part.bufferAt > 0 || part.buffer.length > 0 || corrupt !== undefined) clearBuffer(part);
    if (part.cursor >= head) return undefined;
    const next = part.pages.nextPage();
    const page = store.read(part.partition, part.cursor, next.events, next.bytes);
    if (page.events.length === 0 && page.corruptOffset === undefined) return { kind: 'missing', from: part.cursor, to: head };
    part.buffer = page.events;
    part.bufferAt = 0;
    part.bufferCorrupt = page.corruptOffset;
    part.bufferCharge = part.pages.take(page.bytes ?? 0, page.events.length);
  }
}

/**
 * Moves the position to `offset` (backwards or forwards) under a new seek generation: nothing above
 * it is finished, and the chain of `herald-previous-offset` starts again (the first delivery after a
 * seek carries none). The caller drops the partition's pending deliveries.
 */
export function seekCursor(part: PartitionCursor, offset: number, generation: number): void {
  part.committed = offset;
  part.cursor = offset;
  part.committedLastMatched = null;
  part.lastMatched = null;
  part.generation = generation;
  part.kept = undefined; // a replay after a seek gets new ids, kept ones too
  part.finished.clear();
  part.pending.clear();
  clearBuffer(part);
}

/**
 * The row to save for the committed position. It always carries the expired total: the dispatcher
 * keeps only the latest row of a partition per flush, so a row without it could drop a count.
 */
export function offsetRow(part: PartitionCursor): OffsetRow {
  return {
    partition: part.partition,
    committedOffset: part.committed,
    lastMatchedOffset: part.committedLastMatched,
    expired: part.expired,
  };
}

/** What `expireCursor` did: how many unfinished offsets it moved past, and the row to save. */
export interface Expiry {
  expired: number;
  row: OffsetRow;
}

/**
 * Retention deleted the partition's offsets below `first`. When `committed` is below it, the position
 * moves past them the way `skipRange` does: `committed` to `first` (and on over offsets finished from
 * there), the cursor too when it was behind, the page buffer cleared. The offsets of `[committed,
 * first)` that were not finished (not in `finished`; pending ones included) are counted, added to
 * `expired` and returned. Where the chain of `herald-previous-offset` crossed deleted events, it
 * names the last of them (`first - 1`): whether they matched cannot be known any more, and a
 * receiver that never had that offset sees the gap (retention probe: the chain started again, with
 * no header, and a receiver could not tell events lost to retention from a first delivery).
 *
 * Pending deliveries of expired offsets stay in `pending` for the caller: when one finishes after
 * all, `finishOffset` ignores it (it is below `committed`). Undefined when nothing was below `first`.
 */
export function expireCursor(part: PartitionCursor, first: number): Expiry | undefined {
  if (part.committed >= first) return undefined;
  let finishedBelow = 0;
  for (const offset of part.finished.keys()) {
    if (offset < first) {
      part.finished.delete(offset);
      finishedBelow++;
    }
  }
  const expired = first - part.committed - finishedBelow;
  part.committed = first;
  part.committedLastMatched = first - 1;
  while (part.finished.has(part.committed)) {
    if (part.finished.get(part.committed)) part.committedLastMatched = part.committed;
    part.finished.delete(part.committed);
    part.committed++;
  }
  if (part.cursor < part.committed) {
    part.cursor = part.committed;
    part.lastMatched = part.committedLastMatched;
  }
  clearBuffer(part);
  part.expired += expired;
  return { expired, row: offsetRow(part) };
}

/** Lets go of the buffered page (read again from the log when needed), giving back its charge. */
export function clearBuffer(part: PartitionCursor): void {
  part.buffer = [];
  part.bufferAt = 0;
  part.bufferCorrupt = undefined;
  part.pages.give(part.bufferCharge);
  part.bufferCharge = 0;
}

/**
 * Marks an offset finished and moves `committed` over every contiguous
 * finished offset. Returns the offset row to save when it moved.
 */
export function finishOffset(part: PartitionCursor, offset: number, matched: boolean): OffsetRow | undefined {
  return advanceOffset(part, offset, matched) ? offsetRow(part) : undefined;
}

/**
 * `finishOffset` without building the row: whether `committed` moved. A caller finishing a run of
 * offsets (filtered-out events skipped in one turn) saves `offsetRow(part)` once at its end, the same
 * row the last `finishOffset` that moved would have returned.
 */
export function advanceOffset(part: PartitionCursor, offset: number, matched: boolean): boolean {
  if (offset < part.committed) return false;
  if (offset === part.committed && part.finished.size === 0) {
    // The common case (nothing finished out of order): no map to go through.
    if (matched) part.committedLastMatched = offset;
    part.committed++;
    return true;
  }
  part.finished.set(offset, matched);
  const before = part.committed;
  while (part.finished.has(part.committed)) {
    if (part.finished.get(part.committed)) part.committedLastMatched = part.committed;
    part.finished.delete(part.committed);
    part.committed++;
  }
  return part.committed !== before;
}

/**
 * Marks `[from, to)` finished unmatched (offsets with no record). When nothing is unfinished below
 * `from` the committed offset jumps in one step, whatever the size of the gap (a forged or huge
 * gap must not become a loop per offset); otherwise each offset is marked as by `finishOffset`.
 */
export function skipRange(part: PartitionCursor, from: number, to: number): OffsetRow | undefined {
  if (to <= part.committed) return undefined;
  if (from <= part.committed) {
    for (const offset of part.finished.keys()) if (offset < to) part.finished.delete(offset);
    part.committed = to;
    while (part.finished.has(part.committed)) {
      if (part.finished.get(part.committed)) part.committedLastMatched = part.committed;
      part.finished.delete(part.committed);
      part.committed++;
    }
    return offsetRow(part);
  }
  let row: OffsetRow | undefined;
  for (let offset = from; offset < to; offset++) row = finishOffset(part, offset, false) ?? row;
  return row;
}
