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
  /** Up to `limit` events of a partition from `fromOffset`, in offset order. */
  read(partition: number, fromOffset: number, limit: number): StoredEvent[];
  /** The event stored under source+id, while its idempotency record is kept. */
  lookup(source: string, id: string): StoredEvent | undefined;
  /** Next offset each partition will assign, indexed by partition. */
  heads(): readonly number[];
  health(): StoreHealth;
  /** Called after each durable append with the partitions that grew. Returns an unsubscribe function. */
  onAppend(listener: (partitions: ReadonlySet<number>) => void): () => void;
  close(): Promise<void>;
}
