/**
 * A hold of the checkpointer's this long is a slow disk's (a healthy disk's TRUNCATE after a quick PASSIVE held it
 * 24-34 ms in a probe, when the main connection's writes failing at once for any hold refused 9 of 6,633).
 */
export const LONG_HOLD_MS = 250;

/**
 * When herald.db's own checkpointer thread held its write lock: a TRUNCATE checkpoint shuts writers out through its
 * copy and sync, which a slow disk stretches to seconds. Shared memory, so that the threads whose writes waited can
 * tell this gateway's own checkpoint from another process holding the lock (slow-disk probe: a delivery callback
 * waiting on it was answered 200 unwritten "under another process's lock", and a crash then forgot the ack).
 *
 * A `Float64Array` (the checkpointer's thread is eval'd and writes it directly): index 0 when the current hold began
 * (wall clock; 0: none), index 1 when the last one ended, index 2 how long the thread's longest round of checkpoints in the
 * last minute took (ms), which tells the shutdown whether one more fits before its deadline.
 */
export const SIGNAL_BYTES = 3 * Float64Array.BYTES_PER_ELEMENT;

export function createCheckpointSignal(buffer = new SharedArrayBuffer(SIGNAL_BYTES)) {
  const times = new Float64Array(buffer);
  return {
    buffer,
    /** Whether this gateway's checkpointer held the lock at any time since `sinceMs` (wall clock). */
    heldSince(sinceMs: number): boolean {
      return times[0]! > 0 || times[1]! >= sinceMs;
    },
    /**
     * Whether this gateway's checkpointer has held the lock for at least `ms` now: a healthy disk's TRUNCATE holds it
     * for milliseconds, which a writer had better wait out than refuse ({@link LONG_HOLD_MS}).
     */
    holdingFor(ms: number): boolean {
      return times[0]! > 0 && Date.now() - times[0]! >= ms;
    },
    /** How long the checkpointer's longest round of checkpoints in the last minute took, in ms (0: none yet). */
    longestCheckpointMs(): number {
      return times[2]!;
    },
  };
}
export type CheckpointSignal = ReturnType<typeof createCheckpointSignal>;
