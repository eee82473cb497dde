/**
 * Raw append ceiling for ingest-batch: what the disk allows a single writer
 * with group commit. Per group: 100 records of 1 KiB each coalesced into one
 * buffer, one write, one fdatasync — to a file in the same directory as the
 * gateway's data dir.
 *
 * Usage: `node append-ceiling.js <dir> <durationMs> [recordsPerGroup] [recordBytes]`;
 * prints one JSON line `{ records, groups, seconds, recordsPerSec, syncMs: {p50,p99,max} }`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SampleBuffer, nowMs, round, summarize } from '../lib/stats';

const [dir, durationArg, perGroupArg, bytesArg] = process.argv.slice(2);
if (!dir || !durationArg) throw new Error('usage: append-ceiling <dir> <durationMs> [recordsPerGroup] [recordBytes]');
const durationMs = Number(durationArg);
const perGroup = Number(perGroupArg ?? 100);
const recordBytes = Number(bytesArg ?? 1024);

const file = path.join(dir, `raw-append-${process.pid}.log`);
const fd = fs.openSync(file, 'a');
const record = Buffer.alloc(recordBytes, 0x61);
const records = Array.from({ length: perGroup }, () => record);
const syncs = new SampleBuffer();
let groups = 0;
const start = nowMs();
try {
  while (nowMs() - start < durationMs) {
    const data = Buffer.concat(records, perGroup * recordBytes);
    fs.writeSync(fd, data);
    const t = nowMs();
    fs.fdatasyncSync(fd);
    syncs.push(nowMs() - t);
    groups++;
  }
} finally {
  fs.closeSync(fd);
  fs.rmSync(file, { force: true });
}
const seconds = (nowMs() - start) / 1000;
process.stdout.write(
  `${JSON.stringify({ records: groups * perGroup, groups, seconds: round(seconds), recordsPerSec: round((groups * perGroup) / seconds, 1), syncMs: summarize(syncs.values()) })}\n`,
);
