import fs from 'node:fs';
import path from 'node:path';
import { LEGACY_FRAME_KEY, decodeRecord, encodeRecord } from '../../src/wal/record';
import { lookupEvent, postBinary, runGatewayUntilExit, segmentFiles, startTestGateway, type AppendResultBody } from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

/** Stores `n` events and stops the gateway; returns the data dir and the acks. */
async function storeAndStop(n: number): Promise<{ dataDir: string; acked: AppendResultBody[] }> {
  const gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
  const acked: AppendResultBody[] = [];
  for (let i = 0; i < n; i++) acked.push(...(await postBinary(gw.url, { source: '/key', id: `k${i}` })).body.results);
  await gw.close();
  return { dataDir: gw.dataDir, acked };
}

/** Frames of a segment file, in order, by walking their length fields (the file is intact). */
function frames(file: string): Buffer[] {
  const buf = fs.readFileSync(file);
  const out: Buffer[] = [];
  for (let at = 0; at < buf.length; at += 8 + buf.readUInt32LE(at)) out.push(buf.subarray(at, at + 8 + buf.readUInt32LE(at)));
  return out;
}

describe('the log key (wal/frame.key)', () => {
  it('reads a log written before keys (version-1 records), gives it a key, and keeps every event across restarts', async () => {
    const { dataDir, acked } = await storeAndStop(12);
    // Make it an old data dir: every record rewritten as version 1 (unkeyed), and no key file.
    for (const file of segmentFiles(dataDir)) {
      fs.writeFileSync(file, Buffer.concat(frames(file).map((f) => encodeRecord(decodeRecord(f), LEGACY_FRAME_KEY))));
    }
    fs.rmSync(path.join(dataDir, 'wal', 'frame.key'));

    let gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir });
    try {
      expect(fs.existsSync(path.join(dataDir, 'wal', 'frame.key'))).toBe(true);
      for (const r of acked) expect((await lookupEvent(gw.url, r)).body).toMatchObject({ partition: r.partition, offset: r.offset });
      expect((await postBinary(gw.url, { source: '/key', id: 'new' })).status).toBe(202);
    } finally {
      await gw.close();
    }
    gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir });
    try {
      for (const r of acked) expect((await lookupEvent(gw.url, r)).status).toBe(200);
      expect((await lookupEvent(gw.url, { source: '/key', id: 'new' })).status).toBe(200);
    } finally {
      await gw.close();
    }
  });

  it('refuses to start (exit 2) when a keyed log has lost its key, and changes nothing', async () => {
    const { dataDir } = await storeAndStop(3);
    fs.rmSync(path.join(dataDir, 'wal', 'frame.key'));
    const before = segmentFiles(dataDir).map((f) => fs.readFileSync(f));
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toMatch(/^herald: .*frame\.key is missing/);
    expect(segmentFiles(dataDir).map((f) => fs.readFileSync(f))).toEqual(before);
  });

  it("refuses to start (exit 2) with another log's key, and changes nothing (was: the whole log cut as a torn tail)", async () => {
    const { dataDir } = await storeAndStop(5);
    const other = await storeAndStop(1);
    fs.copyFileSync(path.join(other.dataDir, 'wal', 'frame.key'), path.join(dataDir, 'wal', 'frame.key'));
    fs.rmSync(path.join(dataDir, 'index.db'));
    const before = segmentFiles(dataDir).map((f) => fs.readFileSync(f));
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toMatch(/^herald: .*frame\.key verifies the first record of none of the log's segments/);
    expect(segmentFiles(dataDir).map((f) => fs.readFileSync(f))).toEqual(before);
    expect(fs.readdirSync(path.join(dataDir, 'wal')).filter((f) => f.includes('.corrupt-'))).toEqual([]);
  });
});
