import request from 'supertest';
import { publishOfType, requestsForSubscription, useDeliveryFixture } from '../helpers/delivery';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';

/**
 * Issue 12 §3/§4: a retry that found the rate limit's bucket empty waits in the flow control and
 * runs when its token is due. Then it must still respect the subscription's state: nothing is sent
 * while it is paused, or validating a new sink that has not consented.
 */

const { gw, receiver } = useDeliveryFixture();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const posts = (r: Receiver) => r.requests.filter((q) => q.method === 'POST');

afterEach(() => receiver.setResponder(() => ({ status: 204 })));

const retryNow = { maxAttempts: 5, initialDelayMs: 10, maxDelayMs: 10, multiplier: 1, jitter: 0 };

it('a paused subscription sends nothing, not even a retry that was waiting for a token', async () => {
  receiver.setResponder(() => ({ status: 500 }));
  const type = 'hostile.paused';
  const res = await request(gw.url)
    .post('/subscriptions')
    .send({ sink: receiver.url, filters: [{ exact: { type } }], delivery: { rateLimit: { perSecond: 0.5 }, retry: retryNow } })
    .expect(201);
  const id = res.body.id as string;
  await publishOfType(gw.url, '/r2', type, ['p0']);
  await waitFor(() => requestsForSubscription(receiver, id).length === 1, { what: 'the first attempt' });
  // The retry (10 ms later) finds the bucket empty: it waits about 2 s for a token.
  await waitFor(async () => (await request(gw.url).get(`/subscriptions/${id}`)).body.stats.throttled === true || undefined, {
    what: 'the retry waiting for a token',
  });
  await request(gw.url).post(`/subscriptions/${id}/pause`).expect(200);
  await sleep(3000);
  expect(requestsForSubscription(receiver, id)).toHaveLength(1);
  await request(gw.url).delete(`/subscriptions/${id}`).expect(204);
});

describe('validation handshake', () => {
  let consenting: Receiver;
  let silent: Receiver;
  beforeAll(async () => {
    consenting = await startReceiver((q) =>
      q.method === 'OPTIONS' ? { status: 200, headers: { 'webhook-allowed-origin': '*' } } : { status: 500 },
    );
    // Answers the handshake 200 without consent: the subscription must stay `validating`, nothing posted.
    silent = await startReceiver(() => ({ status: 200 }));
  });
  afterAll(async () => {
    await consenting.close();
    await silent.close();
  });

  it('a new sink that has not consented receives no delivery (a parked retry is not sent to it)', async () => {
    const type = 'hostile.consent';
    const res = await request(gw.url)
      .post('/subscriptions')
      .send({
        sink: consenting.url,
        validation: 'cloudevents',
        filters: [{ exact: { type } }],
        delivery: { rateLimit: { perSecond: 0.5 }, retry: retryNow },
      })
      .expect(201);
    const id = res.body.id as string;
    await waitFor(async () => (await request(gw.url).get(`/subscriptions/${id}`)).body.state === 'active', { what: 'consent' });
    await publishOfType(gw.url, '/r2', type, ['c0']);
    await waitFor(() => posts(consenting).length === 1, { what: 'the first attempt' });
    // The retry is parked for a token (~2 s).
    await waitFor(async () => (await request(gw.url).get(`/subscriptions/${id}`)).body.stats.throttled === true || undefined, {
      what: 'the retry waiting for a token',
    });
    const patched = await request(gw.url).patch(`/subscriptions/${id}`).send({ sink: silent.url }).expect(200);
    expect(patched.body.state).toBe('validating');
    await sleep(3000);
    expect((await request(gw.url).get(`/subscriptions/${id}`)).body.state).toBe('validating');
    expect(posts(silent)).toHaveLength(0);
    await request(gw.url).delete(`/subscriptions/${id}`).expect(204);
  });
});
