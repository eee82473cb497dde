/**
 * JetStream engine: buckets written behind Herald's back (an operator's `nats kv put`, a script).
 * A record Herald did not write is a typed `corrupt_record` problem where it is asked for, and
 * never breaks the answers about every other subscription or event.
 */
import { headers } from 'nats';
import request from 'supertest';
import { StartupError } from '../../src/errors';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { FORMAT_HEADER } from '../../src/jetstream/codec';
import { deliveryNames } from '../../src/jetstream/delivery/names';
import { idempotencyKey, jetStreamNames } from '../../src/jetstream/names';
import { partitionStreamConfig } from '../../src/jetstream/provision';
import { useJetStreamCluster } from '../helpers/gateway';
import { startReceiver } from '../helpers/receiver';
import { describeWithNats, uniquePrefix, waitUntil } from '../helpers/nats-cluster';

describeWithNats('jetstream: records in the buckets that Herald did not write', () => {
  const js = useJetStreamCluster({ size: 1 });
  let gw: JetStreamGateway;
  const prefix = uniquePrefix('tamper');
  const env = { HERALD_NATS_REPLICAS: '1', HERALD_PARTITIONS: '2', HERALD_NATS_PREFIX: prefix };

  beforeAll(async () => {
    gw = await js.start(env);
  }, 60_000);

  const kv = (bucket: string) => gw.store.connection.jetstream().views.kv(bucket);
  /** `POST /events` of one binary-mode event from `/tamper` with `{}` as its data (`ce-type` t unless `extra` says otherwise). */
  const publishEvent = (id: string, extra: Record<string, string> = {}) =>
    request(gw.url)
      .post('/events')
      .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/tamper', 'ce-type': 't', 'content-type': 'application/json', ...extra })
      .send('{}');
  const expectCorrupt = (res: request.Response) => {
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect({ status: res.status, code: res.body.code }).toEqual({ status: 500, code: 'corrupt_record' });
  };

  it('a subscription record of the wrong shape (or not JSON) leaves every list answering 200, on a running node and on one starting', async () => {
    const good = (await request(gw.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/hook' }).expect(201)).body as {
      id: string;
    };
    const subs = await kv(`${prefix}_subs`);
    await subs.put('wrong-shape', JSON.stringify({ hello: 'world' }));
    await subs.put('not-json', 'this is {not json');
    // Was: 503 "delivery of subscription undefined is starting" on every list, for good.
    await waitUntil('the list', async () => (await request(gw.url).get('/subscriptions')).status === 200, 5000);
    const listed = (await request(gw.url).get('/subscriptions').expect(200)).body as { subscriptions: { id: string }[] };
    expect(listed.subscriptions.map((s) => s.id)).toEqual([good.id]);
    expectCorrupt(await request(gw.url).get('/subscriptions/not-json')); // was a bare 500 (a SyntaxError)
    const starting = await js.start(env);
    const seen = (await request(starting.url).get('/subscriptions').expect(200)).body as { subscriptions: { id: string }[] };
    expect(seen.subscriptions.map((s) => s.id)).toEqual([good.id]);
    await subs.delete('wrong-shape');
    await subs.delete('not-json');
  });

  it("an idempotency record that is not Herald's is a corrupt_record problem for that event only", async () => {
    const idem = await kv(`${prefix}_idem`);
    await idem.put(idempotencyKey('/tamper', 'garbled'), 'not json');
    expectCorrupt(await publishEvent('garbled'));
    expectCorrupt(await request(gw.url).get('/events').query({ source: '/tamper', id: 'garbled' }));
    expect((await publishEvent('intact')).status).toBe(202);
  });

  it('a resend of an event purged from its stream is stored again, as after retention on the local engine', async () => {
    const send = () => publishEvent('purged');
    const stored = (await send().expect(202)).body.results[0] as { partition: number; offset: number };
    const jsm = await gw.store.connection.jetstreamManager();
    await jsm.streams.purge(`${prefix}_p${stored.partition}`);
    // Was: 200, a duplicate at an offset that holds nothing (once the node has seen the purge: it probes every second).
    let again: { status: number; body: { results: { duplicate: boolean; partition: number; offset: number }[] } } | undefined;
    await waitUntil(
      'the resend stored again',
      async () => {
        again = await send();
        return again.status === 202;
      },
      10_000,
      500,
    );
    expect(again!.body.results[0]).toMatchObject({ duplicate: false, partition: stored.partition });
    expect(again!.body.results[0]!.offset).toBeGreaterThan(stored.offset);
    const found = await request(gw.url).get('/events').query({ source: '/tamper', id: 'purged' }).expect(200);
    expect(found.body.offset).toBe(again!.body.results[0]!.offset);
  });

  it('an event message a newer node marks as a later format (a rolling upgrade) is dead-lettered to be redelivered later, and reads stop before it; one published by hand stays damage', async () => {
    const receiver = await startReceiver();
    const publish = (id: string) => publishEvent(id, { 'ce-partitionkey': 'newer' }).expect(202);
    try {
      const sub = (
        await request(gw.url)
          .post('/subscriptions')
          .send({ sink: receiver.url, delivery: { ordering: 'none' } })
          .expect(201)
      ).body as { id: string };
      const before = (await publish('before-newer')).body.results[0] as { partition: number; offset: number };
      const js = gw.store.connection.jetstream();
      const marked = headers();
      marked.set(FORMAT_HEADER, '2');
      const newer = await js.publish(`${prefix}.p.${before.partition}`, Buffer.from('a format this node does not know'), {
        headers: marked,
      });
      // By hand, no header: damage as before (was taken for a newer format by its first byte: `{` is 0x7b).
      const byHand = await js.publish(`${prefix}.p.${before.partition}`, Buffer.from('{"hello":"world"}'));
      await publish('after-newer');
      await waitUntil('the events around them delivered', async () => receiver.requests.length >= 2, 10_000);
      let dead: { offset: number; reason: string; lastError: string }[] = [];
      await waitUntil(
        'both dead-lettered',
        async () => {
          dead = (await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters`).expect(200)).body.deadLetters;
          return dead.length === 2;
        },
        10_000,
      );
      const byOffset = new Map(dead.map((d) => [d.offset, d]));
      expect(byOffset.get(newer.seq - 1)).toMatchObject({
        reason: 'corrupt_record',
        lastError: expect.stringMatching(/stored by a newer version of Herald/),
      });
      expect(byOffset.get(byHand.seq - 1)).toMatchObject({ reason: 'corrupt_record' });
      expect(byOffset.get(byHand.seq - 1)!.lastError).not.toMatch(/newer/);
      expect(receiver.requests.map((r) => r.headers['ce-id']).sort()).toEqual(['after-newer', 'before-newer']);
      // A page stops before the newer event (what precedes it is served); one that starts at it is a 503.
      const page = await request(gw.url)
        .get(`/partitions/${before.partition}/events`)
        .query({ from: before.offset, limit: 10 })
        .expect(200);
      expect(page.body.events.map((e: { offset: number }) => e.offset)).toEqual([before.offset]);
      const at = await request(gw.url)
        .get(`/partitions/${before.partition}/events`)
        .query({ from: newer.seq - 1, limit: 1 });
      expect({ status: at.status, code: at.body.code }).toEqual({ status: 503, code: 'unavailable' });
      expect(at.body.detail).toMatch(/stored by a newer version of Herald than this node runs/);
      await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
    } finally {
      await receiver.close();
    }
  });

  it("a corrupt_record dead letter is redelivered only where the subscription's filter matches (its filter was never checked)", async () => {
    const receiver = await startReceiver();
    const publish = (id: string, type: string) => publishEvent(id, { 'ce-type': type }).expect(202);
    try {
      const sub = (
        await request(gw.url)
          .post('/subscriptions')
          .send({ sink: receiver.url, filters: [{ exact: { type: 'wanted' } }] })
          .expect(201)
      ).body as { id: string };
      const wanted = (await publish('dl-wanted', 'wanted')).body.results[0] as { partition: number; offset: number };
      const unwanted = (await publish('dl-unwanted', 'unwanted')).body.results[0] as { partition: number; offset: number };
      await waitUntil('the wanted event delivered', async () => receiver.requests.length === 1, 10_000);
      // Dead letters as an older node writes them for events it could not read (a newer node's, mid upgrade).
      const js = gw.store.connection.jetstream();
      for (const [n, at] of [wanted, unwanted].entries()) {
        const row = {
          subscriptionId: sub.id,
          ...at,
          attempts: 1,
          lastStatus: null,
          lastError: 'stored by a newer version of Herald',
          reason: 'corrupt_record',
          deadAt: Date.now(),
        };
        await js.publish(deliveryNames(prefix).deadSubject(sub.id), JSON.stringify(row), { msgID: `hand-${sub.id}-${n}` });
      }
      await request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).expect(202);
      await waitUntil(
        'the wanted redelivery',
        async () => receiver.requests.some((r) => r.headers['herald-redelivery'] !== undefined),
        10_000,
      );
      await new Promise((r) => setTimeout(r, 1000));
      // Was: both sent, the unwanted one to a receiver that never subscribed to its type.
      expect(receiver.requests.map((r) => r.headers['ce-id'])).toEqual(['dl-wanted', 'dl-wanted']);
      expect((await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters`).expect(200)).body.deadLetters).toEqual([]);
      await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
    } finally {
      await receiver.close();
    }
  });

  // Last: it leaves the deployment without one of its streams.
  it('a partition stream deleted behind Herald: a node starting refuses, rather than make it again and give its offsets to new events', async () => {
    const jsm = await gw.store.connection.jetstreamManager();
    for (let i = 0; i < 10; i++) await publishEvent(`stored-${i}`).expect(202);
    const [p0] = (await request(gw.url).get('/partitions').expect(200)).body.partitions as { headOffset: number }[];
    expect(p0!.headOffset).toBeGreaterThan(0); // offsets were handed out there
    await jsm.streams.delete(`${prefix}_p0`);
    // Was: created afresh, and the next event was acknowledged at offset 0 again.
    await expect(js.start(env)).rejects.toThrow(StartupError);
    await expect(js.start(env)).rejects.toThrow(new RegExp(`stream ${prefix}_p0 is missing`));
    expect(await jsm.streams.find(`${prefix}.p.0`).catch(() => 'none')).toBe('none');

    // An operator puts it back as Herald makes it, empty, while the node runs. Was: the next events
    // were acknowledged at offsets 0, 1, … again, given before to other events.
    await jsm.streams.add(partitionStreamConfig(jetStreamNames(prefix), 0, 1));
    const answers: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await publishEvent(`after-${i}`);
      answers.push(res.status);
      if (res.status === 202) expect((res.body.results[0] as { partition: number }).partition).not.toBe(0);
    }
    expect(answers.every((s) => s === 503 || s === 202)).toBe(true);
    // Publishes go on until one reaches the stream: the readiness probe may have refused them all while the stream
    // was missing (it looks every second; a loaded CI run saw all 20 refused, and then nothing more was sent).
    let more = 0;
    await waitUntil(
      'the node refuses writes, saying why',
      async () => {
        const res = await publishEvent(`later-${more++}`);
        if (res.status === 202) expect((res.body.results[0] as { partition: number }).partition).not.toBe(0);
        const ready = await request(gw.url).get('/readyz');
        return ready.status === 503 && /went back from sequence \d+ to \d+/.test(JSON.stringify(ready.body));
      },
      15_000,
    );
    const refused = await publishEvent('refused');
    expect(refused.status).toBe(503);
    // The fence lasts until a restart: not "retry in a second" (a store probe: 217 of 220 refusals said 1 s).
    expect(refused.headers['retry-after']).toBe('30');
    expect((await jsm.streams.info(`${prefix}_p0`)).state.messages).toBeLessThanOrEqual(1);
  });
});
