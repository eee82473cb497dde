/**
 * An independent reader of Herald's log files for the durability checks: it
 * parses the documented frame format itself (u32 bodyLength | u32 crc32 of
 * length+body | body = u8 version | u8 dataKind | u16 partition | f64 offset |
 * f64 storedAt | u32 attrsLength | attrs JSON | data) rather than trusting the
 * code under test.
 */
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';

/** The checksum seed of version-2 frames: CRC-32 of the 16 secret bytes in `wal/frame.key` (0 for an unkeyed log). */
export function frameSeed(dataDir: string): number {
  const file = path.join(dataDir, 'wal', 'frame.key');
  return fs.existsSync(file) ? crc32(Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'hex')) : 0;
}

export function segmentFiles(dataDir: string): string[] {
  const wal = path.join(dataDir, 'wal');
  return fs
    .readdirSync(wal)
    .filter((f) => /^\d{20}\.seg$/.test(f))
    .sort()
    .map((f) => path.join(wal, f));
}

export function logBytes(dataDir: string): number {
  return segmentFiles(dataDir).reduce((n, f) => n + fs.statSync(f).size, 0);
}

export interface ScanOutcome {
  records: number;
  bytes: number;
  /** Frames whose checksum failed or that were cut short (after a clean recovery: 0). */
  bad: number;
}

/** Calls `onRecord(id, partition, offset, storedAt)` for every intact record, in log order. */
export function scanLog(dataDir: string, onRecord: (id: string, partition: number, offset: number, storedAt: number) => void): ScanOutcome {
  let records = 0;
  let bytes = 0;
  let bad = 0;
  const chunk = Buffer.allocUnsafe(8 * 1024 * 1024);
  const seed = frameSeed(dataDir);
  for (const file of segmentFiles(dataDir)) {
    const fd = fs.openSync(file, 'r');
    try {
      let carry = Buffer.alloc(0);
      let filePos = 0;
      for (;;) {
        const n = fs.readSync(fd, chunk, 0, chunk.length, filePos);
        filePos += n;
        const buf = carry.length > 0 ? Buffer.concat([carry, chunk.subarray(0, n)]) : chunk.subarray(0, n);
        let at = 0;
        while (buf.length - at >= 8) {
          const bodyLength = buf.readUInt32LE(at);
          if (buf.length - at < 8 + bodyLength) break;
          const crc = crc32(buf.subarray(at + 8, at + 8 + bodyLength), crc32(buf.subarray(at, at + 4), seed));
          if (crc !== buf.readUInt32LE(at + 4)) {
            bad++;
            at = buf.length; // the rest of this file cannot be trusted
            break;
          }
          const body = at + 8;
          const partition = buf.readUInt16LE(body + 2);
          const offset = buf.readDoubleLE(body + 4);
          const attrsLength = buf.readUInt32LE(body + 20);
          const attrs = JSON.parse(buf.toString('utf8', body + 24, body + 24 + attrsLength)) as { id: string };
          onRecord(attrs.id, partition, offset, buf.readDoubleLE(body + 12));
          records++;
          bytes += 8 + bodyLength;
          at += 8 + bodyLength;
        }
        carry = Buffer.from(buf.subarray(at));
        if (n === 0) {
          if (carry.length > 0) bad++;
          break;
        }
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  return { records, bytes, bad };
}
