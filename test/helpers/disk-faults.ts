import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpDir } from './tmp';

/** The error a full disk gives, as node's fs reports it. */
export function enospc(syscall = 'write'): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOSPC: no space left on device, ${syscall}`), { code: 'ENOSPC', syscall });
}

/**
 * `fs.write` (the log's append) refused with ENOSPC, as on a full disk: the next call only (`once`), or
 * every call until `free()`; only writes to files under `under` when given (other files still write).
 * Restored by `jest.restoreAllMocks()`.
 */
export function refuseWrites(opts: { once?: boolean; under?: string } = {}): { free(): void } {
  const real = fs.write as unknown as (...args: unknown[]) => void;
  let refusing = true;
  const refuse = (...args: unknown[]): void => {
    const under = opts.under === undefined || fs.readlinkSync(`/proc/self/fd/${args[0] as number}`).startsWith(opts.under);
    if (refusing && under) process.nextTick(args[args.length - 1] as (e: Error) => void, enospc());
    else real(...args);
  };
  const spy = jest.spyOn(fs, 'write');
  if (opts.once) spy.mockImplementationOnce(refuse as unknown as typeof fs.write);
  else spy.mockImplementation(refuse as unknown as typeof fs.write);
  return { free: () => void (refusing = false) };
}

/**
 * A file system of its own, `bytes` large: tmpfs where the test may mount (CI runs as root); undefined
 * where it may not.
 */
export function mountTmpfs(bytes: number): { dir: string; unmount(): void } | undefined {
  const dir = tmpDir('herald-tmpfs-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir], { stdio: 'ignore' });
    return { dir, unmount: () => execFileSync('umount', [dir]) };
  } catch {
    return undefined;
  }
}
