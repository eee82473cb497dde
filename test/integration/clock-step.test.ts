import fs from 'node:fs';
import path from 'node:path';
import { killIfRunning, postBatch, spawnGateway, type ChildGateway } from '../helpers/gateway';
import { tmpDir } from '../helpers/tmp';

const STEPPER = path.resolve(__dirname, '..', 'helpers', 'clock-step-back.js');

describe('a wall clock stepped back (NTP)', () => {
  it('keeps checkpointing index.db: its WAL stays bounded (clock probe: 189 MiB for 160,000 events while the clock was an hour back)', async () => {
    const dataDir = tmpDir();
    const stepFile = path.join(tmpDir(), 'step');
    let gw: ChildGateway | undefined;
    try {
      gw = await spawnGateway({
        HERALD_DATA_DIR: dataDir,
        HERALD_TEST_CLOCK_STEP_FILE: stepFile,
        NODE_OPTIONS: `--require ${STEPPER}`,
      });
      // Stepped back once the indexer thread has started and taken its first time.
      await new Promise((r) => setTimeout(r, 1500));
      fs.writeFileSync(stepFile, String(-3_600_000));
      await new Promise((r) => setTimeout(r, 200));
      const wal = path.join(dataDir, 'index.db-wal');
      let largest = 0;
      for (let b = 0; b < 150; b++) {
        const batch = Array.from({ length: 200 }, (_, i) => ({ id: `c${b}-${i}`, source: '/clock/step', data: { pad: 'x'.repeat(50) } }));
        expect((await postBatch(gw.url, batch)).status).toBe(202);
        largest = Math.max(largest, fs.statSync(wal, { throwIfNoEntry: false })?.size ?? 0);
      }
      // 30,000 events: about 35 MB of WAL without checkpoints; checkpointed every 100 ms it stays near 2 MB.
      expect(largest).toBeLessThan(16 * 1024 * 1024);
    } finally {
      await killIfRunning(gw);
    }
  }, 60_000);
});
