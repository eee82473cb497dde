import path from 'node:path';
import Database from 'better-sqlite3';
import { useChildGateways } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * A graceful shutdown while another connection holds herald.db's write lock (an operator's sqlite3 shell, a
 * backup tool): the delivery thread's flushes wait in SQLite's busy handler. The shutdown used to terminate the
 * thread inside that wait, which aborted the whole process (SIGABRT, "v8::ToLocalChecked Empty MaybeLocal") and
 * skipped the rest of the shutdown. Now the thread's waits are short and the shutdown outlasts them: it exits 0.
 * The built gateway runs as a child process; the receiver is on 127.0.0.1.
 */

const spawn = useChildGateways();
let rcv: Receiver | undefined;
afterEach(async () => {
  await rcv?.close();
  rcv = undefined;
});
afterAll(cleanupTmpDirs);

it('a shutdown while herald.db is write-locked by another process exits cleanly, without terminating the thread in SQLite', async () => {
  const dir = tmpDir();
  rcv = await startReceiver();
  const gw = await spawn({
    HERALD_DATA_DIR: dir,
    HERALD_PARTITIONS: '1',
    HERALD_SHUTDOWN_TIMEOUT_MS: '100',
    HERALD_SINK_ALLOW_PRIVATE: 'true',
  });
  const sub = await fetch(`${gw.url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink: rcv.url }),
  });
  expect(sub.status).toBe(201);
  const other = new Database(path.join(dir, 'herald.db'));
  try {
    other.exec('BEGIN IMMEDIATE');
    const published = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ specversion: '1.0', id: 'a', source: '/locked', type: 'locked.t', data: {} }),
    });
    expect(published.status).toBeLessThan(300);
    await waitFor(() => rcv!.requests.length === 1, { what: 'a delivered' });
    await new Promise((r) => setTimeout(r, 1500)); // the thread's flushes fail and retry, each waiting for the lock
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    expect(gw.output()).not.toMatch(/FATAL ERROR/);
  } finally {
    other.close();
  }
});
