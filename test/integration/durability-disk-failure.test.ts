import fs from 'node:fs';
import path from 'node:path';
import { getJson, lookupEvent, partitionHeads, postBatch, postBinary, readAllEvents, startTestGateway } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

/**
 * A real failing disk without mocks: the active segment is a symlink to
 * /dev/full, where every write fails with ENOSPC (and ftruncate/fdatasync with
 * EINVAL, so undoing the failed append fails too). Replacing the symlink with
 * a regular file is the "operator freed space" repair.
 */
function dataDirOnFullDisk(): { dataDir: string; segment: string; repair: () => void } {
  const dataDir = tmpDir();
  fs.mkdirSync(path.join(dataDir, 'wal'));
  const segment = path.join(dataDir, 'wal', '00000000000000000000.seg');
  fs.symlinkSync('/dev/full', segment);
  return {
    dataDir,
    segment,
    repair: () => {
      fs.unlinkSync(segment);
      fs.writeFileSync(segment, '');
    },
  };
}

describe('disk failure on append', () => {
  it('answers 503 problem+json with Retry-After, stores nothing, and is unready until an append succeeds', async () => {
    const disk = dataDirOnFullDisk();
    const gw = await startTestGateway({ HERALD_DATA_DIR: disk.dataDir, HERALD_PARTITIONS: '4' });
    try {
      const failed = await postBinary(gw.url, { source: '/disk', id: 'd1' });
      expect(failed.status).toBe(503);
      expect(failed.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(Number(failed.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(failed.body).toMatchObject({ status: 503, code: 'unavailable', type: 'urn:herald:problem:unavailable' });
      expect(JSON.stringify(failed.body)).not.toMatch(/ENOSPC|\/dev\/full|stack/); // no internals leak

      const failedBatch = await postBatch(gw.url, [
        { source: '/disk', id: 'd2' },
        { source: '/disk', id: 'd3' },
      ]);
      expect(failedBatch.status).toBe(503);

      const ready = await getJson(`${gw.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(ready.body.checks.log).toMatch(/^log write failed/);
      expect((await getJson(`${gw.url}/healthz`)).status).toBe(200); // alive, just not ready
      const writable = async () => /^herald_log_writable (\d)$/m.exec(await (await fetch(`${gw.url}/metrics`)).text())?.[1];
      expect(await writable()).toBe('0'); // and /metrics says so
      expect(await partitionHeads(gw.url)).toEqual([0, 0, 0, 0]);
      expect((await lookupEvent(gw.url, { source: '/disk', id: 'd1' })).status).toBe(404);
      expect(await readAllEvents(gw.url)).toEqual([]);

      disk.repair();
      const ok = await postBinary(gw.url, { source: '/disk', id: 'd1' });
      expect(ok.status).toBe(202);
      expect(ok.body.results).toEqual([expect.objectContaining({ id: 'd1', offset: 0, duplicate: false })]);
      expect((await getJson(`${gw.url}/readyz`)).status).toBe(200);
      expect(await writable()).toBe('1');
      expect((await lookupEvent(gw.url, { source: '/disk', id: 'd1' })).status).toBe(200);
      const batch = await postBatch(gw.url, [
        { source: '/disk', id: 'd2' },
        { source: '/disk', id: 'd3' },
      ]);
      expect(batch.status).toBe(202);
      expect(await readAllEvents(gw.url)).toHaveLength(3);
    } finally {
      await gw.close();
    }
  });

  it('keeps the events stored after the repair across a restart, with no trace of the failed requests', async () => {
    const disk = dataDirOnFullDisk();
    const env = { HERALD_DATA_DIR: disk.dataDir, HERALD_PARTITIONS: '4' };
    const gw = await startTestGateway(env);
    await Promise.all(Array.from({ length: 5 }, (_, i) => postBinary(gw.url, { source: '/disk', id: `lost${i}` })));
    disk.repair();
    const stored = await postBinary(gw.url, { source: '/disk', id: 'kept' });
    expect(stored.status).toBe(202);
    await gw.close();

    const again = await startTestGateway(env);
    try {
      const all = await readAllEvents(again.url);
      expect(all.map((e) => e.event.id)).toEqual(['kept']);
      expect(all[0]).toMatchObject({ partition: stored.body.results[0].partition, offset: 0 });
      expect((await getJson(`${again.url}/readyz`)).status).toBe(200);
    } finally {
      await again.close();
    }
  });
});
