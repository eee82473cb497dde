import type { CloudEvent } from '../cloudevents/event';
import { AppError } from '../errors';

/** What `POST /events` answers for each event, in input order. */
export interface AppendResult {
  id: string;
  source: string;
  partition: number;
  offset: number;
  duplicate: boolean;
}

export interface StoredEvent {
  partition: number;
  offset: number;
  storedAt: number;
  event: CloudEvent;
}

/**
 * A page of one partition. `events` are intact records in offset order; a
 * corrupt record ends the page early and is named by `corruptOffset` (it is
 * never served). Offsets whose records were lost are simply absent (a gap).
 */
/**
 * An answer's page of stored events (a partition page, a dead-letter page) stops growing once its JSON
 * passes this many bytes: with events of up to HERALD_MAX_BODY_BYTES each, a count alone is no bound
 * (a hostile probe read 1,000 events of 1 MB: 3 GB resident, then a 500 as the answer outgrew a
 * string). A page holds at least one event.
 */
export const PAGE_BYTES = 8 * 1024 * 1024;

export interface ReadPage {
  events: StoredEvent[];
  /** The local engine: the stored bytes of `events`' records (what a delivery cursor's page is charged for). */
  bytes?: number;
  corruptOffset?: number;
  /**
   * The JetStream engine only: the page ends before this offset, whose event a newer Herald node
   * stored in a format this one cannot read (a rolling upgrade). Not damage: an upgraded node reads it.
   */
  newerFormatOffset?: number;
}

export interface StoreHealth {
  writable: boolean;
  reason?: string;
  /**
   * Writable, but not ready (why): reads of the log fail now, or the index is behind and its writer keeps
   * failing. `/readyz` is 503, ingest goes on, `herald_log_writable` stays 1.
   */
  unready?: string;
}

/** A value, or a promise of it: what an engine whose reads cross the network may answer. */
export type MaybePromise<T> = T | Promise<T>;

/**
 * What the HTTP API (ingest, reads, the live tail, health) needs from an engine. Reads may be
 * asynchronous: the JetStream engine (`src/jetstream/`) answers them from the cluster. The local
 * engine answers synchronously and implements the narrower {@link EventStore}, which delivery and
 * subscriptions need.
 */
export interface EventLog {
  readonly partitions: number;
  /**
   * Stores the events not seen before (by source+id) and resolves once they are durable (local: under
   * the fsync mode; JetStream: acknowledged by a majority of the stream's replicas). Rejects with
   * AppError `unavailable` (a 503 with `Retry-After`) when they cannot be. The local engine is all or
   * nothing; the JetStream engine is not (see its `append`): after a rejection part of the call may be
   * stored, and a retry answers those as duplicates.
   */
  append(events: CloudEvent[]): Promise<AppendResult[]>;
  /** Up to `limit` durable events of a partition from `fromOffset`, in offset order, each verified. */
  read(partition: number, fromOffset: number, limit: number): MaybePromise<ReadPage>;
  /**
   * The event stored under source+id, while its idempotency record is kept.
   * @throws AppError `corrupt_record` when its record fails its checksum
   */
  lookup(source: string, id: string): MaybePromise<StoredEvent | undefined>;
  /** Next offset each partition will assign, indexed by partition. */
  heads(): MaybePromise<readonly number[]>;
  /**
   * The oldest offset each partition still stores (retention deletes older ones), indexed by
   * partition; equal to the head when the partition holds nothing. `read` answers from here when
   * asked for less.
   */
  firstOffsets(): MaybePromise<readonly number[]>;
  health(): StoreHealth;
  /** Called after each durable append with the partitions that grew. Returns an unsubscribe function. */
  onAppend(listener: (partitions: ReadonlySet<number>) => void): () => void;
  /**
   * Called after retention deleted events, with the new `firstOffsets()` (synchronously, before any
   * read can see the deletion). Returns an unsubscribe function.
   */
  onRetire(listener: (firstOffsets: readonly number[]) => void): () => void;
  /** `deadline` (epoch ms): past it, work that can be redone at the next start (indexing) is left to it. */
  close(opts?: { deadline?: number }): Promise<void>;
}

/**
 * The storage seam of the local engine: an {@link EventLog} whose reads are synchronous, which is
 * what delivery and subscriptions are built on. The local backend is a write-ahead log plus SQLite.
 */
export interface EventStore extends EventLog {
  /**
   * Up to `limit` durable events of a partition from `fromOffset`, in offset order, each verified by its
   * checksum; with `maxBytes`, no more than their stored records come to (one at least).
   */
  read(partition: number, fromOffset: number, limit: number, maxBytes?: number): ReadPage;
  lookup(source: string, id: string): StoredEvent | undefined;
  heads(): readonly number[];
  firstOffsets(): readonly number[];
  /**
   * The first offset of a partition stored at or after `atMs`, from an index, when the store has one
   * that covers that time; undefined means "search the log" (callers fall back to a binary search).
   */
  offsetAtTime?(partition: number, atMs: number): number | undefined;
}

/**
 * What delivery reads of the store: pages of a partition, heads, first offsets, the time index, and
 * the two notifications. The delivery thread gets its own read-only implementation (`log-reader.ts`).
 */
export type LogReader = Pick<EventStore, 'partitions' | 'read' | 'heads' | 'firstOffsets' | 'offsetAtTime' | 'onAppend' | 'onRetire'>;

/**
 * Whether retention has deleted the event at `at` (its offset below its partition's first). An index or
 * idempotency row can outlive it briefly (the indexer thread deletes retired rows after the first offsets move).
 */
export function isRetired(firstOffsets: readonly number[], at: { partition: number; offset: number }): boolean {
  return at.offset < (firstOffsets[at.partition] ?? 0);
}

/** The event at exactly `offset`: `'corrupt'` when its record fails its checksum, undefined when it is not stored. */
export function readOne(store: Pick<EventStore, 'read'>, partition: number, offset: number): StoredEvent | 'corrupt' | undefined {
  const page = store.read(partition, offset, 1);
  if (page.corruptOffset === offset || page.newerFormatOffset === offset) return 'corrupt';
  const event = page.events[0];
  return event?.offset === offset ? event : undefined;
}

/** A read of an event a newer Herald node wrote (a rolling upgrade): a 503, to be asked of an upgraded node. */
export function newerFormatUnavailable(partition: number, offset: number): AppError {
  return new AppError(
    'unavailable',
    `the event at partition ${partition}, offset ${offset} was stored by a newer version of Herald than this node runs; read it through an upgraded node`,
    { retryAfter: 5 },
  );
}

/** {@link readOne} on an engine whose reads may cross the network (the JetStream engine's). */
export async function readStored(
  store: Pick<EventLog, 'read'>,
  partition: number,
  offset: number,
): Promise<StoredEvent | 'corrupt' | undefined> {
  const page = await store.read(partition, offset, 1);
  if (page.corruptOffset === offset) return 'corrupt';
  const event = page.events[0];
  return event?.offset === offset ? event : undefined;
}
