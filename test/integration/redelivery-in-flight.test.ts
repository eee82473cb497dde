/**
 * A dead-letter redelivery under way is an event started and not finished: it counts in
 * `stats.partitions[].inFlight` and `herald_subscription_in_flight`. Was: 0 in both (and lag and
 * dead letters 0 too), so the subscription looked drained while the redelivery was still open.
 */
import request from 'supertest';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { getSubscription, publishOfType } from '../helpers/delivery';
import { cleanupTmpDirs } from '../helpers/tmp';

let gw: TestGateway;
let rx: Receiver;
let release: () => void = () => undefined;
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
  rx = await startReceiver();
});
afterAll(async () => {
  release();
  await rx.close();
  await gw.close();
  cleanupTmpDirs();
});

const gauge = (text: string, name: string, sub: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{subscription="${sub}"}`));
  if (!line) throw new Error(`no ${name} for ${sub}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
};

it('counts an open redelivery request as in flight', async () => {
  rx.setResponder(() => ({ status: 500 }));
  const sub = (
    await request(gw.url)
      .post('/subscriptions')
      .send({ sink: rx.url, delivery: { retry: { maxAttempts: 1 } } })
      .expect(201)
  ).body;
  await publishOfType(gw.url, '/redrive', 't', ['r1']);
  await waitFor(async () => (await getSubscription(gw.url, sub.id)).stats.deadLetters === 1, { what: 'a dead letter' });

  // The receiver now holds the redelivery open.
  const held = new Promise<void>((r) => (release = r));
  rx.setResponder(async () => {
    await held;
    return { status: 204 };
  });
  const before = rx.requests.length;
  await request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).send({}).expect(202);
  await waitFor(() => rx.requests.length > before, { what: 'the redelivery request to be open' });
  expect(rx.requests[rx.requests.length - 1]!.headers['herald-redelivery']).toBe('true');

  const text = await (await fetch(`${gw.url}/metrics`)).text();
  const stats = (await getSubscription(gw.url, sub.id)).stats;
  const apiInFlight = stats.partitions.reduce((n: number, p: { inFlight: number }) => n + p.inFlight, 0);
  release();

  expect({
    metricInFlight: gauge(text, 'herald_subscription_in_flight', sub.id),
    apiInFlight,
  }).toEqual({ metricInFlight: 1, apiInFlight: 1 });
});
