import { AppError, StartupError } from '../errors';
import { RevisionConflict, type RecordChange, type StoredSubscription, type SubscriptionStore } from '../subscriptions/record-store';
import { durably, type Db } from './db';
import type { SubscriptionRecord } from '../subscriptions/record';
import { createSubscriptionsRepo } from './subscriptions-repo';

/**
 * The local engine's {@link SubscriptionStore}: the SQLite `subscriptions` table of one process.
 *
 * Revisions are kept in memory (from 1 at open): only this process writes the table, so they only
 * need to order the writes of its own concurrent requests. Every write runs synchronously when the
 * method is called (better-sqlite3), before the returned promise settles.
 */
export function createSqliteSubscriptionStore(deps: {
  db: Db;
  /** Writes a new subscription's first offsets (delivery's `initOffsets`), inside the insert's transaction. */
  initOffsets: (subscriptionId: string, startAt: SubscriptionRecord['startAt']) => void;
}): SubscriptionStore {
  const repo = createSubscriptionsRepo(deps.db);
  const revisions = new Map<string, number>();
  // One transaction: a subscription never exists without its offsets, nor offsets without it.
  const insert = deps.db.transaction((record: SubscriptionRecord) => {
    repo.insert(record);
    deps.initOffsets(record.id, record.startAt);
  });

  function readAll(): SubscriptionRecord[] {
    try {
      return repo.all();
    } catch (err) {
      // Refused rather than skipped: a subscription left out would stop being delivered without a word.
      if (err instanceof AppError && err.code === 'corrupt_record')
        throw new StartupError(`${err.message}; nothing was changed. Restore herald.db from a backup, or correct or delete that row.`);
      throw err;
    }
  }

  return {
    /** @throws StartupError when a stored row is not one Herald wrote (herald.db damaged or edited) */
    async open(onChange: (change: RecordChange) => void): Promise<void> {
      for (const record of readAll()) {
        revisions.set(record.id, 1);
        onChange({ kind: 'put', record, revision: 1 });
      }
    },
    async get(id: string): Promise<StoredSubscription | undefined> {
      const record = repo.get(id);
      return record && { record, revision: revisions.get(id) ?? 1 };
    },
    // Durably: each of these is answered to a client as done (a power cut must not take it back).
    async insert(record: SubscriptionRecord): Promise<number> {
      durably(deps.db, () => insert(record));
      revisions.set(record.id, 1);
      return 1;
    },
    async update(record: SubscriptionRecord, revision: number): Promise<number> {
      if (revisions.get(record.id) !== revision) throw new RevisionConflict(record.id);
      durably(deps.db, () => repo.update(record));
      revisions.set(record.id, revision + 1);
      return revision + 1;
    },
    async remove(id: string): Promise<boolean> {
      const deleted = durably(deps.db, () => repo.remove(id));
      revisions.delete(id);
      return deleted;
    },
    async close(): Promise<void> {},
  };
}
