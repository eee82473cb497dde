import type { Logger } from 'pino';
import { eventId, eventSource, type CloudEvent } from '../cloudevents/event';
import { partitionOf } from '../cloudevents/partition';
import { AppError, coerceError } from '../errors';
import type { IdempotencyRepo } from '../store/idempotency-repo';
import type { AppendResult } from './event-store';
import type { Indexer } from './indexer';
import { createKeyFilter, idempotencyKey, type KeyFilter } from './key-filter';
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
  tail: Pick<Indexer, 'find'>;
  log: Logger;
}

const KEY_FILTER_PAGE = 5_000;

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
  let nextKeyFilter: KeyFilter | undefined;
  let stopped = false;

  /** The earlier store of `key`, if any: where it is and, while its group is not committed, what to wait for. */
  function earlier(key: string, source: string, id: string): { partition: number; offset: number; done?: Promise<void> } | undefined {
    const pending = pendingKeys.get(key);
    if (pending) return { partition: pending.entry.partition, offset: pending.entry.offset, done: pending.done };
    const inTail = tail.find(key);
    if (inTail) return inTail;
    // A Bloom filter miss means never seen: skip SQLite. A hit (or no filter yet) asks SQLite.
    if (keyFilter && !keyFilter.mightContain(key)) return undefined;
    return idempotency.find(source, id);
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
    for (const entry of added) {
      keyFilter?.add(entry.key);
      nextKeyFilter?.add(entry.key);
    }
    // Past its capacity the filter's false positives climb: rebuild it (in the background) at twice the size.
    if (keyFilter && keyFilter.count > keyFilter.capacity) buildKeyFilter();
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

  /**
   * (Re)builds the key filter from the idempotency table in pages between other work, so start-up
   * does not wait for it; until it is ready every lookup goes to SQLite (after the tail). Sized for
   * twice the keys there are now. Keys the indexer writes meanwhile were added at `prepare`.
   */
  function buildKeyFilter(): void {
    if (nextKeyFilter || stopped) return;
    // COUNT(*) scans the table, so only the first build pays it; a rebuild knows the filter's count.
    const keys = keyFilter ? keyFilter.count : idempotency.count();
    const wanted = Math.max(1, keys * 2 * 9.6);
    const next = createKeyFilter(Math.min(30, Math.max(24, Math.ceil(Math.log2(wanted)))));
    nextKeyFilter = next;
    // Keys not yet in SQLite may sort before where the scan starts reading: add them now.
    for (const key of pendingKeys.keys()) next.add(key);
    if (keyFilter === undefined) {
      // No filter yet means no key was added to one: the tail's keys must be added too.
      forEachTailKey?.((key) => next.add(key));
    }
    let after: { source: string; id: string } | undefined;
    const step = () => {
      if (stopped || nextKeyFilter !== next) return;
      const rows = idempotency.keys(after, KEY_FILTER_PAGE);
      for (const row of rows) next.add(idempotencyKey(row.source, row.id));
      if (rows.length === KEY_FILTER_PAGE) {
        after = rows[rows.length - 1];
        setImmediate(step);
      } else {
        keyFilter = next;
        nextKeyFilter = undefined;
      }
    };
    setImmediate(step);
  }
  let forEachTailKey: ((visit: (key: string) => void) => void) | undefined;

  return {
    prepare,
    start(visitTail?: (visit: (key: string) => void) => void): void {
      forEachTailKey = visitTail;
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
    stop(): void {
      stopped = true;
    },
  };
}

export type Sequencer = ReturnType<typeof createSequencer>;
