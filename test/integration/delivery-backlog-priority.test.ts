import fs from 'node:fs';
import os from 'node:os';
import request from 'supertest';
import { canRestorePriority } from '../../src/thread-priority';
import { publishBatch, totalLag, getSubscription } from '../helpers/delivery';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * Ingest first while a backlog drains (HERALD_BACKLOG_NICE): the delivery thread runs at the given
 * nice value while it reads a backlog through index.db and producers store events, and at 0 again
 * once they stop. The gateway runs in this process, so its threads are this process's threads.
 */

const NICE = 7;
/** More than the 32,768 newest records whose positions the delivery thread keeps in memory. */
const BACKLOG = 40_000;

function threadNices(): number[] {
  return fs.readdirSync('/proc/self/task').flatMap((tid) => {
    try {
      return [os.getPriority(Number(tid))];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
}
const threadsAtNice = () => threadNices().filter((n) => n === NICE).length;

const events = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({
    specversion: '1.0',
    id: `e${from + i}`,
    source: '/backlog',
    type: 'backlog.t',
    partitionkey: `k${(from + i) % 8}`,
    data: { i: from + i },
  }));

let gw: TestGateway;
let receiver: Receiver;

beforeAll(async () => {
  gw = await startTestGateway({ HERALD_BACKLOG_NICE: String(NICE), HERALD_PARTITIONS: '4' });
  receiver = await startReceiver();
});
afterAll(async () => {
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

/** Publishes a few events every 50 ms until stopped (bounded by `maxMs`). */
let next = BACKLOG;
function keepIngesting(maxMs: number) {
  let stopped = false;
  const done = (async () => {
    const until = Date.now() + maxMs;
    while (!stopped && Date.now() < until) {
      await publishBatch(gw.url, events(next, 5));
      next += 5;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}

it('lowers the delivery thread’s priority while a backlog drains under ingest, and restores it when ingest stops', async () => {
  // A paused subscription far behind is no drain, however often its stats are read (each read
  // takes its oldest pending event through index.db). Paused before there is anything to read.
  const paused = await request(gw.url)
    .post('/subscriptions')
    .send({ sink: receiver.url, startAt: 'earliest', delivery: { ordering: 'none', maxInFlight: 1 } })
    .expect(201);
  await request(gw.url).post(`/subscriptions/${paused.body.id}/pause`).expect(200);
  for (let i = 0; i < BACKLOG; i += 1000) await publishBatch(gw.url, events(i, 1000));
  expect(threadsAtNice()).toBe(0);
  const polling = keepIngesting(1500);
  const seen: number[] = [];
  for (let end = Date.now() + 1500; Date.now() < end;) {
    expect(totalLag(await getSubscription(gw.url, paused.body.id))).toBeGreaterThan(32_768);
    seen.push(threadsAtNice());
    await new Promise((r) => setTimeout(r, 50));
  }
  await polling.stop();
  expect(seen.length).toBeGreaterThan(5);
  expect(seen.filter((n) => n > 0)).toEqual([]);
  await request(gw.url).delete(`/subscriptions/${paused.body.id}`).expect(204);

  // A slow drain: one request at a time, answered after 2 ms.
  receiver.setResponder(() => ({ status: 204, delayMs: 2 }));
  const sub = await request(gw.url)
    .post('/subscriptions')
    .send({ sink: receiver.url, startAt: 'earliest', delivery: { ordering: 'none', maxInFlight: 1 } })
    .expect(201);
  const id = sub.body.id as string;

  // Draining with no ingest: nothing of Herald's competes, so the priority stays.
  await waitFor(() => receiver.requests.length >= 200, { timeoutMs: 20_000, what: 'the drain to start' });
  await new Promise((r) => setTimeout(r, 600));
  expect(threadsAtNice()).toBe(0);

  const ingest = keepIngesting(30_000);
  try {
    if (canRestorePriority()) {
      await waitFor(() => threadsAtNice() === 1, { timeoutMs: 10_000, what: `one thread at nice ${NICE}` });
    } else {
      // It could not go back to 0 afterwards, so it never leaves it (and says so in the log).
      await new Promise((r) => setTimeout(r, 1500));
      expect(threadsAtNice()).toBe(0);
    }
  } finally {
    await ingest.stop();
  }
  // Ingest stopped: back to the gateway's priority within the hold (4 intervals of 250 ms).
  await waitFor(() => threadsAtNice() === 0, { timeoutMs: 5_000, what: 'nice 0 again' });
  const lagged = await getSubscription(gw.url, id);
  expect(totalLag(lagged)).toBeGreaterThan(0); // still draining: the restore came from ingest stopping
  await request(gw.url).delete(`/subscriptions/${id}`).expect(204);
}, 90_000);
