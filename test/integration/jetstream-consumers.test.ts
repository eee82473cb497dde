import { connect, type JetStreamManager, type NatsConnection } from 'nats';
import { createConsumers, type Consumers } from '../../src/jetstream/delivery/consumers';
import { deliveryNames } from '../../src/jetstream/delivery/names';
import { provisionDelivery } from '../../src/jetstream/delivery/provision-delivery';
import { jetStreamNames } from '../../src/jetstream/names';
import { partitionStreamConfig } from '../../src/jetstream/provision';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';
import { subscriptionRecord } from '../helpers/subscription-record';

/**
 * The consumers of JetStream subscriptions against a real nats-server: a consumer missing for a
 * generation its subscription has been sought past, or deleted, is not made again. Such a create comes
 * late (retried after a timeout, a node's repair of what it found missing) and would outlive the
 * subscription: a re-probe found 22 consumers left after racing seeks and a DELETE.
 */

const PARTITIONS = 2;

describeWithNats('JetStream subscription consumers', () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let consumers: Consumers;
  const prefix = uniquePrefix('consumers');
  const events = jetStreamNames(prefix);
  const names = deliveryNames(prefix);

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    nc = await connect({ servers: cluster.urls });
    jsm = await nc.jetstreamManager();
    for (let p = 0; p < PARTITIONS; p++) await jsm.streams.add(partitionStreamConfig(events, p, 1));
    const buckets = await provisionDelivery(nc.jetstream(), jsm, names, prefix, 1);
    consumers = createConsumers({
      jsm,
      generations: buckets.generations,
      positions: buckets.positions,
      names,
      events,
      partitions: PARTITIONS,
    });
  }, 60_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
  }, 30_000);

  const consumerNames = async (partition: number) => (await jsm.consumers.list(events.stream(partition)).next()).map((c) => c.name);

  it('makes a missing consumer of the current generation, and none of a generation sought past', async () => {
    const record = subscriptionRecord({ startAt: 'earliest' });
    const gens = await consumers.ensureGenerations(record.id);
    await consumers.partitionConsumer(record, 0, 0, { kind: 'all' });
    expect(await consumerNames(0)).toEqual([names.consumer(record.id, 0)]);

    // A seek of partition 1 to generation 1, recorded (through any node) before this node's late create.
    expect(await consumers.swapGenerations(record.id, { gens: [0, 1], starts: [null, { kind: 'all' }] }, gens.revision)).toBe(true);
    await consumers.partitionConsumer(record, 1, 0, { kind: 'all' });
    expect(await consumerNames(1)).toEqual([]);
    await consumers.partitionConsumer(record, 1, 1, { kind: 'all' });
    expect(await consumerNames(1)).toEqual([names.consumer(record.id, 1)]);
  });

  it('makes no consumer of a subscription whose generation record is deleted', async () => {
    const record = subscriptionRecord({ startAt: 'earliest' });
    await consumers.ensureGenerations(record.id);
    const before = await consumerNames(0);
    // What a DELETE does first: nothing reads this subscription's consumers from now on.
    const buckets = await provisionDelivery(nc.jetstream(), jsm, names, prefix, 1);
    await buckets.generations.delete(names.generationKey(record.id));
    await consumers.partitionConsumer(record, 0, 0, { kind: 'all' });
    expect(await consumerNames(0)).toEqual(before);
  });
});
