import type { SubscriptionRecord } from './record';

/** A record with the revision it was stored at: an update must name it (optimistic concurrency). */
export interface StoredSubscription {
  record: SubscriptionRecord;
  /** A later write of the same record has a greater revision (on the KV store it also orders writes of different records). */
  revision: number;
}

/** A write seen by the store, made through this node or (on a shared store) another one. */
export type RecordChange = { kind: 'put'; record: SubscriptionRecord; revision: number } | { kind: 'delete'; id: string; revision: number };

/**
 * `update` was refused: the record is no longer at the revision the caller read (another request,
 * possibly on another node, wrote it since), or it was deleted. The caller reads it again and
 * decides again; nothing was written.
 */
export class RevisionConflict extends Error {
  constructor(readonly id: string) {
    super(`subscription ${id} changed since it was read`);
    this.name = 'RevisionConflict';
  }
}

/**
 * Where the subscriptions service keeps its records: the port between it and an engine.
 *
 * - local engine (`store/subscriptions-store.ts`): SQLite, one process; `insert` writes the record and
 *   the subscription's first offsets in one transaction; revisions live in memory.
 * - JetStream engine (`jetstream/subscriptions-kv.ts`): a KV bucket every node watches; revisions are
 *   the bucket's sequences.
 *
 * Every method may reject with AppError `unavailable` (a 503) when the engine cannot answer now.
 */
export interface SubscriptionStore {
  /**
   * Sends every stored record to `onChange` (as puts), then resolves; on a shared store it goes on
   * sending every later write by any node, this node's own included, in the order they were stored,
   * until `close`.
   */
  open(onChange: (change: RecordChange) => void): Promise<void>;
  /** The record as stored now (on a shared store: read from the one that orders writes), or undefined. */
  get(id: string): Promise<StoredSubscription | undefined>;
  /** Stores a new record (its id must be new); resolves with its revision. */
  insert(record: SubscriptionRecord): Promise<number>;
  /**
   * Replaces the record if it is still at `revision`; resolves with the new revision.
   * @throws RevisionConflict when it is not (written or deleted since)
   */
  update(record: SubscriptionRecord, revision: number): Promise<number>;
  /** Deletes the record: true when this call deleted it, false when it was already gone (no error). */
  remove(id: string): Promise<boolean>;
  /** Stops sending changes. */
  close(): Promise<void>;
}
