/**
 * JetStream engine: a subscription's consumer edited behind Herald (`nats consumer edit`). Herald's
 * consumers have no `max_deliver` (it bounds attempts itself) and `max_ack_pending` 1 under
 * `ordering: partition`; an operator's edit of either broke a promise silently (JetStream probe: a
 * failing event was sent once, then never retried nor dead-lettered).
 */
import { DiscardPolicy, type ConsumerConfig } from 'nats';
import request from 'supertest';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { startJetStreamTestGateway, useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, uniquePrefix, waitUntil } from '../helpers/nats-cluster';
import { startReceiver, type Receiver } from '../helpers/receiver';

jest.setTimeout(90_000);

describeWithNats('jetstream: consumers and streams edited behind Herald', () => {
  const js = useJetStreamCluster({ size: 1 });
  const receivers: Receiver[] = [];
  const settings = (prefix: string) => ({ HERALD_NATS_REPLICAS: '1', HERALD_PARTITIONS: '1', HERALD_NATS_PREFIX: prefix });
  const idOf = (body: Buffer) => (JSON.parse(body.toString('utf8')) as { id: string }).id;
  const publish = (node: JetStreamGateway, id: string) =>
    request(node.url)
      .post('/events')
      .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/edited', 'ce-type': 'com.example.t' })
      .expect(202);
  const consumerOf = async (node: JetStreamGateway, prefix: string, id: string): Promise<ConsumerConfig> =>
    (await (await node.store.connection.jetstreamManager()).consumers.info(`${prefix}_p0`, `${prefix}_d_${id}_g0`)).config;
  const edit = async (node: JetStreamGateway, prefix: string, id: string, change: Partial<ConsumerConfig>) => {
    const jsm = await node.store.connection.jetstreamManager();
    await jsm.consumers.update(`${prefix}_p0`, `${prefix}_d_${id}_g0`, change);
  };

  afterAll(async () => {
    for (const r of receivers) await r.close();
  });

  /** A node checking its consumers every 500 ms, and an ordered subscription on it (lease 5 s: timeoutMs 4000 + 1 s). */
  const checkedNode = async (prefix: string) => {
    const node = js.keep(await startJetStreamTestGateway(js.cluster.serversEnv, settings(prefix), { leaseCheckMs: 500 }));
    const r = await startReceiver(() => ({ status: 204 }));
    receivers.push(r);
    const id = (
      await request(node.url)
        .post('/subscriptions')
        .send({ sink: r.url, delivery: { ordering: 'partition', timeoutMs: 4000, ackDeadlineMs: 1000 } })
        .expect(201)
    ).body.id as string;
    return { node, id };
  };

  it('max_deliver set to 1: the failing event JetStream gives up on is dead-lettered, and the consumer is set back', async () => {
    const prefix = uniquePrefix('edmax');
    const node = await js.start(settings(prefix));
    const r = await startReceiver((req) => (idOf(req.body).startsWith('fails') ? { status: 500 } : { status: 204 }));
    receivers.push(r);
    const id = (
      await request(node.url)
        .post('/subscriptions')
        .send({ sink: r.url, delivery: { retry: { maxAttempts: 5, initialDelayMs: 200, maxDelayMs: 200 } } })
        .expect(201)
    ).body.id as string;
    await edit(node, prefix, id, { max_deliver: 1 });
    await publish(node, 'fails');
    await publish(node, 'passes');
    await waitUntil('passes delivered', () => r.requests.some((q) => idOf(q.body) === 'passes'), 20_000, 50);

    // Was: one attempt of `fails`, then nothing: no retry, no dead letter, not a word logged.
    let dead: { reason: string; offset: number; lastError: string }[] = [];
    await waitUntil(
      'the dead letter',
      async () => {
        dead = (await request(node.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters;
        return dead.length > 0;
      },
      20_000,
      100,
    );
    expect(dead).toEqual([
      expect.objectContaining({ reason: 'max_attempts', offset: 0, lastError: expect.stringContaining('max_deliver') }),
    ]);
    await waitUntil('max_deliver set back', async () => (await consumerOf(node, prefix, id)).max_deliver === -1, 10_000, 100);
    // Once: a second node hears the same advisory, and the dead letter is stored once all the same.
    const second = await js.start(settings(prefix));
    await edit(second, prefix, id, { max_deliver: 1 });
    await publish(node, 'fails-again');
    await waitUntil(
      'the second dead letter',
      async () => (await request(node.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters.length >= 2,
      20_000,
      100,
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const all = (await request(node.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters as { offset: number }[];
    expect(all.map((d) => d.offset).sort()).toEqual([0, 2]);
  });

  it('a stream limit set with discard new: a publish past it is 503 storage_full naming the limit and the stream, not "retry later"', async () => {
    const prefix = uniquePrefix('edfull');
    const node = await js.start(settings(prefix));
    const jsm = await node.store.connection.jetstreamManager();
    const stream = `${prefix}_p0`;
    const { config } = await jsm.streams.info(stream);
    await jsm.streams.update(stream, { ...config, max_msgs: 2, discard: DiscardPolicy.New });
    await publish(node, 'full-0');
    await publish(node, 'full-1');
    const refused = await request(node.url)
      .post('/events')
      .set({ 'ce-specversion': '1.0', 'ce-id': 'full-2', 'ce-source': '/edited', 'ce-type': 'com.example.t' });
    // Was: 503 unavailable "(503: maximum messages exceeded); retry later", Retry-After 1, which never succeeds.
    expect({ status: refused.status, code: refused.body.code }).toEqual({ status: 503, code: 'storage_full' });
    expect(refused.body.detail).toContain('maximum messages exceeded');
    expect(refused.body.detail).toContain(stream);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(30);
  });

  it('max_ack_pending raised under ordering partition, and ack_wait changed: set back by the periodic check', async () => {
    const prefix = uniquePrefix('edlease');
    const { node, id } = await checkedNode(prefix);
    const before = await consumerOf(node, prefix, id);
    expect({ pending: before.max_ack_pending, wait: before.ack_wait }).toEqual({ pending: 1, wait: 5_000_000_000 });
    await edit(node, prefix, id, { max_ack_pending: 100, ack_wait: 1_000_000_000 });
    // Was: kept until the next PATCH or restart; events of the partition then went out 100 at a time, out of order.
    await waitUntil(
      'the lease settings set back',
      async () => {
        const now = await consumerOf(node, prefix, id);
        return now.max_ack_pending === 1 && now.ack_wait === 5_000_000_000;
      },
      10_000,
      100,
    );
  });
  it('a backoff set behind Herald (it overrides ack_wait, and max_deliver -1 is refused beside it) is removed by the periodic check', async () => {
    const prefix = uniquePrefix('edbo');
    const { node, id } = await checkedNode(prefix);
    await edit(node, prefix, id, { backoff: [500_000_000, 500_000_000], max_deliver: 10 });
    expect((await consumerOf(node, prefix, id)).ack_wait).toBe(500_000_000);
    // Was: a warn "set back" every check, the update refused ("max deliver is required to be > length of backoff
    // values") and logged at debug only: ack_wait stayed 0.5 s (a slow receiver's event sent again and again, out
    // of order) and max_deliver 10.
    await waitUntil(
      'the consumer set back',
      async () => {
        const now = await consumerOf(node, prefix, id);
        return now.max_deliver === -1 && now.ack_wait === 5_000_000_000 && !now.backoff?.length;
      },
      10_000,
      100,
    );
  });

  it('a redelivered dead letter JetStream gives up on at an edited max_deliver is dead-lettered again, and the redrive consumer set back', async () => {
    const prefix = uniquePrefix('edrd');
    // The periodic check out of the way: what sets the consumer back here is the advisory.
    const node = js.keep(await startJetStreamTestGateway(js.cluster.serversEnv, settings(prefix), { leaseCheckMs: 600_000 }));
    let failing = true;
    const r = await startReceiver(() => ({ status: failing ? 500 : 204 }));
    receivers.push(r);
    const id = (
      await request(node.url)
        .post('/subscriptions')
        .send({ sink: r.url, delivery: { retry: { maxAttempts: 1 } } })
        .expect(201)
    ).body.id as string;
    const deadLetters = async () =>
      (await request(node.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters as {
        offset: number;
        lastError: string;
      }[];
    await publish(node, 'fails-first');
    await waitUntil('the first dead letter', async () => (await deadLetters()).length === 1, 20_000, 100);
    // Retried now (a nak), so JetStream gives up on its second delivery.
    await request(node.url)
      .patch(`/subscriptions/${id}`)
      .send({ delivery: { retry: { maxAttempts: 3, initialDelayMs: 200, maxDelayMs: 200 } } })
      .expect(200);
    const jsm = await node.store.connection.jetstreamManager();
    await jsm.consumers.update(`${prefix}_redrive`, `${prefix}_rd_${id}`, { max_deliver: 1 });
    await request(node.url).post(`/subscriptions/${id}/dead-letters/redeliver`).send({}).expect(202);

    // Was: taken off the dead letters when queued, then dropped by JetStream: in no list, sent to nobody.
    await waitUntil('dead-lettered again', async () => (await deadLetters()).length === 1, 20_000, 100);
    expect(await deadLetters()).toEqual([expect.objectContaining({ offset: 0, lastError: expect.stringContaining('max_deliver') })]);
    await waitUntil(
      'the redrive consumer set back',
      async () => (await jsm.consumers.info(`${prefix}_redrive`, `${prefix}_rd_${id}`)).config.max_deliver === -1,
      10_000,
      100,
    );
    expect((await jsm.streams.info(`${prefix}_redrive`)).state.messages).toBe(0);
    failing = false;
    await request(node.url).post(`/subscriptions/${id}/dead-letters/redeliver`).send({}).expect(202);
    await waitUntil('redelivered', () => r.requests.filter((q) => idOf(q.body) === 'fails-first').length >= 3, 20_000, 100);
    await waitUntil('no dead letter left', async () => (await deadLetters()).length === 0, 20_000, 100);
  });
});
