import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** The calling thread's id (Linux), or undefined where /proc/thread-self is not there. */
function threadId(): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const tid = Number(path.basename(fs.readlinkSync('/proc/thread-self')));
    return Number.isInteger(tid) && tid > 0 ? tid : undefined;
  } catch {
    return undefined;
  }
}

/** The calling thread's nice value (0 where it cannot be read). */
export function niceOfThisThread(): number {
  const tid = threadId();
  if (tid === undefined) return 0;
  try {
    return os.getPriority(tid);
  } catch {
    return 0;
  }
}

/**
 * Sets the nice value of the calling thread only (Linux: `setpriority` takes a thread id). Any thread
 * may raise its nice value; lowering it again needs what {@link canRestorePriority} checks. Returns
 * false when it was not set (another platform, no /proc, or refused).
 */
export function niceThisThread(nice: number): boolean {
  const tid = threadId();
  if (tid === undefined) return false;
  try {
    os.setPriority(tid, nice);
    return true;
  } catch {
    return false;
  }
}

/** CAP_SYS_NICE (capability 23). */
const CAP_SYS_NICE = 23n;

/**
 * Whether a thread of this process may lower its nice value again after raising it by up to 19:
 * with CAP_SYS_NICE in the initial user namespace (the kernel checks it there, so rootless
 * containers do not count), or with an RLIMIT_NICE of at least 20 (which allows nice values down to
 * 20 − limit; `ulimit -e 20`, `docker run --ulimit nice=20`). Without it a raised value would stay.
 */
export function canRestorePriority(): boolean {
  if (process.platform !== 'linux') return false;
  try {
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
    const initialUserNamespace = /^\s*0\s+0\s+4294967295\s*$/.test(fs.readFileSync('/proc/self/uid_map', 'utf8'));
    if (capEff && initialUserNamespace && (BigInt(`0x${capEff}`) >> CAP_SYS_NICE) & 1n) return true;
    const soft = /^Max nice priority\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1];
    return soft === 'unlimited' || Number(soft) >= 20;
  } catch {
    return false;
  }
}
