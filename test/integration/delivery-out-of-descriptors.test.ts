/**
 * Delivery when the gateway runs out of file descriptors (a low `ulimit -n`, as systemd or a container
 * may set): a connection it cannot open is its own failure, not the receiver's (limits probe: healthy
 * receivers' events were dead-lettered `max_attempts` with `connect EMFILE` as their last error).
 */
import fs from 'node:fs';
import { killIfRunning, postBatch, spawnGateway, type ChildGateway } from '../helpers/gateway';
import { startReceiver, type Receiver } from '../helpers/receiver';
import { tmpDir } from '../helpers/tmp';

jest.setTimeout(90_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A request that may meet a connection reset while the gateway has no descriptor to accept it with: asked again. */
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

describe('delivery out of file descriptors', () => {
  const receivers: Receiver[] = [];
  let gw: ChildGateway | undefined;
  afterAll(async () => {
    await killIfRunning(gw);
    for (const r of receivers) await r.close();
  });

  it('spends no attempt on a connection it cannot open: every event reaches its healthy receiver, none is dead-lettered', async () => {
    const dataDir = tmpDir();
    const events = 60;
    for (let i = 0; i < 3; i++) receivers.push(await startReceiver(() => ({ status: 204, delayMs: 300 })));
    gw = await spawnGateway({ HERALD_DATA_DIR: dataDir });
    const ids: string[] = [];
    for (const r of receivers) {
      const res = await call(`${gw.url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sink: r.url, delivery: { maxInFlight: 64, retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 50 } } }),
      });
      expect(res.status).toBe(201);
      const id = ((await res.json()) as { id: string }).id;
      expect((await call(`${gw.url}/subscriptions/${id}/pause`, { method: 'POST' })).status).toBe(200);
      ids.push(id);
    }
    const batch = Array.from({ length: events }, (_, i) => ({ id: `fd-${i}`, source: '/fd' }));
    expect((await postBatch(gw.url, batch)).status).toBe(202);
    const idle = fs.readdirSync(`/proc/${gw.child.pid}/fd`).length;
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);

    // A few descriptors to spare, where the three subscriptions want up to 192 connections at once.
    gw = await spawnGateway({ HERALD_DATA_DIR: dataDir }, { fdLimit: idle + 20 });
    for (const id of ids) expect((await call(`${gw.url}/subscriptions/${id}/resume`, { method: 'POST' })).status).toBe(200);
    const delivered = (r: Receiver) => new Set(r.requests.map((q) => (JSON.parse(q.body.toString('utf8')) as { id: string }).id)).size;
    for (let waited = 0; receivers.some((r) => delivered(r) < events) && waited < 60_000; waited += 200) await sleep(200);
    expect(receivers.map(delivered)).toEqual([events, events, events]);
    for (const id of ids) {
      const sub = (await (await call(`${gw.url}/subscriptions/${id}`)).json()) as { stats: { deadLetters: number } };
      // Was: most of them dead-lettered, `lastError` "connect EMFILE".
      expect(sub.stats.deadLetters).toBe(0);
    }
    expect(gw.output()).toContain('this process is out of file descriptors');
  });
});
