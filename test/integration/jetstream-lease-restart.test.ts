import request from 'supertest';
import { publishOfType, requestsForSubscription } from '../helpers/delivery';
import { describeEngine, useEngineGateway } from '../helpers/engines';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';

/**
 * A lease extended past `ack_wait` whose node stopped renewing it (a restart): JetStream delivers the
 * message again while the lease still runs. The receiver may still be at work on it, so it is sent
 * again (the node's failure, as a cut request is), not dead-lettered under it, even on the last attempt
 * (review of the lapsed-lease dead letter).
 */
const WAIT = { timeoutMs: 30_000, intervalMs: 50 };

describeEngine('jetstream', () => {
  const gw = useEngineGateway('jetstream', { HERALD_PARTITIONS: '1' });
  let receiver: Receiver;
  beforeAll(async () => {
    receiver = await startReceiver(() => ({ status: 202 }));
  });
  afterAll(async () => {
    await receiver?.close();
  });

  it('sends again, not dead-letters, an event whose extended lease still runs when its node restarted', async () => {
    const created = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ackMode: 'manual', ackDeadlineMs: 1000, timeoutMs: 1000, retry: { maxAttempts: 1 } } })
      .expect(201);
    const id = created.body.id as string;
    await publishOfType(gw.url, '/lease-restart', 'lease.restart', ['r1']);
    const first = await waitFor(() => requestsForSubscription(receiver, id)[0], { ...WAIT, what: 'the first request' });
    const extend = new URL((first.headers['herald-ack-url'] as string).replace(/\/ack$/, '/extend'));
    await request(extend.origin).post(extend.pathname).send({ ms: 60_000 }).expect(200);

    await gw.restart();
    const again = await waitFor(() => requestsForSubscription(receiver, id)[1], { ...WAIT, what: 'the event sent again' });
    expect([again.headers['ce-id'], again.headers['webhook-id']]).toEqual([first.headers['ce-id'], first.headers['webhook-id']]);
    const dead = await request(gw.url).get(`/subscriptions/${id}/dead-letters`).expect(200);
    expect(dead.body.deadLetters).toEqual([]);
  });
});
