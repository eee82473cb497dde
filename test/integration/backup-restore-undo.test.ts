/**
 * A backup or restore that fails after it began to put its copy in place leaves the target as it found
 * it (a syscall probe: an EIO on the rename of herald.db left wal/ alone in the data dir, which the
 * gateway refused for want of herald.db and the next restore refused as not empty; an EIO on the last
 * fsync left a whole DEST behind "the backup failed", and the next backup to DEST was refused).
 */
import fs from 'node:fs';
import path from 'node:path';
import { backupDataDir, restoreDataDir } from '../../src/backup';
import { lookupEvent, postBatch, useChildGateways, type AppendResultBody } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);
afterEach(() => jest.restoreAllMocks());

const spawnGateway = useChildGateways();
const env = (dataDir: string) => ({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4', HERALD_SEGMENT_BYTES: '65536' });
const eio = (syscall: string) => Object.assign(new Error(`EIO: i/o error, ${syscall}`), { code: 'EIO', errno: -5, syscall });

async function backupOfOneEvent(): Promise<{ backupDir: string; stored: AppendResultBody }> {
  const source = tmpDir();
  const gw = await spawnGateway(env(source));
  const [stored] = (await postBatch(gw.url, [{ id: 'kept', source: '/undo', type: 't', data: { n: 1 } }])).body
    .results as AppendResultBody[];
  gw.child.kill('SIGTERM');
  await gw.exited;
  const backupDir = path.join(tmpDir(), 'backup');
  backupDataDir(source, backupDir);
  return { backupDir, stored: stored! };
}

/** Makes the first fsync after the `after`-th rename throw EIO (renames and fsyncs still happen otherwise). */
function failFsyncAfterRename(after: number): void {
  const rename = fs.renameSync.bind(fs);
  const fsync = fs.fsyncSync.bind(fs);
  let renames = 0;
  let armed = false;
  jest.spyOn(fs, 'renameSync').mockImplementation((from, to) => {
    rename(from, to);
    if (++renames === after) armed = true;
  });
  jest.spyOn(fs, 'fsyncSync').mockImplementation((fd) => {
    if (armed) {
      armed = false;
      throw eio('fsync');
    }
    fsync(fd);
  });
}

describe('a failed restore or backup undoes what it put in place', () => {
  it('restore into an existing empty dir: the rename of herald.db fails after wal/ was moved in; the dir is left empty and a second restore works', async () => {
    const { backupDir, stored } = await backupOfOneEvent();
    const target = tmpDir();
    const rename = fs.renameSync.bind(fs);
    jest.spyOn(fs, 'renameSync').mockImplementation((from, to) => {
      if (String(to) === path.join(target, 'herald.db')) throw eio('rename');
      rename(from, to);
    });
    expect(() => restoreDataDir(backupDir, target)).toThrow(/EIO/);
    jest.restoreAllMocks();
    expect(fs.readdirSync(target)).toEqual([]);
    restoreDataDir(backupDir, target);
    const gw = await spawnGateway(env(target));
    expect((await lookupEvent(gw.url, stored)).body).toMatchObject({ offset: stored.offset, partition: stored.partition });
  }, 60_000);

  it('restore into an absent dir: the fsync after its rename fails; no data dir is left and a second restore works', async () => {
    const { backupDir } = await backupOfOneEvent();
    const target = path.join(tmpDir(), 'data');
    failFsyncAfterRename(1);
    expect(() => restoreDataDir(backupDir, target)).toThrow(/EIO/);
    jest.restoreAllMocks();
    expect(fs.existsSync(target)).toBe(false);
    expect(() => restoreDataDir(backupDir, target)).not.toThrow();
  }, 60_000);

  it('backup: the fsync after the rename into DEST fails; no DEST is left and a second backup to it works', async () => {
    const { backupDir } = await backupOfOneEvent();
    const source = path.join(tmpDir(), 'data');
    restoreDataDir(backupDir, source);
    const dest = path.join(tmpDir(), 'b');
    failFsyncAfterRename(2); // the manifest's rename, then DEST's
    expect(() => backupDataDir(source, dest)).toThrow(/EIO/);
    jest.restoreAllMocks();
    expect(fs.existsSync(dest)).toBe(false);
    expect(() => backupDataDir(source, dest)).not.toThrow();
  }, 60_000);

  it('an undo that fails itself says the first failure and what it left behind to remove (re-probe: its own EIO replaced the first, and named nothing left)', async () => {
    const { backupDir } = await backupOfOneEvent();
    const target = path.join(tmpDir(), 'data');
    failFsyncAfterRename(1);
    const rm = fs.rmSync.bind(fs);
    jest.spyOn(fs, 'rmSync').mockImplementation((at, opts) => {
      if (String(at) === target) throw eio('rmdir');
      rm(at, opts);
    });
    expect(() => restoreDataDir(backupDir, target)).toThrow(
      new RegExp(
        `^EIO: i/o error, fsync; then ${target} could not be removed \\(EIO: i/o error, rmdir\\): remove it by hand before running it again$`,
      ),
    );
  }, 60_000);
});
