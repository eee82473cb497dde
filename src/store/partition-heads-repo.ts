import type { Db } from './db';

/** `partition_heads`: the next offset each partition assigns. Owned by the local event store. */
export function createPartitionHeadsRepo(db: Db) {
  const all = db.prepare<[], { partition: number; headOffset: number }>('SELECT partition, head_offset AS headOffset FROM partition_heads');
  const upsert = db.prepare<[number, number]>(
    `INSERT INTO partition_heads (partition, head_offset) VALUES (?, ?)
     ON CONFLICT (partition) DO UPDATE SET head_offset = excluded.head_offset`,
  );
  return {
    load(partitions: number): number[] {
      const heads = new Array<number>(partitions).fill(0);
      for (const row of all.all()) if (row.partition < partitions) heads[row.partition] = row.headOffset;
      return heads;
    },
    set(partition: number, headOffset: number): void {
      upsert.run(partition, headOffset);
    },
  };
}
export type PartitionHeadsRepo = ReturnType<typeof createPartitionHeadsRepo>;
