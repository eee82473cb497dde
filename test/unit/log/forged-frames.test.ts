/**
 * Frames forged inside event data. A producer controls binary-mode data byte for byte, so it
 * can embed a complete Herald frame (or many plausible lengths) in its event. Recovery's search
 * for the next intact record after damage must never take such bytes for a record: frames are
 * checksummed with the log's secret key, which a producer does not have.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LEGACY_FRAME_KEY, encodeRecord, frameKey, type FrameKey } from '../../../src/wal/record';
import { openSegmentLog, type SegmentLog } from '../../../src/wal/segment-log';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

const open: SegmentLog[] = [];
afterEach(() => {
  for (const log of open.splice(0)) log.close();
});
let key: FrameKey = frameKey(Buffer.alloc(16));
function openLog(dir: string): SegmentLog {
  const log = openSegmentLog({ dir, segmentBytes: 64 << 20, durable: false, warn: () => undefined, error: () => undefined });
  open.push(log);
  key = log.key;
  return log;
}

function honest(offset: number): Buffer {
  return encodeRecord(
    {
      partition: 0,
      offset,
      storedAt: 1_700_000_000_000,
      event: {
        attributes: { specversion: '1.0', id: `e${offset}`, source: '/honest', type: 't' },
        data: { kind: 'json', value: { n: offset } },
      },
    },
    key,
  );
}

/**
 * A binary-mode event whose data embeds a complete frame claiming partition 0, offset `claims`,
 * made the only ways a producer can: unkeyed (version 1) or with a key of its own.
 */
function hostile(offset: number, claims: number, forgeWith: FrameKey = LEGACY_FRAME_KEY): { frame: Buffer; forgedAt: number } {
  const forged = encodeRecord(
    {
      partition: 0,
      offset: claims,
      storedAt: Date.now(),
      event: {
        attributes: { specversion: '1.0', id: 'forged', source: '/attacker', type: 'evil' },
        data: { kind: 'json', value: 'injected' },
      },
    },
    forgeWith,
  );
  const prefix = Buffer.alloc(4096, 0x41);
  const suffix = Buffer.alloc(4096, 0x42);
  const frame = encodeRecord(
    {
      partition: 0,
      offset,
      storedAt: 1_700_000_000_000,
      event: {
        attributes: { specversion: '1.0', id: `e${offset}`, source: '/attacker', type: 't', datacontenttype: 'application/octet-stream' },
        data: { kind: 'bytes', bytes: Buffer.concat([prefix, forged, suffix]) },
      },
    },
    key,
  );
  return { frame, forgedAt: frame.indexOf(forged) };
}

describe('frames forged inside event data', () => {
  it('a torn tail inside a record that embeds a frame is still a torn tail (cut, start), not "mid-log corruption"', async () => {
    const dir = tmpDir();
    const log = openLog(dir);
    const a = honest(0);
    const b = honest(1);
    const { frame: evil, forgedAt } = hostile(2, 0);
    await log.append([a, b, evil], a.length + b.length + evil.length);
    const file = log.segmentFiles()[0]!;
    log.close();
    open.splice(0);
    // Power cut while the hostile record was being written: everything up to a little past the embedded frame reached the disk.
    const evilStart = a.length + b.length;
    fs.truncateSync(file, evilStart + forgedAt + 1000 + 200);

    const after = openLog(dir);
    const seen: number[] = [];
    // Nothing intact follows the torn record but bytes of its own data: the tail is cut there.
    const result = after.scan(0, (position) => seen.push(position));
    expect(result.end).toBe(evilStart);
    expect(seen).toEqual([0, a.length]);
  });

  it('skip-corrupt never turns bytes of event data into a record', async () => {
    const dir = tmpDir();
    const log = openLog(dir);
    const a = honest(0);
    const b = honest(1);
    const { frame: evil, forgedAt } = hostile(2, 0);
    await log.append([a, b, evil], a.length + b.length + evil.length);
    const file = log.segmentFiles()[0]!;
    log.close();
    open.splice(0);
    const evilStart = a.length + b.length;
    fs.truncateSync(file, evilStart + forgedAt + 1000 + 200);

    const after = openLog(dir);
    const seen: number[] = [];
    after.scan(0, (position) => seen.push(position), { skipCorrupt: true });
    expect(seen).toEqual([0, a.length]);
    expect(after.end()).toBeGreaterThan(0);
  });

  it('a frame forged with a key of its own is no record either', async () => {
    const dir = tmpDir();
    const log = openLog(dir);
    const a = honest(0);
    const { frame: evil, forgedAt } = hostile(1, 0, frameKey(Buffer.alloc(16, 9)));
    await log.append([a, evil], a.length + evil.length);
    const file = log.segmentFiles()[0]!;
    log.close();
    open.splice(0);
    fs.truncateSync(file, a.length + forgedAt + 1200);
    const seen: number[] = [];
    openLog(dir).scan(0, (position) => seen.push(position), { skipCorrupt: true });
    expect(seen).toEqual([0]);
  });

  it('a torn record whose data reads as lengths everywhere is cut, its bytes kept in a side file, without checksumming for ever', async () => {
    const dir = tmpDir();
    const log = openLog(dir);
    // Every 4th byte position of this data reads as a length of 256 KiB: each would cost a 256 KiB checksum.
    const data = Buffer.alloc(768 * 1024);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(256 * 1024, i);
    const a = honest(0);
    const big = encodeRecord(
      {
        partition: 0,
        offset: 1,
        storedAt: 1_700_000_000_000,
        event: { attributes: { specversion: '1.0', id: 'big', source: '/attacker', type: 't' }, data: { kind: 'bytes', bytes: data } },
      },
      key,
    );
    await log.append([a, big], a.length + big.length);
    const file = log.segmentFiles()[0]!;
    log.close();
    open.splice(0);
    fs.truncateSync(file, a.length + big.length - 1); // torn tail: its last byte never reached the disk

    const after = openLog(dir);
    const seen: number[] = [];
    const result = after.scan(0, (position) => seen.push(position));
    expect(seen).toEqual([0]);
    expect(result.end).toBe(a.length);
    const side = fs.readdirSync(dir).filter((f) => f.includes('.corrupt-'));
    expect(side).toEqual([`${path.basename(file)}.corrupt-${a.length}`]);
    expect(fs.statSync(path.join(dir, side[0]!)).size).toBe(big.length - 1);
  }, 120_000);
});
