/**
 * JetStream engine: delivery when the node runs out of file descriptors (a low `ulimit -n`). A connection it
 * cannot open is its own failure, not the receiver's: as on the local engine, no attempt is spent, and the
 * message is sent again shortly (was: counted as a failed attempt, healthy receivers' events dead-lettered).
 */
import fs from 'node:fs';
import { killIfRunning, postBatch, spawnGateway, useJetStreamCluster, type ChildGateway } from '../helpers/gateway';
import { describeWithNats, uniquePrefix } from '../helpers/nats-cluster';
import { startReceiver, type Receiver } from '../helpers/receiver';

jest.setTimeout(120_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A request that may meet a connection reset while the node has no descriptor to accept it with: asked again. */
async function call(url: string, init: RequestInit = {}): Promise<Response> {
  for (let tried = 1; ; tried++) {
    try {
      return await fetch(url, init);
    } catch (err) {
      if (tried >= 100) throw err;
      await sleep(200);
    }
  }
}

describeWithNats('jetstream: delivery out of file descriptors', () => {
  const js = useJetStreamCluster({ size: 1 });
  const receivers: Receiver[] = [];
  let gw: ChildGateway | undefined;
  afterAll(async () => {
    await killIfRunning(gw);
    for (const r of receivers) await r.close();
  });

  it('spends no attempt on a connection it cannot open: every event reaches its healthy receiver, none is dead-lettered', async () => {
    const env = {
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: js.cluster.serversEnv,
      HERALD_NATS_REPLICAS: '1',
      HERALD_PARTITIONS: '1',
      HERALD_NATS_PREFIX: uniquePrefix('jsfd'),
    };
    const events = 60;
    for (let i = 0; i < 3; i++) receivers.push(await startReceiver(() => ({ status: 204, delayMs: 300 })));
    gw = await spawnGateway(env);
    const ids: string[] = [];
    for (const r of receivers) {
      const res = await call(`${gw.url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          sink: r.url,
          delivery: { ordering: 'none', maxInFlight: 64, retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 50 } },
        }),
      });
      expect(res.status).toBe(201);
      const id = ((await res.json()) as { id: string }).id;
      expect((await call(`${gw.url}/subscriptions/${id}/pause`, { method: 'POST' })).status).toBe(200);
      ids.push(id);
    }
    const batch = Array.from({ length: events }, (_, i) => ({ id: `jsfd-${i}`, source: '/fd' }));
    expect((await postBatch(gw.url, batch)).status).toBe(202);
    const idle = fs.readdirSync(`/proc/${gw.child.pid}/fd`).length;
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);

    // A few descriptors to spare, where the three subscriptions want up to 192 connections at once.
    gw = await spawnGateway(env, { fdLimit: idle + 20 });
    for (const id of ids) expect((await call(`${gw.url}/subscriptions/${id}/resume`, { method: 'POST' })).status).toBe(200);
    const delivered = (r: Receiver) => new Set(r.requests.map((q) => (JSON.parse(q.body.toString('utf8')) as { id: string }).id)).size;
    for (let waited = 0; receivers.some((r) => delivered(r) < events) && waited < 60_000; waited += 200) await sleep(200);
    expect(receivers.map(delivered)).toEqual([events, events, events]);
    for (const id of ids) {
      const dead = (await (await call(`${gw.url}/subscriptions/${id}/dead-letters`)).json()) as { deadLetters: unknown[] };
      // Was: dead-lettered, `lastError` "connect EMFILE".
      expect(dead.deadLetters).toEqual([]);
    }
    expect(gw.output()).toContain('this process is out of file descriptors');
  });
  it('renews the lease of a message it keeps: starved for many ack_waits, nothing is redelivered by JetStream nor dead-lettered', async () => {
    await killIfRunning(gw);
    const env = {
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: js.cluster.serversEnv,
      HERALD_NATS_REPLICAS: '1',
      HERALD_PARTITIONS: '1',
      HERALD_NATS_PREFIX: uniquePrefix('jsfdl'),
    };
    const events = 40;
    const slow: Receiver[] = [];
    for (let i = 0; i < 3; i++) slow.push(await startReceiver(() => ({ status: 204, delayMs: 2500 })));
    receivers.push(...slow);
    gw = await spawnGateway(env);
    const ids: string[] = [];
    for (const r of slow) {
      const res = await call(`${gw.url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          sink: r.url,
          // ack_wait 4 s: the starvation below lasts several of them.
          delivery: {
            ordering: 'none',
            maxInFlight: 64,
            timeoutMs: 3000,
            ackDeadlineMs: 3000,
            retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 50 },
          },
        }),
      });
      expect(res.status).toBe(201);
      const id = ((await res.json()) as { id: string }).id;
      expect((await call(`${gw.url}/subscriptions/${id}/pause`, { method: 'POST' })).status).toBe(200);
      ids.push(id);
    }
    expect(
      (
        await postBatch(
          gw.url,
          Array.from({ length: events }, (_, i) => ({ id: `jsfdl-${i}`, source: '/fd' })),
        )
      ).status,
    ).toBe(202);
    const idle = fs.readdirSync(`/proc/${gw.child.pid}/fd`).length;
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);

    gw = await spawnGateway(env, { fdLimit: idle + 12 });
    for (const id of ids) expect((await call(`${gw.url}/subscriptions/${id}/resume`, { method: 'POST' })).status).toBe(200);
    const delivered = (r: Receiver) => new Set(r.requests.map((q) => (JSON.parse(q.body.toString('utf8')) as { id: string }).id)).size;
    for (let waited = 0; slow.some((r) => delivered(r) < events) && waited < 90_000; waited += 200) await sleep(200);
    expect(slow.map(delivered)).toEqual([events, events, events]);
    // Was: the kept message's lease was never renewed (the 1 s resend cancelled the renewal due at a third of
    // ack_wait), so JetStream redelivered it every ack_wait: attempts spent, events dead-lettered unsent.
    for (const r of slow) expect(r.requests.every((q) => q.headers['herald-attempt'] === '1')).toBe(true);
    for (const id of ids) {
      const dead = (await (await call(`${gw.url}/subscriptions/${id}/dead-letters`)).json()) as { deadLetters: unknown[] };
      expect(dead.deadLetters).toEqual([]);
    }
  });
});
