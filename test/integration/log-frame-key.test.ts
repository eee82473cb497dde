import fs from 'node:fs';
import path from 'node:path';
import { LEGACY_FRAME_KEY, decodeRecord, encodeRecord } from '../../src/wal/record';
import { lookupEvent, postBinary, runGatewayUntilExit, segmentFiles, startTestGateway, type AppendResultBody } from '../helpers/gateway';
import { runHerald } from '../helpers/cli';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

/** Stores `n` events and stops the gateway; returns the data dir and the acks. */
async function storeAndStop(n: number, padBytes = 0): Promise<{ dataDir: string; acked: AppendResultBody[] }> {
  const gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_MAX_BODY_BYTES: '8MiB' });
  const acked: AppendResultBody[] = [];
  const data = (i: number) => (padBytes > 0 ? { i, pad: 'p'.repeat(padBytes) } : undefined);
  for (let i = 0; i < n; i++) acked.push(...(await postBinary(gw.url, { source: '/key', id: `k${i}`, data: data(i) })).body.results);
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

/** Makes `dataDir` a data dir from before keys: every record rewritten as version 1 (unkeyed), and no key file. */
function makeOld(dataDir: string): void {
  for (const file of segmentFiles(dataDir)) {
    fs.writeFileSync(file, Buffer.concat(frames(file).map((f) => encodeRecord(decodeRecord(f), LEGACY_FRAME_KEY))));
  }
  fs.rmSync(path.join(dataDir, 'wal', 'frame.key'));
}

/**
 * With index.db gone (the whole log scanned): a start refuses the damage as corruption in the middle
 * (not as a foreign key), and one with skip-corrupt starts; returns how many of `acked` it then finds.
 */
async function refusedThenKept(dataDir: string, acked: AppendResultBody[]): Promise<number> {
  fs.rmSync(path.join(dataDir, 'index.db'));
  const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/corrupt in the middle/);
  const gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir, HERALD_RECOVERY: 'skip-corrupt' });
  try {
    let found = 0;
    for (const r of acked) if ((await lookupEvent(gw.url, r)).status === 200) found++;
    return found;
  } finally {
    await gw.close();
  }
}

describe('the log key (wal/frame.key)', () => {
  it('reads a log written before keys (version-1 records), gives it a key, and keeps every event across restarts', async () => {
    const { dataDir, acked } = await storeAndStop(12);
    makeOld(dataDir);

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
    expect(refused.stderr.trim()).toMatch(/^herald: .*frame\.key verifies none of the log's records it was tried on/);
    expect(segmentFiles(dataDir).map((f) => fs.readFileSync(f))).toEqual(before);
    expect(fs.readdirSync(path.join(dataDir, 'wal')).filter((f) => f.includes('.corrupt-'))).toEqual([]);
  });

  it('still starts with its own key when the first record of the only segment is damaged (damage, not a foreign key)', async () => {
    const { dataDir, acked } = await storeAndStop(10);
    const [file] = segmentFiles(dataDir);
    const bytes = fs.readFileSync(file!);
    bytes.writeUInt8(bytes.readUInt8(20) ^ 0xff, 20); // inside the first record's body
    fs.writeFileSync(file!, bytes);
    // Refused as damage in the middle, and skip-corrupt keeps the 9 (was refused outright by the key check, with or without it).
    expect(await refusedThenKept(dataDir, acked)).toBe(9);
  });

  it('takes two damaged records first in the newest segment for damage, not a foreign key (was: refused as a wrong frame.key, skip-corrupt or not)', async () => {
    const { dataDir, acked } = await storeAndStop(10);
    const [file] = segmentFiles(dataDir);
    const bytes = fs.readFileSync(file!);
    const [first, second] = frames(file!);
    bytes.writeUInt8(bytes.readUInt8(20) ^ 0xff, 20); // inside the first record's body
    const inSecond = first!.length + 20;
    bytes.writeUInt8(bytes.readUInt8(inSecond) ^ 0xff, inSecond);
    expect(second!.length).toBeGreaterThan(20);
    fs.writeFileSync(file!, bytes);
    expect(await refusedThenKept(dataDir, acked)).toBe(8);
  });

  it('takes two large damaged records first in the log for damage too (was: past the 4 MiB looked at, a foreign key)', async () => {
    const { dataDir, acked } = await storeAndStop(4, 2_500_000);
    const [file] = segmentFiles(dataDir);
    const bytes = fs.readFileSync(file!);
    const [first] = frames(file!);
    for (const at of [20, first!.length + 20]) bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at); // in the first two records
    fs.writeFileSync(file!, bytes);
    expect(await refusedThenKept(dataDir, acked)).toBe(2);
  });

  it('refuses a log that began before keys (version-1 records) and then got one, when its key is lost or foreign (was: a new key, and every keyed record cut)', async () => {
    const { dataDir } = await storeAndStop(12);
    makeOld(dataDir);
    const gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir });
    for (let i = 0; i < 5; i++) expect((await postBinary(gw.url, { source: '/key', id: `keyed-${i}` })).status).toBe(202);
    await gw.close();
    const before = segmentFiles(dataDir).map((f) => fs.readFileSync(f));
    const key = path.join(dataDir, 'wal', 'frame.key');
    const own = fs.readFileSync(key);
    fs.rmSync(key);
    const lost = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(lost.code).toBe(2);
    expect(lost.stderr).toMatch(/frame\.key is missing/);
    const other = await storeAndStop(1);
    fs.copyFileSync(path.join(other.dataDir, 'wal', 'frame.key'), key);
    const foreign = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(foreign.code).toBe(2);
    expect(foreign.stderr).toMatch(/it is not this log's key/);
    expect(segmentFiles(dataDir).map((f) => fs.readFileSync(f))).toEqual(before);
    fs.writeFileSync(key, own);
  });

  it('herald backup refuses damage in a segment written before the key when unkeyed records follow it, as the start does (was: taken for a torn tail: the log has a key)', async () => {
    const { dataDir } = await storeAndStop(12);
    makeOld(dataDir);
    const upgraded = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir });
    await upgraded.close(); // the log now has a key; its one segment holds unkeyed records only
    const [segment] = segmentFiles(dataDir);
    expect(segmentFiles(dataDir)).toHaveLength(1);
    expect((await runHerald(['backup', '--data-dir', dataDir, path.join(tmpDir(), 'whole')])).code).toBe(0);

    const bytes = fs.readFileSync(segment!);
    const third = frames(segment!)
      .slice(0, 2)
      .reduce((n, f) => n + f.length, 0);
    bytes[third + 20]! ^= 0x01;
    fs.writeFileSync(segment!, bytes);
    const refused = await runHerald(['backup', '--data-dir', dataDir, path.join(tmpDir(), 'damaged')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`the log is damaged: ${path.basename(segment!)} at byte ${third}`);
    expect(await refusedThenKept(dataDir, [])).toBe(0); // and the start, reading the whole log, refuses it too
  });
});
