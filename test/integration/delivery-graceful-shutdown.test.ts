import net from 'node:net';
import { postBatch, useTestGateways } from '../helpers/gateway';
import { useReceivers, waitFor, type ReceivedRequest, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * A graceful shutdown lets open delivery requests finish, and their answers count: a 2xx finishes
 * the event, a 202 leaves it awaiting its ack with its lease. Was: every answer that arrived during
 * the shutdown was thrown away, so the event was sent again after the restart, and a receiver's ack
 * of an accepted event answered 409. Real gateway (in-process), real SQLite, a real receiver.
 */

const gateways = useTestGateways({ HERALD_PARTITIONS: '1', HERALD_SHUTDOWN_TIMEOUT_MS: '10000' });
const startReceiver = useReceivers();
afterAll(cleanupTmpDirs);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const idOf = (r: ReceivedRequest) => String(r.headers['ce-id']);
const gateway = (dataDir: string) => gateways.start({ HERALD_DATA_DIR: dataDir });
const stop = gateways.stop;

const receiver = (status: number, slowId: string): Promise<Receiver> =>
  startReceiver((req) => ({ status, delayMs: idOf(req) === slowId ? 1000 : 0 }));

async function subscribe(url: string, sink: string, delivery: Record<string, unknown> = {}): Promise<string> {
  const res = await fetch(`${url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink, delivery: { ackDeadlineMs: 60_000, ...delivery } }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

async function publish(url: string, id: string): Promise<void> {
  const res = await fetch(`${url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents+json' },
    body: JSON.stringify({ specversion: '1.0', id, source: '/graceful', type: 'graceful.t', data: { id } }),
  });
  expect(res.status).toBe(202);
}

it('a request answered 204 while the shutdown waits for it is finished: not sent again after the restart', async () => {
  const dir = tmpDir();
  const rcv = await receiver(204, 'slow');
  let gw = await gateway(dir);
  const subId = await subscribe(gw.url, rcv.url);
  await publish(gw.url, 'slow');
  await waitFor(() => rcv.requests.length === 1, { what: 'the request is open' });
  await stop(gw);
  gw = await gateway(dir);
  await sleep(1500);
  const sub = (await (await fetch(`${gw.url}/subscriptions/${subId}`)).json()) as {
    stats: { partitions: { inFlight: number; lag: number }[] };
  };
  expect(rcv.requests.map((r) => `${idOf(r)}#${String(r.headers['herald-attempt'])}`)).toEqual(['slow#1']);
  expect(sub.stats.partitions[0]).toMatchObject({ inFlight: 0, lag: 0 });
  const attempts = (await (await fetch(`${gw.url}/subscriptions/${subId}/attempts`)).json()) as { attempts: { status: number }[] };
  expect(attempts.attempts.map((a) => a.status)).toEqual([204]);
});

it('a 202 answered while the shutdown waits for it keeps its lease: the ack after the restart is accepted, nothing is sent again', async () => {
  const dir = tmpDir();
  const rcv = await receiver(202, 'slow');
  let gw = await gateway(dir);
  await subscribe(gw.url, rcv.url);
  await publish(gw.url, 'slow');
  await waitFor(() => rcv.requests.length === 1, { what: 'the request is open' });
  await stop(gw);
  gw = await gateway(dir);
  const ack = await fetch(`${gw.url}/deliveries/${String(rcv.requests[0]!.headers['herald-delivery-id'])}/ack`, { method: 'POST' });
  await sleep(1500);
  expect({ ack: ack.status, requests: rcv.requests.length }).toEqual({ ack: 200, requests: 1 });
});

it('ordering none: events answered 2xx above the committed offset are not delivered again after a graceful restart', async () => {
  const dir = tmpDir();
  // 'held' is accepted (202) and left awaiting its ack: the committed offset (the low-water mark) stays below it.
  const rcv = await startReceiver((req) => ({ status: idOf(req) === 'held' ? 202 : 204 }));
  let gw = await gateway(dir);
  const subId = await subscribe(gw.url, rcv.url, { ordering: 'none' });
  await publish(gw.url, 'held');
  for (let i = 0; i < 5; i++) await publish(gw.url, `done${i}`);
  await waitFor(() => rcv.requests.length === 6, { what: 'all six sent' });
  await sleep(300);
  await stop(gw);
  gw = await gateway(dir);
  await sleep(1500);
  expect(rcv.requests.slice(6).map(idOf)).toEqual([]); // was: done0…done4 again
  // The held one is still owed: its ack finishes it, and the partition is then caught up.
  const held = rcv.requests.find((r) => idOf(r) === 'held')!;
  expect((await fetch(`${gw.url}/deliveries/${String(held.headers['herald-delivery-id'])}/ack`, { method: 'POST' })).status).toBe(200);
  await waitFor(
    async () => {
      const sub = (await (await fetch(`${gw.url}/subscriptions/${subId}`)).json()) as {
        stats: { partitions: { lag: number; inFlight: number }[] };
      };
      return sub.stats.partitions[0]!.lag === 0 && sub.stats.partitions[0]!.inFlight === 0;
    },
    { what: 'caught up' },
  );
});

it('no delivery starts once a shutdown begins, while the HTTP server still waits for an open request', async () => {
  const dir = tmpDir();
  const rcv = await startReceiver(() => ({ status: 204, delayMs: 100 }));
  const gw = await gateway(dir);
  await subscribe(gw.url, rcv.url, { ordering: 'none' });
  const events = Array.from({ length: 300 }, (_, i) => ({ source: '/graceful', id: `b${i}` }));
  expect((await postBatch(gw.url, events)).status).toBe(202);
  await waitFor(() => rcv.requests.length >= 10, { what: 'delivery is under way' });
  // An ingest request whose body never ends: the HTTP server's close waits for it (up to 5 s here).
  const { port } = new URL(gw.url);
  const socket = net.connect(Number(port), '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write('POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 1000\r\n\r\n{');
  await sleep(100);
  const closeBegan = Date.now();
  const closed = stop(gw);
  await sleep(1500);
  // Requests open when the shutdown began arrive within a few ms of it; was: new ones every 100 ms.
  const startedLater = rcv.requests.filter((r) => r.receivedAt > closeBegan + 50).map(idOf);
  socket.destroy();
  await closed;
  expect(startedLater).toEqual([]);
  expect(rcv.requests.length).toBeLessThan(events.length);
});
