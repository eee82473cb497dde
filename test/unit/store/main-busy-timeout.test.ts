import path from 'node:path';
import { MAIN_BUSY_TIMEOUT_MS, openConnection, openDatabase } from '../../../src/store/db';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

/**
 * The main thread's herald.db connection waits for the write lock on the event loop that answers producers
 * (slow-disk probe: a PATCH waiting behind a held lock stalled every publish of that moment for 5 s).
 */
describe("the main thread's herald.db connection", () => {
  it('gives up on a write lock held elsewhere after a second, not five', () => {
    const file = path.join(tmpDir(), 'herald.db');
    const main = openDatabase(file);
    const other = openConnection(file);
    try {
      expect(main.pragma('busy_timeout', { simple: true })).toBe(MAIN_BUSY_TIMEOUT_MS);
      other.exec('BEGIN IMMEDIATE');
      const began = performance.now();
      expect(() => main.prepare("INSERT INTO meta (key, value) VALUES ('k', 'v')").run()).toThrow(/database is locked/);
      const waited = performance.now() - began;
      expect(waited).toBeGreaterThanOrEqual(MAIN_BUSY_TIMEOUT_MS * 0.9);
      expect(waited).toBeLessThan(4_000); // was 5 s
      other.exec('ROLLBACK');
    } finally {
      other.close();
      main.close();
    }
  });
});
