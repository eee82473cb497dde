import request from 'supertest';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, uniquePrefix } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';

/**
 * The JetStream engine under what a hostile probe found: a callback for an attempt a seek
 * superseded, an event past the server's max_payload, and every API call while the cluster is down
 * (its one server SIGKILLed), a DELETE included. One real nats-server; receivers on 127.0.0.1.
 */

const WAIT = { timeoutMs: 30_000, intervalMs: 50 };
jest.setTimeout(180_000);

describeWithNats('the jetstream engine under faults', () => {
  const js = useJetStreamCluster({ size: 1 });
  let gw: JetStreamGateway;
  let receiver: Receiver;

  beforeAll(async () => {
    gw = await js.start({
      HERALD_NATS_REPLICAS: '1',
      HERALD_PARTITIONS: '2',
      HERALD_NATS_PREFIX: uniquePrefix('faults'),
    });
    receiver = await startReceiver();
  });

  afterAll(() => receiver?.close());

  const publish = (id: string, body: string | Buffer = '{}', type = 'application/json') =>
    request(gw.url)
      .post('/events')
      .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/faults', 'ce-type': 'faults.t', 'content-type': type })
      .send(body);
  const subscribe = async (delivery: Record<string, unknown> = {}, startAt = 'earliest') =>
    (await request(gw.url).post('/subscriptions').send({ sink: receiver.url, startAt, delivery }).expect(201)).body as {
      id: string;
    };
  const heads = async () => (await request(gw.url).get('/partitions').expect(200)).body;

  it('answers a callback for an attempt a seek superseded 409, as the local engine does, not 500', async () => {
    receiver.setResponder(() => ({ status: 202 }));
    const sub = await subscribe({ ackDeadlineMs: 60_000 });
    expect((await publish('superseded')).status).toBe(202);
    const first = await waitFor(() => receiver.requests.find((q) => q.headers['herald-subscription-id'] === sub.id), WAIT);
    await new Promise((r) => setTimeout(r, 300)); // its 202 is read: the attempt awaits its ack
    await request(gw.url).post(`/subscriptions/${sub.id}/seek`).send({ to: 'earliest' }).expect(200);
    const old = first.headers['herald-delivery-id'] as string;
    expect((await request(gw.url).post(`/deliveries/${old}/ack`)).status).toBe(409);
    expect((await request(gw.url).post(`/deliveries/${old}/reject`).send({ reason: 'x' })).status).toBe(409);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
    receiver.setResponder(() => ({ status: 204 }));
  });

  it('refuses an event larger than the server takes (max_payload) with 413, storing nothing, not a 503 for ever', async () => {
    const before = await heads();
    const big = await publish('big', Buffer.alloc(1024 * 1024 - 64, 7), 'application/octet-stream'); // within HERALD_MAX_BODY_BYTES
    expect(big.status).toBe(413);
    expect(big.body).toMatchObject({ code: 'payload_too_large', errors: [{ message: expect.stringContaining('max_payload') }] });
    expect(big.headers['retry-after']).toBeUndefined();
    expect(await heads()).toEqual(before);
    expect((await publish('big', Buffer.alloc(100 * 1024, 7), 'application/octet-stream')).status).toBe(202); // its id is not held
  });

  it('with the cluster down answers 503 and never 500; a failed DELETE leaves the subscription delivering once it returns', async () => {
    // Only this test's first event is held for a callback. Starting at the latest event: the earlier tests' events,
    // delivered and acked just before the SIGKILL, may come back pending (the server's ack state is lost with it),
    // and with one in flight per partition they held 'after-outage' back for their ack_wait of 61 s (was: earliest).
    receiver.setResponder((q) => ({ status: q.headers['ce-id'] === 'before-outage' ? 202 : 204 }));
    const sub = await subscribe({ ackDeadlineMs: 60_000 }, 'latest');
    expect((await publish('before-outage')).status).toBe(202);
    const held = await waitFor(
      () => receiver.requests.find((q) => q.headers['herald-subscription-id'] === sub.id && q.headers['ce-id'] === 'before-outage'),
      WAIT,
    );
    const dlv = held.headers['herald-delivery-id'] as string;
    // Its entry in the ack map is written once the node has read the 202: an extend answers 200 only then.
    await waitFor(async () => (await request(gw.url).post(`/deliveries/${dlv}/extend`).send({ ms: 60_000 })).status === 200, WAIT);
    await js.cluster.kill(0);

    // No seek among them: the client sends what it buffered once it reconnects, so a seek answered 503 may
    // still apply later (and would supersede the attempt acked below).
    const calls: [string, string, object?][] = [
      ['get', `/subscriptions/${sub.id}`],
      ['get', '/subscriptions'],
      ['get', `/subscriptions/${sub.id}/attempts`],
      ['get', `/subscriptions/${sub.id}/dead-letters`],
      ['post', `/deliveries/${dlv}/ack`],
      ['post', `/deliveries/${dlv}/extend`, { ms: 1000 }],
      ['delete', `/subscriptions/${sub.id}/dead-letters/1`],
      ['get', '/metrics'],
      ['delete', `/subscriptions/${sub.id}`],
    ];
    // At once: each waits for the cluster's timeouts. The DELETE last, after the others have answered.
    const answers: Record<string, number> = {};
    const ask = async ([method, path, body]: [string, string, object?]) => {
      const res = await request(gw.url)[method as 'get' | 'post' | 'delete'](path).send(body);
      answers[`${method} ${path}`] = res.status;
      if (res.status === 503) expect(res.headers['retry-after']).toBe('1');
    };
    await Promise.all(calls.slice(0, -1).map(ask));
    await ask(calls.at(-1)!);
    expect(Object.entries(answers).filter(([, status]) => status >= 500 && status !== 503)).toEqual([]);
    expect(answers[`delete /subscriptions/${sub.id}`]).toBe(503);

    await js.cluster.restart(0);
    receiver.setResponder(() => ({ status: 204 }));
    await waitFor(async () => (await request(gw.url).get('/readyz')).status === 200, { timeoutMs: 60_000, intervalMs: 250 });
    await waitFor(async () => (await request(gw.url).post(`/deliveries/${dlv}/ack`)).status === 200, WAIT); // the callback works again
    await waitFor(async () => (await publish('after-outage')).status === 202, WAIT);
    await waitFor(() => receiver.requests.some((q) => q.headers['ce-id'] === 'after-outage'), { timeoutMs: 60_000, intervalMs: 100 });
    expect((await request(gw.url).get(`/subscriptions/${sub.id}`)).status).toBe(200);
    expect((await request(gw.url).get('/subscriptions')).status).toBe(200);
  });
});
