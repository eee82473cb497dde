/**
 * A lapsed last attempt found by the pointer's compare-and-set retry (two deliveries of one message racing:
 * the redelivery read the pointer before the stalled first delivery wrote it) is dead-lettered without a
 * request, as one found by the first read of the pointer is, and as the local engine does. Was: closed, its
 * `lease_expired` counted, and the event sent once more past retry.maxAttempts.
 * One real nats-server; two engine instances play two Herald nodes; the stalls are the engine's test hook.
 */
import { randomUUID } from 'node:crypto';
import { createLogger } from '../../src/logger';
import { openJetStreamEventStore, type JetStreamEventStore } from '../../src/jetstream/jetstream-event-store';
import { createJetStreamDelivery, type JetStreamDeliveryDeps } from '../../src/jetstream/delivery/jetstream-delivery';
import { deliverySchema } from '../../src/subscriptions/schema';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { subscriptionRecord } from '../helpers/subscription-record';

jest.setTimeout(60_000);
const WAIT = { timeoutMs: 20_000, intervalMs: 25 };
const log = createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent');
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

describeWithNats('jetstream: a lapsed last attempt found through the claim of the pointer', () => {
  let cluster: NatsCluster;
  let store: JetStreamEventStore;
  let receiver: Receiver;
  const prefix = uniquePrefix('lapsedrace');
  const nats = () => ({ servers: cluster.urls, replicas: 1, prefix });
  const node = (name: string, beforeOpen: JetStreamDeliveryDeps['beforeOpen']) =>
    createJetStreamDelivery({
      nats: nats(),
      partitions: 1,
      log,
      allowPrivateSinks: true,
      ackUrlBase: () => `http://${name}.invalid`,
      beforeOpen,
    });

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    store = await openJetStreamEventStore({ nats: nats(), partitions: 1, idempotencyWindowMs: 3_600_000, log });
    receiver = await startReceiver(() => ({ status: 202 }));
  });
  afterAll(async () => {
    await receiver?.close();
    await store?.close();
    await cluster?.stop();
  });

  it('is dead-lettered, not sent again, when retry.maxAttempts is 1', async () => {
    const source = `/s/${randomUUID()}`;
    // ack_wait 4 s (timeoutMs 3 s); the lease of a 202 is 1 s.
    const delivery = deliverySchema.parse({ ackMode: 'manual', timeoutMs: 3000, ackDeadlineMs: 1000, retry: { maxAttempts: 1 } });
    const sub = subscriptionRecord({ sink: receiver.url, filters: [{ exact: { source } }], delivery });
    let laterIn = false;
    // Delivery 1 stalls before it writes the pointer until the redelivery (after ack_wait) has read it (none
    // yet); the redelivery then stalls before its claim until attempt 1 went out, was answered 202 and its
    // lease lapsed: its claim's compare-and-set finds attempt 1's pointer, written meanwhile.
    const beforeOpen: JetStreamDeliveryDeps['beforeOpen'] = async ({ subscriptionId, deliveryCount }) => {
      if (subscriptionId !== sub.id) return;
      if (deliveryCount === 1) return void (await waitFor(() => laterIn, WAIT));
      if (laterIn) return;
      laterIn = true;
      await waitFor(() => receiver.requests.length >= 1, WAIT);
      await sleep(1500);
    };
    const c = await node('c', beforeOpen);
    const d = await node('d', beforeOpen);
    try {
      await Promise.all([c.add(sub, { onGone: () => {} }), d.add(sub, { onGone: () => {} })]);
      const [stored] = await store.append([
        { attributes: { specversion: '1.0', id: 'e1', source, type: 't' }, data: { kind: 'json', value: {} } } as never,
      ]);
      const [dead] = await waitFor(async () => {
        // A read that times out on a busy machine is tried again.
        const rows = await Promise.resolve(c.deadLetters(sub.id, { after: 0, limit: 10 })).catch(() => []);
        return rows.length > 0 ? rows : undefined;
      }, WAIT);
      await sleep(1000); // a request sent after all would have come by now
      // Was: a second request (attempt 2), the event then held under a new lease.
      expect(receiver.requests).toHaveLength(1);
      expect(dead).toMatchObject({ offset: stored!.offset, reason: 'max_attempts', attempts: 1 });
    } finally {
      await c.close();
      await d.close();
    }
  });
});
