import { AppError, fromDatabaseError } from '../errors';

/**
 * What a receiver's callback is answered when its write to herald.db failed (it is applied in memory,
 * and the write-behind's next flush tries again). Undefined: answer it anyway, as documented, since
 * another process holds the write lock (an operator's shell, a backup) and will let go; not when the
 * holder was this gateway's own checkpointer (`ownCheckpoint`). Any other
 * failure (a full disk, an I/O error) is a 503 naming it: a 200 would promise what a crash could
 * undo. A repeat is answered 200 (`repeated`) once the write went through, this 503 until then.
 */
export function unwrittenCallback(err: unknown, ownCheckpoint = false): AppError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  const busy = typeof code === 'string' && /^SQLITE_(BUSY|LOCKED)/.test(code);
  // The lock was this gateway's own checkpoint, slow on this disk, not another process's: a 200 now would promise
  // what a crash could undo (slow-disk probe: 18 acks answered 200 were delivered again after a SIGKILL).
  if (busy && ownCheckpoint)
    return new AppError(
      'unavailable',
      "the callback was taken but could not be written yet (herald.db's write lock is held by its own checkpoint, slow on this disk); repeat it: a repeat is answered 200 once it is written",
      { cause: err, retryAfter: 1 },
    );
  if (busy) return undefined;
  const db = fromDatabaseError(err);
  const why = db ? db.message.split(';')[0] : 'the database could not be written';
  return new AppError(
    db?.code ?? 'unavailable',
    `the callback was taken but could not be written yet (${why}); repeat it: a repeat is answered 200 once it is written`,
    { cause: err, retryAfter: db?.retryAfter ?? 1 },
  );
}
