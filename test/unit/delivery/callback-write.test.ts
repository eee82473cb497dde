import { unwrittenCallback } from '../../../src/delivery/callback-write';

const sqlite = (code: string, message: string) => Object.assign(new Error(message), { code });

describe("a receiver's callback whose write to herald.db failed", () => {
  it('is answered anyway while another process holds the write lock (documented: written once it is released)', () => {
    expect(unwrittenCallback(sqlite('SQLITE_BUSY', 'database is locked'))).toBeUndefined();
    expect(unwrittenCallback(sqlite('SQLITE_BUSY_SNAPSHOT', 'database is locked'))).toBeUndefined();
  });

  it('is a 503 storage_full with Retry-After on a full disk, not a 200 a crash could undo (a probe saw 200s resent after a SIGKILL)', () => {
    const refused = unwrittenCallback(sqlite('SQLITE_FULL', 'database or disk is full'));
    expect(refused).toMatchObject({ code: 'storage_full', status: 503, retryAfter: 5 });
    expect(refused!.message).toMatch(/taken but could not be written yet \(the disk holding the database is full\); repeat it/);
  });

  it('is a 503 unavailable on an I/O error or anything else', () => {
    expect(unwrittenCallback(sqlite('SQLITE_IOERR_WRITE', 'disk I/O error'))).toMatchObject({
      code: 'unavailable',
      status: 503,
      retryAfter: 5,
    });
    expect(unwrittenCallback(new Error('boom'))).toMatchObject({ code: 'unavailable', status: 503, retryAfter: 1 });
  });

  it("is a 503 when the lock was held by the gateway's own checkpoint, not another process (slow-disk probe: acks answered 200 were forgotten by a crash)", () => {
    const refused = unwrittenCallback(sqlite('SQLITE_BUSY', 'database is locked'), true);
    expect(refused).toMatchObject({ code: 'unavailable', status: 503, retryAfter: 1 });
    expect(refused!.message).toMatch(/held by its own checkpoint/);
  });
});
