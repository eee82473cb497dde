import path from 'node:path';
import Database from 'better-sqlite3';
import { startTestGateway, useChildGateways, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * herald.db write-locked by another process (an operator's sqlite3 shell, a backup tool) while delivery runs.
 *
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

it('a shutdown writes the delivery state once the lock is let go within its time, so nothing answered is sent again (probe: given up at once, 8 events sent again)', async () => {
  const dir = tmpDir();
  rcv = await startReceiver();
  const env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1', HERALD_SHUTDOWN_TIMEOUT_MS: '5000', HERALD_SINK_ALLOW_PRIVATE: 'true' };
  const gw = await spawn(env);
  const sub = await fetch(`${gw.url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink: rcv.url }),
  });
  expect(sub.status).toBe(201);
  const publish = async (url: string, id: string) =>
    expect(
      (
        await fetch(`${url}/events`, {
          method: 'POST',
          headers: { 'content-type': 'application/cloudevents+json' },
          body: JSON.stringify({ specversion: '1.0', id, source: '/locked-close', type: 'locked.t', data: {} }),
        })
      ).status,
    ).toBeLessThan(300);
  const other = new Database(path.join(dir, 'herald.db'));
  try {
    other.exec('BEGIN IMMEDIATE');
    await publish(gw.url, 'a');
    await waitFor(() => rcv!.requests.length === 1, { what: 'a delivered' });
    gw.child.kill('SIGTERM');
    // Let go while the shutdown still has seconds left: its last write of the answered delivery must get through.
    await new Promise((r) => setTimeout(r, 1500));
  } finally {
    other.close();
  }
  expect(await gw.exited).toBe(0);

  const again = await spawn(env);
  await publish(again.url, 'b');
  // One partition, in order: were `a` sent again, it would come before `b`.
  await waitFor(() => rcv!.requests.some((r) => r.headers['ce-id'] === 'b'), { what: 'b delivered' });
  expect(rcv.requests.map((r) => r.headers['ce-id'])).toEqual(['a', 'b']);
}, 60_000);

describe('a DELETE while herald.db is write-locked', () => {
  const gateways: TestGateway[] = [];
  afterEach(async () => {
    for (const gw of gateways.splice(0)) await gw.close();
  });

  const publish = async (url: string, id: string) => {
    const res = await fetch(`${url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ specversion: '1.0', id, source: '/locked', type: 'locked.t', data: {} }),
    });
    expect(res.status).toBeLessThan(300);
  };

  it('fails with nothing changed: the subscription goes on delivering and an ack answered 200 stays answered', async () => {
    const dir = tmpDir();
    let url = '';
    const acks: [string, number][] = [];
    const received = (rcv = await startReceiver(async (req) => {
      // Manual ack: 202 now, then the callback.
      setTimeout(() => {
        void fetch(`${url}/deliveries/${String(req.headers['herald-delivery-id'])}/ack`, { method: 'POST' }).then((res) =>
          acks.push([String(req.headers['ce-id']), res.status]),
        );
      }, 10);
      return { status: 202 };
    }));
    const env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1', HERALD_SINK_ALLOW_PRIVATE: 'true' };
    let gw = await startTestGateway(env);
    gateways.push(gw);
    url = gw.url;
    const sub = await fetch(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: received.url, delivery: { ackMode: 'manual' } }),
    });
    const subId = ((await sub.json()) as { id: string }).id;
    await publish(gw.url, 'warm');
    await waitFor(() => acks.length === 1, { what: 'warm acked' });
    await new Promise((r) => setTimeout(r, 200));

    const other = new Database(path.join(dir, 'herald.db'));
    let deleted: Response;
    try {
      other.exec('BEGIN IMMEDIATE');
      await publish(gw.url, 'e1');
      await waitFor(() => acks.length === 2, { what: 'e1 acked' }); // answered 200, still to be written
      deleted = await fetch(`${gw.url}/subscriptions/${subId}`, { method: 'DELETE' });
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    expect(acks).toEqual([
      ['warm', 200],
      ['e1', 200],
    ]);
    expect(deleted.status).toBe(503);
    expect(deleted.headers.get('retry-after')).toBe('1');
    expect(((await deleted.json()) as { code: string }).code).toBe('unavailable');
    expect((await fetch(`${gw.url}/subscriptions/${subId}`)).status).toBe(200);
    await publish(gw.url, 'e2');
    await waitFor(() => received.requests.some((r) => r.headers['ce-id'] === 'e2'), { what: 'e2 delivered' });
    await waitFor(() => acks.length === 3, { what: 'e2 acked' });

    // After a restart, nothing that was acknowledged comes again.
    gateways.splice(0);
    await gw.close();
    const before = received.requests.length;
    gw = await startTestGateway(env);
    gateways.push(gw);
    url = gw.url;
    await new Promise((r) => setTimeout(r, 1500));
    expect(received.requests.slice(before).map((r) => r.headers['ce-id'])).toEqual([]);
  });
});

describe('dead letters while herald.db is write-locked', () => {
  let gw: TestGateway | undefined;
  afterEach(async () => {
    await gw?.close();
    gw = undefined;
  });

  it('a dead letter not yet written is counted in stats, and its list answers 503 rather than leave it out', async () => {
    const dir = tmpDir();
    rcv = await startReceiver(() => ({ status: 400 })); // dead-lettered after one attempt
    gw = await startTestGateway({ HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1', HERALD_SINK_ALLOW_PRIVATE: 'true' });
    const sub = await fetch(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: rcv.url }),
    });
    const subId = ((await sub.json()) as { id: string }).id;
    const stats = async () =>
      ((await (await fetch(`${gw!.url}/subscriptions/${subId}`)).json()) as { stats: { deadLetters: number } }).stats;
    const other = new Database(path.join(dir, 'herald.db'));
    let listed: Response;
    try {
      other.exec('BEGIN IMMEDIATE');
      const res = await fetch(`${gw.url}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: JSON.stringify({ specversion: '1.0', id: 'dead', source: '/locked', type: 'locked.t', data: {} }),
      });
      expect(res.status).toBeLessThan(300);
      await waitFor(() => rcv!.requests.length === 1, { what: 'the one attempt' });
      await waitFor(async () => (await stats()).deadLetters === 1, { what: 'the dead letter counted' });
      listed = await fetch(`${gw.url}/subscriptions/${subId}/dead-letters`);
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    expect(listed.status).toBe(503);
    expect(listed.headers.get('retry-after')).toBe('1');
    const after = (await (await fetch(`${gw.url}/subscriptions/${subId}/dead-letters`)).json()) as {
      deadLetters: { event: { id: string } }[];
    };
    expect(after.deadLetters.map((d) => d.event.id)).toEqual(['dead']);
    expect((await stats()).deadLetters).toBe(1);
  });
});

it('/readyz is 503 naming the lock while another process holds herald.db\'s write lock, and 200 again once it lets go (was 200 "ok" throughout)', async () => {
  const gw: TestGateway = await startTestGateway({ HERALD_PARTITIONS: '1' });
  try {
    const other = new Database(path.join(gw.dataDir, 'herald.db'));
    try {
      other.exec('BEGIN IMMEDIATE');
      const locked = await fetch(`${gw.url}/readyz`);
      expect(locked.status).toBe(503);
      expect(((await locked.json()) as { checks: { database: string } }).checks.database).toMatch(
        /herald\.db is locked by another process/,
      );
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    const ready = await fetch(`${gw.url}/readyz`);
    expect([ready.status, ((await ready.json()) as { checks: { database: string } }).checks.database]).toEqual([200, 'ok']);
  } finally {
    await gw.close();
  }
});

it("/readyz stays 200 when another connection holds herald.db's write lock only briefly (a write of its own, not a stuck lock)", async () => {
  const gw: TestGateway = await startTestGateway({ HERALD_PARTITIONS: '1' });
  try {
    const other = new Database(path.join(gw.dataDir, 'herald.db'));
    try {
      // Held for 150 ms, as a burst of delivery-state writes may: one try at the lock alone would say 503.
      other.exec('BEGIN IMMEDIATE');
      const released = new Promise<void>((resolve) =>
        setTimeout(() => {
          other.exec('ROLLBACK');
          resolve();
        }, 150),
      );
      const ready = await fetch(`${gw.url}/readyz`);
      await released;
      expect([ready.status, ((await ready.json()) as { checks: { database: string } }).checks.database]).toEqual([200, 'ok']);
    } finally {
      if (other.inTransaction) other.exec('ROLLBACK');
      other.close();
    }
  } finally {
    await gw.close();
  }
});

it("/readyz is 503 while delivery's writes of its state fail, saying why, and 200 once they succeed again (crash probe: 200 'ok' while every flush failed)", async () => {
  rcv = await startReceiver();
  const gw: TestGateway = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_SINK_ALLOW_PRIVATE: 'true' });
  const other = new Database(path.join(gw.dataDir, 'herald.db'));
  try {
    const sub = await fetch(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: rcv.url }),
    });
    expect(sub.status).toBe(201);
    // Every write of a committed offset fails, as on a full disk or a damaged page (the lock probe writes nothing).
    other.exec(
      "CREATE TRIGGER refuse_offsets BEFORE UPDATE ON subscription_offsets BEGIN SELECT RAISE(ABORT, 'offsets refused by the test'); END",
    );
    const publish = (id: string) =>
      fetch(`${gw.url}/events`, {
        method: 'POST',
        headers: { 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/readyz', 'ce-type': 't', 'content-type': 'text/plain' },
        body: 'x',
      });
    expect((await publish('r1')).status).toBe(202);
    const readyz = async () => {
      const res = await fetch(`${gw.url}/readyz`);
      return { status: res.status, database: ((await res.json()) as { checks: { database: string } }).checks.database };
    };
    const failing = await waitFor(async () => {
      const r = await readyz();
      return r.status === 503 ? r : undefined;
    });
    expect(failing.database).toMatch(/^delivery state cannot be written: .*offsets refused by the test/);
    other.exec('DROP TRIGGER refuse_offsets');
    await waitFor(async () => (await readyz()).status === 200, { what: 'ready again' });
    expect((await readyz()).database).toBe('ok');
  } finally {
    other.close();
    await gw.close();
  }
});
