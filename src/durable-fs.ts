import fs from 'node:fs';
import path from 'node:path';

/** fsync through a read-only descriptor: enough on Linux for files and directory entries alike. */
export function fsyncPath(target: string): void {
  const fd = fs.openSync(target, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
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
