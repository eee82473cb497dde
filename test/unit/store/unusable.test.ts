import { unusable } from '../../../src/store/data-dir';

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

  it('gives other reasons as they are', () => {
    const err = unusable('/var/lib/herald', Object.assign(new Error('permission denied'), { code: 'EACCES' }));
    expect(err.message).toBe('data dir /var/lib/herald is not usable: EACCES permission denied');
  });
});
