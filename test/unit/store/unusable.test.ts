import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { unusable } from '../../../src/store/data-dir';
import { openStoreAt } from '../../helpers/log-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);
afterEach(() => jest.restoreAllMocks());

describe('unusable data dir', () => {
  it.each([
    ['SQLITE_FULL', 'database or disk is full'],
    ['ENOSPC', 'no space left on device, write'],
  ])('says to free space when the file system is full (%s; probe: read as a problem a restart cannot fix)', (code, message) => {
    const err = unusable('/var/lib/herald', Object.assign(new Error(message), { code }));
    expect(err.message).toBe(
      `data dir /var/lib/herald is not usable: ${code} ${message}; the file system is full: free space on it, then start again`,
    );
  });

  it('says the file system may be full when SQLite cannot grow its shared memory file (re-probe: a full disk gave this code)', () => {
    const err = unusable('/var/lib/herald', Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR_SHMSIZE' }));
    expect(err.message).toContain('the file system may be full');
  });

  it('names a symbolic link that leads in a loop, for the dir and for a dir under it (start-up probe: "EEXIST file already exists")', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-loop-'));
    try {
      fs.symlinkSync(path.join(root, 'a'), path.join(root, 'b'));
      fs.symlinkSync(path.join(root, 'b'), path.join(root, 'a'));
      for (const dataDir of [path.join(root, 'a'), path.join(root, 'a', 'sub')]) {
        let thrown: unknown;
        try {
          fs.mkdirSync(dataDir, { recursive: true });
        } catch (err) {
          thrown = err;
        }
        expect(unusable(dataDir, thrown).message).toBe(
          `data dir ${dataDir} is not usable: ${path.join(root, 'a')} is a symbolic link that leads in a loop`,
        );
      }
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('gives other reasons as they are', () => {
    const err = unusable('/var/lib/herald', Object.assign(new Error('permission denied'), { code: 'EACCES' }));
    expect(err.message).toBe('data dir /var/lib/herald is not usable: EACCES permission denied');
  });

  it('names the file a start failed to read, fsync or cut (syscall probe: "EIO EIO: i/o error, read" named none)', async () => {
    const dir = tmpDir();
    const first = openStoreAt(dir);
    const ev: CloudEvent = { attributes: { specversion: '1.0', id: 'a', source: '/s', type: 't' }, data: { kind: 'none' } };
    await first.store.append([ev]);
    await first.close();
    const segment = path.join(
      dir,
      'wal',
      fs.readdirSync(path.join(dir, 'wal')).find((f) => f.endsWith('.seg'))!,
    );
    // The start's scan of the log reads the segment through a descriptor; the disk answers EIO.
    const { ino } = fs.statSync(segment);
    const realRead = fs.readSync;
    jest.spyOn(fs, 'readSync').mockImplementation(((fd: number, ...rest: unknown[]) => {
      if (fs.fstatSync(fd).ino === ino) throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO', errno: -5, syscall: 'read' });
      return (realRead as (...a: unknown[]) => number)(fd, ...rest);
    }) as typeof fs.readSync);
    let thrown: unknown;
    try {
      openStoreAt(dir);
    } catch (err) {
      thrown = err;
    }
    jest.restoreAllMocks();
    expect(unusable(dir, thrown).message).toBe(`data dir ${dir} is not usable: EIO EIO: i/o error, read (${segment})`);
  });
});
