import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Sets the nice value of the calling thread only: on Linux `setpriority` takes a thread id, found
 * through /proc/thread-self. A thread may always lower its own priority and raise it back to the
 * nice value it started with (0 here). Elsewhere, or without /proc, it does nothing and says so.
 */
export function niceThisThread(nice: number): boolean {
  if (process.platform !== 'linux') return false;
  try {
    const tid = Number(path.basename(fs.readlinkSync('/proc/thread-self')));
    if (!Number.isInteger(tid) || tid <= 0) return false;
    os.setPriority(tid, nice);
    return true;
  } catch {
    return false;
  }
}

/** CAP_SYS_NICE (capability 23). */
const CAP_SYS_NICE = 23n;

/**
 * Whether a thread of this process may go back to nice 0 after raising its nice value: only with
 * CAP_SYS_NICE (root outside a container, or `docker run --cap-add SYS_NICE`) or an RLIMIT_NICE of
 * at least 20 (`ulimit -e 20`, `docker run --ulimit nice=20`). Without it a lowered priority would stay.
 */
export function canRestorePriority(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
    if (capEff && (BigInt(`0x${capEff}`) >> CAP_SYS_NICE) & 1n) return true;
    const soft = /^Max nice priority\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    return soft === 'unlimited' || Number(soft) >= 20;
  } catch {
    return false;
  }
}
