import { AppError, MAX_PROBLEM_ERRORS, type Violation } from '../errors';
import type { EventStore } from '../wal/event-store';
import type { SeekTarget } from '../subscriptions/seek-schema';

/** A partition's new position. */
export interface SeekPosition {
  partition: number;
  offset: number;
}

/** A store's first offsets, with stores that delete nothing (no `firstOffsets`) answering 0. */
type FirstOffsets = Partial<Pick<EventStore, 'firstOffsets'>>;

/** Problems named in a refused seek's `detail` (all of them, up to MAX_PROBLEM_ERRORS, are in `errors`). */
const DETAIL_PROBLEMS = 3;

const firstOffsetOf = (store: FirstOffsets, partition: number): number => store.firstOffsets?.()[partition] ?? 0;

/**
 * The first offset of a partition whose event was stored at or after `atMs`, or the head when none
 * was; never below the partition's first offset (retention deleted what was before). A binary
 * search over the partition's offsets by `storedAt`: O(log n) single-record reads, each an index
 * lookup and one record read, so a seek over a large log reads a few dozen records per partition. `storedAt` is taken as non-decreasing along a partition (the append clock; a wall clock
 * stepped backwards makes the answer one of the plausible offsets, not necessarily the first).
 * Offsets with no record (a gap) are skipped by the read; a corrupt record is stepped over, reading
 * on from the next offset; the answer is always an intact event's offset or the head.
 */
export function offsetAtTime(
  store: Pick<EventStore, 'read' | 'heads' | 'offsetAtTime'> & FirstOffsets,
  partition: number,
  atMs: number,
): number {
  const head = store.heads()[partition] ?? 0;
  const first = Math.min(firstOffsetOf(store, partition), head);
  // The store's time index, where it covers the time (one indexed query instead of a search of the log).
  const indexed = store.offsetAtTime?.(partition, atMs);
  if (indexed !== undefined) return Math.max(indexed, first);
  let lo = first;
  let hi = head;
  while (lo < hi) {
    const mid = lo + Math.floor((hi - lo) / 2);
    const found = firstReadable(store, partition, mid, hi);
    if (found === undefined || found.storedAt >= atMs) hi = mid;
    else lo = found.offset + 1;
  }
  // Every event below `lo` is older and every one from it on is not: the answer is the first event
  // at or after `lo` (past a gap or a corrupt record there, which the cursor would otherwise meet).
  return firstReadable(store, partition, lo, head)?.offset ?? head;
}

/** The first intact event in `[from, to)`, stepping over corrupt records; undefined when there is none. */
function firstReadable(store: Pick<EventStore, 'read'>, partition: number, from: number, to: number) {
  for (let at = from; at < to;) {
    const page = store.read(partition, at, 1);
    const event = page.events[0];
    if (event) return event.offset < to ? event : undefined;
    if (page.corruptOffset === undefined) return undefined;
    at = page.corruptOffset + 1;
  }
  return undefined;
}

/**
 * The positions a seek target means, per partition: `earliest` is the first offset retention has
 * kept, `latest` the head, a time the first event stored at or after it, `offsets` the named
 * partitions only. An offset (or time) before the first offset means the first offset: what
 * retention deleted is not there to replay (and a seek never counts it as expired).
 * @throws AppError `invalid_request` naming each partition that does not exist or offset past `headOffset`
 */
export function seekPositions(
  store: Pick<EventStore, 'read' | 'heads' | 'partitions' | 'offsetAtTime'> & FirstOffsets,
  target: SeekTarget,
): SeekPosition[] {
  const heads = store.heads();
  const all = Array.from({ length: store.partitions }, (_, partition) => partition);
  const first = (partition: number) => Math.min(firstOffsetOf(store, partition), heads[partition]!);
  if ('to' in target)
    return all.map((partition) => ({ partition, offset: target.to === 'earliest' ? first(partition) : heads[partition]! }));
  if ('time' in target) return all.map((partition) => ({ partition, offset: offsetAtTime(store, partition, target.time) }));
  const problems: Violation[] = [];
  const positions: SeekPosition[] = [];
  for (const [key, offset] of Object.entries(target.offsets)) {
    const partition = Number(key);
    const attribute = `offsets.${key}`;
    if (!/^(0|[1-9]\d*)$/.test(key) || partition >= store.partitions) {
      problems.push({ attribute, message: `there is no partition ${key} (partitions are 0 to ${store.partitions - 1})` });
    } else if (offset > heads[partition]!) {
      problems.push({
        attribute,
        // Any offset up to the head is taken (one below the first offset kept means that first offset).
        message: `offset ${offset} is past partition ${key}'s head: offsets 0 to ${heads[partition]} can be sought`,
      });
    } else {
      positions.push({ partition, offset: Math.max(offset, first(partition)) });
    }
  }
  if (problems.length > 0) {
    // Bounded whatever the request named: the detail shows a few, the list at most MAX_PROBLEM_ERRORS with the total.
    const shown = problems.slice(0, DETAIL_PROBLEMS).map((p) => `${p.attribute}: ${p.message}`);
    if (problems.length > DETAIL_PROBLEMS) shown.push(`and ${problems.length - DETAIL_PROBLEMS} more`);
    throw new AppError('invalid_request', `the seek is not valid: ${shown.join('; ')}`, {
      details: problems.slice(0, MAX_PROBLEM_ERRORS),
      totalErrors: problems.length,
    });
  }
  return positions;
}
