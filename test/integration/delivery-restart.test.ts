import path from 'node:path';
import Database from 'better-sqlite3';
import request from 'supertest';
import { getSubscription, publishBatch, waitForLagZero } from '../helpers/delivery';
import { killIfRunning, spawnGateway, startTestGateway, type ChildGateway, type Env } from '../helpers/gateway';
import { seededRandom } from '../helpers/random';
import { startReceiver, waitFor, type ReceivedRequest, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/** Delivery state survives restarts: committed offsets, pending attempts, retry schedules and ack leases. */

afterAll(cleanupTmpDirs);

interface PartitionStats {
  partition: number;
  committedOffset: number;
  headOffset: number;
  lag: number;
}
const statsOf = async (url: string, id: string) => (await getSubscription(url, id)).stats.partitions as PartitionStats[];
const committed = (stats: PartitionStats[]) => stats.map((p) => p.committedOffset);
const waitLagZero = async (url: string, id: string, timeoutMs = 20_000) =>
  (await waitForLagZero(url, id, { timeoutMs })).stats.partitions as PartitionStats[];

function expectNotBehind(later: number[], earlier: number[]) {
  for (const [p, offset] of earlier.entries())
    expect({ partition: p, committed: later[p]! >= offset }).toEqual({ partition: p, committed: true });
}

const publish = (url: string, events: { id: string; key: string }[]) =>
  publishBatch(
    url,
    events.map((e) => ({
      specversion: '1.0',
      id: e.id,
      source: '/restart',
      type: 'restart.test',
      partitionkey: e.key,
      data: { id: e.id },
    })),
  );

describe('crash (SIGKILL) with deliveries pending', () => {
  let receiver: Receiver | undefined;
  let first: ChildGateway | undefined;
  let second: ChildGateway | undefined;
  let release: () => void = () => {};
  afterEach(async () => {
    release();
    await killIfRunning(first);
    await killIfRunning(second);
    await receiver?.close();
  });

  it('delivers every event at least once after the restart, never moves committed offsets back, and keeps webhook-ids', async () => {
    const random = seededRandom(7);
    const outcomes: { req: ReceivedRequest; status: number }[] = [];
    const held = new Promise<void>((r) => (release = r));
    let holding = true;
    receiver = await startReceiver(async (req) => {
      if (holding && req.headers['ce-id'] === 'held') {
        outcomes.push({ req, status: 0 });
        await held; // never answered before the crash
        return { status: 204 };
      }
      const status = random() < 0.5 ? 500 : 204;
      outcomes.push({ req, status });
      return { status };
    });
    const env: Env = { HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '4' };
    first = await spawnGateway(env);
    const sub = await request(first.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { retry: { maxAttempts: 1000, initialDelayMs: 20, maxDelayMs: 100 } } })
      .expect(201);
    const events = Array.from({ length: 40 }, (_, i) => ({ id: `c${i}`, key: `key-${i % 6}` }));
    const stored = await publish(first.url, [{ id: 'held', key: 'held-key' }, ...events]);

    await waitFor(() => outcomes.filter((o) => o.status === 204).length >= 10 && outcomes.some((o) => o.req.headers['ce-id'] === 'held'), {
      what: 'some progress',
    });
    const before = committed(await statsOf(first.url, sub.body.id)); // reading stats writes the state first
    expect(before.some((c) => c > 0)).toBe(true);
    first.child.kill('SIGKILL');
    await first.exited;

    holding = false;
    receiver.setResponder((req) => {
      outcomes.push({ req, status: 204 });
      return { status: 204 };
    });
    second = await spawnGateway(env);
    expectNotBehind(committed(await statsOf(second.url, sub.body.id)), before);
    const after = await waitLagZero(second.url, sub.body.id);
    expectNotBehind(committed(after), before);
    expect(after.map((p) => p.headOffset)).toEqual(after.map((p) => p.committedOffset));

    const delivered = new Set(outcomes.filter((o) => o.status === 204).map((o) => o.req.headers['ce-id']));
    expect([...stored.map((s) => s.id)].filter((id) => !delivered.has(id))).toEqual([]);
    // Every attempt of one event, before and after the crash, carries the same webhook-id.
    for (const s of stored) {
      const ids = new Set(outcomes.filter((o) => o.req.headers['ce-id'] === s.id).map((o) => o.req.headers['webhook-id']));
      expect({ event: s.id, webhookIds: ids.size }).toEqual({ event: s.id, webhookIds: 1 });
    }
    const heldAttempts = outcomes.filter((o) => o.req.headers['ce-id'] === 'held');
    expect(heldAttempts.length).toBeGreaterThanOrEqual(2);
    expect(heldAttempts.every((o) => o.req.headers['herald-offset'] === String(stored[0]!.offset))).toBe(true);
    expect(heldAttempts[1]!.req.headers['herald-attempt']).toBe('2');
    // The attempt open at the crash was superseded by the one after the restart.
    expect((await request(second.url).post(`/deliveries/${heldAttempts[0]!.req.headers['herald-delivery-id']}/ack`)).status).toBe(409);
  });
});

describe('crash (SIGKILL) right after a callback was answered', () => {
  let receiver: Receiver | undefined;
  let gw: ChildGateway | undefined;
  afterEach(async () => {
    await killIfRunning(gw);
    await receiver?.close();
  });

  /** A gateway on a fresh data dir, one partition, a receiver answering 202 and a manual-ack subscription to it. */
  async function manualAckSubscriber(delivery: Record<string, unknown> = {}) {
    const dir = tmpDir();
    receiver = await startReceiver(() => ({ status: 202 }));
    gw = await spawnGateway({ HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1' });
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ackMode: 'manual', ackDeadlineMs: 60_000, ...delivery } })
      .expect(201);
    return { dir, env: { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1' } as Env, id: sub.body.id as string };
  }

  /** Reads herald.db beside the gateway (WAL mode: a reader sees what is committed). */
  function withHeraldDb<T>(dir: string, read: (db: Database.Database) => T): T {
    const db = new Database(path.join(dir, 'herald.db'), { readonly: true });
    try {
      return read(db);
    } finally {
      db.close();
    }
  }

  it('keeps the ack: a repeat after the restart is 200 repeated, and the event is not sent again (3 trials)', async () => {
    for (let trial = 0; trial < 3; trial++) {
      await killIfRunning(gw);
      await receiver?.close();
      const env: Env = { HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1' };
      let acked: (status: number) => void = () => {};
      const ackAnswer = new Promise<number>((resolve) => (acked = resolve));
      let url = '';
      // The receiver answers 202 and acks at once; the gateway is killed the moment the ack is answered.
      receiver = await startReceiver((req) => {
        setImmediate(async () => {
          const res = await request(url).post(`/deliveries/${req.headers['herald-delivery-id']}/ack`);
          gw!.child.kill('SIGKILL');
          acked(res.status);
        });
        return { status: 202 };
      });
      gw = await spawnGateway(env);
      url = gw.url;
      await request(url)
        .post('/subscriptions')
        .send({ sink: receiver.url, delivery: { ackMode: 'manual', ackDeadlineMs: 60_000 } })
        .expect(201);
      await publish(url, [{ id: `acked-${trial}`, key: 'k' }]);
      expect(await ackAnswer).toBe(200);
      await gw.exited;
      const deliveryId = receiver.requests[0]!.headers['herald-delivery-id'] as string;

      gw = await spawnGateway(env);
      const repeat = await request(gw.url).post(`/deliveries/${deliveryId}/ack`);
      expect({ trial, status: repeat.status, body: repeat.body }).toEqual({
        trial,
        status: 200,
        body: { deliveryId, status: 'acked', repeated: true },
      });
      await new Promise((r) => setTimeout(r, 300));
      expect({ trial, requests: receiver.requests.length }).toEqual({ trial, requests: 1 });
    }
  });

  it('a nack repeated after the restart is 200 repeated, also once its retry has gone out (probe: 409 superseded then)', async () => {
    const { env } = await manualAckSubscriber();
    await publish(gw!.url, [{ id: 'nacked', key: 'k' }]);
    await waitFor(() => receiver!.requests.length === 1, { what: 'the first attempt' });
    const deliveryId = receiver!.requests[0]!.headers['herald-delivery-id'] as string;
    const nack = () => request(gw!.url).post(`/deliveries/${deliveryId}/nack`).send({ delayMs: 1500 });
    expect((await nack()).body).toEqual({ deliveryId, status: 'nacked', nextAttemptAt: expect.any(String) });
    gw!.child.kill('SIGKILL');
    await gw!.exited;
    gw = await spawnGateway(env);
    await waitFor(() => receiver!.requests.length === 2, { what: 'the retry', timeoutMs: 10_000 });
    const repeat = await nack();
    expect({ status: repeat.status, body: repeat.body }).toEqual({ status: 200, body: { deliveryId, status: 'nacked', repeated: true } });
  });

  it('a lease that ran out while the gateway was down counts as lease_expired in herald_deliveries_total (probe: not counted)', async () => {
    const { env, id } = await manualAckSubscriber({ ackDeadlineMs: 1000 });
    await publish(gw!.url, [{ id: 'unacked', key: 'k' }]);
    await waitFor(() => receiver!.requests.length === 1, { what: 'the first attempt' });
    // A graceful stop writes the attempt as awaiting its ack (a SIGKILL may come before its row is).
    gw!.child.kill('SIGTERM');
    await gw!.exited;
    await new Promise((r) => setTimeout(r, 1500));
    gw = await spawnGateway(env);
    await waitFor(() => receiver!.requests.length === 2, { what: 'the retry', timeoutMs: 10_000 });
    // Acked at once: the only lease that runs out is the one that did while the gateway was down.
    const retry = receiver!.requests[1]!.headers['herald-delivery-id'] as string;
    expect((await request(gw.url).post(`/deliveries/${retry}/ack`)).status).toBe(200);
    const counted = new RegExp(`herald_deliveries_total\\{[^}]*subscription="${id}"[^}]*outcome="lease_expired"[^}]*\\} 1\\n`);
    // Observations reach /metrics within a second or so.
    await waitFor(async () => counted.test((await request(gw!.url).get('/metrics').expect(200)).text), {
      what: 'lease_expired counted',
      timeoutMs: 5000,
    });
  });

  it('ordering none: an ack, reject or last nack answered 200 above the committed offset is not sent again, and its row goes once passed', async () => {
    const { dir, env, id } = await manualAckSubscriber({ ordering: 'none', retry: { maxAttempts: 1 } });
    const url = () => gw!.url;
    await publish(
      url(),
      [0, 1, 2, 3].map((i) => ({ id: `none-${i}`, key: 'k' })),
    );
    await waitFor(() => receiver!.requests.length === 4, { what: 'four deliveries' });
    const idOf = (offset: number) =>
      receiver!.requests.find((r) => r.headers['herald-offset'] === String(offset))!.headers['herald-delivery-id'] as string;
    // Offset 0 awaits its ack, so the committed offset stays at 0 while 1 is acked and 2 rejected.
    expect((await request(url()).post(`/deliveries/${idOf(1)}/ack`)).status).toBe(200);
    expect(
      (
        await request(url())
          .post(`/deliveries/${idOf(2)}/reject`)
          .send({ reason: 'no' })
      ).status,
    ).toBe(200);
    expect((await request(url()).post(`/deliveries/${idOf(3)}/nack`)).status).toBe(200); // its last attempt: dead-lettered
    gw!.child.kill('SIGKILL');
    await gw!.exited;

    gw = await spawnGateway(env);
    await new Promise((r) => setTimeout(r, 1000));
    // Was: 1, 2 and 3 sent again as attempt 1 (only a graceful stop wrote offsets finished above the committed one).
    expect(receiver!.requests.map((r) => r.headers['herald-offset'])).toEqual(['0', '1', '2', '3']);
    expect((await request(url()).post(`/deliveries/${idOf(1)}/ack`)).body).toMatchObject({ status: 'acked', repeated: true });
    const dead = await request(url()).get(`/subscriptions/${id}/dead-letters`).expect(200);
    expect(dead.body.deadLetters.map((d: { offset: number }) => d.offset).sort()).toEqual([2, 3]);

    // Acked at last, 0 moves the committed offset past 1 to 3: their rows are no longer needed and go.
    expect((await request(url()).post(`/deliveries/${idOf(0)}/ack`)).status).toBe(200);
    await waitFor(async () => committed(await statsOf(url(), id))[0] === 4, { what: 'committed past 3' });
    gw.child.kill('SIGTERM');
    await gw.exited;
    expect(withHeraldDb(dir, (db) => db.prepare('SELECT COUNT(*) AS n FROM finished_deliveries').get())).toEqual({ n: 0 });
  });

  it('ordering none: events answered 2xx above a committed offset held back by a retrying event are not sent again after a crash', async () => {
    const dir = tmpDir();
    const env: Env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1' };
    // 'stuck' fails every attempt (its retries wait 60 s), so the committed offset stays at 0 below the rest.
    receiver = await startReceiver((req) => ({ status: req.headers['ce-id'] === 'stuck' ? 500 : 204 }));
    gw = await spawnGateway(env);
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ordering: 'none', retry: { initialDelayMs: 60_000 } } })
      .expect(201);
    await publish(gw.url, [{ id: 'stuck', key: 'k' }, ...Array.from({ length: 30 }, (_, i) => ({ id: `done-${i}`, key: 'k' }))]);
    await waitFor(() => receiver!.requests.length === 31, { what: 'all 31 sent once' });
    // Their finished rows are written behind delivery (every 50 ms): killed once all 30 are in herald.db.
    const finished = () => withHeraldDb(dir, (db) => db.prepare('SELECT COUNT(*) AS n FROM finished_deliveries').get()) as { n: number };
    await waitFor(() => finished().n === 30, { what: 'the 30 finished rows written' });
    gw.child.kill('SIGKILL');
    await gw.exited;

    gw = await spawnGateway(env);
    // An event after them: once it is sent, the restarted worker has read past every one of them.
    await publish(gw.url, [{ id: 'after', key: 'k' }]);
    await waitFor(() => receiver!.requests.some((r) => r.headers['ce-id'] === 'after'), { what: 'the event after them' });
    // Was: done-0 … done-29 all sent again (only a graceful stop or a callback wrote offsets finished above the
    // committed one). 'stuck' waits for its retry, whose time was written too.
    expect(receiver.requests.slice(31).map((r) => r.headers['ce-id'])).toEqual(['after']);
    expect((await getSubscription(gw.url, sub.body.id as string)).stats.partitions[0]).toMatchObject({ committedOffset: 0 });
  });

  it('a dead letter whose redelivery the receiver got is not listed again after a crash right after it', async () => {
    const dir = tmpDir();
    const env: Env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1' };
    let redelivered = 0;
    // First attempts are refused (400: dead-lettered at once); redeliveries answered 200, the gateway killed
    // just after the fifth (within the 50 ms write-behind interval of their start).
    receiver = await startReceiver((req) => {
      if (req.headers['herald-redelivery'] !== 'true') return { status: 400 };
      if (++redelivered === 5) setTimeout(() => gw!.child.kill('SIGKILL'), 5);
      return { status: 200 };
    });
    gw = await spawnGateway(env);
    const id = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body.id as string;
    await publish(
      gw.url,
      Array.from({ length: 20 }, (_, i) => ({ id: `dl-${i}`, key: 'k' })),
    );
    await waitFor(async () => (await request(gw!.url).get(`/subscriptions/${id}/dead-letters`)).body.deadLetters.length === 20, {
      what: 'twenty dead letters',
    });
    await request(gw.url).post(`/subscriptions/${id}/dead-letters/redeliver`).send({}).expect(202);
    await gw.exited;
    const got = new Set(receiver.requests.filter((r) => r.headers['herald-redelivery'] === 'true').map((r) => r.headers['ce-id']));
    expect(got.size).toBeGreaterThanOrEqual(5);

    gw = await spawnGateway({ ...env, HERALD_DELIVERY: 'off' });
    const listed = (await request(gw.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters as {
      event: { id: string };
    }[];
    const listedIds = listed.map((d) => d.event.id);
    // Was: every redelivery the receiver had answered 200 listed again (its start was written after it was sent).
    expect(listedIds.filter((e) => got.has(e))).toEqual([]);
  });

  it('ordering none: a seek right after 2xx answers above the committed offset replays them, also after a crash', async () => {
    const dir = tmpDir();
    const env: Env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1' };
    let id = '';
    let restarted = false;
    const seen = new Map<string, number>();
    const seeks: number[] = [];
    // 'stuck' fails (its retry waits 60 s), the committed offset stays below the rest; a seek back follows the
    // last first answer within milliseconds (its offset finished, not yet written); replays hang until the crash.
    receiver = await startReceiver((req) => {
      const ce = String(req.headers['ce-id']);
      const n = (seen.get(ce) ?? 0) + 1;
      seen.set(ce, n);
      if (ce === 'stuck') return { status: 500 };
      if (restarted) return { status: 204 };
      if (n > 1) return { status: 204, delayMs: 30_000 };
      if (ce === 'done-9')
        setTimeout(
          () =>
            void request(gw!.url)
              .post(`/subscriptions/${id}/seek`)
              .send({ to: 'earliest' })
              .then((r) => seeks.push(r.status)),
          2,
        );
      return { status: 204 };
    });
    gw = await spawnGateway(env);
    id = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: receiver.url, delivery: { ordering: 'none', maxInFlight: 3, retry: { initialDelayMs: 60_000 } } })
        .expect(201)
    ).body.id as string;
    await publish(gw.url, [{ id: 'stuck', key: 'k' }, ...Array.from({ length: 10 }, (_, i) => ({ id: `done-${i}`, key: 'k' }))]);
    // The seek's answer may reach the test after the replay has begun.
    await waitFor(() => seeks.length === 1 && (seen.get('done-0') ?? 0) >= 2, { what: 'the seek answered, the replay under way' });
    expect(seeks).toEqual([200]);
    await new Promise((r) => setTimeout(r, 300)); // several write intervals after the seek
    gw.child.kill('SIGKILL');
    await gw.exited;

    const before = new Map(seen);
    restarted = true;
    gw = await spawnGateway(env);
    const replayed = () => Array.from({ length: 10 }, (_, i) => `done-${i}`).filter((e) => (seen.get(e) ?? 0) > (before.get(e) ?? 0));
    // Was: done-9 (and any other finished within the last interval before the seek) never sent again: written as
    // finished after the seek, its row made the start skip it.
    await waitFor(() => replayed().length === 10, { timeoutMs: 15_000, what: 'every done event replayed after the restart' });
  });

  it('ordering none: a seek forgets the offsets acked above the committed one, so a crash after it replays them', async () => {
    const { dir, id } = await manualAckSubscriber({ ordering: 'none' });
    const url = gw!.url;
    await publish(
      url,
      [0, 1].map((i) => ({ id: `seek-none-${i}`, key: 'k' })),
    );
    await waitFor(() => receiver!.requests.length === 2, { what: 'two deliveries' });
    const acked = receiver!.requests.find((r) => r.headers['herald-offset'] === '1')!;
    expect((await request(url).post(`/deliveries/${acked.headers['herald-delivery-id']}/ack`)).status).toBe(200);
    const rows = () => withHeraldDb(dir, (db) => db.prepare('SELECT "offset" FROM finished_deliveries').all());
    expect(rows()).toEqual([{ offset: 1 }]); // written before the ack was answered
    await request(url).post(`/subscriptions/${id}/seek`).send({ to: 'earliest' }).expect(200);
    // Kept, it would make a start after a crash skip offset 1 of the replay.
    expect(rows()).toEqual([]);
  });

  it('with HERALD_DELIVERY=off an attempt awaiting its ack is known: its ack is answered 200 and kept, nothing is sent', async () => {
    const { dir, env, id } = await manualAckSubscriber();
    await publish(gw!.url, [{ id: 'off-0', key: 'k' }]);
    await waitFor(() => receiver!.requests.length === 1, { what: 'the delivery' });
    const deliveryId = receiver!.requests[0]!.headers['herald-delivery-id'] as string;
    // Its awaiting_ack row is written behind delivery (every 50 ms).
    const awaiting = () => withHeraldDb(dir, (db) => db.prepare("SELECT 1 FROM pending_deliveries WHERE state = 'awaiting_ack'").get());
    await waitFor(awaiting, { what: 'the row' });
    gw!.child.kill('SIGKILL');
    await gw!.exited;

    gw = await spawnGateway({ ...env, HERALD_DELIVERY: 'off' });
    expect((await getSubscription(gw.url, id)).stats.partitions[0].inFlight).toBe(1); // was 0
    const ack = await request(gw.url).post(`/deliveries/${deliveryId}/ack`);
    expect({ status: ack.status, body: ack.body }).toEqual({ status: 200, body: { deliveryId, status: 'acked' } }); // was 404
    gw.child.kill('SIGTERM');
    await gw.exited;

    gw = await spawnGateway(env);
    await new Promise((r) => setTimeout(r, 1000));
    expect(receiver!.requests).toHaveLength(1);
    expect((await request(gw.url).post(`/deliveries/${deliveryId}/ack`)).body).toMatchObject({ repeated: true });
  });

  it('keeps the lease the extend gave: the event awaits its ack instead of being sent again, and the ack works', async () => {
    const env: Env = { HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1' };
    let url = '';
    let extended = 0;
    // The receiver extends while its request is still open, then the gateway dies before the answer.
    receiver = await startReceiver(async (req) => {
      if (receiver!.requests.length === 1) {
        extended = (await request(url).post(`/deliveries/${req.headers['herald-delivery-id']}/extend`).send({ ms: 120_000 })).status;
        gw!.child.kill('SIGKILL');
      }
      return { status: 202 };
    });
    gw = await spawnGateway(env);
    url = gw.url;
    await request(url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ackMode: 'manual', ackDeadlineMs: 1000 } })
      .expect(201);
    await publish(url, [{ id: 'extended', key: 'k' }]);
    await gw.exited;
    expect(extended).toBe(200);

    gw = await spawnGateway(env);
    await new Promise((r) => setTimeout(r, 2000)); // past the 1 s ack deadline: only the extended lease holds it
    expect(receiver.requests).toHaveLength(1);
    const id = receiver.requests[0]!.headers['herald-delivery-id'] as string;
    expect((await request(gw.url).post(`/deliveries/${id}/ack`)).status).toBe(200);
  });
});

describe('graceful restart', () => {
  let receiver: Receiver | undefined;
  const gateways: { close(): Promise<void> }[] = [];
  afterEach(async () => {
    for (const gw of gateways.splice(0)) await gw.close();
    await receiver?.close();
  });

  it('keeps an awaiting_ack lease: the same delivery id is acked after the restart, with no redelivery', async () => {
    receiver = await startReceiver(() => ({ status: 202 }));
    const gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
    gateways.push(gw);
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, ackMode: 'manual', delivery: { ackDeadlineMs: 60_000 } })
      .expect(201);
    await publish(gw.url, [{ id: 'lease', key: 'k' }]);
    const delivered = await waitFor(() => receiver!.requests[0]);
    await waitFor(async () => (await statsOf(gw.url, sub.body.id)).some((p) => p.lag === 1 && p.committedOffset < p.headOffset));
    await gw.close();
    gateways.pop();

    const again = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_DATA_DIR: gw.dataDir });
    gateways.push(again);
    const stats = await statsOf(again.url, sub.body.id);
    expect(stats.reduce((n, p) => n + p.lag, 0)).toBe(1);
    expect(stats.reduce((n, p) => n + (p as PartitionStats & { inFlight: number }).inFlight, 0)).toBe(1);
    const ack = await request(again.url).post(`/deliveries/${delivered.headers['herald-delivery-id']}/ack`);
    expect(ack.status).toBe(200);
    await waitLagZero(again.url, sub.body.id);
    expect(receiver.requests).toHaveLength(1);
  });

  it('answers a repeated ack, nack or reject after the restart as before it: 200 repeated, any other callback 409', async () => {
    receiver = await startReceiver(() => ({ status: 202 }));
    const gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
    gateways.push(gw);
    await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ackMode: 'manual', ordering: 'none', maxInFlight: 3, retry: { initialDelayMs: 600_000 } } })
      .expect(201);
    await publish(
      gw.url,
      ['a', 'n', 'r'].map((id) => ({ id, key: id })),
    );
    await waitFor(() => receiver!.requests.length === 3, { what: 'three sent' });
    const idOf = Object.fromEntries(
      receiver.requests.map((q) => [q.headers['ce-id'] as string, q.headers['herald-delivery-id'] as string]),
    );
    const calls = { ack: idOf.a!, nack: idOf.n!, reject: idOf.r! };
    const status = async (url: string, id: string, action: string) => (await request(url).post(`/deliveries/${id}/${action}`)).status;
    for (const [action, id] of Object.entries(calls)) expect(await status(gw.url, id, action)).toBe(200);
    await gw.close();
    gateways.pop();

    const again = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_DATA_DIR: gw.dataDir });
    gateways.push(again);
    for (const [action, id] of Object.entries(calls)) {
      const repeated = await request(again.url).post(`/deliveries/${id}/${action}`);
      expect({ action, status: repeated.status, body: repeated.body }).toEqual({
        action,
        status: 200,
        body: { deliveryId: id, status: `${action}ed`, repeated: true },
      });
      const other = action === 'ack' ? 'nack' : 'ack';
      expect({ action, other, status: await status(again.url, id, other) }).toEqual({ action, other, status: 409 });
    }
    expect(await status(again.url, 'dlv_unknown', 'ack')).toBe(404);
    expect(receiver.requests).toHaveLength(3); // the nacked one waits its 10 minutes
  });

  it('an extend of an attempt cut by the restart, before it is sent again, holds it under that lease until the ack', async () => {
    let release: (() => void) | undefined;
    receiver = await startReceiver(() => new Promise((resolve) => (release = () => resolve({ status: 202 }))));
    const env = { HERALD_PARTITIONS: '4', HERALD_SHUTDOWN_TIMEOUT_MS: '300' };
    const gw = await startTestGateway(env);
    gateways.push(gw);
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ackMode: 'manual', ackDeadlineMs: 400 } })
      .expect(201);
    await publish(gw.url, [{ id: 'cut', key: 'k' }]);
    const first = await waitFor(() => receiver!.requests[0]);
    // Paused with the request open, then stopped: the attempt is cut at the shutdown deadline and restored in flight.
    await request(gw.url).post(`/subscriptions/${sub.body.id}/pause`).expect(200);
    await gw.close();
    gateways.pop();
    release?.();

    const again = await startTestGateway({ ...env, HERALD_DATA_DIR: gw.dataDir });
    gateways.push(again);
    const id = first.headers['herald-delivery-id'] as string;
    const extended = await request(again.url).post(`/deliveries/${id}/extend`).send({ ms: 60_000 });
    expect(extended.status).toBe(200);
    await request(again.url).post(`/subscriptions/${sub.body.id}/resume`).expect(200);
    await new Promise((r) => setTimeout(r, 1000)); // past the 400 ms ack deadline: the extended lease holds
    expect(receiver.requests).toHaveLength(1);
    expect((await request(again.url).post(`/deliveries/${id}/ack`)).status).toBe(200);
    await waitLagZero(again.url, sub.body.id);
    expect(receiver.requests).toHaveLength(1);
  });

  it('a nack with delayMs of an attempt cut by the restart, while it waits for a slot, waits that long', async () => {
    const held: (() => void)[] = [];
    receiver = await startReceiver(() => new Promise((resolve) => held.push(() => resolve({ status: 204 }))));
    const env = { HERALD_PARTITIONS: '1', HERALD_SHUTDOWN_TIMEOUT_MS: '300' };
    const gw = await startTestGateway(env);
    gateways.push(gw);
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ordering: 'none', maxInFlight: 2 } })
      .expect(201);
    await publish(gw.url, [
      { id: 'c0', key: 'k' },
      { id: 'c1', key: 'k' },
    ]);
    await waitFor(() => receiver!.requests.length === 2, { what: 'both sent' });
    const cut = Object.fromEntries(receiver.requests.map((q) => [q.headers['ce-id'] as string, q.headers['herald-delivery-id'] as string]));
    await request(gw.url).post(`/subscriptions/${sub.body.id}/pause`).expect(200);
    await gw.close(); // both requests cut at the deadline: restored in flight
    gateways.pop();
    for (const release of held.splice(0)) release();

    const again = await startTestGateway({ ...env, HERALD_DATA_DIR: gw.dataDir });
    gateways.push(again);
    await request(again.url)
      .patch(`/subscriptions/${sub.body.id}`)
      .send({ delivery: { maxInFlight: 1 } })
      .expect(200);
    await request(again.url).post(`/subscriptions/${sub.body.id}/resume`).expect(200);
    await waitFor(() => receiver!.requests.length === 3, { what: 'one sent again' });
    const resent = receiver.requests[2]!.headers['ce-id'] as string;
    const waiting = resent === 'c0' ? 'c1' : 'c0';
    // The receiver of the other cut request says: try again in a minute. Then the one slot frees.
    expect((await request(again.url).post(`/deliveries/${cut[waiting]}/nack`).send({ delayMs: 60_000 })).status).toBe(200);
    held.shift()!();
    await new Promise((r) => setTimeout(r, 1000));
    expect(receiver.requests.slice(3).map((q) => q.headers['ce-id'])).toEqual([]);
  });

  it('counts an ack lease that ran out while the gateway was down as a failed attempt, and redelivers', async () => {
    let n = 0;
    receiver = await startReceiver(() => ({ status: n++ === 0 ? 202 : 204 }));
    const gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
    gateways.push(gw);
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ackDeadlineMs: 400, retry: { initialDelayMs: 10 } } })
      .expect(201);
    await publish(gw.url, [{ id: 'expires', key: 'k' }]);
    const first = await waitFor(() => receiver!.requests[0]);
    await gw.close();
    gateways.pop();
    await new Promise((r) => setTimeout(r, 500)); // the lease ends while nothing runs

    const again = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_DATA_DIR: gw.dataDir });
    gateways.push(again);
    await waitLagZero(again.url, sub.body.id);
    const second = receiver.requests[1]!;
    expect(second.headers['herald-attempt']).toBe('2');
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    // The expired attempt is stale, not unknown, after the restart too.
    expect((await request(again.url).post(`/deliveries/${first.headers['herald-delivery-id']}/ack`)).status).toBe(409);
    expect(receiver.requests).toHaveLength(2);
  });

  it('resumes from the committed offset and keeps counting attempts of a scheduled retry', async () => {
    const failing = new Set(['r2']);
    receiver = await startReceiver((req) => (failing.has(req.headers['ce-id'] as string) ? { status: 500 } : { status: 204 }));
    const gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
    gateways.push(gw);
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, retry: { maxAttempts: 20, initialDelayMs: 300, multiplier: 1, jitter: 0 } })
      .expect(201);
    const [r1] = await publish(gw.url, [{ id: 'r1', key: 'same' }]);
    await waitFor(async () => (await statsOf(gw.url, sub.body.id))[r1!.partition]!.committedOffset === r1!.offset + 1);
    await publish(gw.url, [{ id: 'r2', key: 'same' }]);
    await waitFor(() => receiver!.requests.filter((q) => q.headers['ce-id'] === 'r2').length >= 2, { what: 'two failed attempts' });
    const before = committed(await statsOf(gw.url, sub.body.id));
    await gw.close();
    gateways.pop();
    const attemptsBefore = receiver.requests.filter((q) => q.headers['ce-id'] === 'r2');

    failing.clear();
    const again = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_DATA_DIR: gw.dataDir });
    gateways.push(again);
    expectNotBehind(committed(await statsOf(again.url, sub.body.id)), before);
    await waitLagZero(again.url, sub.body.id);
    const r2 = receiver.requests.filter((q) => q.headers['ce-id'] === 'r2');
    const next = r2[attemptsBefore.length]!;
    expect(Number(next.headers['herald-attempt'])).toBe(attemptsBefore.length + 1);
    expect(next.headers['webhook-id']).toBe(attemptsBefore[0]!.headers['webhook-id']);
    expect(r2).toHaveLength(attemptsBefore.length + 1);
    expect(receiver.requests.filter((q) => q.headers['ce-id'] === 'r1')).toHaveLength(1);
  });
});
