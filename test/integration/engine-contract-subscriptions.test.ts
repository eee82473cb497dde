import request from 'supertest';
import { Webhook } from 'standardwebhooks';
import { publishOfType, requestsForSubscription } from '../helpers/delivery';
import { describeEngine, ENGINES, useEngineGateway } from '../helpers/engines';
import { startReceiver, waitFor, type ReceivedRequest, type Receiver, type Reply } from '../helpers/receiver';

/**
 * The subscriptions and delivery contract, run against both engines: CRUD and its refusals, pause
 * and resume, secret rotation, what each answer of a receiver leads to (2xx, 202 and the callbacks,
 * retry after Retry-After, 410, dead letters), and a restart on the same storage. (Each engine's own
 * files test it further; several JetStream nodes are in jetstream-cluster.test.ts.)
 */

const PARTITIONS = 4;
/** Polls are bounded: the JetStream engine's first pulls can take a few seconds on a busy machine. */
const WAIT = { timeoutMs: 30_000, intervalMs: 50 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * How long after a pause's answer an event may still go out. Local: none. JetStream: a pull already
 * open when the pause arrives (up to 1 s, `jetstream/delivery/puller.ts`) still hands over what it
 * gets — a known difference, to be closed in delivery, listed for the README.
 */
const PAUSE_SEEN_MS = { local: 0, jetstream: 1500 } as const;

for (const engine of ENGINES) {
  describeEngine(engine, () => {
    const gw = useEngineGateway(engine, { HERALD_PARTITIONS: String(PARTITIONS) });
    let receiver: Receiver;
    const created: string[] = [];

    beforeAll(async () => {
      receiver = await startReceiver();
    });
    afterAll(async () => {
      await receiver?.close();
    });
    afterEach(async () => {
      for (const id of created.splice(0)) await request(gw.url).delete(`/subscriptions/${id}`);
      receiver.setResponder(() => ({ status: 204 }));
    });

    /** Creates a subscription to events of `type` with a fast retry policy, deleted after the test. */
    async function subscribe(type: string, body: Record<string, unknown> = {}, delivery: Record<string, unknown> = {}) {
      const res = await request(gw.url)
        .post('/subscriptions')
        .send({
          sink: receiver.url,
          filters: [{ exact: { type } }],
          delivery: { retry: { initialDelayMs: 10, maxDelayMs: 50 }, ...delivery },
          ...body,
        });
      expect(res.status).toBe(201);
      created.push(res.body.id);
      return res.body;
    }
    const typeOf = (name: string) => `${engine}.${name}`;
    /** Ids are `source`+`id` for de-duplication: each test publishes ids no other test of this file uses. */
    const publish = (name: string, ids: string[]) =>
      publishOfType(
        gw.url,
        '/contract-subs',
        typeOf(name),
        ids.map((id) => `${engine}-${id}`),
      );
    /** A subscription to events of `name` whose receiver answers 400, once the events `ids` are all its dead letters. */
    async function deadLettered(name: string, ids: string[]) {
      const sub = await subscribe(typeOf(name));
      receiver.setResponder(() => ({ status: 400 }));
      await publish(name, ids);
      await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === ids.length, { ...WAIT, what: `${ids.length} dead letters` });
      return sub;
    }
    const getSub = async (id: string) => (await request(gw.url).get(`/subscriptions/${id}`).expect(200)).body;
    const lag = (sub: { stats: { partitions: { lag: number }[] } }) => sub.stats.partitions.reduce((n, p) => n + p.lag, 0);
    const waitLag = (id: string, want: number) => waitFor(async () => lag(await getSub(id)) === want, { ...WAIT, what: `lag ${want}` });
    const waitState = (id: string, state: string) =>
      waitFor(
        async () => {
          const sub = await getSub(id);
          return sub.state === state ? sub : undefined;
        },
        { ...WAIT, what: `state ${state}` },
      );
    const requestsFor = (sub: string) => requestsForSubscription(receiver, sub);
    /** The requests of a subscription that were redeliveries of dead letters. */
    const redelivered = (sub: string) => requestsFor(sub).filter((q) => q.headers['herald-redelivery'] === 'true');
    const ceIds = (sub: string) => requestsFor(sub).map((q) => (q.headers['ce-id'] as string).replace(`${engine}-`, ''));
    const nth = (sub: string, n: number) => waitFor(() => requestsFor(sub)[n], { ...WAIT, what: `request #${n + 1}` });
    const callback = (q: ReceivedRequest, action: 'ack' | 'nack' | 'extend' | 'reject', body?: object) => {
      const url = new URL((q.headers['herald-ack-url'] as string).replace(/\/ack$/, `/${action}`));
      const req = request(url.origin).post(url.pathname);
      return body ? req.send(body) : req;
    };
    const deadLetters = async (id: string, query = '') =>
      (await request(gw.url).get(`/subscriptions/${id}/dead-letters${query}`).expect(200)).body;
    /** Answers each request with the next reply of the list (the last repeats). */
    const replies = (...list: Reply[]) => {
      let n = 0;
      return () => list[Math.min(n++, list.length - 1)]!;
    };
    const expectProblem = (res: request.Response, status: number, code: string) => {
      expect(res.status).toBe(status);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({ status, code });
    };

    describe('the subscriptions resource', () => {
      it('creates, reads, lists, patches and deletes a subscription', async () => {
        const sub = await subscribe(typeOf('crud'));
        expect(sub).toEqual({
          id: expect.any(String),
          sink: receiver.url,
          filters: [{ exact: { type: typeOf('crud') } }],
          delivery: {
            format: 'binary',
            ordering: 'partition',
            maxInFlight: 16,
            timeoutMs: 10_000,
            ackMode: 'auto',
            ackDeadlineMs: 30_000,
            disableAfterFailingMs: 432_000_000,
            retry: { maxAttempts: 10, initialDelayMs: 10, maxDelayMs: 50, multiplier: 2, jitter: 0.2 },
          },
          startAt: 'latest',
          validation: 'none',
          state: 'active',
          stateReason: null,
          createdAt: expect.any(String),
          stats: { partitions: expect.any(Array), deadLetters: 0, currentMaxInFlight: 16, throttled: false },
          secret: expect.stringMatching(/^whsec_/),
        });
        expect(sub.stats.partitions.map((p: { partition: number; lag: number }) => [p.partition, p.lag])).toEqual(
          [0, 1, 2, 3].map((p) => [p, 0]),
        );

        const { secret: _secret, stats: _stats, ...shown } = sub;
        expect(await getSub(sub.id)).toMatchObject(shown);
        expect((await getSub(sub.id)).secret).toBeUndefined();
        // A UUID is the same in upper case (was: 404).
        expect(await getSub(sub.id.toUpperCase())).toMatchObject(shown);
        const list = (await request(gw.url).get('/subscriptions').expect(200)).body.subscriptions;
        expect(list.find((s: { id: string }) => s.id === sub.id)).toMatchObject(shown);

        const patched = await request(gw.url)
          .patch(`/subscriptions/${sub.id}`)
          .send({ filters: [{ prefix: { type: typeOf('crud.') } }], delivery: { maxInFlight: 4 } })
          .expect(200);
        expect(patched.body).toMatchObject({ filters: [{ prefix: { type: typeOf('crud.') } }], delivery: { maxInFlight: 4 } });
        expect(await getSub(sub.id)).toMatchObject({ filters: [{ prefix: { type: typeOf('crud.') } }], delivery: { maxInFlight: 4 } });

        await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
        expectProblem(await request(gw.url).get(`/subscriptions/${sub.id}`), 404, 'not_found');
        expectProblem(await request(gw.url).delete(`/subscriptions/${sub.id}`), 404, 'not_found');
        const after = (await request(gw.url).get('/subscriptions').expect(200)).body.subscriptions;
        expect(after.map((s: { id: string }) => s.id)).not.toContain(sub.id);
      });

      it('sends stored header values only to the origin they were given for: a sink moved elsewhere needs them again', async () => {
        const sub = await subscribe(typeOf('moved'), {}, { headers: { authorization: 'Bearer s3cr3t', 'x-tenant': 'acme' } });
        const other = await startReceiver();
        try {
          // Another path on the same origin keeps them.
          const samePlace = `${receiver.url}/elsewhere`;
          await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink: samePlace }).expect(200);
          expect((await getSub(sub.id)).delivery.headers).toEqual({ authorization: '***', 'x-tenant': '***' });

          const moved = await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink: other.url });
          expectProblem(moved, 400, 'invalid_request');
          expect(moved.body.errors).toEqual([
            { attribute: 'delivery.headers', message: expect.stringContaining('give delivery.headers again with their values') },
          ]);
          const masked = await request(gw.url)
            .patch(`/subscriptions/${sub.id}`)
            .send({ sink: other.url, delivery: { headers: { authorization: '***', 'x-tenant': 'acme' } } });
          expectProblem(masked, 400, 'invalid_request');
          expect(masked.body.errors).toEqual([
            { attribute: 'delivery.headers.authorization', message: expect.stringContaining('"***" cannot keep it') },
          ]);
          expect(await getSub(sub.id)).toMatchObject({
            sink: samePlace,
            delivery: { headers: { authorization: '***', 'x-tenant': '***' } },
          });

          await request(gw.url)
            .patch(`/subscriptions/${sub.id}`)
            .send({ sink: other.url, delivery: { headers: { authorization: 'Bearer other' } } })
            .expect(200);
          await publish('moved', ['moved-1']);
          const got = await waitFor(() => requestsForSubscription(other, sub.id)[0], { ...WAIT, what: 'the delivery to the new sink' });
          expect(got.headers.authorization).toBe('Bearer other');
          expect(got.headers['x-tenant']).toBeUndefined();
        } finally {
          await other.close();
        }
      });

      it('lists subscriptions in pages, in creation order, a page starting right after its cursor was deleted', async () => {
        for (let i = 0; i < 5; i++) await subscribe(typeOf(`page-${i}`));
        const whole = (await request(gw.url).get('/subscriptions').expect(200)).body;
        expect(whole).not.toHaveProperty('nextAfter');
        const ids = whole.subscriptions.map((s: { id: string }) => s.id);
        expect(ids).toEqual(expect.arrayContaining(created));
        const order = whole.subscriptions.map((s: { createdAt: string; id: string }) => [Date.parse(s.createdAt), s.id]);
        expect(order).toEqual([...order].sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1)));

        const paged: string[] = [];
        let after: string | null = null;
        for (let page = 0; page < 10; page++) {
          const res: request.Response = await request(gw.url)
            .get('/subscriptions')
            .query({ limit: 2, ...(after !== null && { after }) })
            .expect(200);
          expect(res.body.subscriptions.length).toBeLessThanOrEqual(2);
          paged.push(...res.body.subscriptions.map((s: { id: string }) => s.id));
          after = res.body.nextAfter;
          if (after === null) break;
        }
        expect(after).toBeNull();
        expect(paged).toEqual(ids);

        // The cursor's own subscription deleted: the next page still starts with the one after it.
        const first = await request(gw.url).get('/subscriptions?limit=1').expect(200);
        expect(first.body.subscriptions.map((s: { id: string }) => s.id)).toEqual([ids[0]]);
        await request(gw.url).delete(`/subscriptions/${ids[0]}`).expect(204);
        const next = await request(gw.url).get('/subscriptions').query({ limit: 1, after: first.body.nextAfter }).expect(200);
        expect(next.body.subscriptions.map((s: { id: string }) => s.id)).toEqual([ids[1]]);
        expect((await request(gw.url).get('/subscriptions').query({ after: first.body.nextAfter }).expect(200)).body).toMatchObject({
          nextAfter: null,
        });

        for (const query of ['limit=0', 'limit=1001', 'limit=two', 'limit=-1', 'after=nope', 'after=12_a_b', 'after=%FF'])
          expectProblem(await request(gw.url).get(`/subscriptions?${query}`), 400, 'invalid_request');
      });

      it('refuses bad bodies with 400 and storing nothing, and answers 404 for an unknown subscription', async () => {
        const count = async () => (await request(gw.url).get('/subscriptions').expect(200)).body.subscriptions.length;
        const before = await count();
        for (const body of [
          {},
          { sink: 'ftp://example.com/hook' },
          { sink: receiver.url, filters: [{ regex: {} }] },
          { sink: receiver.url, colour: 1 },
        ])
          expectProblem(await request(gw.url).post('/subscriptions').send(body), 400, 'invalid_request');
        expect(await count()).toBe(before);

        const sub = await subscribe(typeOf('refusals'));
        expectProblem(await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink: 'not a url' }), 400, 'invalid_request');
        expectProblem(await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ colour: 'blue' }), 400, 'invalid_request');
        expect((await getSub(sub.id)).sink).toBe(receiver.url);

        const unknown = '00000000-0000-4000-8000-000000000000';
        for (const [method, path, body] of [
          ['get', '', undefined],
          ['patch', '', { colour: 'blue' }],
          ['delete', '', undefined],
          ['post', '/pause', undefined],
          ['post', '/resume', undefined],
          ['post', '/rotate-secret', {}],
          ['get', '/dead-letters', undefined],
        ] as const) {
          const req = request(gw.url)[method](`/subscriptions/${unknown}${path}`);
          expectProblem(await (body ? req.send(body) : req), 404, 'not_found');
        }
        // Ids no subscription can have, some of them no key a KV bucket can hold (JetStream probe: a 503 to retry).
        for (const odd of ['a%20b', '%2A', '%3E', '$KV', '.hidden', 'not-a-uuid'])
          for (const [method, path] of [
            ['get', ''],
            ['delete', ''],
            ['post', '/pause'],
            ['get', '/attempts'],
          ] as const)
            expectProblem(await request(gw.url)[method](`/subscriptions/${odd}${path}`), 404, 'not_found');
      });

      it('rotates the secret: deliveries are signed with the new one, and the old one signs too during the overlap', async () => {
        const sub = await subscribe(typeOf('rotate'));
        const rotated = await request(gw.url).post(`/subscriptions/${sub.id}/rotate-secret`).send({ overlapSeconds: 3600 }).expect(200);
        expect(rotated.body.secret).toMatch(/^whsec_/);
        expect(rotated.body.secret).not.toBe(sub.secret);
        expect(Date.parse(rotated.body.previousSecretExpiresAt) - Date.now()).toBeGreaterThan(3500_000);
        await publish('rotate', ['rot1']);
        const delivered = await nth(sub.id, 0);
        const headers = delivered.headers as Record<string, string>;
        const [first, second] = headers['webhook-signature']!.split(' ');
        expect(() =>
          new Webhook(rotated.body.secret).verify(delivered.body.toString('utf8'), { ...headers, 'webhook-signature': first! }),
        ).not.toThrow();
        expect(() =>
          new Webhook(sub.secret).verify(delivered.body.toString('utf8'), { ...headers, 'webhook-signature': second! }),
        ).not.toThrow();
      });

      it('delivers nothing while paused and the whole backlog, in order, after resume', async () => {
        const sub = await subscribe(typeOf('pause'));
        const paused = await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
        expect(paused.body).toMatchObject({ state: 'paused', stateReason: 'user' });
        await sleep(PAUSE_SEEN_MS[engine]);
        await publish('pause', ['p1', 'p2', 'p3']);
        await waitLag(sub.id, 3);
        await sleep(300);
        expect(requestsFor(sub.id)).toEqual([]);
        const resumed = await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
        expect(resumed.body).toMatchObject({ state: 'active', stateReason: null });
        await waitLag(sub.id, 0);
        expect(ceIds(sub.id)).toEqual(['p1', 'p2', 'p3']);
      });
    });

    describe('delivery outcomes', () => {
      it('2xx: delivers each matching event once, in order, with the previous-offset chain, and the lag falls to 0', async () => {
        const sub = await subscribe(typeOf('ok'));
        const stored = await publish('ok', ['o1', 'o2', 'o3']);
        await publish('other', ['x1']);
        await waitLag(sub.id, 0);
        await waitFor(() => requestsFor(sub.id).length === 3, { ...WAIT, what: '3 requests' });
        const got = requestsFor(sub.id);
        expect(ceIds(sub.id)).toEqual(['o1', 'o2', 'o3']);
        expect(got.map((q) => q.headers['herald-offset'])).toEqual(stored.map((s) => String(s.offset)));
        expect(got.slice(1).map((q) => q.headers['herald-previous-offset'])).toEqual(stored.slice(0, 2).map((s) => String(s.offset)));
        expect(got.every((q) => q.headers['herald-attempt'] === '1')).toBe(true);
        const after = await getSub(sub.id);
        expect(after.stats.partitions.every((p: { lag: number; inFlight: number }) => p.lag === 0 && p.inFlight === 0)).toBe(true);
      });

      it('ordering none: a herald-previous-offset names an earlier event of the partition that the receiver gets (local: the previous one, even while open)', async () => {
        // Held, so that the partition's events are all open at once (maxInFlight 4 on both engines: JetStream's is per partition).
        receiver.setResponder(() => ({ status: 204, delayMs: 300 }));
        const sub = await subscribe(typeOf('none-chain'), {}, { ordering: 'none', maxInFlight: 4 });
        const stored = await publish('none-chain', ['nc1', 'nc2', 'nc3', 'nc4']);
        await waitLag(sub.id, 0);
        const got = requestsFor(sub.id);
        const offsets = stored.map((s) => String(s.offset));
        expect(got.map((q) => q.headers['herald-offset']).sort()).toEqual([...offsets].sort());
        const previous = (offset: string) => got.find((q) => q.headers['herald-offset'] === offset)!.headers['herald-previous-offset'];
        expect(previous(offsets[0]!)).toBeUndefined();
        for (const offset of offsets.slice(1)) {
          const prev = previous(offset);
          // JetStream: the last one of the partition that had finished when the attempt started, none before that (README).
          if (prev !== undefined) expect(offsets.slice(0, offsets.indexOf(offset))).toContain(prev);
        }
        if (engine === 'local') expect(offsets.slice(1).map(previous)).toEqual(offsets.slice(0, 3));
      });

      it('202 holds the event until the ack callback; nack redelivers as attempt 2; reject dead-letters it', async () => {
        const sub = await subscribe(typeOf('manual'), {}, { ackDeadlineMs: 30_000 });
        receiver.setResponder(() => ({ status: 202 }));
        await publish('manual', ['m1', 'm2', 'm3']);
        const first = await nth(sub.id, 0);
        expect(first.headers['herald-ack-url']).toBe(`${gw.url}/deliveries/${first.headers['herald-delivery-id']}/ack`);
        await sleep(300);
        expect(requestsFor(sub.id)).toHaveLength(1); // m2 waits behind m1 in its partition
        expect((await callback(first, 'ack')).status).toBe(200);
        expect((await callback(first, 'ack')).status).toBe(200); // the same callback again

        const second = await nth(sub.id, 1);
        expect(second.headers['ce-id']).toBe(`${engine}-m2`);
        expect((await callback(second, 'nack', { delayMs: 0 })).status).toBe(200);
        const again = await nth(sub.id, 2);
        expect([again.headers['ce-id'], again.headers['herald-attempt']]).toEqual([`${engine}-m2`, '2']);
        expect(again.headers['webhook-id']).toBe(second.headers['webhook-id']);
        expect((await callback(again, 'reject', { reason: 'not for us' })).status).toBe(200);

        const third = await nth(sub.id, 3);
        expect(third.headers['ce-id']).toBe(`${engine}-m3`);
        expect((await callback(third, 'ack')).status).toBe(200);
        await waitLag(sub.id, 0);
        const dead = (await deadLetters(sub.id)).deadLetters;
        expect(dead.map((d: { event: { id: string }; reason: string }) => [d.event.id, d.reason])).toEqual([
          [`${engine}-m2`, 'receiver_rejected'],
        ]);
        expectProblem(await request(gw.url).post('/deliveries/dlv_000000000000000000000000/ack'), 404, 'not_found');
      });

      it('retries a 500 on the backoff (its Retry-After ignored) and a 503 after its Retry-After, under one webhook-id', async () => {
        const sub = await subscribe(typeOf('retry'), {}, { retry: { initialDelayMs: 10, maxDelayMs: 5000 } });
        receiver.setResponder(
          replies({ status: 500, headers: { 'retry-after': '30' } }, { status: 503, headers: { 'retry-after': '1' } }, { status: 204 }),
        );
        await publish('retry', ['r1']);
        await waitLag(sub.id, 0);
        const attempts = requestsFor(sub.id);
        expect(attempts.map((q) => q.headers['herald-attempt'])).toEqual(['1', '2', '3']);
        expect(new Set(attempts.map((q) => q.headers['webhook-id'])).size).toBe(1);
        // Without Retry-After the third attempt would come after ~20 ms; the 500's 30 s would time the test out.
        expect(attempts[2]!.receivedAt - attempts[1]!.receivedAt).toBeGreaterThanOrEqual(900);
      });

      it('410 Gone pauses the subscription with reason gone and keeps the backlog for resume', async () => {
        const sub = await subscribe(typeOf('gone'));
        receiver.setResponder(replies({ status: 410 }, { status: 204 }));
        await publish('gone', ['g1']);
        const paused = await waitState(sub.id, 'paused');
        expect(paused.stateReason).toBe('gone');
        await publish('gone', ['g2']);
        await waitLag(sub.id, 2);
        await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
        await waitLag(sub.id, 0);
        expect(ceIds(sub.id)).toEqual(['g1', 'g1', 'g2']);
      });

      it('dead-letters a 400, lists it with its event, redelivers it with a fresh attempt count, and deletes one', async () => {
        const sub = await deadLettered('dead', ['d1', 'd2']);
        const page = await deadLetters(sub.id);
        expect(
          page.deadLetters.map((d: { event: { id: string }; lastStatus: number; attempts: number }) => [
            d.event.id,
            d.lastStatus,
            d.attempts,
          ]),
        ).toEqual([
          [`${engine}-d1`, 400, 1],
          [`${engine}-d2`, 400, 1],
        ]);
        expect((await deadLetters(sub.id, '?limit=1')).nextAfter).toBe(page.deadLetters[0].id);

        receiver.setResponder(() => ({ status: 204 }));
        await request(gw.url)
          .post(`/subscriptions/${sub.id}/dead-letters/redeliver`)
          .send({ ids: [page.deadLetters[0].id, page.deadLetters[0].id, page.deadLetters[0].id] }) // counted once
          .expect(202, { redelivering: 1 });
        await waitFor(() => requestsFor(sub.id).length === 3, { ...WAIT, what: 'd1 redelivered' });
        expect(requestsFor(sub.id)[2]!.headers).toMatchObject({
          'ce-id': `${engine}-d1`,
          'herald-attempt': '1',
          'herald-redelivery': 'true',
        });
        await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 1, { ...WAIT, what: '1 dead letter left' });

        await request(gw.url).delete(`/subscriptions/${sub.id}/dead-letters/${page.deadLetters[1].id}`).expect(204);
        await request(gw.url).delete(`/subscriptions/${sub.id}/dead-letters/${page.deadLetters[1].id}`).expect(404);
        expect((await deadLetters(sub.id)).deadLetters).toEqual([]);
      });

      it('cancels a redelivery still waiting in the queue (paused) when its dead letter is deleted (parity probe: JetStream answered 404 and sent it)', async () => {
        const sub = await deadLettered('dead-cancel', ['dc1', 'dc2']);
        const [first, second] = (await deadLetters(sub.id)).deadLetters.map((d: { id: string }) => d.id);
        await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
        receiver.setResponder(() => ({ status: 204 }));
        await request(gw.url)
          .post(`/subscriptions/${sub.id}/dead-letters/redeliver`)
          .send({ ids: [first, second] })
          .expect(202, { redelivering: 2 });
        await request(gw.url).delete(`/subscriptions/${sub.id}/dead-letters/${first}`).expect(204);
        await request(gw.url).delete(`/subscriptions/${sub.id}/dead-letters/${first}`).expect(404);

        await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
        await waitFor(() => redelivered(sub.id).length >= 1, { ...WAIT, what: 'dc2 redelivered' });
        await sleep(300); // dc1, queued first, would have come by now
        expect(redelivered(sub.id).map((q) => q.headers['ce-id'])).toEqual([`${engine}-dc2`]);
        expect((await deadLetters(sub.id)).deadLetters).toEqual([]);
      });

      it('queues a dead letter once when it is redelivered twice while paused: the second answer counts none, each event is sent once (console probe)', async () => {
        const sub = await deadLettered('dead-twice', ['dt1', 'dt2']);
        await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
        receiver.setResponder(() => ({ status: 204 }));
        const redeliver = () => request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).send({});
        await redeliver().expect(202, { redelivering: 2 });
        await redeliver().expect(202, { redelivering: 0 });

        await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
        await waitFor(() => redelivered(sub.id).length >= 2, { ...WAIT, what: '2 redeliveries' });
        await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 0, { ...WAIT, what: 'no dead letter left' });
        await sleep(300); // a second copy would come by now
        expect(
          redelivered(sub.id)
            .map((q) => q.headers['ce-id'])
            .sort(),
        ).toEqual([`${engine}-dt1`, `${engine}-dt2`]);
      });

      it('redelivers all of 150 dead letters (JetStream: more than one batch of publishes and lookups) once each, and none stays listed', async () => {
        const ids = Array.from({ length: 150 }, (_, i) => `many${i}`);
        const sub = await deadLettered('dead-many', ids);

        receiver.setResponder(() => ({ status: 204 }));
        // 100 named (one twice, and an id that is none of them), then the other 50 as "all".
        const named = (await deadLetters(sub.id, '?limit=100')).deadLetters.map((d: { id: string }) => d.id);
        expect(named).toHaveLength(100);
        await request(gw.url)
          .post(`/subscriptions/${sub.id}/dead-letters/redeliver`)
          .send({ ids: [...named, named[70], '999999999'] })
          .expect(202, { redelivering: 100 });
        await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 50, { ...WAIT, what: '50 dead letters left' });
        await request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).send({}).expect(202, { redelivering: 50 });
        await waitFor(() => redelivered(sub.id).length >= 150, { ...WAIT, what: '150 redeliveries' });
        await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 0, { ...WAIT, what: 'no dead letter left' });
        await sleep(300); // a redelivery sent twice would come by now
        expect(
          redelivered(sub.id)
            .map((q) => (q.headers['ce-id'] as string).replace(`${engine}-`, ''))
            .sort(),
        ).toEqual([...ids].sort());
        expect((await deadLetters(sub.id)).deadLetters).toEqual([]);
      });
    });

    describe('the metrics of a subscription', () => {
      /** The value of one series of `subscription` in a scrape (undefined when absent). */
      const metric = (text: string, name: string, subscription: string, labels = '') => {
        const found = new RegExp(`^${name}\\{subscription="${subscription}"${labels}\\} (\\S+)$`, 'm').exec(text);
        return found ? Number(found[1]) : undefined;
      };
      const scrape = async () => (await fetch(`${gw.url}/metrics`)).text();
      const outcomes = (text: string, id: string) =>
        Object.fromEntries(
          ['delivered', 'retry', 'dead_letter', 'timeout', 'acked', 'nacked', 'rejected', 'lease_expired', 'gone'].map((o) => [
            o,
            metric(text, 'herald_deliveries_total', id, `,outcome="${o}"`),
          ]),
        );

      it('has its counters at 0 from the start (a series first seen at 1 is no increase to Prometheus)', async () => {
        const sub = await subscribe(typeOf('metrics'));
        const text = await scrape();
        expect(metric(text, 'herald_filter_errors_total', sub.id)).toBe(0);
        expect(metric(text, 'herald_deliveries_total', sub.id, ',outcome="dead_letter"')).toBe(0);
        expect(metric(text, 'herald_subscription_auto_disabled_total', sub.id)).toBe(0);
      });

      it('counts each attempt and callback by outcome, with the attempt and publish-to-delivery histograms, on both engines alike', async () => {
        const auto = await subscribe(typeOf('counted'));
        receiver.setResponder(replies({ status: 500 }, { status: 204 }, { status: 400 }));
        await publish('counted', ['c1', 'c2']);
        await waitFor(async () => (await getSub(auto.id)).stats.deadLetters === 1, { ...WAIT, what: 'c2 dead-lettered' });
        await waitFor(async () => metric(await scrape(), 'herald_deliveries_total', auto.id, ',outcome="dead_letter"') === 1, {
          ...WAIT,
          what: 'the dead letter counted',
        });
        let text = await scrape();
        expect(outcomes(text, auto.id)).toEqual({
          delivered: 1,
          retry: 1,
          dead_letter: 1,
          timeout: 0,
          acked: 0,
          nacked: 0,
          rejected: 0,
          lease_expired: 0,
          gone: 0,
        });
        expect(metric(text, 'herald_delivery_duration_seconds_count', auto.id)).toBe(3);
        expect(metric(text, 'herald_publish_to_delivery_seconds_count', auto.id)).toBe(1);

        const manual = await subscribe(typeOf('counted-manual'), {}, { ackMode: 'manual', ackDeadlineMs: 30_000 });
        receiver.setResponder(() => ({ status: 202 }));
        await publish('counted-manual', ['k1', 'k2']);
        expect((await callback(await nth(manual.id, 0), 'ack')).status).toBe(200);
        expect((await callback(await nth(manual.id, 1), 'nack', { delayMs: 0 })).status).toBe(200);
        expect((await callback(await nth(manual.id, 2), 'reject', { reason: 'no' })).status).toBe(200);
        await waitFor(async () => metric(await scrape(), 'herald_deliveries_total', manual.id, ',outcome="rejected"') === 1, {
          ...WAIT,
          what: 'the reject counted',
        });
        text = await scrape();
        expect(outcomes(text, manual.id)).toEqual({
          delivered: 0,
          retry: 0,
          dead_letter: 1,
          timeout: 0,
          acked: 1,
          nacked: 1,
          rejected: 1,
          lease_expired: 0,
          gone: 0,
        });
        // Each 202 is an answered attempt and, under manual ack, the receipt the histogram times.
        expect(metric(text, 'herald_delivery_duration_seconds_count', manual.id)).toBe(3);
        expect(metric(text, 'herald_publish_to_delivery_seconds_count', manual.id)).toBe(3);

        await request(gw.url).delete(`/subscriptions/${auto.id}`).expect(204);
        expect(metric(await scrape(), 'herald_deliveries_total', auto.id, ',outcome="delivered"')).toBeUndefined();
      });

      it('pauses a subscription whose every attempt failed for disableAfterFailingMs (reason failing), counted once, and resume delivers', async () => {
        const sub = await subscribe(
          typeOf('failing'),
          {},
          { disableAfterFailingMs: 1500, retry: { maxAttempts: 1000, initialDelayMs: 10, maxDelayMs: 100 } },
        );
        receiver.setResponder(() => ({ status: 500 }));
        await publish('failing', ['fail1']);
        const paused = await waitState(sub.id, 'paused');
        expect(paused.stateReason).toBe('failing');
        // Not before the window: the first failure opened it.
        expect(Date.now() - requestsFor(sub.id)[0]!.receivedAt).toBeGreaterThanOrEqual(1500);
        await waitFor(async () => metric(await scrape(), 'herald_subscription_auto_disabled_total', sub.id) === 1, {
          ...WAIT,
          what: 'the pause counted',
        });
        receiver.setResponder(() => ({ status: 204 }));
        await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
        await waitLag(sub.id, 0);
        expect((await getSub(sub.id)).state).toBe('active');
        expect(metric(await scrape(), 'herald_subscription_auto_disabled_total', sub.id)).toBe(1);
      });

      it('dead-letters an event whose last attempt ran out of lease, with no request more (re-probe: JetStream sent it once more)', async () => {
        const sub = await subscribe(
          typeOf('lease-last'),
          {},
          // timeoutMs 1 s: JetStream's lease (ack_wait) is the longer of it and ackDeadlineMs, plus 1 s.
          { ackMode: 'manual', ackDeadlineMs: 500, timeoutMs: 1000, retry: { maxAttempts: 1, initialDelayMs: 10, maxDelayMs: 50 } },
        );
        receiver.setResponder(() => ({ status: 202 }));
        await publish('lease-last', ['e1']);
        await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 1, { ...WAIT, what: 'the dead letter' });
        const [dead] = (await deadLetters(sub.id)).deadLetters;
        expect([dead.event.id, dead.reason, dead.attempts]).toEqual([`${engine}-e1`, 'max_attempts', 1]);
        await waitLag(sub.id, 0);
        expect(requestsFor(sub.id)).toHaveLength(1);
        await waitFor(async () => metric(await scrape(), 'herald_deliveries_total', sub.id, ',outcome="dead_letter"') === 1, {
          ...WAIT,
          what: 'the dead letter counted',
        });
        expect(outcomes(await scrape(), sub.id)).toMatchObject({ lease_expired: 1, dead_letter: 1, retry: 0 });
      });

      it('counts a lease that ran out with no callback as lease_expired, before the event goes again', async () => {
        const sub = await subscribe(typeOf('counted-lease'), {}, { ackMode: 'manual', ackDeadlineMs: 500, timeoutMs: 1000 }); // lease: as above
        receiver.setResponder(() => ({ status: 202 }));
        await publish('counted-lease', ['l1']);
        const again = await nth(sub.id, 1);
        expect([again.headers['ce-id'], again.headers['webhook-id']]).toEqual([
          `${engine}-l1`,
          (await nth(sub.id, 0)).headers['webhook-id'],
        ]);
        expect((await callback(again, 'ack')).status).toBe(200);
        await waitFor(async () => metric(await scrape(), 'herald_deliveries_total', sub.id, ',outcome="acked"') === 1, {
          ...WAIT,
          what: 'the ack counted',
        });
        expect(outcomes(await scrape(), sub.id)).toMatchObject({ lease_expired: 1, acked: 1, retry: 0, dead_letter: 0 });
      });
    });

    describe('a dead letter redelivered after a seek', () => {
      it("keeps the dead letter's webhook-id, while the seek's replay of the same offset has a new one (soak probe: the redelivery took the replay's)", async () => {
        const sub = await deadLettered('dead-seek', ['w1']);
        const deadId = requestsFor(sub.id)[0]!.headers['webhook-id'];
        receiver.setResponder(() => ({ status: 204 }));
        await request(gw.url).post(`/subscriptions/${sub.id}/seek`).send({ to: 'earliest' }).expect(200);
        await waitFor(() => requestsFor(sub.id).length === 2, { ...WAIT, what: 'the replay' });
        await request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).send({}).expect(202, { redelivering: 1 });
        await waitFor(() => requestsFor(sub.id).length === 3, { ...WAIT, what: 'the redelivery' });
        const [, replay, redelivery] = requestsFor(sub.id);
        expect(replay!.headers['herald-redelivery']).toBeUndefined();
        expect(replay!.headers['webhook-id']).not.toBe(deadId);
        expect(redelivery!.headers['herald-redelivery']).toBe('true');
        expect(redelivery!.headers['webhook-id']).toBe(deadId);
      });
    });

    describe('seek by time', () => {
      it('to a time after every event goes to the heads, and to one before them all replays every event, however far (JetStream probe: 2300 replayed all, 1600 went to the heads)', async () => {
        const sub = await subscribe(typeOf('seek-far'));
        await publish('seek-far', ['f1', 'f2', 'f3']);
        await waitLag(sub.id, 0);
        expect(requestsFor(sub.id)).toHaveLength(3);
        for (const time of ['2262-04-11T23:47:17Z', '9999-12-31T23:59:59Z']) {
          const moved = await request(gw.url).post(`/subscriptions/${sub.id}/seek`).send({ time }).expect(200);
          expect(lag(moved.body)).toBe(0);
        }
        const back = await request(gw.url).post(`/subscriptions/${sub.id}/seek`).send({ time: '1600-01-01T00:00:00Z' }).expect(200);
        expect(lag(back.body)).toBeGreaterThanOrEqual(3); // every stored event is ahead again, other tests' included
        await waitFor(() => requestsFor(sub.id).length === 6, { ...WAIT, what: 'the three events replayed' });
        expect(ceIds(sub.id).slice(3).sort()).toEqual(['f1', 'f2', 'f3']);
      });
    });

    describe('seek with a request open', () => {
      it('aborts the request, and the attempt log says a seek moved its partition (was: nothing logged on JetStream)', async () => {
        let release!: () => void;
        const held = new Promise<void>((r) => (release = r));
        try {
          receiver.setResponder(async (q) => {
            if ((q.headers['ce-id'] as string).endsWith('-h1')) await held;
            return { status: 204 };
          });
          const sub = await subscribe(typeOf('seek-open'), {}, { timeoutMs: 60_000 });
          const [stored] = await publish('seek-open', ['h1']);
          await nth(sub.id, 0);
          await request(gw.url).post(`/subscriptions/${sub.id}/seek`).send({ to: 'latest' }).expect(200);
          const aborted = await waitFor(
            async () => {
              const { attempts } = (await request(gw.url).get(`/subscriptions/${sub.id}/attempts`).expect(200)).body;
              return (attempts as { partition: number; offset: number; error: string | null }[]).find(
                (a) => a.partition === stored!.partition && a.offset === stored!.offset,
              );
            },
            { ...WAIT, what: 'the aborted attempt logged' },
          );
          expect(aborted).toMatchObject({ status: null, outcome: 'stale', error: 'aborted: a seek moved its partition' });
        } finally {
          release();
        }
      });
    });

    describe('a restart on the same storage', () => {
      it('keeps the subscription and its undelivered events, which are delivered after it; and a pause', async () => {
        // A request open at the close is abandoned; on JetStream its message comes back after the lease
        // (timeoutMs or ackDeadlineMs, + 1 s): short ones keep the wait short.
        const sub = await subscribe(typeOf('restart'), {}, { timeoutMs: 1000, ackDeadlineMs: 1000 });
        await publish('restart', ['s1']);
        await waitLag(sub.id, 0);
        receiver.setResponder(() => ({ status: 503 }));
        await publish('restart', ['s2', 's3']);
        await waitFor(() => requestsFor(sub.id).length >= 2, { ...WAIT, what: 's2 refused' });

        await gw.restart();
        expect(await getSub(sub.id)).toMatchObject({ id: sub.id, sink: receiver.url, state: 'active' });
        receiver.setResponder(() => ({ status: 204 }));
        await waitLag(sub.id, 0);
        const succeeded = requestsFor(sub.id).filter(
          (q, i, all) => all.findLastIndex((o) => o.headers['ce-id'] === q.headers['ce-id']) === i,
        );
        expect(succeeded.map((q) => (q.headers['ce-id'] as string).replace(`${engine}-`, ''))).toEqual(['s1', 's2', 's3']);

        await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
        await gw.restart();
        expect(await getSub(sub.id)).toMatchObject({ id: sub.id, state: 'paused', stateReason: 'user' });
      });
    });
  });
}
