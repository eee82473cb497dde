/**
 * A data dir a newer Herald has used (a later log record format, a later schema migration) is
 * refused by this one with one line and exit 2, changing nothing: a downgrade must not cut the
 * newer records as a torn tail (they are acknowledged events) nor read tables it does not know.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { decodeRecord, encodeRecord, frameKey } from '../../src/wal/record';
import { postBinary, runGatewayUntilExit, segmentFiles, startTestGateway } from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

async function storeAndStop(n: number): Promise<string> {
  const gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
  for (let i = 0; i < n; i++) expect((await postBinary(gw.url, { source: '/newer', id: `n${i}` })).status).toBe(202);
  await gw.close();
  return gw.dataDir;
}

const walFiles = (dataDir: string) => fs.readdirSync(path.join(dataDir, 'wal')).sort();

/** The only segment's bytes, where its last record starts, that record, and format-3 frames after it (as a newer Herald would write them). */
function laterFormat(dataDir: string) {
  const file = segmentFiles(dataDir)[0]!;
  const secret = Buffer.from(fs.readFileSync(path.join(dataDir, 'wal', 'frame.key'), 'utf8').trim(), 'hex');
  const bytes = fs.readFileSync(file);
  let at = 0;
  while (at + 8 + bytes.readUInt32LE(at) < bytes.length) at += 8 + bytes.readUInt32LE(at);
  const record = decodeRecord(bytes.subarray(at));
  const newer = (n: number) => encodeRecord({ ...record, offset: record.offset + n }, { ...frameKey(secret), version: 3 });
  return { file, bytes, lastAt: at, newer };
}

describe('a data dir from a newer Herald', () => {
  it('is refused when its log ends with records of a later format, which stay as they are', async () => {
    const dataDir = await storeAndStop(3);
    // What a Herald writing format 3 would append: the same body under a version byte of 3, checksummed with the key.
    const { file, newer } = laterFormat(dataDir);
    fs.appendFileSync(file, newer(1));
    const before = fs.readFileSync(file);
    const files = walFiles(dataDir);

    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    // Was: started, after cutting the newer record as a torn tail.
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toMatch(/^herald: .*\.seg holds records of format 3 from byte \d+: a newer version of Herald wrote them/);
    expect(fs.readFileSync(file)).toEqual(before);
    expect(walFiles(dataDir)).toEqual(files);
  });

  it('is refused when records of a later format follow a damaged one (was: all cut as a torn tail)', async () => {
    const dataDir = await storeAndStop(3);
    const { file, bytes, lastAt, newer } = laterFormat(dataDir);
    bytes.writeUInt8(bytes.readUInt8(lastAt + 20) ^ 0xff, lastAt + 20); // the last record damaged
    fs.writeFileSync(file, Buffer.concat([bytes, newer(1), newer(2), newer(3)]));
    const before = fs.readFileSync(file);
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(refused.code).toBe(2);
    expect(fs.readFileSync(file)).toEqual(before);
  });

  it('is refused when herald.db has a schema migration this version does not have', async () => {
    const dataDir = await storeAndStop(1);
    const db = new Database(path.join(dataDir, 'herald.db'));
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
      9999,
      '9999_from_the_future.sql',
      Date.now(),
    );
    db.close();
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim()).toMatch(
      /^herald: .*herald\.db has schema migration 9999_from_the_future\.sql, which this version of Herald \(.+\) does not have: a newer Herald migrated it/,
    );
  });
});
