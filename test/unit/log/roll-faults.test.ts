import fs from 'node:fs';
import path from 'node:path';
import type { CloudEvent } from '../../../src/cloudevents/event';
import type { LocalEventStoreOptions } from '../../../src/wal/local-event-store';
import pino from 'pino';
import { openStoreAt } from '../../helpers/log-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/**
 * Segment rolls that fail part-way (a hostile probe's findings): the directory fsync after the next
 * segment's file was made, an undo still owed when retention rolls, an owed roll nobody awaits. The
 * faults are injected at the fs boundary (one call throws the errno a failing disk gives); the log,
 * SQLite and the restarts are real. In each, an acknowledged event must survive the next start and
 * a refused one must never come back.
 */

afterAll(cleanupTmpDirs);
afterEach(() => jest.restoreAllMocks());

const ev = (id: string, padBytes: number): CloudEvent => ({
  attributes: { specversion: '1.0', id, source: '/roll', type: 'roll.t' },
  data: { kind: 'json', value: { pad: 'x'.repeat(padBytes) } },
});
const eio = (syscall: string): NodeJS.ErrnoException =>
  Object.assign(new Error(`EIO: i/o error, ${syscall}`), { code: 'EIO', errno: -5, syscall });

type Clocked = Pick<LocalEventStoreOptions, 'clock' | 'retentionMs'>;

const open = (dir: string, extra: Partial<Clocked> = {}) => openStoreAt(dir, { segmentBytes: 4000, ...extra });

function ids(store: ReturnType<typeof open>['store']): string[] {
  const out: string[] = [];
  for (let at = 0; ;) {
    const page = store.read(0, at, 100);
    if (page.events.length === 0) return out;
    for (const e of page.events) out.push(String(e.event.attributes.id));
    at = page.events.at(-1)!.offset + 1;
  }
}

/** Retention after every event has expired: it rolls the active segment. */
function expiring() {
  let now = Date.now();
  return { opts: { clock: () => now, retentionMs: 60_000 }, expire: () => (now += 120_000) };
}

/**
 * Two events stored, then `refused` is refused by `fault` (its write or fsync fails) and the undo's ftruncate
 * fails too, so the undo is owed; then retention rolls the active segment before any append settles it.
 */
async function refuseWithUndoOwedThenRoll(dir: string, refused: string, fault: () => void) {
  const clock = expiring();
  const s = open(dir, clock.opts);
  await s.store.append([ev('a0', 1000)]);
  await s.store.append([ev('a1', 1000)]);
  fault();
  jest.spyOn(fs, 'ftruncateSync').mockImplementationOnce(() => {
    throw eio('ftruncate');
  });
  await expect(s.store.append([ev(refused, 500)])).rejects.toMatchObject({ code: 'unavailable' });
  clock.expire();
  await s.store.runRetention();
  return { s, opts: clock.opts };
}

describe('segment rolls that fail part-way', () => {
  it("a roll whose new file's directory fsync failed: the next event goes to the new segment and survives a restart", async () => {
    const dir = tmpDir();
    let s = open(dir);
    for (let i = 0; i < 3; i++) await s.store.append([ev(`a${i}`, 1000)]);
    const realFsync = fs.fsyncSync;
    let thrown = 0;
    jest.spyOn(fs, 'fsyncSync').mockImplementation((fd) => {
      if (thrown++ === 0) throw eio('fsync');
      return realFsync(fd);
    });
    // Too big for the segment: a roll, whose directory fsync fails after the next segment's file was made.
    await expect(s.store.append([ev('big', 1500)])).rejects.toMatchObject({ code: 'unavailable' });
    expect(thrown).toBeGreaterThan(0);
    // It would fit in the old segment, past the new file's name: it must not go there.
    const ok = await s.store.append([ev('small', 100)]);
    expect(ok[0]!.duplicate).toBe(false);
    expect(ids(s.store)).toEqual(['a0', 'a1', 'a2', 'small']);
    await s.close();

    s = open(dir);
    try {
      expect(s.store.recovery).toMatchObject({ rolledBackRecords: 0 });
      expect(ids(s.store)).toEqual(['a0', 'a1', 'a2', 'small']);
    } finally {
      await s.close();
    }
  });

  it('a retention roll whose directory fsync failed: the event acknowledged next survives a restart', async () => {
    const dir = tmpDir();
    const clock = expiring();
    let s = open(dir, clock.opts);
    await s.store.append([ev('old', 100)]);
    const realFsync = fs.fsyncSync;
    let thrown = 0;
    jest.spyOn(fs, 'fsyncSync').mockImplementation((fd) => {
      if (thrown++ < 2) throw eio('fsync');
      return realFsync(fd);
    });
    clock.expire();
    await s.store.runRetention(); // logged; retention tries again later
    jest.restoreAllMocks();
    expect(thrown).toBeGreaterThan(0);
    const ok = await s.store.append([ev('acked', 100)]);
    expect(ok[0]!.duplicate).toBe(false);
    expect(ids(s.store)).toContain('acked');
    await s.close();

    s = open(dir, clock.opts);
    try {
      expect(ids(s.store)).toContain('acked');
    } finally {
      await s.close();
    }
  });

  it("a roll while a failed group's undo is owed cuts the torn bytes first: the next start finds no damage", async () => {
    const dir = tmpDir();
    const realWrite = fs.write as unknown as (...args: unknown[]) => void;
    // A short write (ENOSPC part-way).
    const shortWrite = () =>
      jest
        .spyOn(fs, 'write')
        .mockImplementationOnce(((fd: number, buf: Buffer, off: number, len: number, pos: unknown, cb: unknown) =>
          realWrite(fd, buf, off, Math.floor(len / 2), pos, cb)) as unknown as typeof fs.write);
    const first = await refuseWithUndoOwedThenRoll(dir, 'failed', shortWrite);
    const ok = await first.s.store.append([ev('after', 100)]);
    expect(ok[0]!.duplicate).toBe(false);
    await first.s.close();

    const s = open(dir, first.opts); // threw CorruptLogError (torn record in the middle) when the roll skipped the undo
    try {
      expect(ids(s.store)).toContain('after');
      expect(ids(s.store)).not.toContain('failed');
    } finally {
      await s.close();
    }
  });

  it('a refused event is not brought back by an index rebuild after a roll while its undo was owed', async () => {
    const dir = tmpDir();
    // Written whole, its fdatasync fails (EIO).
    const failedSync = () =>
      jest
        .spyOn(fs, 'fdatasync')
        .mockImplementationOnce(((_fd: number, cb: (e: Error) => void) =>
          process.nextTick(cb, eio('fdatasync'))) as unknown as typeof fs.fdatasync);
    const first = await refuseWithUndoOwedThenRoll(dir, 'refused', failedSync);
    await first.s.store.append([ev('after', 100)]);
    await first.s.close();
    // index.db is rebuilt from the log (lost, or a crash before the indexer caught up).
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(dir, 'index.db' + suffix), { force: true });

    const s = open(dir, first.opts);
    try {
      const retry = await s.store.append([ev('refused', 500)]);
      expect(retry[0]!.duplicate).toBe(false); // was "duplicate": the refused frames were indexed as stored
      expect(ids(s.store)).toContain('refused');
    } finally {
      await s.close();
    }
  });

  it('a failed roll that retention asked for while a group was written is logged, not an unhandled rejection', async () => {
    const dir = tmpDir();
    const clock = expiring();
    const s = open(dir, clock.opts);
    const unhandled: unknown[] = [];
    const onUnhandled = (err: unknown) => unhandled.push(err);
    process.on('unhandledRejection', onUnhandled);
    try {
      await s.store.append([ev('a0', 1000)]);
      const realWrite = fs.write as unknown as (...args: unknown[]) => void;
      // The next group's write takes 100 ms, so retention's roll is owed until the group is done.
      jest
        .spyOn(fs, 'write')
        .mockImplementationOnce(((fd: number, buf: Buffer, off: number, len: number, pos: unknown, cb: unknown) =>
          setTimeout(() => realWrite(fd, buf, off, len, pos, cb), 100)) as unknown as typeof fs.write);
      jest.spyOn(fs, 'fdatasyncSync').mockImplementationOnce(() => {
        throw eio('fdatasync');
      });
      const pending = s.store.append([ev('a1', 1000)]);
      await new Promise((r) => setTimeout(r, 30));
      clock.expire();
      void s.store.runRetention();
      await pending;
      await new Promise((r) => setTimeout(r, 200));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await s.close();
    }
  });
});

describe('a failed append whose undo fails too', () => {
  // Syscall probe: fdatasync EIO with every ftruncate failing. The 503 said "nothing from this request was stored",
  // yet a restart recovered the refused events and delivered them; and the error line came once per refused group.
  it('tells its producer the events may be found stored; later refused groups wrote nothing and say so; one error line', async () => {
    const dir = tmpDir();
    const lines: { level: number; msg: string; suppressed?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    let s = openStoreAt(dir, { segmentBytes: 1 << 20, log, writeProbeFirstMs: 60_000 });
    await s.store.append([ev('a0', 100)]);
    jest
      .spyOn(fs, 'fdatasync')
      .mockImplementationOnce(((_fd: number, cb: (e: Error) => void) =>
        process.nextTick(cb, eio('fdatasync'))) as unknown as typeof fs.fdatasync);
    jest.spyOn(fs, 'ftruncateSync').mockImplementation(() => {
      throw eio('ftruncate');
    });
    await expect(s.store.append([ev('refused', 100)])).rejects.toMatchObject({
      code: 'unavailable',
      message: expect.stringMatching(/could not be undone: its events may be found stored after a restart/),
    });
    for (const id of ['later-1', 'later-2'])
      await expect(s.store.append([ev(id, 100)])).rejects.toMatchObject({
        code: 'unavailable',
        message: expect.stringMatching(/nothing from this request was stored/),
      });
    expect(lines.filter((l) => /could not undo a failed append/.test(l.msg))).toHaveLength(1);
    await s.close();
    jest.restoreAllMocks();

    s = openStoreAt(dir, { segmentBytes: 1 << 20 });
    try {
      // As its 503 said it might be; the later ones were never written.
      expect(ids(s.store)).toEqual(['a0', 'refused']);
    } finally {
      await s.close();
    }
  });
});
