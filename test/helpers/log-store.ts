import path from 'node:path';
import { createLogger } from '../../src/logger';
import { openDatabase } from '../../src/store/db';
import { openLocalEventStore, type LocalEventStoreOptions } from '../../src/wal/local-event-store';

/**
 * The local event store on a real data dir (its own herald.db, segments and index), one partition
 * unless told otherwise; `close` closes the store, then the database.
 */
export function openStoreAt(dir: string, options: Partial<Omit<LocalEventStoreOptions, 'dataDir' | 'db'>> = {}) {
  const db = openDatabase(path.join(dir, 'herald.db'));
  const store = openLocalEventStore({
    dataDir: dir,
    db,
    log: createLogger('silent'),
    partitions: 1,
    fsync: 'always',
    fsyncIntervalMs: 50,
    segmentBytes: 1 << 20,
    idempotencyWindowMs: 600_000,
    ...options,
  });
  return {
    store,
    db,
    close: async () => {
      await store.close();
      db.close();
    },
  };
}
