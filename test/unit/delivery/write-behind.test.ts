import path from 'node:path';
import pino from 'pino';
import { createWriteBehind } from '../../../src/delivery/write-behind';
import { openDatabase, type Db } from '../../../src/store/db';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

/** One delivered attempt of sub-1's offset 5, for the attempt log. */
const ATTEMPT = {
  subscriptionId: 'sub-1',
  deliveryId: 'dlv-1',
  partition: 0,
  offset: 5,
  attempt: 1,
  status: 204,
  error: null,
  durationMs: 3,
  startedAt: 0,
  outcome: 'delivered',
} as const;

/**
 * The delivery thread's write-behind on a real herald.db that refuses writes (`query_only`, as a full
 * disk or another process's lock would): the failing flush is retried every interval, but logged once,
 * then once per 10 s with its count, and once written again (a probe's full disk: 20 error lines a second).
 */
describe('write-behind flush failures', () => {
  let db: Db;
  beforeEach(() => {
    jest.useFakeTimers();
    db = openDatabase(path.join(tmpDir(), 'herald.db'));
    db.pragma('foreign_keys = OFF'); // offsets of a subscription this test does not create
  });
  afterEach(() => {
    db.close();
    jest.useRealTimers();
  });

  it('tells /readyz once writes have failed for a second, whichever path tries them, and again once one succeeds (re-probe: callbacks were not counted)', () => {
    const told: (string | undefined)[] = [];
    const writes = createWriteBehind({ db, log: pino({ level: 'silent' }), onWriteHealth: (failing) => void told.push(failing) });
    db.pragma('query_only = ON');
    writes.persistence.saveOffset('sub-1', { partition: 0, committedOffset: 5, lastMatchedOffset: null, expired: 0 });
    // A callback's write every 20 ms takes the timer's place: only those writes run.
    for (let i = 0; i < 60; i++) {
      expect(() => writes.flushOrThrow()).toThrow();
      jest.advanceTimersByTime(20);
    }
    expect(told).toEqual([expect.stringMatching(/readonly|query_only/i)]);
    db.pragma('query_only = OFF');
    writes.flushOrThrow();
    expect(told).toEqual([expect.any(String), undefined]);
  });

  it('logs a failing flush once, then every 10 s with how many tries failed, and says when it is written again', () => {
    const lines: { level: number; msg: string; failedTries?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const writes = createWriteBehind({ db, log });
    db.pragma('query_only = ON');
    writes.persistence.saveOffset('sub-1', { partition: 0, committedOffset: 5, lastMatchedOffset: null });
    jest.advanceTimersByTime(2000);
    const errors = () => lines.filter((l) => l.msg.startsWith('delivery state flush failed'));
    expect(errors()).toHaveLength(1);
    expect(errors()[0]).toMatchObject({ level: 50, failedTries: 1 });

    jest.advanceTimersByTime(10_000);
    expect(errors()).toHaveLength(2);
    expect(errors()[1]!.failedTries).toBeGreaterThan(100); // tried every 50 ms all along

    db.pragma('query_only = OFF');
    jest.advanceTimersByTime(100);
    expect(lines.at(-1)).toMatchObject({ level: 30, msg: 'delivery state written again' });
    const row = db.prepare('SELECT committed_offset FROM subscription_offsets WHERE subscription_id = ?').get('sub-1');
    expect(row).toEqual({ committed_offset: 5 });
  });

  it('logs a failing attempt log flush once, then every 10 s with how many tries failed (disk probe: a line with its stack every second)', () => {
    const lines: { level: number; msg: string; failedTries?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const writes = createWriteBehind({ db, log });
    db.pragma('query_only = ON');
    writes.persistence.recordAttempt(ATTEMPT);
    jest.advanceTimersByTime(30_500);
    const errors = lines.filter((l) => l.msg.startsWith('attempt log flush failed'));
    expect(errors.map((l) => l.failedTries)).toEqual([1, 11, 21]);
    db.pragma('query_only = OFF');
    jest.advanceTimersByTime(1000);
    expect(lines.at(-1)).toMatchObject({ level: 30, msg: 'attempt log written again', failedTries: 30 });
  });
});

/**
 * While herald.db's own checkpointer holds the write lock (a TRUNCATE through a slow fsync: seconds, slow-disk probe
 * `strace -e inject=fsync:delay_enter=10000000 -P herald.db`), a timed flush waited out its busy timeout (1 s) on the
 * delivery thread, then again every 50 ms: its requests, callbacks and calls stood still (deliveries 2-5 s late
 * through a 10 s hold). Real timers and a real lock here (another connection's `BEGIN IMMEDIATE`), as the checkpointer takes it.
 */
describe("write-behind while herald.db's own checkpointer holds the write lock", () => {
  /** A write-behind on a fresh herald.db, told the checkpointer holds the lock while `hold.held`; `other` takes the lock. */
  function writesBesideAHold() {
    const file = path.join(tmpDir(), 'herald.db');
    const db = openDatabase(file);
    db.pragma('foreign_keys = OFF'); // offsets of a subscription this test does not create
    // No busy wait: a write tried under the other connection's lock fails at once and says so in a line,
    // where it stood the thread still for the busy timeout (1 s) — which the tests below would have to time.
    db.pragma('busy_timeout = 0');
    const other = openDatabase(file);
    const hold = { held: true };
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    const writes = createWriteBehind({ db, log, lockHeld: () => hold.held });
    return { db, other, writes, hold, lines };
  }

  it('puts timed flushes off, untried, without stopping the event loop, and writes once the hold ends', async () => {
    const { db, other, writes, hold, lines } = writesBesideAHold();
    try {
      other.exec('BEGIN IMMEDIATE');
      writes.persistence.saveOffset('sub-1', { partition: 0, committedOffset: 5, lastMatchedOffset: null, expired: 0 });
      writes.persistence.recordAttempt(ATTEMPT);
      await new Promise((resolve) => setTimeout(resolve, 1_300)); // past the attempt log's interval (1 s) too
      other.exec('ROLLBACK');
      hold.held = false;
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
    }
    // Was: each timed flush tried, and waited out the busy timeout (1 s) on the thread, before failing.
    expect(lines).toEqual([]);
    expect(db.prepare('SELECT committed_offset FROM subscription_offsets WHERE subscription_id = ?').get('sub-1')).toEqual({
      committed_offset: 5,
    });
    expect(db.prepare('SELECT COUNT(*) AS n FROM delivery_attempts WHERE subscription_id = ?').get('sub-1')).toEqual({ n: 1 });
    writes.close();
    db.close();
  });

  it("answers a callback's write at once, untried, while herald.db's own checkpointer holds the write lock (re-probe: each try stopped the delivery thread for the busy timeout)", async () => {
    // A hold that has lasted (a slow disk's): held for any length asked.
    const { db, other, writes, hold } = writesBesideAHold();
    try {
      other.exec('BEGIN IMMEDIATE');
      writes.persistence.saveOffset('sub-1', { partition: 0, committedOffset: 7, lastMatchedOffset: null, expired: 0 });
      const outcome = await writes.persistence.persisted().then(
        () => ({ code: 'written', message: '' }),
        (err: { code?: string; message: string }) => ({ code: err.code, message: err.message }),
      );
      // Was: the try waited out the busy timeout (1 s), the thread's loop stopped, before failing all the same
      // with SQLite's own "database is locked": this one is refused before any try.
      expect(outcome).toEqual({ code: 'SQLITE_BUSY', message: "database is locked (herald.db's own checkpoint holds its write lock)" });
      other.exec('ROLLBACK');
      hold.held = false;
      await new Promise((resolve) => setTimeout(resolve, 200)); // the timed flush writes it
    } finally {
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
    }
    expect(db.prepare('SELECT committed_offset FROM subscription_offsets WHERE subscription_id = ?').get('sub-1')).toEqual({
      committed_offset: 7,
    });
    writes.close();
    db.close();
  });

  it("tries a callback's write when the checkpointer's hold is a moment's (a healthy disk's TRUNCATE): written, not a 503 (review)", async () => {
    const db = openDatabase(path.join(tmpDir(), 'herald.db'));
    db.pragma('foreign_keys = OFF'); // offsets of a subscription this test does not create
    // The checkpointer began a hold 10 ms ago (and, here, holds nothing): long holds only are refused untried.
    const writes = createWriteBehind({ db, log: pino({ level: 'silent' }), lockHeld: (forAtLeastMs = 0) => forAtLeastMs <= 10 });
    try {
      writes.persistence.saveOffset('sub-1', { partition: 0, committedOffset: 9, lastMatchedOffset: null, expired: 0 });
      // Was: rejected at once, "database is locked (herald.db's own checkpoint …)", a 503 to the callback.
      await expect(writes.persistence.persisted()).resolves.toBeUndefined();
      expect(db.prepare('SELECT committed_offset FROM subscription_offsets WHERE subscription_id = ?').get('sub-1')).toEqual({
        committed_offset: 9,
      });
    } finally {
      writes.close();
      db.close();
    }
  });
});
