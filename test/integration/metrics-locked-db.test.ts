import path from 'node:path';
import Database from 'better-sqlite3';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * `GET /metrics` (and a subscription's `stats`) while herald.db's write lock is held: by herald.db's own checkpointer
 * through a slow fsync (slow-disk probe, `strace -e inject=fsync:delay_enter=10000000 -P herald.db`), or here by another
 * connection, which holds up the delivery thread's writes the same way. Each subscription's stats flushed delivery's
 * buffered state first, waiting up to the busy timeout (1 s) per subscription in turn: a scrape of 20 subscriptions
 * took 9.6 s behind a 10 s hold, past a Prometheus scrape timeout. Stats count what is buffered without writing it.
 */

let gw: TestGateway | undefined;
let rcv: Receiver | undefined;
afterEach(async () => {
  await gw?.close();
  gw = undefined;
  await rcv?.close();
  rcv = undefined;
});
afterAll(cleanupTmpDirs);

const SUBSCRIPTIONS = 8;

it("a scrape answers within about one of the delivery thread's lock waits while herald.db's write lock is held, with every subscription's series", async () => {
  rcv = await startReceiver(() => ({ status: 204 }));
  gw = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_SINK_ALLOW_PRIVATE: 'true' });
  const ids: string[] = [];
  for (let i = 0; i < SUBSCRIPTIONS; i++) {
    const res = await fetch(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: `${rcv.url}/s${i}` }),
    });
    expect(res.status).toBe(201);
    ids.push(((await res.json()) as { id: string }).id);
  }
  const other = new Database(path.join(gw.dataDir, 'herald.db'));
  const took: number[] = [];
  let text = '';
  try {
    other.exec('BEGIN IMMEDIATE');
    const res = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ specversion: '1.0', id: 'e1', source: '/locked', type: 'locked.t', data: {} }),
    });
    expect(res.status).toBeLessThan(300);
    // Every subscription delivered it: each has a committed offset buffered that cannot be written.
    await waitFor(() => rcv!.requests.length === SUBSCRIPTIONS, { what: 'one delivery per subscription' });
    for (let i = 0; i < 2; i++) {
      const began = Date.now();
      const scrape = await fetch(`${gw.url}/metrics`, { signal: AbortSignal.timeout(6_000) });
      text = await scrape.text();
      took.push(Date.now() - began);
      expect(scrape.status).toBe(200);
    }
  } finally {
    other.exec('ROLLBACK');
    other.close();
  }
  // Was: about a second per subscription (8 s here, the scrape cut at 6 s).
  expect(Math.max(...took)).toBeLessThan(2_500);
  for (const id of ids) expect(text).toContain(`herald_dead_letters{subscription="${id}"} 0`);
});
