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

  it('gives other reasons as they are', () => {
    const err = unusable('/var/lib/herald', Object.assign(new Error('permission denied'), { code: 'EACCES' }));
    expect(err.message).toBe('data dir /var/lib/herald is not usable: EACCES permission denied');
  });
});
