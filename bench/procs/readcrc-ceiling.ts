/**
 * Recovery ceiling: sequential read of the given files in 8 MiB chunks with
 * crc32 (node:zlib) over every byte — what any log scan must at least do.
 *
 * Usage: `node readcrc-ceiling.js file…`; prints `{ bytes, seconds, bytesPerSec }`.
 */
import fs from 'node:fs';
import { crc32 } from 'node:zlib';
import { nowMs, round } from '../lib/stats';

const files = process.argv.slice(2);
const chunk = Buffer.allocUnsafe(8 * 1024 * 1024);
let bytes = 0;
let crc = 0;
const start = nowMs();
for (const file of files) {
  const fd = fs.openSync(file, 'r');
  try {
    for (;;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      crc = crc32(chunk.subarray(0, n), crc);
      bytes += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}
const seconds = (nowMs() - start) / 1000;
process.stdout.write(`${JSON.stringify({ bytes, seconds: round(seconds, 4), bytesPerSec: round(bytes / seconds, 0), crc })}\n`);
