import type { Logger } from 'pino';
import { eventId, eventSource, type CloudEvent } from '../cloudevents/event';
import { partitionOf } from '../cloudevents/partition';
import { AppError, coerceError } from '../errors';
import type { IdempotencyRepo } from '../store/idempotency-repo';
import { isRetired, type AppendResult } from './event-store';
import type { BuiltKeyFilter, Indexer } from './indexer';
import { idempotencyKey, keyFilterFrom, type KeyFilter } from './key-filter';
import { encodeRecord, type FrameKey } from './record';

/** A framed record waiting for its group's commit. */
export interface PendingEntry {
  source: string;
  id: string;
  key: string;
  partition: number;
  offset: number;
  storedAt: number;
  frame: Buffer;
}

export interface SequencerOptions {
  partitions: number;
  /** Next offset per partition, as recovery left them. */
  heads: number[];
  key: FrameKey;
  clock: () => number;
  idempotency: IdempotencyRepo;
  tail: Pick<Indexer, 'find' | 'range' | 'firstOffset'>;
  /** Per partition, the lowest offset still stored (retention deleted those below). */
  firstOffsets: () => readonly number[];
  /** Builds the key filter's bits off this thread (the indexer's worker); undefined: abandoned. */
  buildKeyFilter: (log2Bits: number, hashes: number) => Promise<BuiltKeyFilter | undefined>;
  log: Logger;
}

/** The first filter, before the worker has counted the keys: 2^24 bits (2 MiB) hold 1.7 million keys. */
const FIRST_KEY_FILTER_LOG2_BITS = 24;
const MIN_KEY_FILTER_LOG2_BITS = 24;
const MAX_KEY_FILTER_LOG2_BITS = 30;
const KEY_FILTER_HASHES = 7;
/** Keys added while a build is outstanding are kept for it up to this many; past it the build is abandoned. */
const MAX_KEYS_SINCE_ASKED = 2_000_000;
/** An abandoned build is asked again after this long, doubling (up to the maximum) while builds keep failing. */
const KEY_FILTER_RETRY_MS = 1_000;
const MAX_KEY_FILTER_RETRY_MS = 60_000;

/** The filter size for twice `keys` keys at about 1 % false positives. */
function keyFilterLog2Bits(keys: number): number {
  const wanted = Math.max(1, keys * 2 * 9.6);
  return Math.min(MAX_KEY_FILTER_LOG2_BITS, Math.max(MIN_KEY_FILTER_LOG2_BITS, Math.ceil(Math.log2(wanted))));
}

/** An outstanding key filter build: the keys added since it was asked for (undefined: too many, abandoned). */
interface KeyFilterRequest {
  since: string[] | undefined;
}

/**
 * The duplicate check and offset assignment. An event is a duplicate of one in the same request, in
 * a group not yet committed (the second send waits for that group), in the indexer's tail, or in
 * SQLite: in that order, so every event acknowledged so far is seen whatever the indexer's lag. A
 * Bloom filter over every key keeps most new events from asking SQLite at all.
 */
export function createSequencer(opts: SequencerOptions) {
  const { idempotency, tail } = opts;
  /** Offsets durable in the log: readers see up to here. */
  const committedHeads = opts.heads.slice();
  /** Next offset to assign (ahead of committedHeads by the groups not yet committed). */
  let heads = opts.heads.slice();
  const pendingKeys = new Map<string, { entry: PendingEntry; done: Promise<void> }>();
  let keyFilter: KeyFilter | undefined;
  let building: KeyFilterRequest | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let retryMs = KEY_FILTER_RETRY_MS;
  const builtWaiters: ((ready: boolean) => void)[] = [];
  let stopped = false;

  /** The earlier store of `key`, if any: where it is and, while its group is not committed, what to wait for. */
  function earlier(key: string, source: string, id: string): { partition: number; offset: number; done?: Promise<void> } | undefined {
    const pending = pendingKeys.get(key);
    if (pending) return { partition: pending.entry.partition, offset: pending.entry.offset, done: pending.done };
    const inTail = tail.find(key);
    if (inTail) return stillStored(inTail);
    // A Bloom filter miss means never seen: skip SQLite. A hit (or no filter yet) asks SQLite.
    if (keyFilter && !keyFilter.mightContain(key)) return undefined;
    return stillStored(idempotency.find(source, id));
  }

  /** A row of an event retention deleted names nothing: a resend is stored again as new (never a duplicate of nothing). */
  function stillStored<T extends { partition: number; offset: number }>(found: T | undefined): T | undefined {
    return found && !isRetired(opts.firstOffsets(), found) ? found : undefined;
  }

  /**
   * Answers duplicates and frames the new events of one request. An offset is taken only once its
   * record is built; if a later event fails, the offsets of the earlier ones are given back (none burnt).
   */
  function prepare(events: CloudEvent[]): { results: AppendResult[]; added: PendingEntry[]; waitFor: Set<Promise<void>> } {
    const storedAt = opts.clock();
    const results: AppendResult[] = [];
    const added: PendingEntry[] = [];
    const waitFor = new Set<Promise<void>>();
    const inRequest = new Map<string, PendingEntry>();
    try {
      for (const event of events) {
        const source = eventSource(event);
        const id = eventId(event);
        const key = idempotencyKey(source, id);
        const found = inRequest.get(key) ?? earlier(key, source, id);
        if (found) {
          if ('done' in found && found.done) waitFor.add(found.done);
          results.push({ id, source, partition: found.partition, offset: found.offset, duplicate: true });
          continue;
        }
        const partition = partitionOf(event, opts.partitions);
        const offset = heads[partition]!;
        const frame = encode(events, event, { partition, offset, storedAt });
        heads[partition] = offset + 1;
        const entry: PendingEntry = { source, id, key, partition, offset, storedAt, frame };
        added.push(entry);
        inRequest.set(key, entry);
        results.push({ id, source, partition, offset, duplicate: false });
      }
    } catch (err) {
      for (let i = added.length - 1; i >= 0; i--) heads[added[i]!.partition] = added[i]!.offset;
      throw err;
    }
    if (added.length > 0) {
      if (keyFilter) for (const entry of added) keyFilter.add(entry.key);
      if (building?.since) {
        const since = building.since;
        for (const entry of added) since.push(entry.key);
        // Unbounded, it would hold every key of a long build: give this one up and ask again later.
        if (since.length > MAX_KEYS_SINCE_ASKED) {
          building.since = undefined;
          opts.log.warn({ keys: since.length }, 'key filter: too many keys arrived during its build; it is given up and asked for again');
        }
      }
      if (keyFilter && outgrown(keyFilter)) buildKeyFilter();
    }
    return { results, added, waitFor };
  }

  function encode(events: CloudEvent[], event: CloudEvent, at: { partition: number; offset: number; storedAt: number }): Buffer {
    try {
      return encodeRecord({ ...at, event }, opts.key);
    } catch (err) {
      throw new AppError('invalid_event', 'the event cannot be stored', {
        cause: err,
        details: [
          {
            index: events.length > 1 ? events.indexOf(event) : undefined,
            message: `the event cannot be encoded: ${coerceError(err).message}`,
          },
        ],
      });
    }
  }

  /** Past its capacity a filter's false positives climb: it is rebuilt at twice the size (unless at the largest). */
  function outgrown(filter: KeyFilter): boolean {
    return filter.count > filter.capacity && keyFilterLog2Bits(filter.count) > filter.log2Bits;
  }

  /**
   * (Re)builds the key filter: the indexer's worker reads the idempotency table with its own
   * connection and sends the bits back, so neither the scan nor COUNT(*) runs on this thread. Until
   * it is ready every lookup goes to SQLite (after the tail), or to the filter being replaced. Keys
   * the scan may miss (not yet in SQLite when it reads there) are the keys added since asking: the
   * pending groups' and the tail's now, and every new event's until the answer.
   */
  function buildKeyFilter(): void {
    if (building || retryTimer || stopped) return;
    // The first filter is sized before anything is counted; later ones from the count (the worker's scan plus keys added since).
    const log2Bits = keyFilter ? keyFilterLog2Bits(keyFilter.count) : FIRST_KEY_FILTER_LOG2_BITS;
    const since: string[] = [...pendingKeys.keys()];
    for (let p = 0; p < opts.partitions; p++) {
      const first = tail.firstOffset(p);
      if (first !== undefined) for (const entry of tail.range(p, first, Number.MAX_SAFE_INTEGER)) since.push(entry.key);
    }
    const request: KeyFilterRequest = { since };
    building = request;
    opts.buildKeyFilter(log2Bits, KEY_FILTER_HASHES).then(
      (built) => received(request, built),
      (err: unknown) => received(request, undefined, err),
    );
  }

  function received(request: KeyFilterRequest, built: BuiltKeyFilter | undefined, err?: unknown): void {
    if (building !== request) return;
    building = undefined;
    if (stopped) return;
    try {
      if (!built || !request.since) {
        if (err !== undefined) opts.log.warn({ err: coerceError(err) }, 'key filter: the build failed; it is asked for again');
        retryLater();
        return;
      }
      const next = keyFilterFrom(built.words, built.log2Bits, built.hashes, built.count);
      for (const key of request.since) next.add(key);
      keyFilter = next;
      retryMs = KEY_FILTER_RETRY_MS;
      for (const resolve of builtWaiters.splice(0)) resolve(true);
      // The worker's count may show the table is bigger than this filter was sized for.
      if (outgrown(next)) buildKeyFilter();
    } catch (e) {
      opts.log.error({ err: coerceError(e) }, 'key filter: the built filter could not be used; it is asked for again');
      retryLater();
    }
  }

  function retryLater(): void {
    if (stopped || retryTimer) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      buildKeyFilter();
    }, retryMs);
    retryTimer.unref();
    retryMs = Math.min(MAX_KEY_FILTER_RETRY_MS, retryMs * 2);
  }

  return {
    prepare,
    start(): void {
      buildKeyFilter();
    },
    /** The entries joined a group: a second send of one of their keys waits for `done`. */
    track(added: PendingEntry[], done: Promise<void>): void {
      for (const entry of added) pendingKeys.set(entry.key, { entry, done });
    },
    /** The group is durable: its offsets become readable. */
    committed(entries: PendingEntry[]): void {
      for (const e of entries) {
        pendingKeys.delete(e.key);
        committedHeads[e.partition] = e.offset + 1;
      }
    },
    /** A group failed, and every group queued behind it with it: assignment starts again from what is durable. */
    failed(): void {
      pendingKeys.clear();
      heads = committedHeads.slice();
    },
    heads: (): readonly number[] => committedHeads,
    /** Whether a key filter is in use (tests). */
    hasKeyFilter: (): boolean => keyFilter !== undefined,
    /** Resolves true once a key filter is in use, false if the sequencer stops first (tests). */
    keyFilterReady(): Promise<boolean> {
      if (keyFilter) return Promise.resolve(true);
      if (stopped) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => builtWaiters.push(resolve));
    },
    stop(): void {
      stopped = true;
      clearTimeout(retryTimer);
      retryTimer = undefined;
      for (const resolve of builtWaiters.splice(0)) resolve(false);
    },
  };
}

export type Sequencer = ReturnType<typeof createSequencer>;
