import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { createCheckpointSignal } from '../../../src/store/checkpoint-signal';
import { startCheckpointer, startCheckpointerOnDemand } from '../../../src/store/checkpointer';
import { MAX_WAL_BYTES, openConnection } from '../../../src/store/db';
import { waitFor } from '../../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

/** A database whose WAL is past MAX_WAL_BYTES, so the checkpointer tries TRUNCATE; its writer stays open. */
function walPastItsBound() {
  const file = path.join(tmpDir(), 'herald.db');
  const writer = openConnection(file);
  writer.exec('CREATE TABLE t (b BLOB)');
  const insert = writer.prepare('INSERT INTO t VALUES (?)');
  const blob = Buffer.alloc(1024 * 1024, 1);
  writer.transaction(() => {
    for (let i = 0; i < MAX_WAL_BYTES / blob.length + 4; i++) insert.run(blob);
  })();
  return { file, writer, insert };
}

describe('the herald.db checkpointer', () => {
  it("never shuts writers out while a long reader holds the WAL past its bound (a backup's VACUUM INTO)", async () => {
    const { file, writer, insert } = walPastItsBound();
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

  it('empties a WAL past its bound with a TRUNCATE and says when it held the write lock, for the writers that waited (slow-disk probe)', async () => {
    const { file, writer } = walPastItsBound();
    const signal = createCheckpointSignal();
    const before = Date.now();
    expect(signal.heldSince(before)).toBe(false);
    const checkpointer = startCheckpointer(file, 20, {}, signal.buffer);
    try {
      const held = new Float64Array(signal.buffer);
      await waitFor(() => fs.statSync(`${file}-wal`).size === 0 && held[1]! > 0, { timeoutMs: 30_000, what: 'the WAL emptied' });
      expect(signal.heldSince(before)).toBe(true);
      // Held no longer once it ended: a write after that is not waiting behind it.
      await waitFor(() => held[0] === 0, { timeoutMs: 5_000, what: 'the hold ended' });
      expect(signal.heldSince(Date.now() + 1)).toBe(false);
    } finally {
      await checkpointer.stop();
      writer.close();
    }
  });

  it('after a slow PASSIVE, no TRUNCATE for 10 s, even right after a quick one that had nothing to copy (re-probe: a 10 s hold under a slow disk)', async () => {
    const { file, writer } = walPastItsBound();
    const signal = createCheckpointSignal();
    // 1 ms: the first PASSIVE, copying 36 MiB, is slow; the next ones, with nothing left to copy, are quick.
    const checkpointer = startCheckpointer(file, 20, {}, signal.buffer, 1);
    try {
      const held = new Float64Array(signal.buffer);
      await new Promise((r) => setTimeout(r, 1500));
      // Was: the TRUNCATE ran on the second tick (its PASSIVE quick with nothing to copy) and emptied the WAL.
      expect(held[1]).toBe(0);
      expect(fs.statSync(`${file}-wal`).size).toBeGreaterThan(MAX_WAL_BYTES);
    } finally {
      await checkpointer.stop();
      writer.close();
    }
  });

  it('empties a WAL past the hard bound however slow checkpoints are: a slow disk does not grow it to a full one (re-probe: 278 MiB in a minute)', async () => {
    const { file, writer } = walPastItsBound();
    const signal = createCheckpointSignal();
    // Every checkpoint slow (0 ms), and the hard bound at the soft one: past it, the TRUNCATE runs all the same.
    const checkpointer = startCheckpointer(file, 20, {}, signal.buffer, 0, MAX_WAL_BYTES);
    try {
      const held = new Float64Array(signal.buffer);
      await waitFor(() => fs.statSync(`${file}-wal`).size === 0 && held[1]! > 0, {
        timeoutMs: 10_000,
        what: 'the WAL emptied by a TRUNCATE',
      });
    } finally {
      await checkpointer.stop();
      writer.close();
    }
  });

  it('starts its thread only once the WAL grows past its start size, and then checkpoints it', async () => {
    const file = path.join(tmpDir(), 'herald.db');
    const writer = openConnection(file);
    writer.exec('CREATE TABLE t (b BLOB)');
    const insert = writer.prepare('INSERT INTO t VALUES (?)');
    const checkpointer = startCheckpointerOnDemand(file, 20, 256 * 1024);
    const walBytes = () => fs.statSync(`${file}-wal`).size;
    try {
      insert.run(Buffer.alloc(16 * 1024, 1));
      await new Promise((r) => setTimeout(r, 200));
      expect(checkpointer.started()).toBe(false);
      for (let i = 0; i < 8; i++) insert.run(Buffer.alloc(64 * 1024, 1));
      expect(walBytes()).toBeGreaterThan(256 * 1024);
      await waitFor(() => checkpointer.started(), { timeoutMs: 5000, what: 'the checkpointer started' });
      // Checkpointed: the next write starts the WAL again from its beginning instead of growing it.
      const grown = walBytes();
      await new Promise((r) => setTimeout(r, 300));
      for (let i = 0; i < 4; i++) insert.run(Buffer.alloc(64 * 1024, 1));
      expect(walBytes()).toBe(grown);
    } finally {
      await checkpointer.stop();
      writer.close();
    }
  });

  it('a thread that cannot start or dies is reported, not an unhandled error that kills the process, and stop() still returns', async () => {
    // herald.db unreachable from the thread (here: a directory where the file should be; in the field
    // EMFILE at the thread's start) made the Worker emit 'error' with no listener: the gateway died.
    const file = tmpDir(); // a directory: SQLite cannot open it as a database
    const failures: Error[] = [];
    const checkpointer = startCheckpointer(file, 20, { failed: (err) => failures.push(err) });
    await waitFor(() => failures.length > 0, { timeoutMs: 5000, what: 'the failure reported' });
    await checkpointer.stop();
    expect(failures.length).toBeGreaterThan(0);
  });

  it('a checkpoint that fails while its thread runs on is told, not posted to no one (re-probe)', async () => {
    const file = path.join(tmpDir(), 'herald.db');
    fs.writeFileSync(file, Buffer.alloc(8192, 7)); // not a database: every checkpoint fails (SQLITE_NOTADB)
    const told: string[] = [];
    const failures: Error[] = [];
    const checkpointer = startCheckpointer(file, 20, { failed: (err) => failures.push(err), checkpointFailed: (m) => told.push(m) });
    try {
      await waitFor(() => told.length > 0 || failures.length > 0, { timeoutMs: 5000, what: 'the failure told' });
      expect(told[0]).toMatch(/not a database/i);
    } finally {
      await checkpointer.stop();
    }
  });
});
