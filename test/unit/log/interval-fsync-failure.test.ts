import fs from 'node:fs';
import path from 'node:path';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { createLogger } from '../../../src/logger';
import { openDatabase } from '../../../src/store/db';
import { openLocalEventStore } from '../../../src/wal/local-event-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/**
 * HERALD_FSYNC=interval after a failed fsync ("fsyncgate"): Linux may drop the dirty pages the failed
 * fsync was to write and report the next fsync as a success, so events acknowledged before the failure
 * would be gone from the disk while the log carries on. The fault is injected at the fs boundary (one
 * fdatasync fails with EIO); the kernel's dropping of the pages is played by overwriting them with
 * zeros (what a later read from the disk would find). The log, SQLite and the restart are real.
 */

afterAll(cleanupTmpDirs);
afterEach(() => jest.restoreAllMocks());

const log = createLogger('silent');
const ev = (id: string): CloudEvent => ({
  attributes: { specversion: '1.0', id, source: '/fsyncgate', type: 'fsyncgate.t' },
  data: { kind: 'json', value: { id } },
});
const eio = (): NodeJS.ErrnoException =>
  Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function open(dir: string) {
  const db = openDatabase(path.join(dir, 'herald.db'));
  const store = openLocalEventStore({
    dataDir: dir,
    db,
    log,
    partitions: 1,
    fsync: 'interval',
    fsyncIntervalMs: 20,
    segmentBytes: 1 << 20,
    idempotencyWindowMs: 600_000,
  });
  return {
    store,
    close: async () => {
      await store.close();
      db.close();
    },
  };
}

function ids(store: ReturnType<typeof open>['store']): string[] {
  return store.read(0, 0, 100).events.map((e) => String(e.event.attributes.id));
}

it('events acknowledged before a failed interval fsync are written again before the log takes another write', async () => {
  const dir = tmpDir();
  const s = open(dir);
  const segment = fs.readdirSync(path.join(dir, 'wal')).find((f) => f.endsWith('.seg'))!;
  const file = path.join(dir, 'wal', segment);
  let failedOnce = false;
  jest.spyOn(fs, 'fdatasync').mockImplementationOnce(((_fd: number, cb: (e: Error) => void) => {
    failedOnce = true;
    process.nextTick(cb, eio());
  }) as unknown as typeof fs.fdatasync);
  await s.store.append([ev('a0')]);
  await s.store.append([ev('a1')]);
  const acknowledged = fs.statSync(file).size;
  for (let i = 0; i < 50 && !failedOnce; i++) await sleep(20); // the timed fsync runs and fails
  expect(failedOnce).toBe(true);
  expect(s.store.health().writable).toBe(false);
  // The kernel dropped the pages: what the disk holds of them is zeros.
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(acknowledged), 0, acknowledged, 0);
  fs.closeSync(fd);

  await s.store.append([ev('b')]);
  expect(s.store.health().writable).toBe(true);
  await s.close();

  const again = open(dir);
  try {
    expect(ids(again.store)).toEqual(['a0', 'a1', 'b']);
  } finally {
    await again.close();
  }
});

it('after the sync that follows succeeds, nothing is kept or written again', async () => {
  const dir = tmpDir();
  const s = open(dir);
  const writes: number[] = [];
  const realWriteSync = fs.writeSync;
  jest.spyOn(fs, 'writeSync').mockImplementation(((fd: number, ...rest: unknown[]) => {
    writes.push(fd);
    return (realWriteSync as (...a: unknown[]) => number)(fd, ...rest);
  }) as typeof fs.writeSync);
  await s.store.append([ev('a0')]);
  await sleep(100); // a timed fsync succeeds
  await s.store.append([ev('a1')]);
  expect(writes).toEqual([]);
  await s.close();
  const again = open(dir);
  try {
    expect(ids(again.store)).toEqual(['a0', 'a1']);
  } finally {
    await again.close();
  }
});
