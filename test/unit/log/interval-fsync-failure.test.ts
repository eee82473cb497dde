import fs from 'node:fs';
import path from 'node:path';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { enospc, refuseWrites } from '../../helpers/disk-faults';
import { openStoreAt } from '../../helpers/log-store';
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

const ev = (id: string): CloudEvent => ({
  attributes: { specversion: '1.0', id, source: '/fsyncgate', type: 'fsyncgate.t' },
  data: { kind: 'json', value: { id } },
});
const eio = (): NodeJS.ErrnoException =>
  Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const open = (dir: string) => openStoreAt(dir, { fsync: 'interval', fsyncIntervalMs: 20 });

function ids(store: ReturnType<typeof open>['store']): string[] {
  return store.read(0, 0, 100).events.map((e) => String(e.event.attributes.id));
}

it('events acknowledged before a failed interval fsync are written again before the log takes another write', async () => {
  const dir = tmpDir();
  const s = open(dir);
  const segment = fs.readdirSync(path.join(dir, 'wal')).find((f) => f.endsWith('.seg'))!;
  const file = path.join(dir, 'wal', segment);
  // First, so that the offset reservation's first write (which the first group waits for) is done
  // before the failing sync: the sync must fail after a0 and a1 are acknowledged.
  await s.store.append([ev('w')]);
  await sleep(100); // and synced by a timed sync that succeeds
  const synced = fs.statSync(file).size;
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
  fs.writeSync(fd, Buffer.alloc(acknowledged - synced), 0, acknowledged - synced, synced);
  fs.closeSync(fd);

  await s.store.append([ev('b')]);
  expect(s.store.health().writable).toBe(true);
  await s.close();

  const again = open(dir);
  try {
    expect(ids(again.store)).toEqual(['w', 'a0', 'a1', 'b']);
  } finally {
    await again.close();
  }
});

/**
 * fdatasync calls held until the test answers them. Linux reports a writeback error once per open file,
 * so of two concurrent fdatasyncs one may get the EIO and the other return 0 for the same lost pages.
 */
function holdFdatasyncs() {
  const calls: { fd: number; cb: (e: NodeJS.ErrnoException | null) => void; fromCommit: boolean }[] = [];
  const real = fs.fdatasync;
  jest.spyOn(fs, 'fdatasync').mockImplementation(((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
    calls.push({ fd, cb, fromCommit: /at (async )?commit /.test(new Error().stack ?? '') });
  }) as unknown as typeof fs.fdatasync);
  return {
    calls,
    succeed: (c: (typeof calls)[number]) => real(c.fd, (e) => c.cb(e)),
    fail: (c: (typeof calls)[number]) => process.nextTick(c.cb, eio()),
    async count(n: number) {
      for (let i = 0; i < 200 && calls.length < n; i++) await sleep(5);
      expect(calls.length).toBeGreaterThanOrEqual(n);
    },
  };
}

const segmentOf = (dir: string) =>
  path.join(
    dir,
    'wal',
    fs.readdirSync(path.join(dir, 'wal')).find((f) => f.endsWith('.seg'))!,
  );

function zero(file: string, from: number, to: number): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(to - from), 0, to - from, from);
  fs.closeSync(fd);
}

async function idsAfterRestart(dir: string): Promise<string[]> {
  const again = open(dir);
  try {
    return ids(again.store);
  } finally {
    await again.close();
  }
}

it('a group whose own fsync returns 0 while the timed fsync beside it fails is written again too', async () => {
  const dir = tmpDir();
  const s = open(dir);
  const file = segmentOf(dir);
  const syncs = holdFdatasyncs();
  await s.store.append([ev('a0')]);
  await syncs.count(1); // the timed fsync, held
  await s.store.append([ev('a1')]);
  syncs.fail(syncs.calls[0]!); // from now on every group syncs before its answer
  await sleep(1);

  const bFrom = fs.statSync(file).size;
  const b = s.store.append([ev('b')]);
  await syncs.count(3); // b's own fsync and a timed one, both open
  const own = syncs.calls.slice(1).find((c) => c.fromCommit)!;
  syncs.fail(syncs.calls.slice(1).find((c) => !c.fromCommit)!);
  await sleep(1);
  syncs.succeed(own);
  await b; // acknowledged
  expect(s.store.health().writable).toBe(false); // the latest fsync failed: still not writable
  zero(file, bFrom, fs.statSync(file).size); // b's pages went with the failed writeback
  jest.restoreAllMocks();
  await s.store.append([ev('c')]);
  expect(s.store.health().writable).toBe(true);
  await s.close();
  expect(await idsAfterRestart(dir)).toEqual(['a0', 'a1', 'b', 'c']);
});

it('a timed fsync still running at close, which fails, has what it was to cover written again before the log closes', async () => {
  const dir = tmpDir();
  const s = open(dir);
  const file = segmentOf(dir);
  const syncs = holdFdatasyncs();
  await s.store.append([ev('a0')]);
  const acknowledged = fs.statSync(file).size;
  await syncs.count(1);
  const closing = s.close(); // SIGTERM now
  await sleep(1);
  syncs.fail(syncs.calls[0]!);
  zero(file, 0, acknowledged);
  await closing;
  jest.restoreAllMocks();
  expect(await idsAfterRestart(dir)).toEqual(['a0']);
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

// Storage probe: after a full disk had refused a write (cut from the log, never acknowledged), every
// graceful stop under interval or never was recorded as unclean, and the next start skipped 4,096
// offsets in each partition.
it.each(['interval', 'never'] as const)(
  'a write the disk refused, once cut, leaves a graceful stop clean under fsync=%s: the next start continues at the exact head',
  async (fsync) => {
    const dir = tmpDir();
    const s = openStoreAt(dir, { fsync, fsyncIntervalMs: 20 });
    await s.store.append([ev('a0')]);
    await s.store.append([ev('a1')]);
    refuseWrites({ once: true });
    await expect(s.store.append([ev('refused')])).rejects.toMatchObject({ code: 'unavailable' });
    expect(s.store.health().writable).toBe(false);
    expect(s.store.heads()).toEqual([2]);
    await s.close();

    const again = openStoreAt(dir, { fsync, fsyncIntervalMs: 20 });
    try {
      expect(again.store.heads()).toEqual([2]);
      await again.store.append([ev('b')]);
      expect(again.store.read(0, 0, 100).events.map((e) => [e.offset, e.event.attributes.id])).toEqual([
        [0, 'a0'],
        [1, 'a1'],
        [2, 'b'],
      ]);
    } finally {
      await again.close();
    }
  },
);

it('a refused write whose cut failed too leaves the stop unclean: the next start skips the reserved offsets instead of trusting the head', async () => {
  const dir = tmpDir();
  const s = openStoreAt(dir, { fsync: 'interval', fsyncIntervalMs: 20 });
  await s.store.append([ev('a0')]);
  refuseWrites({ once: true });
  const cut = jest.spyOn(fs, 'ftruncateSync').mockImplementation(() => {
    throw Object.assign(new Error('EIO: i/o error, ftruncate'), { code: 'EIO' });
  });
  await expect(s.store.append([ev('refused')])).rejects.toMatchObject({ code: 'unavailable' });
  await s.close();
  expect(cut).toHaveBeenCalledTimes(2); // at the failure, and again at the stop
  cut.mockRestore();

  const again = openStoreAt(dir, { fsync: 'interval', fsyncIntervalMs: 20 });
  try {
    expect(again.store.heads()[0]).toBeGreaterThan(1);
    expect(again.store.read(0, 0, 100).events.map((e) => e.event.attributes.id)).toEqual(['a0']);
  } finally {
    await again.close();
  }
});

// Re-probe: a stop on a disk still full could not write its clean-stop record (a new file, renamed over the old),
// so every such stop skipped 4,096 offsets per partition.
it('records the clean stop on a disk still full, in the room set aside at start: the next start continues at the exact head', async () => {
  const dir = tmpDir();
  const s = openStoreAt(dir, { fsync: 'interval', fsyncIntervalMs: 20 });
  await s.store.append([ev('a0')]);
  await s.store.append([ev('a1')]);
  expect(fs.readdirSync(path.join(dir, 'wal'))).toContain('offsets.reserved.spare');
  // The disk is full: no new file can be made (the spare's blocks are already its own).
  const realOpen = fs.promises.open;
  jest.spyOn(fs.promises, 'open').mockImplementation((async (file: fs.PathLike, flags?: string | number, mode?: fs.Mode) => {
    if (flags === 'w' || flags === 'wx') throw enospc('open');
    return realOpen(file, flags, mode);
  }) as typeof fs.promises.open);
  await s.close();
  jest.restoreAllMocks();

  const again = openStoreAt(dir, { fsync: 'interval', fsyncIntervalMs: 20 });
  try {
    expect(again.store.heads()).toEqual([2]);
    expect(fs.readdirSync(path.join(dir, 'wal'))).toContain('offsets.reserved.spare'); // set aside again
  } finally {
    await again.close();
  }
});
