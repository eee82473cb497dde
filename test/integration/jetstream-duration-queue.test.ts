/**
 * `herald_delivery_duration_seconds` on the JetStream engine is timed from when the request is built (a
 * connection to the sink free), as on the local engine, not from before the wait for a connection. Was: a
 * request that waited for one of the origin's connections counted the wait too (here about 2.5 s more).
 * One real nats-server; one engine; a receiver answering in 2.5 s; more requests than the 56 connections
 * a subscription may take of the origin's 64.
 */
import { randomUUID } from 'node:crypto';
import type { DeliveryObserver } from '../../src/delivery/tally';
import { createLogger } from '../../src/logger';
import { openJetStreamEventStore, type JetStreamEventStore } from '../../src/jetstream/jetstream-event-store';
import { createJetStreamDelivery } from '../../src/jetstream/delivery/jetstream-delivery';
import { deliverySchema } from '../../src/subscriptions/schema';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { subscriptionRecord } from '../helpers/subscription-record';

jest.setTimeout(60_000);
const log = createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent');
const EVENTS = 64;
const ANSWER_MS = 2500;

describeWithNats('jetstream: the delivery duration of a request that waited for a connection', () => {
  let cluster: NatsCluster;
  let store: JetStreamEventStore;
  let receiver: Receiver;
  const prefix = uniquePrefix('durq');
  const nats = () => ({ servers: cluster.urls, replicas: 1, prefix });

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    store = await openJetStreamEventStore({ nats: nats(), partitions: 1, idempotencyWindowMs: 3_600_000, log });
    receiver = await startReceiver(() => ({ status: 204, delayMs: ANSWER_MS }));
  });
  afterAll(async () => {
    await receiver?.close();
    await store?.close();
    await cluster?.stop();
  });

  it('leaves the wait out, as the local engine does', async () => {
    const durations: number[] = [];
    const observer: DeliveryObserver = { outcome: () => {}, answered: (_s, ms) => void durations.push(ms), succeeded: () => {} };
    const engine = await createJetStreamDelivery({
      nats: nats(),
      partitions: 1,
      log,
      allowPrivateSinks: true,
      ackUrlBase: () => 'http://c.invalid',
      observer,
    });
    try {
      const source = `/s/${randomUUID()}`;
      const delivery = deliverySchema.parse({ ordering: 'none', maxInFlight: 128, timeoutMs: 5000 });
      const sub = subscriptionRecord({ sink: receiver.url, filters: [{ exact: { source } }], delivery });
      await engine.add(sub, { onGone: () => {} });
      const events = Array.from({ length: EVENTS }, (_, i) => ({
        attributes: { specversion: '1.0', id: `d${i}`, source, type: 't' },
        data: { kind: 'json', value: {} },
      }));
      await store.append(events as never);
      await waitFor(() => durations.length >= EVENTS || undefined, { timeoutMs: 30_000, intervalMs: 50 });
      const received = receiver.requests.map((r) => r.receivedAt).sort((x, y) => x - y);
      // Some requests did wait for a connection: they reached the receiver about one answer later.
      expect(received[received.length - 1]! - received[0]!).toBeGreaterThanOrEqual(ANSWER_MS * 0.8);
      // Was: those counted about 3 s (the wait and the answer).
      expect(Math.max(...durations)).toBeLessThan(ANSWER_MS * 1.5);
      await engine.remove(sub.id);
    } finally {
      await engine.close();
    }
  });
});
