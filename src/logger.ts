import fs from 'node:fs';
import pino, { type Logger } from 'pino';

export type { Logger };

/** How long a line waits for a full pipe (EAGAIN) before it is dropped (and later lines until one goes through). */
const PIPE_WAIT_MS = 100;
const pause = new Int32Array(new SharedArrayBuffer(4));
/** A line was dropped for a full pipe: later ones are tried once, not waited for, until one goes through. */
let stalled = false;

/**
 * Log lines to stdout, written synchronously (a crash loses none), each one dropped rather than
 * retried when stdout cannot take it: a full disk (`ENOSPC`) or a pipe that stays full. pino's own
 * destination retried such a write for ever, which stopped the whole gateway (every request, and
 * SIGTERM) while the disk that held its log file was full.
 */
const stdoutLines = {
  write(line: string): void {
    let bytes = Buffer.from(line, 'utf8');
    const deadline = stalled ? 0 : Date.now() + PIPE_WAIT_MS;
    while (bytes.length > 0) {
      try {
        bytes = bytes.subarray(fs.writeSync(1, bytes));
        stalled = false;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        // The reader is not reading (stopped, or far behind): one wait, then lines go without waiting.
        if (Date.now() >= deadline) {
          stalled = true;
          return;
        }
        Atomics.wait(pause, 0, 0, 1);
      }
    }
  },
};

/** JSON logs on stdout. API keys and signing secrets are never passed to the logger. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'herald' }, redact: ['req.headers.authorization', 'secret'] }, stdoutLines);
}

/** Least time between two `event dead-lettered` lines of one subscription (either engine). */
export const DEAD_LETTER_LINE_MS = 1000;

/**
 * A line that may come once per event (a full disk refusing every callback) logged at most once per
 * `intervalMs`: `emit` gets how many were left out since the last line. A clock that went back
 * starts a new interval rather than silencing the line.
 */
export function throttledLine(intervalMs: number, clock: () => number = Date.now): (emit: (suppressed: number) => void) => void {
  let lastAt = -Infinity;
  let suppressed = 0;
  return (emit) => {
    const now = clock();
    if (now - lastAt < intervalMs && now >= lastAt) {
      suppressed++;
      return;
    }
    lastAt = now;
    emit(suppressed);
    suppressed = 0;
  };
}
