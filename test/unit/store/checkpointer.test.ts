import Database from 'better-sqlite3';
import path from 'node:path';
import { startCheckpointer } from '../../../src/store/checkpointer';
import { MAX_WAL_BYTES, openConnection } from '../../../src/store/db';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

describe('the herald.db checkpointer', () => {
  it("never shuts writers out while a long reader holds the WAL past its bound (a backup's VACUUM INTO)", async () => {
    const file = path.join(tmpDir(), 'herald.db');
    const writer = openConnection(file);
    writer.exec('CREATE TABLE t (b BLOB)');
    const insert = writer.prepare('INSERT INTO t VALUES (?)');
    const blob = Buffer.alloc(1024 * 1024, 1);
    // A WAL past MAX_WAL_BYTES, so the checkpointer tries TRUNCATE.
    writer.transaction(() => {
      for (let i = 0; i < MAX_WAL_BYTES / blob.length + 4; i++) insert.run(blob);
    })();
    const reader = new Database(file, { readonly: true });
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM t').get(); // the read transaction starts here and stays open
    const checkpointer = startCheckpointer(file, 20);
    try {
      await new Promise((r) => setTimeout(r, 300));
      // Was: every write waited for the busy timeout and failed, as TRUNCATE held the write lock retry after retry.
      writer.pragma('busy_timeout = 1000');
      let failed = 0;
      for (let i = 0; i < 20; i++) {
        try {
          insert.run(Buffer.alloc(16));
        } catch {
          failed++;
        }
        await new Promise((r) => setTimeout(r, 25));
      }
      expect(failed).toBe(0);
    } finally {
      reader.exec('COMMIT');
      reader.close();
      await checkpointer.stop();
      writer.close();
    }
  }, 60_000);
});
