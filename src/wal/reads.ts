import type { Logger } from 'pino';
import { AppError } from '../errors';
import type { IdempotencyRepo } from '../store/idempotency-repo';
import type { IndexEntry, LogIndexRepo } from '../store/log-index-repo';
import type { ReadPage, StoredEvent } from './event-store';
import { idempotencyKey } from './key-filter';
import { verifyAndDecode } from './record';
import type { SegmentReads } from './segment-log';

export interface ReadsOptions {
  segments: SegmentReads;
  index: LogIndexRepo;
  idempotency: Pick<IdempotencyRepo, 'find' | 'oldest' | 'firstOffsetAt'>;
  /** Committed records not in `index` yet (the indexer's tail, or a reader's mirror of it). */
  tail: {
    find(key: string): (IndexEntry & { partition: number; offset: number }) | undefined;
    range(partition: number, offset: number, limit: number): IndexEntry[];
    firstOffset(partition: number): number | undefined;
    firstOffsetAt(partition: number, atMs: number): number | undefined;
  };
  /** Offsets durable in the log, per partition. */
  heads: () => readonly number[];
  /** Oldest offsets still stored, per partition. */
  firstOffsets: () => readonly number[];
  log: Logger;
}

const MAX_READ_SPAN = 4 * 1024 * 1024;

/**
 * Reads of committed events: SQLite for what the indexer has written, the indexer's tail for what
 * it has not (so an event is readable as soon as its 2xx is sent), nothing below the first offsets
 * (retention). Every record is checked against its checksum and its (partition, offset).
 */
export function createReads(opts: ReadsOptions) {
  const { segments, index, idempotency, tail, log } = opts;

  /** Index entries of `[from, from + limit)`: SQLite first, then the tail (which holds every later offset). */
  function entries(partition: number, from: number, limit: number): IndexEntry[] {
    const tailFirst = tail.firstOffset(partition);
    if (tailFirst !== undefined && from >= tailFirst) return tail.range(partition, from, limit);
    const rows = index.range(partition, from, limit);
    if (rows.length < limit && tailFirst !== undefined) {
      const after = rows.length > 0 ? rows[rows.length - 1]!.offset + 1 : from;
      for (const entry of tail.range(partition, after, limit - rows.length)) rows.push(entry);
    }
    return rows;
  }

  /** Verifies and decodes one record's bytes; undefined (and an error log) when they are not that record. */
  function decodeAt(partition: number, entry: IndexEntry, frame: Buffer | undefined): StoredEvent | undefined {
    const record = frame && verifyAndDecode(frame, partition, entry.offset, segments.key);
    if (record) return { partition, offset: entry.offset, storedAt: record.storedAt, event: record.event };
    log.error(
      { partition, offset: entry.offset, ...segments.locate(entry.position), length: entry.length },
      'log: corrupt record (checksum or header mismatch); it is not served',
    );
    return undefined;
  }

  function readFrame(entry: IndexEntry): Buffer | undefined {
    try {
      return segments.read(entry.position, entry.length);
    } catch {
      return undefined; // the bytes are gone (a lost range): as corrupt as a bad checksum
    }
  }

  function readPage(partition: number, list: IndexEntry[]): ReadPage {
    const events: StoredEvent[] = [];
    const first = list[0];
    const last = list[list.length - 1];
    const span = first && last ? last.position + last.length - first.position : 0;
    // A page's records are interleaved with other partitions' but close together: one read of the span
    // beats a read per record (decoding copies what it keeps, so the span buffer is dropped after).
    const spanBuf =
      first && last && list.length > 1 && span <= MAX_READ_SPAN && span > 0 && segments.sameSegment(first.position, last.position)
        ? readFrame({ offset: first.offset, position: first.position, length: span })
        : undefined;
    for (const entry of list) {
      const at = entry.position - (first?.position ?? 0);
      const frame = spanBuf ? spanBuf.subarray(at, at + entry.length) : readFrame(entry);
      const stored = decodeAt(partition, entry, frame);
      if (!stored) return { events, corruptOffset: entry.offset };
      events.push(stored);
    }
    return { events };
  }

  function read(partition: number, fromOffset: number, limit: number): ReadPage {
    const from = Math.max(fromOffset, opts.firstOffsets()[partition] ?? 0);
    const available = Math.min(limit, (opts.heads()[partition] ?? 0) - from);
    if (available <= 0) return { events: [] };
    return readPage(partition, entries(partition, from, available));
  }

  function lookup(source: string, id: string): StoredEvent | undefined {
    const inTail = tail.find(idempotencyKey(source, id));
    const found = inTail ?? idempotency.find(source, id);
    if (!found || found.offset < (opts.firstOffsets()[found.partition] ?? 0)) return undefined;
    const entry = inTail ?? index.get(found.partition, found.offset);
    if (!entry) return undefined;
    const page = readPage(found.partition, [entry]);
    if (page.corruptOffset !== undefined) {
      throw new AppError(
        'corrupt_record',
        `the stored record of this event (partition ${found.partition}, offset ${found.offset}) is corrupt and is not served`,
        { details: [{ message: `partition ${found.partition}, offset ${found.offset}: checksum mismatch` }] },
      );
    }
    return page.events[0];
  }

  /**
   * The idempotency records carry the stored time and are indexed by it: a time index over the window
   * they cover, continued by the tail. Before the oldest record kept, records may have been pruned:
   * undefined lets the caller search the log.
   */
  function offsetAtTime(partition: number, atMs: number): number | undefined {
    const head = opts.heads()[partition] ?? 0;
    const first = opts.firstOffsets()[partition] ?? 0;
    const clamp = (offset: number) => Math.max(first, Math.min(offset, head));
    const oldest = idempotency.oldest(partition);
    const tailFirst = tail.firstOffset(partition);
    if (oldest === undefined) {
      if (tailFirst === undefined) return first >= head ? head : undefined;
      if (tailFirst > first) return undefined; // older records exist, not in the window's index: search the log
      return clamp(tail.firstOffsetAt(partition, atMs) ?? head);
    }
    // Nothing was pruned before the oldest record kept when it is the partition's first.
    if (atMs <= oldest.storedAt) return oldest.offset <= first ? first : undefined;
    const offset = idempotency.firstOffsetAt(partition, atMs);
    if (offset !== undefined) return clamp(offset);
    return clamp(tail.firstOffsetAt(partition, atMs) ?? head);
  }

  return { read, lookup, offsetAtTime };
}
