import { LONG_HOLD_MS, type CheckpointSignal } from './checkpoint-signal';
import { MAIN_BUSY_TIMEOUT_MS, type Db } from './db';

/**
 * While this gateway's own checkpointer holds herald.db's write lock (a TRUNCATE through a slow disk: seconds), the
 * main thread's connection does not wait for it: each API write would stop the event loop that answers producers for
 * the busy timeout, then fail all the same (slow-disk re-probe: a PATCH every 300 ms kept the loop blocked through a
 * 6 s hold; `/metrics` took 6.4 s and publishes 6.5 s). Such a write is answered 503 at once instead. The signal is
 * looked at every `intervalMs`; another process's lock is still waited for (it may be a moment's), and so is a hold of
 * the checkpointer's until it has lasted {@link LONG_HOLD_MS}.
 * @returns stops it (before herald.db is closed)
 */
export function noWaitWhileCheckpointing(db: Db, signal: CheckpointSignal, intervalMs = 20): () => void {
  let waiting = true;
  const timer = setInterval(() => {
    // Not for a hold of a moment (a healthy disk's checkpoint): a write then waits the milliseconds it lasts.
    const wait = !signal.holdingFor(LONG_HOLD_MS);
    if (wait === waiting || !db.open) return;
    waiting = wait;
    db.pragma(`busy_timeout = ${wait ? MAIN_BUSY_TIMEOUT_MS : 0}`);
  }, intervalMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    if (!waiting && db.open) db.pragma(`busy_timeout = ${MAIN_BUSY_TIMEOUT_MS}`);
    waiting = true;
  };
}
