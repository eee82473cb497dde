import fs from 'node:fs';
import path from 'node:path';
import { getJson, lookupEvent, postBinary, spawnGateway, useChildGateways, type ChildGateway } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const spawnChildGateway = useChildGateways();
/** `0` (any free port) unless the run assigns one. */
const PORT = process.env.HERALD_TEST_PORT ?? '0';
const envOf = (dataDir: string) => ({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_FSYNC: 'always', HERALD_PORT: PORT });

const BEFORE = 20;
const AFTER = 10;

async function stop(gw: ChildGateway): Promise<void> {
  gw.child.kill('SIGTERM');
  await gw.exited;
}

/**
 * The active segment removed or cut short under a running gateway: writes through its open descriptor
 * still succeed (to an unlinked file, or at the front of an emptied one), and every publish after it
 * was acknowledged (probe: 150 more 202s, lost at the next start, which then refused).
 */
describe.each([
  ['removed (rm)', (segment: string) => fs.rmSync(segment)],
  ['cut to zero bytes (truncate -s 0)', (segment: string) => fs.truncateSync(segment, 0)],
])('the active segment %s while the gateway runs', (_name, damage) => {
  it('refuses every later publish with 503, /readyz names the segment, and no 202 is given for an event the log does not hold', async () => {
    const dataDir = tmpDir();
    const gw = await spawnChildGateway(envOf(dataDir));
    for (let i = 0; i < BEFORE; i++) expect((await postBinary(gw.url, { source: '/tamper', id: `before-${i}` })).status).toBe(202);
    const wal = path.join(dataDir, 'wal');
    const segments = fs.readdirSync(wal).filter((f) => f.endsWith('.seg'));
    expect(segments).toHaveLength(1);
    const segment = path.join(wal, segments[0]!);

    damage(segment);

    const acked: string[] = [];
    for (let i = 0; i < AFTER; i++) {
      const res = await postBinary(gw.url, { source: '/tamper', id: `after-${i}` });
      if (res.status === 202) acked.push(`after-${i}`);
      else expect(res.status).toBe(503);
    }
    expect(acked).toEqual([]);
    const ready = await getJson(`${gw.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.body.checks.log).toContain(segment);
    // Still so after the write probe's first try (5 s): nothing beside the log brings it back.
    await new Promise((r) => setTimeout(r, 6000));
    expect((await getJson(`${gw.url}/readyz`)).status).toBe(503);
    expect((await postBinary(gw.url, { source: '/tamper', id: 'late' })).status).toBe(503);
    expect(fs.existsSync(segment) ? fs.statSync(segment).size : -1).toBeLessThan(1); // neither re-created nor filled with zeros
    const errorLine = gw
      .output()
      .split('\n')
      .find((l) => l.includes('"level":50') && l.includes('the active segment was removed, replaced or cut short'));
    expect(errorLine).toBeDefined();
    expect(errorLine).toContain(segment);
    await stop(gw);

    // The next start must not take the log for whole: it refuses, naming what is missing.
    let restarted: ChildGateway | undefined;
    let refusal = '';
    try {
      restarted = await spawnGateway(envOf(dataDir));
    } catch (err) {
      refusal = (err as Error).message;
    }
    if (restarted) {
      // Had it started, every event acknowledged must be readable (none of them is: they were in the damaged file).
      const missing: string[] = [];
      for (const id of [...Array.from({ length: BEFORE }, (_, i) => `before-${i}`), ...acked]) {
        if ((await lookupEvent(restarted.url, { source: '/tamper', id })).status !== 200) missing.push(id);
      }
      await stop(restarted);
      expect(missing).toEqual([]);
    }
    expect(refusal).toMatch(/gateway exited \(\d+\) before listening/);
    expect(refusal).toMatch(/acknowledged|holds no log/);
  }, 60_000);
});
