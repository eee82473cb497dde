import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { useChildGateways } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * A SIGTERM while herald.db's checkpointer thread is inside a checkpoint whose fsync the disk stretches to seconds
 * (slow-disk probe: `strace -f -e inject=fsync:delay_enter=10000000 -P herald.db`; here the checkpointer thread blocked
 * 3 s after each checkpoint's copy by a preload, test/helpers/slow-checkpoint.js, since CI has no strace).
 * The shutdown waited for that checkpoint, then the checkpointer's overdue timer began another, then the main thread
 * checkpointed once more, each through its own slow fsync: 25 s of a 15 s budget (here: about 2 × 3 s of a 1 s one).
 * None is started past the deadline now: the process ends once the one in progress returns, and what was committed
 * (a subscription created during the slow checkpoint) is there at the next open.
 */

afterAll(cleanupTmpDirs);

const DELAY_S = 3;
const SLOW_CHECKPOINT = path.resolve(__dirname, '..', 'helpers', 'slow-checkpoint.js');
const spawn = useChildGateways();

/**
 * 2 MiB in herald.db's WAL from another connection: the gateway's checkpointer thread starts (past 1 MiB) and
 * checkpoints it. Resolves once its pages are copied into herald.db.
 */
async function checkpointerCopies2MiB(dbFile: string): Promise<void> {
  const other = new Database(dbFile);
  other.pragma('wal_autocheckpoint = 0');
  other.exec('CREATE TABLE probe_scratch (b BLOB)');
  other.prepare('INSERT INTO probe_scratch VALUES (?)').run(Buffer.alloc(2 * 1024 * 1024, 7));
  other.close();
  const copyBy = Date.now() + 10_000;
  while (fs.statSync(dbFile).size < 2 * 1024 * 1024) {
    if (Date.now() > copyBy) throw new Error('the checkpointer did not checkpoint');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * A gateway whose checkpointer thread is blocked DELAY_S after it copied 2 MiB into herald.db, a subscription created
 * meanwhile, then a SIGTERM with `shutdownTimeoutMs`: how it ended, and the subscriptions herald.db then holds.
 */
async function stopDuringSlowCheckpoint(shutdownTimeoutMs: number) {
  const dir = tmpDir();
  const dbFile = path.join(dir, 'herald.db');
  // The checkpointer thread blocked for DELAY_S once it has copied its pages, as a slow disk's fsync blocks it.
  const { url, child, exited, output } = await spawn({
    NODE_OPTIONS: `--require ${SLOW_CHECKPOINT}`,
    HERALD_TEST_SLOW_CHECKPOINT_MS: String(DELAY_S * 1000),
    HERALD_DATA_DIR: dir,
    HERALD_PARTITIONS: '1',
    HERALD_SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs),
  });

  // Its pages copied into herald.db: it is in the fsync that follows.
  await checkpointerCopies2MiB(dbFile);
  // Committed during the checkpoint (synchronous=FULL: in the WAL, on disk), and then not yet checkpointed.
  const created = await fetch(`${url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink: 'http://127.0.0.1:9/sink' }),
  });
  expect(created.status).toBe(201);
  const { id } = (await created.json()) as { id: string };

  const signalled = Date.now();
  child.kill('SIGTERM');
  const code = await exited;
  const took = Date.now() - signalled;
  const reopened = new Database(dbFile);
  try {
    return { code, took, out: output(), id, stored: reopened.prepare('SELECT id FROM subscriptions').all() };
  } finally {
    reopened.close();
  }
}

it('ends once the checkpoint in progress at the deadline returns, starting none after it, and loses nothing committed', async () => {
  const { code, took, out, id, stored } = await stopDuringSlowCheckpoint(1000);
  expect(code).toBe(0);
  // Was about 2 × DELAY_S: a second checkpoint through a slow fsync after the one in progress.
  expect(took).toBeLessThan(DELAY_S * 1000 + 1200);
  expect(out).toMatch(/herald\.db not checkpointed or closed \(past the deadline/);
  expect(stored).toEqual([{ id }]);
}, 30_000);

it('starts no closing checkpoint when one like the last would not fit before the deadline (the checkpointer stopped in time)', async () => {
  // The checkpointer's round ends about 1 s before the deadline, and took DELAY_S: the main thread's own checkpoint
  // on that disk would run past it (re-probe: 4.4 s past the deadline, no warn line).
  const { code, out, id, stored } = await stopDuringSlowCheckpoint(DELAY_S * 1000 + 1000);
  expect(code).toBe(0);
  expect(out).toMatch(/herald\.db not checkpointed or closed \(the longest checkpoint of the last minute took \d+ ms, more than is left/);
  expect(stored).toEqual([{ id }]);
}, 30_000);

it('starts no closing checkpoint when the checkpointer was slow a moment ago, though its last rounds had nothing to copy', async () => {
  // Only checkpoints that copy pages are slow here, in every thread: as on a slow disk, the checkpointer's rounds after
  // its slow one copy nothing and are quick, while the shutdown's own checkpoint copies what the shutdown wrote. Was:
  // the last (quick) round said a closing checkpoint fitted; it took DELAY_S, ending about 1.9 s past a 1.5 s deadline.
  const dir = tmpDir();
  const dbFile = path.join(dir, 'herald.db');
  const { url, child, exited, output } = await spawn({
    NODE_OPTIONS: `--require ${SLOW_CHECKPOINT}`,
    HERALD_TEST_SLOW_CHECKPOINT_MS: String(DELAY_S * 1000),
    HERALD_TEST_SLOW_CHECKPOINT_COPIES: '1',
    HERALD_DATA_DIR: dir,
    HERALD_PARTITIONS: '1',
    HERALD_SHUTDOWN_TIMEOUT_MS: '1500',
  });
  const port = Number(new URL(url).port);
  // The checkpointer starts (a WAL past 1 MiB) and its round copying 2 MiB takes DELAY_S; the rounds after it are quick.
  await checkpointerCopies2MiB(dbFile);
  await new Promise((resolve) => setTimeout(resolve, DELAY_S * 1000 + 1000));
  // A subscription's create whose body arrives after the SIGTERM: the shutdown lets it finish, then has it to checkpoint.
  const body = JSON.stringify({ sink: 'http://127.0.0.1:9/sink' });
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  let answer = '';
  socket.on('data', (c: Buffer) => (answer += c.toString()));
  socket.write(
    `POST /subscriptions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 5)}`,
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  const signalled = Date.now();
  child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 200));
  socket.end(body.slice(5));
  const code = await exited;
  // Was about 200 ms + DELAY_S: the closing checkpoint copied the subscription and waited its slow sync.
  expect(Date.now() - signalled).toBeLessThan(DELAY_S * 1000);
  expect(answer).toMatch(/^HTTP\/1\.1 201/);
  expect(code).toBe(0);
  expect(output()).toMatch(/herald\.db not checkpointed or closed \(the longest checkpoint of the last minute took \d+ ms/);
  const reopened = new Database(dbFile);
  try {
    expect(reopened.prepare('SELECT count(*) AS n FROM subscriptions').get()).toEqual({ n: 1 });
  } finally {
    reopened.close();
  }
}, 30_000);
