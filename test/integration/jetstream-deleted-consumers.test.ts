/**
 * JetStream engine: a subscription's durable consumer, or the seek generations bucket, deleted
 * behind Herald's back (`nats consumer rm`, `nats stream rm KV_<prefix>_dgen`). A consumer holds
 * its subscription's position (the ack floor); made again from the subscription's `startAt` it sent
 * every event since the subscription was made once more, and ignored where a seek had moved it.
 */
import { AckPolicy, connect } from 'nats';
import request from 'supertest';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, uniquePrefix, waitUntil } from '../helpers/nats-cluster';
import { startReceiver, type Receiver, type Responder } from '../helpers/receiver';

jest.setTimeout(120_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeWithNats('jetstream: consumers and seek generations deleted behind Herald', () => {
  const js = useJetStreamCluster({ size: 1 });
  const receivers: Receiver[] = [];
  const settings = (prefix: string) => ({ HERALD_NATS_REPLICAS: '1', HERALD_PARTITIONS: '1', HERALD_NATS_PREFIX: prefix });
  const start = (env: Record<string, string>) => js.start(env);
  const receiver = async (respond?: Responder) => {
    const r = await startReceiver(respond);
    receivers.push(r);
    return r;
  };
  const publish = (node: JetStreamGateway, ids: string[]) =>
    Promise.all(
      ids.map((id) =>
        request(node.url)
          .post('/events')
          .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/deleted', 'ce-type': 'com.example.t' })
          .expect(202),
      ),
    );
  /** How many times each event id reached the receiver (structured mode, the default). */
  const counts = (r: Receiver) => {
    const seen: Record<string, number> = {};
    for (const req of r.requests) {
      const id = (JSON.parse(req.body.toString('utf8')) as { id: string }).id;
      seen[id] = (seen[id] ?? 0) + 1;
    }
    return seen;
  };
  const received = (r: Receiver, ids: string[]) =>
    waitUntil(`${ids.join(', ')} delivered`, () => ids.every((id) => (counts(r)[id] ?? 0) > 0), 30_000, 50);
  const subscribe = async (node: JetStreamGateway, sink: string, ordering: 'partition' | 'none', delivery: Record<string, unknown> = {}) =>
    (
      await request(node.url)
        .post('/subscriptions')
        .send({ sink, delivery: { ordering, ...delivery } })
        .expect(201)
    ).body.id as string;
  const jsmOf = (node: JetStreamGateway) => node.store.connection.jetstreamManager();
  /** `nats consumer rm`: the server may refuse while it writes the consumer's state, and an operator asks again. */
  const rmConsumer = async (node: JetStreamGateway, stream: string, name: string) => {
    const jsm = await jsmOf(node);
    for (let tried = 1; ; tried++) {
      try {
        return await jsm.consumers.delete(stream, name);
      } catch (err) {
        if (tried >= 10 || !/directory not empty/.test(String(err))) throw err;
        await sleep(100);
      }
    }
  };
  const consumerNames = async (node: JetStreamGateway, prefix: string) => {
    const names: string[] = [];
    for await (const c of (await jsmOf(node)).consumers.list(`${prefix}_p0`)) names.push(c.name);
    return names.sort();
  };

  afterAll(async () => {
    for (const r of receivers) await r.close();
  });

  it('ordering partition: a deleted consumer is made again just after the last finished event, so nothing is sent twice or lost', async () => {
    const prefix = uniquePrefix('delcons');
    const node = await start(settings(prefix));
    const r = await receiver();
    const id = await subscribe(node, r.url, 'partition');
    await publish(node, ['e0', 'e1', 'e2', 'e3']);
    await received(r, ['e0', 'e1', 'e2', 'e3']);

    await rmConsumer(node, `${prefix}_p0`, `${prefix}_d_${id}_g0`);
    await publish(node, ['e4', 'e5']);
    await received(r, ['e4', 'e5']);
    await sleep(1500); // anything sent again would come now
    // Was: made again from the subscription's start, so e0–e3 came a second time.
    expect(counts(r)).toEqual({ e0: 1, e1: 1, e2: 1, e3: 1, e4: 1, e5: 1 });
  });

  it('after a PATCH from ordering none to partition, a mark written under none is not trusted: an event waiting for its retry is not lost', async () => {
    const prefix = uniquePrefix('delpatch');
    const node = await start(settings(prefix));
    let failE0 = true;
    const r = await receiver((req) =>
      failE0 && (JSON.parse(req.body.toString('utf8')) as { id: string }).id === 'e0' ? { status: 500 } : { status: 204 },
    );
    const id = await subscribe(node, r.url, 'none', { retry: { maxAttempts: 5, initialDelayMs: 3000, maxDelayMs: 3000 } });
    await publish(node, ['e0']);
    await received(r, ['e0']);
    await publish(node, ['e1']); // finished (marked) while e0 waits 3 s for its retry
    await received(r, ['e1']);
    await sleep(300);
    await request(node.url)
      .patch(`/subscriptions/${id}`)
      .send({ delivery: { ordering: 'partition' } })
      .expect(200);
    await rmConsumer(node, `${prefix}_p0`, `${prefix}_d_${id}_g0`);
    failE0 = false;
    await publish(node, ['e2']);
    // Was: made again just after e1's mark, so e0 was never sent again nor dead-lettered.
    await waitUntil('e0 delivered again', () => (counts(r).e0 ?? 0) >= 2, 20_000, 100);
  });

  it("a consumer a seek made is made again from the seek's target, not from the subscription's start", async () => {
    const prefix = uniquePrefix('delseek');
    const node = await start(settings(prefix));
    const r = await receiver();
    const id = await subscribe(node, r.url, 'none');
    await publish(node, ['e0', 'e1', 'e2']);
    await received(r, ['e0', 'e1', 'e2']);
    await request(node.url)
      .post(`/subscriptions/${id}/seek`)
      .send({ offsets: { '0': 2 } })
      .expect(200);
    await waitUntil('e2 sent again by the seek', () => counts(r).e2 === 2, 30_000, 50);

    await rmConsumer(node, `${prefix}_p0`, `${prefix}_d_${id}_g1`);
    await publish(node, ['e3']);
    await received(r, ['e3']);
    await sleep(1500);
    // ordering none: from where its generation started (offset 2), so e2 may come once more; never e0 or e1.
    // Was: from the subscription's start, so e0 and e1 came again.
    expect(counts(r)).toMatchObject({ e0: 1, e1: 1, e3: 1 });
    expect(counts(r).e2).toBeGreaterThanOrEqual(2);
  });

  it('the seek generations bucket deleted: made again with recreate-missing, each subscription goes on with the consumers it had', async () => {
    const prefix = uniquePrefix('deldgen');
    const first = await start(settings(prefix));
    const r = await receiver();
    const id = await subscribe(first, r.url, 'partition');
    await publish(first, ['e0', 'e1', 'e2', 'e3']);
    await received(r, ['e0', 'e1', 'e2', 'e3']);
    await request(first.url)
      .post(`/subscriptions/${id}/seek`)
      .send({ offsets: { '0': 3 } })
      .expect(200);
    await waitUntil('e3 sent again by the seek', () => counts(r).e3 === 2, 30_000, 50);
    await first.close();

    const nc = await connect({ servers: js.cluster.urls });
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(`KV_${prefix}_dgen`);
    // A consumer of an earlier generation left behind (a seek cut short) is tidied away.
    await jsm.consumers.add(`${prefix}_p0`, { durable_name: `${prefix}_d_${id}_g0`, ack_policy: AckPolicy.Explicit });
    await nc.close();

    const node = await start({ ...settings(prefix), HERALD_RECOVERY: 'recreate-missing' });
    await publish(node, ['e4']);
    await received(r, ['e4']);
    await sleep(1500);
    // Was: generation 0 again, its consumer made from the subscription's start: e0–e3 all came again.
    expect(counts(r)).toEqual({ e0: 1, e1: 1, e2: 1, e3: 2, e4: 1 });
    expect(await consumerNames(node, prefix)).toEqual([`${prefix}_d_${id}_g1`]);
    // The recovered generation is the subscription's: a seek now makes generation 2.
    await request(node.url).post(`/subscriptions/${id}/seek`).send({ to: 'latest' }).expect(200);
    await waitUntil('only generation 2 left', async () => (await consumerNames(node, prefix)).join() === `${prefix}_d_${id}_g2`, 10_000);
  });
});
