import type { Logger } from 'pino';
import { openConnection } from '../store/db';
import { createIdempotencyRepo } from '../store/idempotency-repo';
import { createLogIndexRepo, type IndexEntry } from '../store/log-index-repo';
import type { LogReader } from './event-store';
import { POSITION_FIELDS, firstAtOrAfter, type GroupPositions, type LogSnapshot } from './log-feed';
import { createDecodedCache, createReads } from './reads';
import { openSegmentReader } from './segment-log';

/** A committed group as the tail holds it; `frames` (its bytes) go first, when the bound needs room. */
interface TailGroup {
  end: number;
  count: number[];
  records: number;
  start: number;
  frames: Buffer | undefined;
}

interface TailRecord {
  offset: number;
  position: number;
  length: number;
  storedAt: number;
  group: TailGroup;
}

/**
 * How many indexed records the tail keeps past the indexer's confirmation: a subscription a few
 * seconds behind the head reads them from memory, not through a read transaction on `index.db`
 * (which, with the indexer committing beside it, cost ~200 µs a read: 6.5 % of the delivery thread
 * at an open-loop 3,300 events/s). About 60 bytes each.
 */
const KEEP_INDEXED = 32_768;
/**
 * Bytes of committed groups the tail keeps, newest first: a subscription that keeps up decodes fresh
 * events from them, without a read of the file (11 % of the delivery thread at an open-loop 3,300
 * events/s, one read per event). Past the bound, records are read from the file as before.
 */
const KEEP_FRAME_BYTES = 4 * 1024 * 1024;

/**
 * The committed records `index.db` does not hold yet, as the writing thread told them (its indexer's
 * tail, mirrored), and the newest `KEEP_INDEXED` it does: what `reads.ts` reads before the index.
 * Groups go once the indexer confirmed them and they are past that window, or retention deletes them.
 */
function createTailView(partitions: number) {
  const groups: TailGroup[] = [];
  /** Groups still holding their bytes, oldest first (from `framesAt`), and how many bytes they hold. */
  const withFrames: TailGroup[] = [];
  let framesAt = 0;
  let frameBytes = 0;
  const byPartition: TailRecord[][] = Array.from({ length: partitions }, () => []);
  const at = new Array<number>(partitions).fill(0);
  let indexedThrough = 0;
  let retiredThrough = 0;
  let kept = 0;

  /** First tail entry of a partition at or after `offset`, as an index into its list. */
  const seek = (partition: number, offset: number): number => firstAtOrAfter(byPartition[partition]!, at[partition]!, offset);

  function prune(): void {
    for (;;) {
      const first = groups[0];
      if (!first || first.end > indexedThrough || (kept <= KEEP_INDEXED && first.end > retiredThrough)) break;
      groups.shift();
      kept -= first.records;
      dropFrames(first);
      first.count.forEach((n, p) => (at[p]! += n));
    }
    for (let p = 0; p < partitions; p++) {
      if (at[p]! > 1024 && at[p]! * 2 > byPartition[p]!.length) {
        byPartition[p]!.splice(0, at[p]!);
        at[p] = 0;
      }
    }
  }

  function dropFrames(group: TailGroup): void {
    if (!group.frames) return;
    frameBytes -= group.frames.length;
    group.frames = undefined;
  }

  function keepFrames(group: TailGroup): void {
    if (!group.frames) return;
    withFrames.push(group);
    frameBytes += group.frames.length;
    while (frameBytes > KEEP_FRAME_BYTES && framesAt < withFrames.length) dropFrames(withFrames[framesAt++]!);
    if (framesAt > 1024 && framesAt * 2 > withFrames.length) {
      withFrames.splice(0, framesAt);
      framesAt = 0;
    }
  }

  return {
    add(committed: GroupPositions): void {
      const count = new Array<number>(partitions).fill(0);
      const n = committed.numbers;
      const f = committed.frames;
      const start = n[2] ?? 0;
      // Only bytes that span exactly the group's records are used (they always do: a group is one write).
      const fits = f !== undefined && f.length > 0 && f.length === committed.end - start;
      // A structured clone arrives as a plain Uint8Array: the decoder reads it through Buffer's methods.
      const frames = fits ? Buffer.from(f.buffer, f.byteOffset, f.byteLength) : undefined;
      const group: TailGroup = { end: committed.end, count, records: n.length / POSITION_FIELDS, start, frames };
      for (let i = 0; i < n.length; i += POSITION_FIELDS) {
        const partition = n[i]!;
        byPartition[partition]!.push({ offset: n[i + 1]!, position: n[i + 2]!, length: n[i + 3]!, storedAt: n[i + 4]!, group });
        count[partition]!++;
      }
      groups.push(group);
      kept += group.records;
      keepFrames(group);
    },
    /** The indexer wrote everything before `through`: those groups may go, past the newest kept. */
    confirm(through: number): void {
      indexedThrough = Math.max(indexedThrough, through);
      prune();
    },
    /** Retention deletes everything before `through`: no entry of it stays. */
    retire(through: number): void {
      retiredThrough = Math.max(retiredThrough, through);
      prune();
    },
    /** Lookups by source+id are not a reader's business (delivery never asks). */
    find: () => undefined,
    range(partition: number, offset: number, limit: number): IndexEntry[] {
      const from = seek(partition, offset);
      return byPartition[partition]!.slice(from, from + limit).map(entryOf);
    },
    firstOffset: (partition: number): number | undefined => byPartition[partition]![at[partition]!]?.offset,
    firstOffsetAt(partition: number, atMs: number): number | undefined {
      const list = byPartition[partition]!;
      for (let i = at[partition]!; i < list.length; i++) if (list[i]!.storedAt >= atMs) return list[i]!.offset;
      return undefined;
    },
  };
}

/** A tail record as an index entry, with its bytes while its group still holds them. */
function entryOf(r: TailRecord): IndexEntry {
  const frames = r.group.frames;
  const at = r.position - r.group.start;
  return { offset: r.offset, position: r.position, length: r.length, bytes: frames?.subarray(at, at + r.length) };
}

/**
 * Stored bytes of the records kept decoded for the thread's subscriptions to share while several
 * read the log: enough for them to read the same recent events from one decode while they keep up,
 * small beside the thread's heap.
 */
const DECODED_CACHE_BYTES = 4 * 1024 * 1024;

/**
 * A read-only view of the log for a thread that does not write it (the delivery thread): its own
 * file descriptors on the segments, its own read connection to `index.db`, and the unindexed tail as
 * the writing thread tells it (`committed`, `indexed`). Reads are `reads.ts`'s, verified the same
 * way. Retention reaches it before anything is deleted (`retire`): reads stop below the new first
 * offsets and the old segments' descriptors close.
 */
export function openLogReader(snapshot: LogSnapshot, log: Logger) {
  const segments = openSegmentReader({ dir: snapshot.walDir, bases: snapshot.segmentBases });
  const indexDb = openConnection(snapshot.indexDbFile);
  indexDb.pragma('query_only = ON');
  const heads = [...snapshot.heads];
  const firstOffsets = [...snapshot.firstOffsets];
  const tail = createTailView(snapshot.partitions);
  // Off until a second reader shares it: with one subscription it would only keep garbage alive longer.
  const decoded = createDecodedCache({ maxBytes: 0 });
  for (const group of snapshot.tail) tail.add(group);
  const appendListeners = new Set<(partitions: ReadonlySet<number>) => void>();
  const retireListeners = new Set<(firstOffsets: readonly number[]) => void>();
  const reads = createReads({
    segments,
    index: createLogIndexRepo(indexDb),
    idempotency: createIdempotencyRepo(indexDb),
    tail,
    heads: () => heads,
    firstOffsets: () => firstOffsets,
    log,
    decoded,
  });

  const reader: LogReader = {
    partitions: snapshot.partitions,
    read: reads.read,
    offsetAtTime: reads.offsetAtTime,
    heads: () => heads,
    firstOffsets: () => firstOffsets,
    onAppend(listener) {
      appendListeners.add(listener);
      return () => appendListeners.delete(listener);
    },
    onRetire(listener) {
      retireListeners.add(listener);
      return () => retireListeners.delete(listener);
    },
  };

  return {
    ...reader,
    /** A group was committed: readable at once; the partitions that grew are told. */
    committed(group: GroupPositions): void {
      segments.addSegment(group.segmentBase);
      tail.add(group);
      const grown = new Set<number>();
      const n = group.numbers;
      for (let i = 0; i < n.length; i += POSITION_FIELDS) {
        const partition = n[i]!;
        heads[partition] = Math.max(heads[partition]!, n[i + 1]! + 1);
        grown.add(partition);
      }
      for (const listener of appendListeners) listener(grown);
    },
    indexed: (through: number) => tail.confirm(through),
    /** How many subscriptions read the log: decoded records are kept for them to share when more than one do. */
    readers(count: number): void {
      decoded.resize(count > 1 ? DECODED_CACHE_BYTES : 0);
    },
    /**
     * Retention deletes everything before log position `through`: first offsets move (listeners are
     * told, as the store tells its own), then the old segments' descriptors close.
     */
    retire(through: number, next: readonly number[]): void {
      next.forEach((first, p) => (firstOffsets[p] = Math.max(firstOffsets[p]!, first)));
      for (const listener of retireListeners) listener(firstOffsets);
      tail.retire(through);
      segments.dropBefore(through);
    },
    close(): void {
      segments.close();
      indexDb.close();
    },
  };
}

export type LogReaderView = ReturnType<typeof openLogReader>;
