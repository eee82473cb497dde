import request from 'supertest';
import {
  getSubscription,
  publishBatch,
  publishOfType,
  requestsForSubscription,
  useDeliveryFixture,
  useLastSubscriptionCleanup,
  waitForLagZero,
} from '../helpers/delivery';
import { waitFor, type ReceivedRequest, type Reply } from '../helpers/receiver';

/** Dead letters: rejected statuses, redirects, exhausted retries; listing, paging, redelivery and deletion. */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });
const createSubscription = useLastSubscriptionCleanup(gw);

const subscribe = (type: string, retry: Record<string, unknown> = {}) =>
  createSubscription({
    sink: receiver.url,
    filters: [{ exact: { type } }],
    delivery: { retry: { initialDelayMs: 10, maxDelayMs: 50, ...retry } },
  });
const publish = (type: string, ids: string[]) => publishOfType(gw.url, '/dead', type, ids);
const getSub = (id: string) => getSubscription(gw.url, id);
const waitLagZero = (id: string) => waitForLagZero(gw.url, id);
async function deadLetters(id: string, query = '') {
  const res = await request(gw.url).get(`/subscriptions/${id}/dead-letters${query}`).expect(200);
  return res.body as { deadLetters: any[]; nextAfter: string | null };
}
const requestsFor = (sub: string, ceId?: string) => requestsForSubscription(receiver, sub, ceId);
const idsOf = (rows: { event: { id: string } }[]) => rows.map((d) => d.event.id);

describe('rejected at once', () => {
  const statuses = [400, 401, 403, 404, 405, 413, 415, 422, 451, 300, 301, 302, 303, 307, 308];
  const BIG = 'x'.repeat(5000);
  // Two-byte characters from an odd byte on: the first 1,024 bytes end inside one (probe: the excerpt passed 1 KiB).
  const WIDE = `x${'é'.repeat(3000)}`;

  it('dead-letters 4xx (other than the retried ones) and 3xx after one attempt, never following a redirect, and moves on', async () => {
    receiver.setResponder((req: ReceivedRequest): Reply => {
      const id = req.headers['ce-id'] as string;
      if (!id?.startsWith('s')) return { status: 204 };
      const status = Number(id.slice(1));
      if (status === 413) return { status, body: BIG };
      if (status === 422) return { status, body: WIDE };
      return {
        status,
        headers: status < 400 ? { location: receiver.url.replace('/hook', '/elsewhere') } : {},
        body: `rejected with ${status}`,
      };
    });
    const sub = await subscribe('dl.status');
    const stored = await publish('dl.status', [...statuses.map((s) => `s${s}`), 'after']);
    await waitLagZero(sub.id);

    for (const status of statuses) expect(requestsFor(sub.id, `s${status}`).map((q) => q.headers['herald-attempt'])).toEqual(['1']);
    expect(requestsFor(sub.id, 'after')).toHaveLength(1);
    expect(receiver.requests.filter((q) => !q.url.startsWith('/hook'))).toEqual([]);

    const { deadLetters: dead, nextAfter } = await deadLetters(sub.id);
    expect(nextAfter).toBeNull();
    expect(idsOf(dead)).toEqual(statuses.map((s) => `s${s}`));
    for (const [i, d] of dead.entries()) {
      const status = statuses[i]!;
      const s = stored[i]!;
      expect(d).toEqual({
        id: expect.any(String),
        partition: s.partition,
        offset: s.offset,
        event: {
          specversion: '1.0',
          id: `s${status}`,
          source: '/dead',
          type: 'dl.status',
          partitionkey: 'dl.status',
          data: { id: `s${status}` },
        },
        attempts: 1,
        lastStatus: status,
        lastError: status === 413 || status === 422 ? expect.any(String) : `rejected with ${status}`,
        reason: 'rejected_status',
        deadAt: expect.any(String),
      });
      expect(new Date(d.deadAt).toISOString()).toBe(d.deadAt);
    }
    const big = dead.find((d) => d.lastStatus === 413)!;
    expect(big.lastError.length).toBeGreaterThan(0);
    expect(Buffer.byteLength(big.lastError)).toBeLessThanOrEqual(1024);
    expect(BIG.startsWith(big.lastError)).toBe(true);
    const wide = dead.find((d) => d.lastStatus === 422)!;
    expect(Buffer.byteLength(wide.lastError)).toBeLessThanOrEqual(1024);
    expect(Buffer.byteLength(wide.lastError)).toBeGreaterThan(1020);
    expect(WIDE.startsWith(wide.lastError)).toBe(true);
    expect((await getSub(sub.id)).stats.deadLetters).toBe(statuses.length);
  });
});

describe('retries exhausted', () => {
  it('dead-letters with max_attempts after maxAttempts, then the partition moves on', async () => {
    receiver.setResponder((req) => (req.headers['ce-id'] === 'x1' ? { status: 500, body: 'boom' } : { status: 204 }));
    const sub = await subscribe('dl.exhaust', { maxAttempts: 3 });
    const stored = await publish('dl.exhaust', ['x1', 'x2']);
    await waitLagZero(sub.id);
    expect(requestsFor(sub.id, 'x1').map((q) => q.headers['herald-attempt'])).toEqual(['1', '2', '3']);
    const [x2] = requestsFor(sub.id, 'x2');
    expect(x2!.headers['herald-previous-offset']).toBe(String(stored[0]!.offset));
    const [d] = (await deadLetters(sub.id)).deadLetters;
    expect(d).toMatchObject({
      partition: stored[0]!.partition,
      offset: stored[0]!.offset,
      attempts: 3,
      lastStatus: 500,
      lastError: 'boom',
      reason: 'max_attempts',
    });

    // Redelivered with a fresh attempt count; failing again makes a new dead letter.
    await request(gw.url)
      .post(`/subscriptions/${sub.id}/dead-letters/redeliver`)
      .send({ ids: [d.id] })
      .expect(202);
    const again = await waitFor(
      async () => {
        const rows = (await deadLetters(sub.id)).deadLetters;
        return rows.length === 1 && rows[0].id !== d.id ? rows[0] : undefined;
      },
      { what: 'a new dead letter' },
    );
    expect(again).toMatchObject({ offset: d.offset, attempts: 3, reason: 'max_attempts' });
    const redelivered = requestsFor(sub.id, 'x1').slice(3);
    expect(redelivered.map((q) => [q.headers['herald-attempt'], q.headers['herald-redelivery']])).toEqual([
      ['1', 'true'],
      ['2', 'true'],
      ['3', 'true'],
    ]);
  });
});

describe('maxAttempts lowered while a retry waits', () => {
  it('dead-letters the event when the retry comes due, without sending it (probe: one more attempt went out)', async () => {
    receiver.setResponder(() => ({ status: 500, body: 'boom' }));
    const sub = await subscribe('dl.lowered', { maxAttempts: 10, initialDelayMs: 3000, maxDelayMs: 3000, jitter: 0 });
    const [stored] = await publish('dl.lowered', ['lowered-1']);
    // Attempt 1 has failed and its retry is scheduled (the attempt log says `retry`) before the PATCH.
    await waitFor(
      async () => {
        const { attempts } = (await request(gw.url).get(`/subscriptions/${sub.id}/attempts`).expect(200)).body;
        return attempts.some((a: { outcome: string | null }) => a.outcome === 'retry');
      },
      { what: 'attempt 1 failed, its retry scheduled' },
    );
    await request(gw.url)
      .patch(`/subscriptions/${sub.id}`)
      .send({ delivery: { retry: { maxAttempts: 1 } } })
      .expect(200);
    const [d] = await waitFor(async () => {
      const rows = (await deadLetters(sub.id)).deadLetters;
      return rows.length === 1 ? rows : undefined;
    });
    expect(d).toMatchObject({ offset: stored!.offset, attempts: 1, reason: 'max_attempts', lastStatus: 500 });
    expect(requestsFor(sub.id).map((q) => q.headers['herald-attempt'])).toEqual(['1']);
  });
});

describe('listing, redelivering and deleting', () => {
  it('redelivers every dead letter asked, two of one event included (a seek replayed it): none is dropped while the answer counts it', async () => {
    receiver.setResponder(() => ({ status: 400 }));
    const sub = await subscribe('dl.twice');
    await publish('dl.twice', ['t1', 't2', 't3']);
    await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 3, { what: '3 dead letters' });
    await request(gw.url).post(`/subscriptions/${sub.id}/seek`).send({ to: 'earliest' }).expect(200);
    await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 6, { what: '6 dead letters, two per event' });
    receiver.setResponder(() => ({ status: 204 }));
    const answer = await request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).send({}).expect(202);
    expect(answer.body).toEqual({ redelivering: 6 });
    // Was: 3 sent, the other 3 still listed (dropped from the queue as their offset was being redelivered).
    // A dead letter is consumed as its redelivery starts, before the request is on the wire: the last one's
    // request can reach the receiver after the count reads 0.
    await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 0, { what: 'no dead letter left' });
    const redelivered = () => requestsFor(sub.id).filter((q) => q.headers['herald-redelivery'] === 'true');
    await waitFor(() => redelivered().length >= 6, { what: 'six redeliveries' });
    const ids = redelivered().map((q) => q.headers['ce-id']);
    expect(ids.sort()).toEqual(['t1', 't1', 't2', 't2', 't3', 't3']);
  });

  it('ends a page once its events pass 8 MiB, with nextAfter where it ended (was: 2.6 GB and a 500 for 670 large dead letters)', async () => {
    receiver.setResponder(() => ({ status: 400 }));
    const sub = await subscribe('dl.large');
    const ids = Array.from({ length: 12 }, (_, i) => `large-${i}`);
    for (const id of ids)
      await publishBatch(gw.url, [
        { specversion: '1.0', id, source: '/dead', type: 'dl.large', partitionkey: 'dl.large', data: 'x'.repeat(900_000) },
      ]);
    await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 12, { what: '12 dead letters' });
    const page1 = await deadLetters(sub.id, '?limit=1000');
    expect(page1.deadLetters.length).toBeGreaterThan(1);
    expect(page1.deadLetters.length).toBeLessThan(12);
    expect(page1.nextAfter).toBe(page1.deadLetters[page1.deadLetters.length - 1].id);
    const page2 = await deadLetters(sub.id, `?limit=1000&after=${page1.nextAfter}`);
    expect(page2.nextAfter).toBeNull();
    expect(idsOf([...page1.deadLetters, ...page2.deadLetters])).toEqual(ids);
  });

  it('pages with limit and after, redelivers by id and then all with herald-attempt 1, and deletes one', async () => {
    receiver.setResponder((req) => ({ status: 400, body: `bad ${req.headers['ce-id']}` }));
    const sub = await subscribe('dl.manage');
    await publish('dl.manage', ['m1', 'm2', 'm3', 'm4']);
    await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 4, { what: '4 dead letters' });

    const page1 = await deadLetters(sub.id, '?limit=3');
    expect(idsOf(page1.deadLetters)).toEqual(['m1', 'm2', 'm3']);
    expect(page1.nextAfter).toBe(page1.deadLetters[2].id);
    const page2 = await deadLetters(sub.id, `?limit=3&after=${page1.nextAfter}`);
    expect(idsOf(page2.deadLetters)).toEqual(['m4']);
    expect(page2.nextAfter).toBeNull();
    // limit=0 is refused as by the other lists (was: an empty page whose nextAfter null said there were none).
    for (const query of ['?limit=0', '?limit=abc', '?limit=1001', '?after=-1']) {
      expect((await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters${query}`)).status).toBe(400);
    }
    const byEvent = Object.fromEntries([...page1.deadLetters, ...page2.deadLetters].map((d) => [d.event.id, d]));

    receiver.setResponder(() => ({ status: 204 }));
    await request(gw.url)
      .post(`/subscriptions/${sub.id}/dead-letters/redeliver`)
      .send({ ids: [byEvent.m2.id] })
      .expect(202);
    await waitFor(() => requestsFor(sub.id, 'm2').length === 2, { what: 'm2 redelivered' });
    await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 3, { what: 'm2 no longer dead' });
    expect(requestsFor(sub.id, 'm2')[1]!.headers).toMatchObject({ 'herald-attempt': '1', 'herald-redelivery': 'true' });
    // The same event to the same subscription: the same webhook-id, so a receiver that dedupes on it can tell.
    expect(requestsFor(sub.id, 'm2')[1]!.headers['webhook-id']).toBe(requestsFor(sub.id, 'm2')[0]!.headers['webhook-id']);
    expect(idsOf((await deadLetters(sub.id)).deadLetters)).toEqual(['m1', 'm3', 'm4']);

    await request(gw.url).delete(`/subscriptions/${sub.id}/dead-letters/${byEvent.m1.id}`).expect(204);
    await request(gw.url).delete(`/subscriptions/${sub.id}/dead-letters/${byEvent.m1.id}`).expect(404);
    await request(gw.url).delete(`/subscriptions/${sub.id}/dead-letters/not-a-number`).expect(404);
    expect(idsOf((await deadLetters(sub.id)).deadLetters)).toEqual(['m3', 'm4']);
    expect((await getSub(sub.id)).stats.deadLetters).toBe(2);

    await request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).expect(202);
    await waitFor(() => requestsFor(sub.id, 'm3').length === 2 && requestsFor(sub.id, 'm4').length === 2, {
      what: 'm3 and m4 redelivered',
    });
    await waitFor(async () => (await getSub(sub.id)).stats.deadLetters === 0, { what: 'no dead letters' });
    for (const id of ['m3', 'm4'])
      expect(requestsFor(sub.id, id)[1]!.headers).toMatchObject({ 'herald-attempt': '1', 'herald-redelivery': 'true' });
    expect(requestsFor(sub.id, 'm1')).toHaveLength(1);
    expect((await deadLetters(sub.id)).deadLetters).toEqual([]);
  });

  it('does not touch the dead letters of another subscription', async () => {
    receiver.setResponder(() => ({ status: 404 }));
    const a = await subscribe('dl.iso');
    const bRes = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, filters: [{ exact: { type: 'dl.iso' } }] })
      .expect(201);
    try {
      await publish('dl.iso', ['i1']);
      await waitFor(async () => (await getSub(a.id)).stats.deadLetters === 1 && (await getSub(bRes.body.id)).stats.deadLetters === 1);
      const [dA] = (await deadLetters(a.id)).deadLetters;
      await request(gw.url).delete(`/subscriptions/${bRes.body.id}/dead-letters/${dA.id}`).expect(404);
      expect((await deadLetters(a.id)).deadLetters).toHaveLength(1);
    } finally {
      await request(gw.url).delete(`/subscriptions/${bRes.body.id}`).expect(204);
    }
  });
});
