import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { useChildGateways } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * A SIGTERM while another process holds herald.db's write lock, with no checkpointer thread running (a small WAL): the
 * delivery thread's last write is tried until a second past the deadline (README, Shutdown), so herald.db is left
 * unclosed. The warn line said "a checkpoint still running: a slow disk", sending the operator to look at a disk.
 */

afterAll(cleanupTmpDirs);

const spawn = useChildGateways();

it('past the deadline with no checkpoint running, the warn line does not blame a slow disk', async () => {
  const dir = tmpDir();
  let delivered = 0;
  const receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      delivered++;
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const sink = `http://127.0.0.1:${(receiver.address() as net.AddressInfo).port}/hook`;
  const { url, child, exited, output } = await spawn({
    HERALD_DATA_DIR: dir,
    HERALD_PARTITIONS: '1',
    HERALD_SINK_ALLOW_PRIVATE: 'true',
    HERALD_SHUTDOWN_TIMEOUT_MS: '1000',
  });
  const created = await fetch(`${url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink }),
  });
  expect(created.status).toBe(201);
  const other = new Database(path.join(dir, 'herald.db'));
  try {
    other.exec('BEGIN IMMEDIATE');
    const res = await fetch(`${url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ specversion: '1.0', id: 'e1', source: '/locked', type: 'locked.t', data: {} }),
    });
    expect(res.status).toBe(202);
    const by = Date.now() + 10_000;
    while (delivered < 1 && Date.now() < by) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(delivered).toBe(1);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  } finally {
    if (other.inTransaction) other.exec('ROLLBACK');
    other.close();
    await new Promise<void>((resolve) => receiver.close(() => resolve()));
  }
  const line = output()
    .split('\n')
    .find((l) => l.includes('herald.db not checkpointed or closed'));
  expect(line).toBeDefined();
  expect(JSON.parse(line!)).toMatchObject({ checkpointRunning: false });
  expect(line).not.toMatch(/slow disk/);
}, 30_000);
