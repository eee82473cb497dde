/**
 * A child gateway restarted under a descriptor limit just above what it holds idle, with paused subscriptions
 * to receivers and a backlog waiting for them: resumed, they want far more connections than it has descriptors.
 * For the out-of-descriptors tests of both engines.
 */
import fs from 'node:fs';
import { postBatch, spawnGateway, type ChildGateway } from './gateway';
import type { Receiver } from './receiver';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A request that may meet a connection reset while the gateway has no descriptor to accept it with: asked again. */
export async function callRetrying(url: string, init: RequestInit = {}): Promise<Response> {
  for (let tried = 1; ; tried++) {
    try {
      return await fetch(url, init);
    } catch (err) {
      if (tried >= 100) throw err;
      await sleep(200);
    }
  }
}

/**
 * Starts a gateway on `env`, makes a paused subscription to each receiver with `delivery`, publishes `events`
 * events (ids `<idPrefix>-<n>`), stops it, and starts it again under a limit `spare` descriptors above its idle
 * count; then resumes the subscriptions. The running gateway (the caller kills it) and the subscription ids.
 */
export async function restartStarved(opts: {
  env: Record<string, string>;
  receivers: readonly Receiver[];
  delivery: object;
  events: number;
  idPrefix: string;
  spare: number;
  /** The gateway, as soon as one runs (so that the caller's clean-up can kill it whatever fails). */
  running: (gw: ChildGateway) => void;
}): Promise<{ gw: ChildGateway; ids: string[] }> {
  let gw = await spawnGateway(opts.env);
  opts.running(gw);
  const ids: string[] = [];
  for (const r of opts.receivers) {
    const res = await callRetrying(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: r.url, delivery: opts.delivery }),
    });
    expect(res.status).toBe(201);
    const id = ((await res.json()) as { id: string }).id;
    expect((await callRetrying(`${gw.url}/subscriptions/${id}/pause`, { method: 'POST' })).status).toBe(200);
    ids.push(id);
  }
  const batch = Array.from({ length: opts.events }, (_, i) => ({ id: `${opts.idPrefix}-${i}`, source: '/fd' }));
  expect((await postBatch(gw.url, batch)).status).toBe(202);
  const idle = fs.readdirSync(`/proc/${gw.child.pid}/fd`).length;
  gw.child.kill('SIGTERM');
  expect(await gw.exited).toBe(0);

  gw = await spawnGateway(opts.env, { fdLimit: idle + opts.spare });
  opts.running(gw);
  for (const id of ids) expect((await callRetrying(`${gw.url}/subscriptions/${id}/resume`, { method: 'POST' })).status).toBe(200);
  return { gw, ids };
}

/** How many distinct events each receiver got, once each has all `events` or `withinMs` has passed. */
export async function deliveredTo(receivers: readonly Receiver[], events: number, withinMs: number): Promise<number[]> {
  const distinct = (r: Receiver) => new Set(r.requests.map((q) => (JSON.parse(q.body.toString('utf8')) as { id: string }).id)).size;
  for (let waited = 0; receivers.some((r) => distinct(r) < events) && waited < withinMs; waited += 200) await sleep(200);
  return receivers.map(distinct);
}
