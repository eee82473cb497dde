/**
 * A manual-ack callback that wins (its ack-map write comes first) but whose settlement on JetStream then
 * fails is counted in `herald_deliveries_total{outcome}` once: the receiver's retry, answered `repeated`,
 * counts nothing more. Was: counted by neither, so an acked event went missing from the outcomes.
 * One real nats-server; the failure is the delivery positions bucket refusing writes for a moment.
 */
import { randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import type { DeliveryObserver } from '../../src/delivery/tally';
import { createLogger } from '../../src/logger';
import { openJetStreamEventStore, type JetStreamEventStore } from '../../src/jetstream/jetstream-event-store';
import { createJetStreamDelivery } from '../../src/jetstream/delivery/jetstream-delivery';
import { deliveryNames } from '../../src/jetstream/delivery/names';
import { deliverySchema } from '../../src/subscriptions/schema';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { subscriptionRecord } from '../helpers/subscription-record';

jest.setTimeout(60_000);
const WAIT = { timeoutMs: 20_000, intervalMs: 25 };
const log = createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent');

describeWithNats('jetstream: the outcome of a callback whose settlement fails after it won', () => {
  let cluster: NatsCluster;
  let store: JetStreamEventStore;
  let receiver: Receiver;
  let nc: NatsConnection;
  const prefix = uniquePrefix('cbcount');
  const nats = () => ({ servers: cluster.urls, replicas: 1, prefix });

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    store = await openJetStreamEventStore({ nats: nats(), partitions: 1, idempotencyWindowMs: 3_600_000, log });
    receiver = await startReceiver(() => ({ status: 202 }));
    nc = await connect({ servers: cluster.urls });
  });
  afterAll(async () => {
    await nc?.close();
    await receiver?.close();
    await store?.close();
    await cluster?.stop();
  });

  /** Makes the positions bucket refuse every write (a message size limit of 1 byte), or accept them again. */
  async function positionsRefuse(refuse: boolean) {
    const jsm = await nc.jetstreamManager();
    const name = `KV_${deliveryNames(prefix).positionBucket}`;
    const { config } = await jsm.streams.info(name);
    await jsm.streams.update(name, { ...config, max_msg_size: refuse ? 1 : -1 });
  }

  it('is counted once: an ack whose settlement fails (its position mark refused), then repeated', async () => {
    const outcomes: string[] = [];
    const observer: DeliveryObserver = { outcome: (_s, o) => void outcomes.push(o), answered: () => {}, succeeded: () => {} };
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
      const delivery = deliverySchema.parse({ ackMode: 'manual', timeoutMs: 1000, ackDeadlineMs: 10_000 });
      const sub = subscriptionRecord({ sink: receiver.url, filters: [{ exact: { source } }], delivery });
      await engine.add(sub, { onGone: () => {} });
      await store.append([{ attributes: { specversion: '1.0', id: 'c1', source, type: 't' }, data: { kind: 'json', value: {} } } as never]);
      const first = await waitFor(() => receiver.requests[0], WAIT);
      const id = first.headers['herald-delivery-id'] as string;
      await positionsRefuse(true);
      try {
        await expect(engine.callback(id, 'ack')).rejects.toThrow();
      } finally {
        await positionsRefuse(false);
      }
      // Was: [] (the count came after the settlement, which threw).
      expect(outcomes.filter((o) => o === 'acked')).toHaveLength(1);
      expect(await engine.callback(id, 'ack')).toEqual({ deliveryId: id, status: 'acked', repeated: true });
      expect(outcomes.filter((o) => o === 'acked')).toHaveLength(1);
      await engine.remove(sub.id);
    } finally {
      await engine.close();
    }
  });
});
