import fs from 'node:fs';
import path from 'node:path';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { createLogger } from '../../../src/logger';
import {
  RESERVATION_FILE,
  createOffsetReservation,
  readReservation,
  skipReserved,
  type ReservationRecord,
} from '../../../src/wal/offset-reservation';
import Database from 'better-sqlite3';
import { openDatabase } from '../../../src/store/db';
import { createMetaRepo } from '../../../src/store/meta-repo';
import { createRetentionFloors } from '../../../src/store/retention-floors';
import { openStoreAt } from '../../helpers/log-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

const log = createLogger('silent');
const record = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, RESERVATION_FILE), 'utf8')) as ReservationRecord;
const at = (partition: number, offset: number) => ({ partition, offset });

describe('skipReserved', () => {
  // The ceilings are a floor in every case: past the offsets handed out only for an unclean stop under
  // fsync=interval/never (the reservation); otherwise the heads at the last start or a clean stop,
  // which matter when index.db, that knew them, was lost.
  it.each<[string, ReservationRecord | undefined, number[]]>([
    ['no record (a new data dir, or one from before)', undefined, [5, 7]],
    ['a clean stop whose heads index.db no longer knows', { clean: true, fsync: 'always', ceilings: [9, 7] }, [9, 7]],
    ['an unclean stop under fsync=always (heads as of the start)', { clean: false, fsync: 'always', ceilings: [4, 7] }, [5, 7]],
    ['an unclean stop under fsync=interval', { clean: false, fsync: 'interval', ceilings: [9, 3] }, [9, 7]],
    ['an unclean stop under fsync=never', { clean: false, fsync: 'never', ceilings: [5, 100] }, [5, 100]],
  ])('%s', (_name, reservation, expected) => {
    const heads = [5, 7];
    const moved = skipReserved(heads, reservation);
    expect(heads).toEqual(expected);
    expect(moved.map((m) => m.to - m.from)).toEqual(expected.map((h, p) => h - [5, 7][p]!).filter((n) => n > 0));
  });
});

describe('createOffsetReservation', () => {
  it('makes the first group of a partition wait for its ceiling, then reserves a block ahead without waiting', async () => {
    const dir = tmpDir();
    const reservation = createOffsetReservation({ dir, fsync: 'interval', heads: [10, 0], logEnd: 500, block: 100, log });
    const first = reservation.cover([at(0, 10)]);
    expect(first).toBeInstanceOf(Promise);
    await first;
    expect(record(dir)).toEqual({ clean: false, fsync: 'interval', ceilings: [111, 0], logEnd: 500 });
    // Within the block: nothing to wait for.
    expect(reservation.cover([at(0, 11), at(0, 40)])).toBeUndefined();
    // Past half the block: raised ahead of need, still without waiting.
    expect(reservation.cover([at(0, 70)])).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(record(dir).ceilings[0]).toBe(171);
    await reservation.close([71, 0], 900);
    expect(record(dir)).toEqual({ clean: true, fsync: 'interval', ceilings: [71, 0], logEnd: 900 });
  });

  it('starts when the heads cannot be recorded (a full disk must not stop the start), and the first group waits for a write that succeeds', async () => {
    const dir = tmpDir();
    fs.mkdirSync(path.join(dir, `${RESERVATION_FILE}.tmp`));
    const reservation = createOffsetReservation({ dir, fsync: 'interval', heads: [3], logEnd: 0, block: 10, log });
    expect(fs.existsSync(path.join(dir, RESERVATION_FILE))).toBe(false);
    await expect(reservation.cover([at(0, 3)])).rejects.toThrow(/EISDIR/);
    fs.rmdirSync(path.join(dir, `${RESERVATION_FILE}.tmp`));
    await reservation.cover([at(0, 3)]);
    expect(record(dir).ceilings).toEqual([14]);
  });

  it('rejects the waiting group when the file cannot be written, and writes it at the next try', async () => {
    const dir = tmpDir();
    const reservation = createOffsetReservation({ dir, fsync: 'never', heads: [0], logEnd: 0, block: 10, log });
    expect(record(dir)).toEqual({ clean: false, fsync: 'never', ceilings: [0], logEnd: 0 }); // the heads, recorded at once
    fs.mkdirSync(path.join(dir, `${RESERVATION_FILE}.tmp`)); // the temp file cannot be opened
    await expect(reservation.cover([at(0, 0)])).rejects.toThrow(/EISDIR/);
    fs.rmdirSync(path.join(dir, `${RESERVATION_FILE}.tmp`));
    await reservation.cover([at(0, 0)]);
    expect(record(dir).ceilings).toEqual([11]);
  });
});

describe('readReservation', () => {
  it('reads what was written, and takes an unreadable file for none', () => {
    const dir = tmpDir();
    expect(readReservation(dir, log)).toBeUndefined();
    fs.writeFileSync(path.join(dir, RESERVATION_FILE), JSON.stringify({ clean: false, fsync: 'interval', ceilings: [3, 4] }));
    expect(readReservation(dir, log)).toEqual({ clean: false, fsync: 'interval', ceilings: [3, 4] });
    fs.writeFileSync(path.join(dir, RESERVATION_FILE), JSON.stringify({ clean: true, fsync: 'always', ceilings: [3], logEnd: 77 }));
    expect(readReservation(dir, log)).toEqual({ clean: true, fsync: 'always', ceilings: [3], logEnd: 77 });
    for (const text of [
      '{"clean":false',
      JSON.stringify({ clean: false, fsync: 'always', ceilings: [1], logEnd: -1 }),
      JSON.stringify({ clean: false, fsync: 'interval', ceilings: [-1] }),
      // Near 2^53 (a hand-edited file): offsets past it would round together and events stored there be lost.
      JSON.stringify({ clean: false, fsync: 'interval', ceilings: [2 ** 53 - 10] }),
    ]) {
      fs.writeFileSync(path.join(dir, RESERVATION_FILE), text);
      expect(readReservation(dir, log)).toBeUndefined();
    }
  });
});

describe('the event store', () => {
  const ev = (id: string): CloudEvent => ({
    attributes: { specversion: '1.0', id, source: '/reserve', type: 't' },
    data: { kind: 'none' },
  });

  it('acknowledges nothing whose offset the reservation could not record: a 503, nothing stored, then it goes on', async () => {
    const dir = tmpDir();
    const opened = openStoreAt(dir, { fsync: 'interval' });
    try {
      const blocker = path.join(dir, 'wal', `${RESERVATION_FILE}.tmp`);
      fs.mkdirSync(blocker);
      await expect(opened.store.append([ev('a')])).rejects.toMatchObject({ code: 'unavailable' });
      fs.rmdirSync(blocker);
      expect((await opened.store.append([ev('b')]))[0]).toMatchObject({ offset: 0, duplicate: false });
      expect(record(path.join(dir, 'wal')).ceilings[0]).toBeGreaterThan(0);
    } finally {
      await opened.close();
    }
    expect(record(path.join(dir, 'wal'))).toMatchObject({ clean: true, fsync: 'interval', ceilings: [1] });
  });

  it('keeps a head only index.db knew when index.db is lost (fsync=always too)', async () => {
    const dir = tmpDir();
    let opened = openStoreAt(dir);
    await opened.store.append([ev('a'), ev('b')]);
    await opened.close();
    // Offsets 2..19 lost or set aside once: only index.db's partition_heads says 20.
    const index = new Database(path.join(dir, 'index.db'));
    index.prepare('UPDATE partition_heads SET head_offset = 20 WHERE partition = 0').run();
    index.close();
    opened = openStoreAt(dir); // records the heads recovery found (20) beside the log
    await opened.close();
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(dir, `index.db${suffix}`), { force: true });
    opened = openStoreAt(dir);
    try {
      // Was: offset 2, from the log alone.
      expect((await opened.store.append([ev('c')]))[0]).toMatchObject({ offset: 20, duplicate: false });
    } finally {
      await opened.close();
    }
  });

  it('does not index again the events retention deleted, when index.db is rebuilt before their files were removed', async () => {
    const dir = tmpDir();
    let opened = openStoreAt(dir);
    await opened.store.append(Array.from({ length: 10 }, (_, i) => ev(`r${i}`)));
    await opened.close();
    // A retention round recorded its floor (offsets below 5 deleted), then the process died before the unlink.
    const herald = openDatabase(path.join(dir, 'herald.db'));
    createRetentionFloors(createMetaRepo(herald)).raise([5]);
    herald.close();
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(dir, `index.db${suffix}`), { force: true });
    opened = openStoreAt(dir);
    try {
      // Was: r0..r4 readable again, and a resend of r0 a duplicate of an event retention deletes.
      expect(opened.store.lookup('/reserve', 'r0')).toBeUndefined();
      expect(opened.store.lookup('/reserve', 'r5')).toBeDefined();
      expect((await opened.store.append([ev('r0')]))[0]).toMatchObject({ offset: 10, duplicate: false });
    } finally {
      await opened.close();
    }
  });
});
