/**
 * What `herald restore` does to webhook-id generations (`newIncarnation`) and what the restored
 * gateway's first start and a seek do to them, on a real herald.db: offsets below the head at that
 * first start keep the generation they were delivered under; the new one is for the rest.
 */
import path from 'node:path';
import { openDatabase, type Db } from '../../../src/store/db';
import { newIncarnation } from '../../../src/backup';
import { createDeliveryStateRepo } from '../../../src/store/delivery-state-repo';
import { createCursor, generationAt, seekCursor } from '../../../src/delivery/partition-cursor';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

function database(): { file: string; db: Db } {
  const file = path.join(tmpDir(), 'herald.db');
  const db = openDatabase(file);
  db.prepare(
    `INSERT INTO subscriptions (id, sink, filters, delivery, start_at, state, secret, created_at, updated_at)
     VALUES ('sub', 'http://127.0.0.1:9/', '[]', '{}', 'earliest', 'active', 'whsec_x', 0, 0)`,
  ).run();
  return { file, db };
}

/** Each partition's row as the delivery thread reads it, as a cursor would use it. */
function generations(db: Db, offsets: number[]) {
  return createDeliveryStateRepo(db)
    .offsets('sub')
    .sort((a, b) => a.partition - b.partition)
    .map((row) => {
      const part = createCursor(row.partition, row);
      return {
        partition: row.partition,
        seek: row.seekGeneration,
        kept: row.keptGeneration,
        below: row.keptBelow,
        at: offsets.map((o) => generationAt(part, o)),
      };
    });
}

it('moves every partition to a new generation and keeps the old one below the head the first start finds', () => {
  const { file, db } = database();
  const repo = createDeliveryStateRepo(db);
  repo.saveOffset('sub', { partition: 0, committedOffset: 4, lastMatchedOffset: null, expired: 0 });
  db.close();
  // Partition 1 has no row (a subscription from before rows were written at creation): it gets one.
  newIncarnation(file, 2, 1000);
  const again = openDatabase(file);
  expect(generations(again, [3, 10])).toEqual([
    { partition: 0, seek: 1000, kept: 0, below: null, at: [1000, 1000] },
    { partition: 1, seek: 1000, kept: 0, below: null, at: [1000, 1000] },
  ]);
  createDeliveryStateRepo(again).keepRestoredIds([7, 2]);
  expect(generations(again, [1, 3, 10])).toEqual([
    { partition: 0, seek: 1000, kept: 0, below: 7, at: [0, 0, 1000] },
    { partition: 1, seek: 1000, kept: 0, below: 2, at: [0, 1000, 1000] },
  ]);
  // A later start changes nothing: the bound is the head of the first one.
  createDeliveryStateRepo(again).keepRestoredIds([50, 50]);
  expect(generations(again, [10]).map((g) => g.below)).toEqual([7, 2]);
  again.close();
});

it('restored again before a start keeps the first generation; after one, the latest (never one given above its bound)', () => {
  const { file, db } = database();
  createDeliveryStateRepo(db).saveOffset('sub', { partition: 0, committedOffset: 4, lastMatchedOffset: null, expired: 0 });
  db.close();
  newIncarnation(file, 1, 1000);
  newIncarnation(file, 1, 500); // the restored dir backed up and restored again, never started
  let again = openDatabase(file);
  expect(generations(again, [3])).toEqual([{ partition: 0, seek: 1500, kept: 0, below: null, at: [1500] }]);
  createDeliveryStateRepo(again).keepRestoredIds([7]);
  again.close();
  newIncarnation(file, 1, 100); // started, then backed up and restored again
  again = openDatabase(file);
  expect(generations(again, [3])).toEqual([{ partition: 0, seek: 1600, kept: 1500, below: null, at: [1600] }]);
  createDeliveryStateRepo(again).keepRestoredIds([9]);
  expect(generations(again, [3, 9])[0]!.at).toEqual([1500, 1600]);
  again.close();
});

it('a seek gives every offset the new generation, the kept ones too (a replay gets new ids)', () => {
  const { file, db } = database();
  createDeliveryStateRepo(db).saveOffset('sub', { partition: 0, committedOffset: 4, lastMatchedOffset: null, expired: 0 });
  db.close();
  newIncarnation(file, 1, 1000);
  const again = openDatabase(file);
  const repo = createDeliveryStateRepo(again);
  repo.keepRestoredIds([7]);
  const part = createCursor(0, repo.offsets('sub')[0]);
  expect(generationAt(part, 3)).toBe(0);
  seekCursor(part, 0, 1001);
  repo.seekOffset('sub', 0, 0, 1001);
  expect([generationAt(part, 3), generations(again, [3])[0]]).toEqual([
    1001,
    { partition: 0, seek: 1001, kept: null, below: null, at: [1001] },
  ]);
  again.close();
});
