import request from 'supertest';
import {
  getSubscription,
  publishOfType,
  requestsForSubscription,
  totalLag,
  useDeliveryFixture,
  useLastSubscriptionCleanup,
} from '../helpers/delivery';
import { startTestGateway } from '../helpers/gateway';
import { waitFor, type ReceivedRequest, type Reply } from '../helpers/receiver';

/** Manual acknowledgement: 202 (or any 2xx with ackMode manual) holds the event until a callback or the lease ends. */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });
const createSubscription = useLastSubscriptionCleanup(gw);

const subscribe = (type: string, extra: Record<string, unknown> = {}, delivery: Record<string, unknown> = {}) =>
  createSubscription({
    sink: receiver.url,
    filters: [{ exact: { type } }],
    delivery: { ackDeadlineMs: 300, retry: { initialDelayMs: 10, maxDelayMs: 50 }, ...delivery },
    ...extra,
  });
const publish = (type: string, ids: string[]) => publishOfType(gw.url, '/ack', type, ids);
const getSub = (id: string) => getSubscription(gw.url, id);
const lagOf = totalLag;
const inFlightOf = (sub: { stats: { partitions: { inFlight: number }[] } }) => sub.stats.partitions.reduce((n, p) => n + p.inFlight, 0);
const waitLagZero = (id: string) => waitFor(async () => (lagOf(await getSub(id)) === 0 ? true : undefined), { what: 'lag 0' });
const requestsFor = (sub: string) => requestsForSubscription(receiver, sub);
const nth = (sub: string, n: number) => waitFor(() => requestsFor(sub)[n], { what: `request #${n + 1}` });
const deliveryId = (q: ReceivedRequest) => q.headers['herald-delivery-id'] as string;
/** Posts a callback to the absolute URL the gateway gave, or to a sibling of it. */
const callback = (q: ReceivedRequest, action: 'ack' | 'nack' | 'extend' | 'reject', body?: object) => {
  const url = new URL((q.headers['herald-ack-url'] as string).replace(/\/ack$/, `/${action}`));
  const req = request(url.origin).post(url.pathname);
  return body ? req.send(body) : req;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Answers each request with the next reply of the list (the last repeats). */
function replies(...list: Reply[]) {
  let n = 0;
  return () => list[Math.min(n++, list.length - 1)]!;
}

describe('202 Accepted', () => {
  it('holds the event until ack, then moves on; a repeated ack is 200', async () => {
    const sub = await subscribe('ack.ok', {}, { ackDeadlineMs: 30_000 });
    receiver.setResponder(replies({ status: 202 }, { status: 204 }));
    await publish('ack.ok', ['a1', 'a2']);
    const first = await nth(sub.id, 0);
    expect(first.headers['herald-ack-url']).toBe(`${gw.url}/deliveries/${deliveryId(first)}/ack`);
    const held = await waitFor(async () => {
      const got = await getSub(sub.id);
      return inFlightOf(got) === 1 ? got : undefined;
    });
    expect(lagOf(held)).toBe(2);
    expect(requestsFor(sub.id)).toHaveLength(1); // a2 waits behind a1 in its partition

    const acked = await callback(first, 'ack');
    expect(acked.status).toBe(200);
    await waitLagZero(sub.id);
    expect(requestsFor(sub.id).map((q) => q.headers['ce-id'])).toEqual(['a1', 'a2']);
    expect((await callback(first, 'ack')).status).toBe(200);
    expect((await getSub(sub.id)).stats.deadLetters).toBe(0);
  });

  it('nack redelivers as attempt 2 with the same webhook-id; the old attempt then answers 409', async () => {
    const sub = await subscribe('ack.nack', {}, { ackDeadlineMs: 30_000 });
    receiver.setResponder(replies({ status: 202 }, { status: 204 }));
    await publish('ack.nack', ['n1']);
    const first = await nth(sub.id, 0);
    expect((await callback(first, 'nack', { delayMs: 0 })).status).toBe(200);
    const second = await nth(sub.id, 1);
    expect(second.headers['herald-attempt']).toBe('2');
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    expect(deliveryId(second)).not.toBe(deliveryId(first));
    await waitLagZero(sub.id);
    expect((await callback(first, 'nack')).status).toBe(200); // the same callback again
    expect((await callback(first, 'ack')).status).toBe(409); // a different outcome for a settled attempt
    expect((await callback(first, 'reject')).status).toBe(409);
  });

  it('a nack while the request is still open never leaves two attempts of one event in flight after a resume', async () => {
    const sub = await subscribe('ack.nack-open', {}, { ackDeadlineMs: 30_000 });
    const events: string[] = [];
    receiver.setResponder(async (q) => {
      if (q.headers['herald-subscription-id'] !== sub.id) return { status: 204 };
      if (q.headers['herald-attempt'] === '1') {
        // Nack before answering: attempt 2 starts while attempt 1's request is still open.
        expect((await callback(q, 'nack', { delayMs: 0 })).status).toBe(200);
        return { status: 202, delayMs: 200 };
      }
      events.push(`attempt ${q.headers['herald-attempt']}`);
      return { status: 204, delayMs: 1500 };
    });
    await publish('ack.nack-open', ['o1']);
    await waitFor(() => events.length === 1, { what: 'attempt 2' });
    await sleep(400); // attempt 1's answer is back; attempt 2 is still open
    await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
    await waitLagZero(sub.id);
    expect(events).toEqual(['attempt 2']);
    expect(requestsFor(sub.id)).toHaveLength(2);
  });

  it('nack with delayMs waits that long before the next attempt', async () => {
    const sub = await subscribe('ack.nack-delay', {}, { ackDeadlineMs: 30_000, retry: { initialDelayMs: 10, maxDelayMs: 5000 } });
    receiver.setResponder(replies({ status: 202 }, { status: 204 }));
    await publish('ack.nack-delay', ['nd1']);
    const first = await nth(sub.id, 0);
    const nackedAt = Date.now();
    expect((await callback(first, 'nack', { delayMs: 800 })).status).toBe(200);
    const second = await nth(sub.id, 1);
    // Without the delay the retry would come after ~10 ms.
    expect(second.receivedAt - nackedAt).toBeGreaterThanOrEqual(700);
    await waitLagZero(sub.id);
  });

  it('redelivers when the lease runs out; callbacks for the expired attempt answer 409', async () => {
    const sub = await subscribe('ack.expire');
    receiver.setResponder(replies({ status: 202 }, { status: 202 }));
    await publish('ack.expire', ['e1']);
    const first = await nth(sub.id, 0);
    const second = await nth(sub.id, 1);
    // Acked first, within its 300 ms lease (a CI run under load spent it on the four callbacks below).
    expect((await callback(second, 'ack')).status).toBe(200);
    expect(second.headers['herald-attempt']).toBe('2');
    expect(second.headers['webhook-id']).toBe(first.headers['webhook-id']);
    for (const action of ['ack', 'nack', 'extend', 'reject'] as const) {
      const res = await callback(first, action, action === 'extend' ? { ms: 1000 } : undefined);
      expect({ action, status: res.status }).toEqual({ action, status: 409 });
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    }
    await waitLagZero(sub.id);
  });

  it('extend keeps the lease from running out at the original deadline', async () => {
    const sub = await subscribe('ack.extend', {}, { ackDeadlineMs: 500 });
    receiver.setResponder(replies({ status: 202 }));
    await publish('ack.extend', ['x1']);
    const first = await nth(sub.id, 0);
    const extended = await callback(first, 'extend', { ms: 5000 });
    expect(extended.status).toBe(200);
    await sleep(1200); // well past the 500 ms deadline
    expect(requestsFor(sub.id)).toHaveLength(1);
    expect(inFlightOf(await getSub(sub.id))).toBe(1);
    expect((await callback(first, 'ack')).status).toBe(200);
    await waitLagZero(sub.id);
    expect(requestsFor(sub.id)).toHaveLength(1);
  });

  it.each([
    ['times out', 'timeout', { status: 204, delayMs: 2000 }],
    ['loses its connection', 'drop', { status: 204, destroy: true }],
  ] as [string, string, Reply][])(
    'an extend while the request is open holds the event for that lease when the request then %s',
    async (_what, name, then) => {
      const type = `ack.extend-open-${name}`;
      const sub = await subscribe(type, { ackMode: 'manual' }, { timeoutMs: 500 });
      let extendedUntil = 0;
      receiver.setResponder(async (req) => {
        if (extendedUntil > 0) return { status: 202 };
        const extended = await callback(req, 'extend', { ms: 30_000 });
        extendedUntil = Date.parse(extended.body.leaseUntil);
        return then;
      });
      await publish(type, [`x-${name}`]);
      const first = await nth(sub.id, 0);
      await waitFor(() => extendedUntil > 0, { what: 'the extend answered' });
      await sleep(1500); // past the 500 ms timeout and the 10–50 ms backoff: before, it came again here, 29 s early
      expect(requestsFor(sub.id)).toHaveLength(1);
      expect(inFlightOf(await getSub(sub.id))).toBe(1);
      expect((await callback(first, 'ack')).status).toBe(200); // its callbacks stayed open
      await waitLagZero(sub.id);
      expect(requestsFor(sub.id)).toHaveLength(1);
    },
  );

  it('extend never shortens a lease', async () => {
    const sub = await subscribe('ack.noshorten', {}, { ackDeadlineMs: 20_000 });
    receiver.setResponder(replies({ status: 202 }));
    await publish('ack.noshorten', ['s1']);
    const first = await nth(sub.id, 0);
    const extended = await callback(first, 'extend', { ms: 1 });
    expect(extended.status).toBe(200);
    // Still the 20 s lease (a slow machine cannot eat 10 s of it), not 1 ms from now.
    expect(Date.parse(extended.body.leaseUntil)).toBeGreaterThan(Date.now() + 10_000);
    await sleep(300); // past the 1 ms asked for, inside the original lease
    expect((await callback(first, 'ack')).status).toBe(200);
    await waitLagZero(sub.id);
    expect(requestsFor(sub.id)).toHaveLength(1);
  });

  it('reject dead-letters the event with reason receiver_rejected and moves on', async () => {
    const sub = await subscribe('ack.reject', {}, { ackDeadlineMs: 30_000 });
    receiver.setResponder((req) => (req.headers['ce-id'] === 'j1' ? { status: 202 } : { status: 204 }));
    const stored = await publish('ack.reject', ['j1', 'j2']);
    const first = await nth(sub.id, 0);
    expect((await callback(first, 'reject', { reason: 'schema mismatch' })).status).toBe(200);
    await waitLagZero(sub.id);
    expect(requestsFor(sub.id).map((q) => q.headers['ce-id'])).toEqual(['j1', 'j2']);
    const res = await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters`).expect(200);
    expect(res.body.deadLetters).toEqual([
      expect.objectContaining({
        partition: stored[0]!.partition,
        offset: stored[0]!.offset,
        attempts: 1,
        lastError: 'schema mismatch',
        reason: 'receiver_rejected',
      }),
    ]);
    expect((await callback(first, 'reject', { reason: 'schema mismatch' })).status).toBe(200);
    expect((await callback(first, 'ack')).status).toBe(409);
  });

  it.each(['dlv_doesnotexist', '%zz', '%E0%A4%A'])('answers 404 for an unknown delivery id (%s)', async (id) => {
    for (const action of ['ack', 'nack', 'extend', 'reject']) {
      const res = await request(gw.url)
        .post(`/deliveries/${id}/${action}`)
        .send(action === 'extend' ? { ms: 1000 } : {});
      expect({ action, status: res.status, code: res.body.code }).toEqual({ action, status: 404, code: 'not_found' });
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    }
  });

  it('answers a delivery id of 10,000 characters with a short 404 (probe: it was echoed twice, 20 KB)', async () => {
    const res = await request(gw.url).post(`/deliveries/dlv_${'A'.repeat(10_000)}/ack`);
    expect([res.status, res.body.code]).toEqual([404, 'not_found']);
    expect(res.text.length).toBeLessThan(1000);
  });

  it('refuses malformed callback bodies with 400', async () => {
    const sub = await subscribe('ack.bad', {}, { ackDeadlineMs: 30_000 });
    receiver.setResponder(replies({ status: 202 }));
    await publish('ack.bad', ['b1']);
    const first = await nth(sub.id, 0);
    expect((await callback(first, 'extend', {})).status).toBe(400);
    expect((await callback(first, 'extend', { ms: -5 })).status).toBe(400);
    expect((await callback(first, 'nack', { delayMs: 'soon' })).status).toBe(400);
    expect((await callback(first, 'reject', { reason: 42 })).status).toBe(400);
    expect((await callback(first, 'ack')).status).toBe(200);
  });
});

describe('ackMode manual', () => {
  it('a PATCH to ackMode auto while a request is open leaves its 200 meaning what it meant when sent: the ack is awaited', async () => {
    const sub = await subscribe('ack.patch-mode', {}, { ackMode: 'manual', ackDeadlineMs: 30_000 });
    let patched = false;
    receiver.setResponder(async () => {
      if (!patched) {
        const res = await request(gw.url)
          .patch(`/subscriptions/${sub.id}`)
          .send({ delivery: { ackMode: 'auto' } });
        expect(res.status).toBe(200);
        patched = true;
      }
      return { status: 200 };
    });
    await publish('ack.patch-mode', ['pm1']);
    const first = await nth(sub.id, 0);
    await waitFor(() => patched, { what: 'the PATCH answered' });
    // The receiver said "received, I will call back" under manual: its nack is still taken (409 acked before).
    const nacked = await callback(first, 'nack');
    expect(nacked.status).toBe(200);
    expect(nacked.body.status).toBe('nacked');
    // The next attempt is sent under auto: its 200 delivers.
    await nth(sub.id, 1);
    await waitLagZero(sub.id);
    expect(requestsFor(sub.id)).toHaveLength(2);
  });

  it('waits for a callback after a 200 too: without one the lease runs out and the event comes again', async () => {
    const sub = await subscribe('ack.manual', { ackMode: 'manual' });
    receiver.setResponder(replies({ status: 200 }));
    await publish('ack.manual', ['m1']);
    const first = await nth(sub.id, 0);
    const second = await nth(sub.id, 1);
    expect([first.headers['herald-attempt'], second.headers['herald-attempt']]).toEqual(['1', '2']);
    expect(lagOf(await getSub(sub.id))).toBe(1);
    expect((await callback(second, 'ack')).status).toBe(200);
    await waitLagZero(sub.id);
    expect((await callback(first, 'ack')).status).toBe(409);
  });

  it('an ack sent while the request is still open settles the event', async () => {
    const sub = await subscribe('ack.early', { ackMode: 'manual' });
    receiver.setResponder(async (req) => {
      const url = new URL(req.headers['herald-ack-url'] as string);
      const res = await request(url.origin).post(url.pathname);
      return { status: res.status === 200 ? 200 : 500 };
    });
    await publish('ack.early', ['early']);
    await waitLagZero(sub.id);
    await sleep(400); // past the 300 ms deadline: no redelivery
    expect(requestsFor(sub.id)).toHaveLength(1);
  });
});

describe('HERALD_PUBLIC_URL', () => {
  it("is the base of herald-ack-url, and its path the base of a created subscription's Location", async () => {
    receiver.setResponder(() => ({ status: 204 }));
    const behindProxy = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_PUBLIC_URL: 'https://herald.example.com/base/' });
    try {
      const res = await request(behindProxy.url)
        .post('/subscriptions')
        .send({ sink: receiver.url, filters: [{ exact: { type: 'ack.public' } }] })
        .expect(201);
      // As a client behind the proxy reaches it (API probe: /subscriptions/… without /base).
      expect(res.headers.location).toBe(`/base/subscriptions/${res.body.id}`);
      await request(behindProxy.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': 'pub1', 'ce-source': '/ack', 'ce-type': 'ack.public', 'content-type': 'text/plain' })
        .send('x')
        .expect(202);
      const q = await nth(res.body.id, 0);
      expect(q.headers['herald-ack-url']).toBe(`https://herald.example.com/base/deliveries/${deliveryId(q)}/ack`);
    } finally {
      await behindProxy.close();
    }
  });
});
