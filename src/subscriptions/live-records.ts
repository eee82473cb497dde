import { AppError } from '../errors';
import type { SubscriptionRecord } from './record';
import { RevisionConflict, type RecordChange, type StoredSubscription, type SubscriptionStore } from './record-store';

/** Tries of one change against revision conflicts before answering 409 (each re-reads the record). */
export const SAVE_ATTEMPTS = 5;
/** Ids of deleted records remembered, so that a late read of one cannot bring it back. */
const TOMBSTONES_KEPT = 10_000;

/** What the live view reports when a record appears, changes or goes (through this node or another). */
export interface LiveHooks {
  added(record: SubscriptionRecord): void;
  changed(record: SubscriptionRecord): void;
  /** A deletion this node learnt of (its own `forget` does not call it). */
  removed(id: string): void;
}

/**
 * A change to make to a record, decided on the record as currently stored: undefined when there is
 * nothing to do (then nothing is written). Called again with the newer record after a conflict, so
 * it must depend on its argument only.
 */
export type Change = (current: SubscriptionRecord) => Partial<SubscriptionRecord> | undefined;

/**
 * The subscriptions this node knows (`live`), kept current from the store: its own writes, every
 * change the store reports (other nodes' writes on a shared store), and reads of the store on a miss
 * (read-your-writes: a record created through another node a moment ago is found before its change
 * arrives). A change older than what is known is ignored, so each arrives once whatever the path.
 */
export function createLiveRecords(deps: { records: SubscriptionStore; hooks: LiveHooks; clock: () => number }) {
  const live = new Map<string, StoredSubscription>();
  const tombstones = new Map<string, number>();

  function bury(id: string, revision: number): void {
    tombstones.set(id, revision);
    if (tombstones.size > TOMBSTONES_KEPT) tombstones.delete(tombstones.keys().next().value!);
  }

  /** Applies a change unless a newer one of the record is already applied (or it was deleted after it). */
  function apply(change: RecordChange): void {
    const id = change.kind === 'put' ? change.record.id : change.id;
    const known = live.get(id);
    if (known && change.revision <= known.revision) return;
    if (change.kind === 'delete') {
      bury(id, change.revision);
      if (!known) return;
      live.delete(id);
      deps.hooks.removed(id);
      return;
    }
    if ((tombstones.get(id) ?? -1) >= change.revision) return;
    live.set(id, { record: change.record, revision: change.revision });
    if (known) deps.hooks.changed(change.record);
    else deps.hooks.added(change.record);
  }

  /** Reads the record from the store and applies what it finds; undefined when it does not exist. */
  async function refresh(id: string): Promise<StoredSubscription | undefined> {
    const stored = await deps.records.get(id);
    if (stored) apply({ kind: 'put', ...stored });
    else if (live.has(id)) apply({ kind: 'delete', id, revision: live.get(id)!.revision + 1 });
    return live.get(id);
  }

  /**
   * The record, from memory or else from the store.
   * @throws AppError `not_found`
   */
  async function find(id: string): Promise<StoredSubscription> {
    const found = live.get(id) ?? (await refresh(id));
    if (!found) throw new AppError('not_found', `subscription ${id} does not exist`);
    return found;
  }

  return {
    find,
    peek: (id: string): SubscriptionRecord | undefined => live.get(id)?.record,
    has: (id: string): boolean => live.has(id),
    records: (): SubscriptionRecord[] => [...live.values()].map((s) => s.record),
    /** Loads every stored record and follows the store's changes from then on. */
    open: (): Promise<void> => deps.records.open(apply),
    /** A record this node just inserted, at `revision`. */
    inserted(record: SubscriptionRecord, revision: number): void {
      apply({ kind: 'put', record, revision });
    },
    /** Drops a record this node deleted; false when it was already gone (another request, another node). */
    forget(id: string): boolean {
      const known = live.get(id);
      if (!known) return false;
      bury(id, known.revision + 1);
      live.delete(id);
      return true;
    },
    /**
     * Makes `change` on the stored record (optimistic concurrency: written only if nobody wrote it
     * since it was read; else read again and decided again, up to {@link SAVE_ATTEMPTS} times).
     * Resolves with the record as stored and whether this call changed it.
     * @throws AppError `not_found` when it does not exist (or was deleted meanwhile), `conflict` when
     * every attempt lost its race
     */
    async save(id: string, change: Change): Promise<{ record: SubscriptionRecord; changed: boolean }> {
      let current = await find(id);
      for (let attempt = 1; ; attempt++) {
        const changes = change(current.record);
        if (!changes) return { record: current.record, changed: false };
        const record = { ...current.record, ...changes, updatedAt: deps.clock() };
        try {
          apply({ kind: 'put', record, revision: await deps.records.update(record, current.revision) });
          return { record, changed: true };
        } catch (err) {
          if (!(err instanceof RevisionConflict)) throw err;
          if (attempt >= SAVE_ATTEMPTS)
            throw new AppError('conflict', `subscription ${id} is being changed by other requests at the same time; retry`, { cause: err });
          // Memory may lag the store (another node's write on its way): read the store itself.
          const fresh = await refresh(id);
          if (!fresh) throw new AppError('not_found', `subscription ${id} does not exist`);
          current = fresh;
        }
      }
    },
  };
}
export type LiveRecords = ReturnType<typeof createLiveRecords>;
