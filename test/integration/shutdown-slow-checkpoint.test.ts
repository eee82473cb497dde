import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { MAIN_JS } from '../helpers/gateway';
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
let child: ChildProcess | undefined;
afterEach(() => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  child = undefined;
});

it('ends once the checkpoint in progress at the deadline returns, starting none after it, and loses nothing committed', async () => {
  const dir = tmpDir();
  const dbFile = path.join(dir, 'herald.db');
  let out = '';
  // The checkpointer thread blocked for DELAY_S once it has copied its pages, as a slow disk's fsync blocks it.
  child = spawn(process.execPath, [MAIN_JS], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      NODE_OPTIONS: `--require ${SLOW_CHECKPOINT}`,
      HERALD_TEST_SLOW_CHECKPOINT_MS: String(DELAY_S * 1000),
      HERALD_DATA_DIR: dir,
      HERALD_PORT: '0',
      HERALD_PARTITIONS: '1',
      HERALD_SHUTDOWN_TIMEOUT_MS: '1000',
    },
  });
  const exited = new Promise<number | string>((resolve) => child!.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const started = Date.now();
  while (!/"msg":"herald listening"/.test(out)) {
    if (Date.now() - started > 20_000) throw new Error(`the gateway did not listen:\n${out}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const url = /"url":"(http:\/\/[^"]+)"/.exec(out)![1]!;

  // 2 MiB in herald.db's WAL from another connection: the checkpointer thread starts (past 1 MiB) and checkpoints it.
  const other = new Database(dbFile);
  other.pragma('wal_autocheckpoint = 0');
  other.exec('CREATE TABLE probe_scratch (b BLOB)');
  other.prepare('INSERT INTO probe_scratch VALUES (?)').run(Buffer.alloc(2 * 1024 * 1024, 7));
  other.close();
  // Its pages copied into herald.db: it is in the fsync that follows.
  const copyBy = Date.now() + 10_000;
  while (fs.statSync(dbFile).size < 2 * 1024 * 1024) {
    if (Date.now() > copyBy) throw new Error('the checkpointer did not checkpoint');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
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
  expect(code).toBe(0);
  // Was about 2 × DELAY_S: a second checkpoint through a slow fsync after the one in progress.
  expect(took).toBeLessThan(DELAY_S * 1000 + 1200);
  expect(out).toMatch(/herald\.db not checkpointed or closed \(past the deadline/);

  const reopened = new Database(dbFile);
  try {
    expect(reopened.prepare('SELECT id FROM subscriptions').all()).toEqual([{ id }]);
  } finally {
    reopened.close();
  }
}, 30_000);
