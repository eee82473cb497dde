import { execFileSync, spawnSync } from 'node:child_process';
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

/**
 * An ext4 file system of its own on a loop file, whose `powerCut()` aborts its journal (`remount,abort`: from
 * then on nothing reaches the disk, and what was not written back is lost, as in a power cut), then
 * unmounts, checks (`e2fsck`) and mounts it again at the same directory. Undefined where the test may not
 * mount (CI runs as root).
 */
export function mountExt4(
  bytes: number,
): { dir: string; powerCut(beforeUnmount: () => Promise<void>): Promise<void>; unmount(): void } | undefined {
  const dir = tmpDir('herald-ext4-');
  const image = `${tmpDir('herald-ext4-image-')}/fs.img`;
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: 'ignore' });
  try {
    fs.writeFileSync(image, '');
    fs.truncateSync(image, bytes);
    run('mkfs.ext4', ['-q', '-F', image]);
    run('mount', ['-o', 'loop', image, dir]);
  } catch {
    return undefined;
  }
  return {
    dir,
    async powerCut(beforeUnmount) {
      run('mount', ['-o', 'remount,abort', dir]);
      await beforeUnmount(); // the processes holding files there end first
      run('umount', [dir]);
      // e2fsck exits 1 when it corrected something (a journal replayed): that is the expected case.
      spawnSync('e2fsck', ['-fy', image], { stdio: 'ignore' });
      run('mount', ['-o', 'loop', image, dir]);
    },
    unmount: () => {
      spawnSync('umount', [dir], { stdio: 'ignore' });
      fs.rmSync(image, { force: true });
    },
  };
}
