import fs from 'node:fs';
import path from 'node:path';

/**
 * Runs `fn`, giving a system error it throws the `path` of the file it was about when it has none: calls on a
 * descriptor (fsync, ftruncate, read) name no file, and a start that failed on one said only "EIO: i/o error,
 * fsync" (syscall probe).
 */
export function aboutFile<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e instanceof Error && typeof e.code === 'string' && e.path === undefined) e.path = file;
    throw err;
  }
}

/** fsync through a read-only descriptor: enough on Linux for files and directory entries alike. */
export function fsyncPath(target: string): void {
  aboutFile(target, () => {
    const fd = fs.openSync(target, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  });
}

/**
 * Writes a small file so that a crash leaves either the old file or the whole new one: a temp file,
 * fsync, rename over the target, fsync of the directory.
 */
export function writeFileAtomically(file: string, text: string, mode = 0o644): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text, { mode });
  fsyncPath(tmp);
  fs.renameSync(tmp, file);
  fsyncPath(path.dirname(file));
}

/** {@link writeFileAtomically} in the thread pool, for writes on a path that must not block the event loop. */
export async function writeFileAtomicallyAsync(file: string, text: string, mode = 0o644): Promise<void> {
  const tmp = `${file}.tmp`;
  const handle = await fs.promises.open(tmp, 'w', mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.promises.rename(tmp, file);
  await fsyncDirAsync(path.dirname(file));
}

/** fsync of a directory (a rename or a new name in it made durable), in the thread pool. */
export async function fsyncDirAsync(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Creates `dir` and its missing parents one at a time, so a failure names its cause (`EROFS`,
 * `EACCES`, `ENOENT` under /proc). Node's recursive `mkdirSync` loops for ever on a path under /proc,
 * and reports a read-only file system as `ENOENT`.
 */
export function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let at = path.resolve(dir); !fs.existsSync(at); at = path.dirname(at)) {
    missing.unshift(at);
    if (path.dirname(at) === at) break;
  }
  for (const d of missing) fs.mkdirSync(d);
  // A file in its place: EEXIST, as the recursive mode says it.
  if (missing.length === 0 && !fs.statSync(dir).isDirectory()) fs.mkdirSync(dir);
}

/**
 * Makes what this process creates from now on its user's alone (umask 077: dirs 0700, files 0600), as
 * PostgreSQL does: `herald.db` holds subscription secrets and sink credentials in clear, and a data dir
 * or backup readable by every local user gave them away (probe). Dirs and files that exist keep their modes.
 */
export function createOwnerOnly(): void {
  const before = process.umask(0o077);
  process.umask(before | 0o077);
}
