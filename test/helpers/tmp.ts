import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** A fresh data dir under the OS temp dir; removed by `cleanupTmpDirs`. */
const made: string[] = [];
export function tmpDir(prefix = 'herald-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export function cleanupTmpDirs(): void {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}
