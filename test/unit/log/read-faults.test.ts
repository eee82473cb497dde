import fs from 'node:fs';
import pino from 'pino';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { readOne } from '../../../src/wal/event-store';
import { openStoreAt } from '../../helpers/log-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/**
 * Reads of the log that fail with an I/O error (syscall probe, `strace -e inject=pread64:error=EIO`): one
 * EIO dead-lettered an intact, acknowledged event as `corrupt_record`, logged as a checksum mismatch, and a
 * lookup answered 500 where the same request a moment later answered 200. The fault is injected at the fs
 * boundary; the log, its index and SQLite are real, and the store is opened again so that reads go to disk.
 */

afterAll(cleanupTmpDirs);
afterEach(() => jest.restoreAllMocks());

const ev = (id: string): CloudEvent => ({
  attributes: { specversion: '1.0', id, source: '/read-faults', type: 'read.t' },
  data: { kind: 'json', value: { pad: 'x'.repeat(200) } },
});

const eio = (): NodeJS.ErrnoException => Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', errno: -5, syscall: 'read' });

/** The next `times` reads by `fs.readSync` fail with EIO; returns how many did. */
function failReads(times: number): { failed: () => number } {
  const real = fs.readSync;
  let failed = 0;
  jest.spyOn(fs, 'readSync').mockImplementation(((...args: Parameters<typeof fs.readSync>) => {
    if (failed < times) {
      failed++;
      throw eio();
    }
    return (real as (...a: unknown[]) => number)(...args);
  }) as typeof fs.readSync);
  return { failed: () => failed };
}

/** Three events stored, the store closed, then opened again with a log that keeps its lines. */
async function storedThenReopened() {
  const dir = tmpDir();
  const first = openStoreAt(dir);
  await first.store.append([ev('e0'), ev('e1'), ev('e2')]);
  await first.close();
  const lines: { level: number; msg: string; err?: { code?: string } }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { s: openStoreAt(dir, { log }), lines };
}

describe('a read of the log that fails with an I/O error', () => {
  it('once: is made again, and a retry or redelivery reads its event (was: dead-lettered as corrupt)', async () => {
    const { s, lines } = await storedThenReopened();
    try {
      const fault = failReads(1);
      const one = readOne(s.store, 0, 1);
      expect(fault.failed()).toBe(1);
      expect(one).toMatchObject({ offset: 1, event: { attributes: { id: 'e1' } } });
      jest.restoreAllMocks();
      failReads(1);
      const page = s.store.read(0, 0, 10);
      expect(page.corruptOffset).toBeUndefined();
      expect(page.events.map((e) => e.event.attributes.id)).toEqual(['e0', 'e1', 'e2']);
      expect(lines.filter((l) => l.level >= 50)).toEqual([]);
    } finally {
      await s.close();
    }
  });

  it('once, on a lookup: finds the event (was: a 500 corrupt_record)', async () => {
    const { s } = await storedThenReopened();
    try {
      const fault = failReads(1);
      expect(s.store.lookup('/read-faults', 'e1')?.event.attributes.id).toBe('e1');
      expect(fault.failed()).toBe(1);
    } finally {
      await s.close();
    }
  });

  it('every time (twice in a row for each read): the record is not served, and its error line names the I/O error, not a checksum; once the disk reads again, it is served', async () => {
    const { s, lines } = await storedThenReopened();
    try {
      failReads(Infinity);
      const page = s.store.read(0, 0, 10);
      expect(page.events).toEqual([]);
      expect(page.corruptOffset).toBe(0);
      const errors = lines.filter((l) => l.level >= 50);
      expect(errors).toHaveLength(1);
      expect(errors[0]!.msg).toMatch(/record unreadable/);
      expect(errors[0]!.msg).not.toMatch(/checksum/);
      expect(errors[0]!.err?.code).toBe('EIO');
      // A lookup's 500 says so too (review: its detail said "checksum mismatch").
      let thrown: unknown;
      try {
        s.store.lookup('/read-faults', 'e1');
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toMatchObject({
        code: 'corrupt_record',
        details: [{ message: 'partition 0, offset 1: its bytes could not be read' }],
      });
      jest.restoreAllMocks();
      expect(s.store.read(0, 0, 10).events.map((e) => e.event.attributes.id)).toEqual(['e0', 'e1', 'e2']);
    } finally {
      await s.close();
    }
  });

  it('once, with the close of its descriptor failing too: still read again, and later reads do not go through the closed number', async () => {
    const { s } = await storedThenReopened();
    try {
      // Linux releases a descriptor whose close reports an error (EIO on a failing disk): the number is gone either way.
      const realClose = fs.closeSync;
      let closeFailed = 0;
      jest.spyOn(fs, 'closeSync').mockImplementation((fd: number) => {
        realClose(fd);
        if (closeFailed++ === 0) throw Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO', errno: -5, syscall: 'close' });
      });
      failReads(1);
      expect(readOne(s.store, 0, 1)).toMatchObject({ offset: 1, event: { attributes: { id: 'e1' } } });
      expect(closeFailed).toBe(1);
      jest.restoreAllMocks();
      const page = s.store.read(0, 0, 10);
      expect(page.corruptOffset).toBeUndefined();
      expect(page.events.map((e) => e.event.attributes.id)).toEqual(['e0', 'e1', 'e2']);
    } finally {
      await s.close();
    }
  });
});
