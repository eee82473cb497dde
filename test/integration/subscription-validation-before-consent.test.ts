/**
 * `validation: "cloudevents"`: "While waiting, state is validating and nothing is sent" (README,
 * Validation handshake). A subscription created with startAt earliest over a stored backlog must
 * not POST any event to a sink that has not consented.
 */
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

let gw: TestGateway;
let receiver: Receiver;
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
  // OPTIONS: a 200 without WebHook-Allowed-Origin (no consent: Herald waits for the callback).
  receiver = await startReceiver((req) => ({ status: req.method === 'OPTIONS' ? 200 : 204 }));
});
afterAll(async () => {
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

async function publish(prefix: string, n: number): Promise<void> {
  const events = Array.from({ length: n }, (_, i) => ({
    specversion: '1.0',
    id: `${prefix}-${i}`,
    source: '/validation',
    type: 't',
    data: { i },
  }));
  const stored = await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents-batch+json' },
    body: JSON.stringify(events),
  });
  expect(stored.status).toBe(202);
}

it('sends no event to a sink that has not consented, even with a backlog to start from (startAt earliest)', async () => {
  await publish('backlog', 200);
  const ids: string[] = [];
  // Ten subscriptions, each created while more events are being stored (as on a live gateway).
  for (let i = 0; i < 10; i++) {
    const [res] = await Promise.all([
      fetch(`${gw.url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sink: receiver.url, validation: 'cloudevents', startAt: 'earliest' }),
      }),
      publish(`live-${i}`, 200),
    ]);
    expect(res.status).toBe(201);
    const sub = (await res.json()) as { id: string; state: string };
    expect(sub.state).toBe('validating');
    ids.push(sub.id);
  }
  await waitFor(() => receiver.requests.filter((r) => r.method === 'OPTIONS').length >= ids.length, {
    timeoutMs: 10_000,
    what: 'the handshakes',
  });
  await new Promise((r) => setTimeout(r, 1000));
  for (const id of ids) {
    const current = (await (await fetch(`${gw.url}/subscriptions/${id}`)).json()) as { state: string };
    expect(current.state).toBe('validating');
  }
  // Before the fix events were POSTed before (or without) consent: delivery is started with the record as first
  // inserted (state "active") and only told a moment later that it is "validating".
  const posts = receiver.requests
    .filter((r) => r.method === 'POST')
    .map((r) => `${String(r.headers['herald-subscription-id']).slice(0, 8)} ${String(r.headers['ce-id'])}`);
  expect(posts).toEqual([]);
});
