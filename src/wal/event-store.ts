import type { CloudEvent } from '../cloudevents/event';

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
export interface ReadPage {
  events: StoredEvent[];
  corruptOffset?: number;
}

export interface StoreHealth {
  writable: boolean;
  reason?: string;
}

/**
 * The storage seam: ingest and delivery see only this. The local backend is a
 * write-ahead log plus SQLite; a distributed one (NATS JetStream) would
 * implement the same contract.
 */
export interface EventStore {
  readonly partitions: number;
  /**
   * Stores the events not seen before (by source+id) and resolves once they
   * are durable under the fsync mode. All or nothing: on failure nothing of
   * the call becomes visible. Rejects with AppError `unavailable` when the log
   * cannot be written.
   */
  append(events: CloudEvent[]): Promise<AppendResult[]>;
  /** Up to `limit` durable events of a partition from `fromOffset`, in offset order, each verified by its checksum. */
  read(partition: number, fromOffset: number, limit: number): ReadPage;
  /**
   * The event stored under source+id, while its idempotency record is kept.
   * @throws AppError `corrupt_record` when its record fails its checksum
   */
  lookup(source: string, id: string): StoredEvent | undefined;
  /** Next offset each partition will assign, indexed by partition. */
  heads(): readonly number[];
  /**
   * The oldest offset each partition still stores (retention deletes older ones), indexed by
   * partition; equal to the head when the partition holds nothing. `read` answers from here when
   * asked for less.
   */
  firstOffsets(): readonly number[];
  health(): StoreHealth;
  /**
   * The first offset of a partition stored at or after `atMs`, from an index, when the store has one
   * that covers that time; undefined means "search the log" (callers fall back to a binary search).
   */
  offsetAtTime?(partition: number, atMs: number): number | undefined;
  /** Called after each durable append with the partitions that grew. Returns an unsubscribe function. */
  onAppend(listener: (partitions: ReadonlySet<number>) => void): () => void;
  /**
   * Called after retention deleted events, with the new `firstOffsets()` (synchronously, before any
   * read can see the deletion). Returns an unsubscribe function.
   */
  onRetire(listener: (firstOffsets: readonly number[]) => void): () => void;
  close(): Promise<void>;
}

/**
 * What delivery reads of the store: pages of a partition, heads, first offsets, the time index, and
 * the two notifications. The delivery thread gets its own read-only implementation (`log-reader.ts`).
 */
export type LogReader = Pick<EventStore, 'partitions' | 'read' | 'heads' | 'firstOffsets' | 'offsetAtTime' | 'onAppend' | 'onRetire'>;

/** The event at exactly `offset`: `'corrupt'` when its record fails its checksum, undefined when it is not stored. */
export function readOne(store: Pick<EventStore, 'read'>, partition: number, offset: number): StoredEvent | 'corrupt' | undefined {
  const page = store.read(partition, offset, 1);
  if (page.corruptOffset === offset) return 'corrupt';
  const event = page.events[0];
  return event?.offset === offset ? event : undefined;
}
