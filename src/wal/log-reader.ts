import type { Logger } from 'pino';
import { openConnection } from '../store/db';
import { markIndexDamaged } from '../store/index-check';
import { createIdempotencyRepo } from '../store/idempotency-repo';
import { createLogIndexRepo, type IndexEntry } from '../store/log-index-repo';
import type { LogReader } from './event-store';
import { POSITION_FIELDS, cutConsumedFront, firstAtOrAfter, type GroupPositions, type LogSnapshot } from './log-feed';
import { createLogWindows } from './log-windows';
import { createDecodedCache, createReads } from './reads';
import { openSegmentReader } from './segment-log';

interface TailRecord extends IndexEntry {
  storedAt: number;
}

/**
 * How many indexed records the tail keeps past the indexer's confirmation: a subscription a few
 * seconds behind the head finds them in memory, not through a read transaction on `index.db`
 * (which, with the indexer committing beside it, cost ~200 µs a read: 6.5 % of the delivery thread
 * at an open-loop 3,300 events/s). About 60 bytes each. The bytes are still read from the file, so a
 * record that changed on disk is never delivered.
 */
const KEEP_INDEXED = 32_768;

/**
 * The committed records `index.db` does not hold yet, as the writing thread told them (its indexer's
 * tail, mirrored), and the newest `KEEP_INDEXED` it does: what `reads.ts` reads before the index.
 * Groups go once the indexer confirmed them and they are past that window, or retention deletes them.
 */
function createTailView(partitions: number) {
  /** Groups in log order, from `groupsAt` (the consumed front is cut off now and then, not shifted per group). */
  const groups: { end: number; count: number[]; records: number }[] = [];
  let groupsAt = 0;
  const byPartition: TailRecord[][] = Array.from({ length: partitions }, () => []);
  const at = new Array<number>(partitions).fill(0);
  let indexedThrough = 0;
  let retiredThrough = 0;
  let kept = 0;

  /** First tail entry of a partition at or after `offset`, as an index into its list. */
  const seek = (partition: number, offset: number): number => firstAtOrAfter(byPartition[partition]!, at[partition]!, offset);

  function prune(): void {
    while (groupsAt < groups.length) {
      const first = groups[groupsAt]!;
      if (first.end > indexedThrough || (kept <= KEEP_INDEXED && first.end > retiredThrough)) break;
      groupsAt++;
      kept -= first.records;
      first.count.forEach((n, p) => (at[p]! += n));
    }
    groupsAt = cutConsumedFront(groups, groupsAt, 1024);
    for (let p = 0; p < partitions; p++) at[p] = cutConsumedFront(byPartition[p]!, at[p]!, 1024);
  }

  return {
    add(group: GroupPositions): void {
      const count = new Array<number>(partitions).fill(0);
      const n = group.numbers;
      for (let i = 0; i < n.length; i += POSITION_FIELDS) {
        const partition = n[i]!;
        byPartition[partition]!.push({ offset: n[i + 1]!, position: n[i + 2]!, length: n[i + 3]!, storedAt: n[i + 4]! });
        count[partition]!++;
      }
      const records = n.length / POSITION_FIELDS;
      groups.push({ end: group.end, count, records });
      kept += records;
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
    /** What the tail holds (tests and diagnostics); `arrays` counts entries not yet cut off the front. */
    sizes: () => ({ records: kept, arrays: groups.length + byPartition.reduce((n, list) => n + list.length, 0) }),
    /** Lookups by source+id are not a reader's business (delivery never asks). */
    find: () => undefined,
    range(partition: number, offset: number, limit: number): TailRecord[] {
      const from = seek(partition, offset);
      return byPartition[partition]!.slice(from, from + limit);
    },
    firstOffset: (partition: number): number | undefined => byPartition[partition]![at[partition]!]?.offset,
    firstOffsetAt(partition: number, atMs: number): number | undefined {
      const list = byPartition[partition]!;
      for (let i = at[partition]!; i < list.length; i++) if (list[i]!.storedAt >= atMs) return list[i]!.offset;
      return undefined;
    },
  };
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
export function openLogReader(snapshot: LogSnapshot, log: Logger, onIndexDamage?: (detail: string) => void) {
  const segments = openSegmentReader({ dir: snapshot.walDir, bases: snapshot.segmentBases, key: snapshot.frameKey });
  const indexDb = openConnection(snapshot.indexDbFile);
  indexDb.pragma('query_only = ON');
  const heads = [...snapshot.heads];
  const firstOffsets = [...snapshot.firstOffsets];
  const tail = createTailView(snapshot.partitions);
  // Off until a second reader shares it: with one subscription it would only keep garbage alive longer.
  const decoded = createDecodedCache({ maxBytes: 0 });
  for (const group of snapshot.tail) tail.add(group);
  let committedEnd = snapshot.committedEnd;
  const windows = createLogWindows({ readInto: segments.readInto, readableEnd: () => committedEnd });
  const appendListeners = new Set<(partitions: ReadonlySet<number>) => void>();
  const retireListeners = new Set<(firstOffsets: readonly number[]) => void>();
  const index = createLogIndexRepo(indexDb);
  let indexRanges = 0;
  /** What this thread's reads found wrong with index.db, if anything. */
  let damage: string | undefined;
  const reads = createReads({
    segments,
    index: {
      ...index,
      range(partition, offset, limit) {
        // Pages only: stats and seeks read one record, and a paused subscription far behind is no drain.
        if (limit > 1) indexRanges++;
        return index.range(partition, offset, limit);
      },
    },
    idempotency: createIdempotencyRepo(indexDb),
    tail,
    heads: () => heads,
    firstOffsets: () => firstOffsets,
    log,
    decoded,
    windows,
    // A record whose file cannot be reached waits (the worker reads it again), rather than being dead-lettered corrupt.
    unreachableFails: true,
    // Every read then refuses until a restart, which the marker has rebuild index.db.
    onIndexDamage: (detail) => {
      if (damage !== undefined) return;
      damage = detail;
      markIndexDamaged(snapshot.indexDbFile, detail, log);
      log.error({ damage: detail }, 'index.db is damaged: delivery stops reading; restart the gateway to rebuild it from the log');
      onIndexDamage?.(detail);
    },
    damage: () => damage,
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
      committedEnd = Math.max(committedEnd, group.end);
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
    /** Page reads (more than one record) that went to index.db so far: a reader behind the records this view keeps positions of. */
    indexReads: () => indexRanges,
    /** What its tail holds (see `createTailView`). */
    tailSizes: () => tail.sizes(),
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
      windows.dropBefore(through);
      segments.dropBefore(through);
    },
    close(): void {
      segments.close();
      indexDb.close();
    },
  };
}

export type LogReaderView = ReturnType<typeof openLogReader>;
