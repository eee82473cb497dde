import type { Db } from './db';

/** Key/value facts about the data dir (`partitions`, `log_indexed_through`). */
export function createMetaRepo(db: Db) {
  const get = db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?');
  const set = db.prepare<[string, string]>(
    'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
  );
  return {
    get(key: string): string | undefined {
      return get.get(key)?.value;
    },
    set(key: string, value: string | number): void {
      set.run(key, String(value));
    },
  };
}
export type MetaRepo = ReturnType<typeof createMetaRepo>;
