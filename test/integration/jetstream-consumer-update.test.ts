/**
 * JetStream engine: a PATCH of delivery options reaches the consumers of a subscription that starts
 * at a time (`startAt: latest`, the default). nats-server 2.9.10 refuses every update of a consumer
 * made with `deliver_policy: by_start_time`, so the PATCH used to stay in the record only, and a
 * node started after it never delivered the subscription (its start retried the update for ever).
 */
import request from 'supertest';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, uniquePrefix } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';

const publish = (url: string, id: string) =>
  request(url)
    .post('/events')
    .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/consumer-update', 'ce-type': 't', 'content-type': 'application/json' })
    .send('{}')
    .expect(202);

describeWithNats('jetstream: delivery options of a subscription that starts at a time', () => {
  const js = useJetStreamCluster({ size: 1 });
  let receiver: Receiver;
  const prefix = uniquePrefix('cupd');
  const env = { HERALD_NATS_REPLICAS: '1', HERALD_PARTITIONS: '1', HERALD_NATS_PREFIX: prefix };

  beforeAll(async () => {
    receiver = await startReceiver(() => ({ status: 204 }));
  });
  afterAll(() => receiver?.close());

  it('a PATCH changes the consumer, and a node started after it delivers from where startAt latest began', async () => {
    const a = await js.start(env);
    await publish(a.url, 'before-the-subscription');
    const sub = (await request(a.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body as { id: string };
    await publish(a.url, 'first');
    await waitFor(() => receiver.requests.some((r) => r.headers['ce-id'] === 'first'), { timeoutMs: 15_000, what: 'the first delivery' });

    await request(a.url)
      .patch(`/subscriptions/${sub.id}`)
      .send({ delivery: { timeoutMs: 20_000, ackDeadlineMs: 1000, ordering: 'none', maxInFlight: 7 } })
      .expect(200);
    const jsm = await a.store.connection.jetstreamManager();
    const consumers = await jsm.consumers.list(`${prefix}_p0`).next();
    const mine = consumers.filter((c) => c.name.startsWith(`${prefix}_d_`)); // the only subscription
    expect(mine).toHaveLength(1);
    // Was: ack_wait 31 s and max_ack_pending 1 (ordering partition), the update refused by the server.
    expect({ ackWaitMs: (mine[0]!.config.ack_wait ?? 0) / 1e6, maxAckPending: mine[0]!.config.max_ack_pending }).toEqual({
      ackWaitMs: 21_000,
      maxAckPending: 7,
    });

    // A rolling restart: the next node's start checks the consumer (was: failed, and retried for ever).
    await a.close();
    const b = await js.start(env);
    await publish(b.url, 'after-the-restart');
    await waitFor(() => receiver.requests.some((r) => r.headers['ce-id'] === 'after-the-restart'), {
      timeoutMs: 20_000,
      what: 'delivery by the node started after the PATCH',
    });
    await request(b.url).get(`/subscriptions/${sub.id}`).expect(200);
    const ids = receiver.requests.map((r) => String(r.headers['ce-id']));
    expect(ids).not.toContain('before-the-subscription');
    expect(ids.filter((id) => id === 'first')).toHaveLength(1);
  }, 90_000);
});
