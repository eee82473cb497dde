import http from 'node:http';
import request from 'supertest';
import {
  getSubscription,
  publishOfType,
  requestsForSubscription,
  totalLag,
  useDeliveryFixture,
  useLastSubscriptionCleanup,
  waitForLagZero,
} from '../helpers/delivery';
import { postBinary, startTestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type ReceivedRequest, type Reply } from '../helpers/receiver';

/** What each answer of a receiver leads to: retries, Retry-After, 410 Gone, timeouts and connection errors. */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });
const createSubscription = useLastSubscriptionCleanup(gw);

/** A subscription to events of one type, with a fast retry policy unless told otherwise. */
const subscribe = (type: string, delivery: Record<string, unknown> = {}) =>
  createSubscription({
    sink: receiver.url,
    filters: [{ exact: { type } }],
    delivery: { retry: { initialDelayMs: 10, maxDelayMs: 50 }, ...delivery },
  });
const publish = (type: string, ids: string[]) => publishOfType(gw.url, '/outcomes', type, ids);
const getSub = (id: string) => getSubscription(gw.url, id);
const lagOf = totalLag;
const waitLagZero = (id: string) => waitForLagZero(gw.url, id);
const deadLetters = async (id: string) => (await request(gw.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters;
const requestsFor = (sub: string, ceId?: string) => requestsForSubscription(receiver, sub, ceId);

/** A responder that answers the n-th request for each event id from a script (the last entry repeats). */
function scripted(script: Record<string, Reply[]>) {
  const counts = new Map<string, number>();
  return (req: ReceivedRequest): Reply => {
    const id = req.headers['ce-id'] as string;
    const n = counts.get(id) ?? 0;
    counts.set(id, n + 1);
    const replies = script[id] ?? [{ status: 204 }];
    return replies[Math.min(n, replies.length - 1)]!;
  };
}

describe('retry', () => {
  it('retries 500, 503, 408, 429, 409 and 425, then succeeds: attempts count up under one webhook-id, each with a fresh delivery id', async () => {
    const statuses = [500, 503, 408, 429, 409, 425];
    receiver.setResponder(scripted({ r1: [...statuses.map((status) => ({ status, body: `no (${status})` })), { status: 200 }] }));
    const sub = await subscribe('out.retry');
    const [stored] = await publish('out.retry', ['r1']);
    await waitLagZero(sub.id);
    const attempts = requestsFor(sub.id, 'r1');
    expect(attempts.map((q) => q.headers['herald-attempt'])).toEqual(['1', '2', '3', '4', '5', '6', '7']);
    expect(new Set(attempts.map((q) => q.headers['webhook-id'])).size).toBe(1);
    expect(new Set(attempts.map((q) => q.headers['herald-delivery-id'])).size).toBe(7);
    expect(new Set(attempts.map((q) => q.headers['herald-ack-url'])).size).toBe(7);
    expect(attempts.every((q) => q.headers['herald-offset'] === String(stored!.offset))).toBe(true);
    expect((await getSub(sub.id)).stats.deadLetters).toBe(0);
  });

  it('obeys Retry-After in seconds on 429', async () => {
    receiver.setResponder(scripted({ ra1: [{ status: 429, headers: { 'retry-after': '1' } }, { status: 204 }] }));
    const sub = await subscribe('out.retry-after', { retry: { initialDelayMs: 10, maxDelayMs: 5000 } });
    await publish('out.retry-after', ['ra1']);
    await waitLagZero(sub.id);
    const [first, second] = requestsFor(sub.id, 'ra1');
    expect(second!.headers['herald-attempt']).toBe('2');
    // Without Retry-After the next attempt would come after ~10 ms.
    expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(900);
  });

  it('obeys Retry-After as an HTTP date on 503', async () => {
    let n = 0;
    // The date is made when the request arrives: it names a time 1-2 s ahead (HTTP dates have whole seconds).
    receiver.setResponder(() =>
      n++ === 0 ? { status: 503, headers: { 'retry-after': new Date(Date.now() + 2000).toUTCString() } } : { status: 204 },
    );
    const sub = await subscribe('out.retry-date', { retry: { initialDelayMs: 10, maxDelayMs: 5000 } });
    await publish('out.retry-date', ['rd1']);
    await waitLagZero(sub.id);
    const [first, second] = requestsFor(sub.id, 'rd1');
    expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(900);
  });

  it('obeys a Retry-After longer than maxDelayMs (http-webhook §2.2: the sender MUST observe it; was: capped)', async () => {
    receiver.setResponder(scripted({ rc1: [{ status: 429, headers: { 'retry-after': '2' } }, { status: 204 }] }));
    const sub = await subscribe('out.retry-cap', { retry: { initialDelayMs: 10, maxDelayMs: 50 } });
    await publish('out.retry-cap', ['rc1']);
    await waitLagZero(sub.id);
    const [first, second] = requestsFor(sub.id, 'rc1');
    expect(second!.headers['herald-attempt']).toBe('2');
    expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(1900);
  });

  it('sends no request of the subscription until the Retry-After of a 429 has passed, whichever event it was for (spec probe: six went within 1.6 s)', async () => {
    receiver.setResponder(scripted({ hold1: [{ status: 429, headers: { 'retry-after': '2' } }, { status: 204 }] }));
    const sub = await subscribe('out.retry-hold', { ordering: 'none', maxInFlight: 8 });
    await publish('out.retry-hold', ['hold1']);
    const refused = await waitFor(async () => requestsFor(sub.id, 'hold1')[0], { what: 'the first request' });
    const others = ['hold2', 'hold3', 'hold4', 'hold5', 'hold6'];
    await publish('out.retry-hold', others);
    await new Promise((r) => setTimeout(r, 300));
    expect((await getSub(sub.id)).stats.throttled).toBe(true);
    await waitLagZero(sub.id);
    const after = requestsFor(sub.id).filter((q) => q !== refused);
    expect(after.map((q) => q.headers['ce-id']).sort()).toEqual(['hold1', ...others].sort());
    for (const q of after) expect(q.receivedAt - refused.receivedAt).toBeGreaterThanOrEqual(1900);
    expect((await getSub(sub.id)).stats.throttled).toBe(false);
  });
});

describe('410 Gone', () => {
  it('pauses the subscription with reason gone, keeps the backlog, and delivers all of it on resume', async () => {
    receiver.setResponder(scripted({ g1: [{ status: 410, body: 'unsubscribed' }, { status: 204 }] }));
    const sub = await subscribe('out.gone');
    const stored = await publish('out.gone', ['g1']);
    const paused = await waitFor(
      async () => {
        const got = await getSub(sub.id);
        return got.state === 'paused' ? got : undefined;
      },
      { what: 'paused' },
    );
    expect(paused.stateReason).toBe('gone');
    stored.push(...(await publish('out.gone', ['g2', 'g3'])));
    await waitFor(async () => lagOf(await getSub(sub.id)) === 3, { what: 'backlog of 3' });
    await new Promise((r) => setTimeout(r, 200));
    expect(requestsFor(sub.id).map((q) => q.headers['ce-id'])).toEqual(['g1']);

    const resumed = await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
    expect(resumed.body).toMatchObject({ state: 'active', stateReason: null });
    await waitLagZero(sub.id);
    const got = requestsFor(sub.id);
    expect(got.map((q) => [q.headers['ce-id'], q.headers['herald-attempt']])).toEqual([
      ['g1', '1'],
      ['g1', '2'],
      ['g2', '1'],
      ['g3', '1'],
    ]);
    expect(got.map((q) => q.headers['herald-offset'])).toEqual([stored[0], ...stored].map((s) => String(s!.offset)));
    expect(await deadLetters(sub.id)).toEqual([]);
  });
});

describe('410 Gone on the last allowed attempt', () => {
  it('sends the event once more on resume, not dead-lettered unsent (README: resume continues where it stopped)', async () => {
    receiver.setResponder(scripted({ gl1: [{ status: 410 }, { status: 204 }] }));
    const sub = await subscribe('out.gone-last', { retry: { maxAttempts: 1 } });
    await publish('out.gone-last', ['gl1']);
    await waitFor(async () => ((await getSub(sub.id)).state === 'paused' ? true : undefined), { what: 'paused' });
    await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
    await waitLagZero(sub.id);
    expect(requestsFor(sub.id, 'gl1').map((q) => q.headers['herald-attempt'])).toEqual(['1', '2']);
    expect(await deadLetters(sub.id)).toEqual([]);
  });
});

describe('410 Gone, ordering none', () => {
  it('sends the event that got the 410 first on resume, before any event stored while paused', async () => {
    receiver.setResponder(scripted({ n1: [{ status: 410 }, { status: 204 }] }));
    const sub = await subscribe('out.gone-none', { ordering: 'none', maxInFlight: 4 });
    await publish('out.gone-none', ['n1']);
    await waitFor(async () => (await getSub(sub.id)).state === 'paused', { what: 'paused' });
    const later = Array.from({ length: 10 }, (_, i) => `n${i + 2}`);
    await publish('out.gone-none', later);
    await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
    await waitLagZero(sub.id);
    const sent = requestsFor(sub.id).map((q) => `${q.headers['ce-id']}#${q.headers['herald-attempt']}`);
    // Was: 8 to 12 of the later events went before it (its retry waited for a timer, the pump did not).
    expect(sent.slice(0, 2)).toEqual(['n1#1', 'n1#2']);
    expect(sent.slice(2).sort()).toEqual(later.map((id) => `${id}#1`).sort());
  });
});

describe('timeouts and connection errors', () => {
  it('retries a request that gets no answer within timeoutMs, and dead-letters it with lastStatus null once attempts run out', async () => {
    receiver.setResponder(
      scripted({
        slow: [{ status: 204, delayMs: 1500 }],
        'slow-once': [{ status: 204, delayMs: 1500 }, { status: 204 }],
        dropped: [{ status: 204, destroy: true }],
      }),
    );
    const sub = await subscribe('out.timeout', { timeoutMs: 300, retry: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 50 } });
    const stored = await publish('out.timeout', ['slow', 'slow-once', 'dropped']);
    await waitLagZero(sub.id);

    expect(requestsFor(sub.id, 'slow').map((q) => q.headers['herald-attempt'])).toEqual(['1', '2']);
    expect(requestsFor(sub.id, 'slow-once').map((q) => q.headers['herald-attempt'])).toEqual(['1', '2']);
    expect(requestsFor(sub.id, 'dropped').map((q) => q.headers['herald-attempt'])).toEqual(['1', '2']);
    const dead = await deadLetters(sub.id);
    expect(dead.map((d: { event: { id: string } }) => d.event.id)).toEqual(['slow', 'dropped']);
    for (const d of dead) {
      const s = stored.find((x) => x.id === d.event.id)!;
      expect(d).toMatchObject({ partition: s.partition, offset: s.offset, attempts: 2, lastStatus: null, reason: 'max_attempts' });
      expect(typeof d.lastError).toBe('string');
      expect(d.lastError.length).toBeGreaterThan(0);
    }
  });
});

describe('Retry-After on statuses other than 429 and 503', () => {
  it('is ignored: a 500 with Retry-After: 30 is retried on the subscription backoff', async () => {
    const receiver = await startReceiver((_req, i) => (i === 0 ? { status: 500, headers: { 'retry-after': '30' } } : { status: 204 }));
    const gw = await startTestGateway();
    try {
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: receiver.url, delivery: { retry: { initialDelayMs: 20, jitter: 0 } } })
        .expect(201);
      await request(gw.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': 'ra-500', 'ce-source': '/ra', 'ce-type': 't', 'content-type': 'application/json' })
        .send('{}')
        .expect(202);
      // Obeying the header would hold the retry for 30 s, far past this wait.
      await waitFor(() => receiver.requests.length >= 2, { timeoutMs: 10_000, what: 'the retry' });
      expect(receiver.requests[1]!.headers['herald-attempt']).toBe('2');
    } finally {
      await gw.close();
      await receiver.close();
    }
  });
});

describe('an answer with a huge body', () => {
  it('is taken by its status after 1 MiB and its connection closed, not read to its end (edge probe: 100 MB answers took a core)', async () => {
    let written = 0;
    let requests = 0;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    // 200 with 64 MiB of body, written as fast as the gateway reads it; counts what went before the connection closed.
    const sink = http.createServer((req, res) => {
      requests++;
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        const pump = () => {
          while (written < 64 * 1024 * 1024 && !res.destroyed) {
            written += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end();
        };
        pump();
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const gw = await startTestGateway();
    try {
      const { port } = sink.address() as { port: number };
      const sub = await request(gw.url)
        .post('/subscriptions')
        .send({ sink: `http://127.0.0.1:${port}/`, delivery: { timeoutMs: 30_000 } })
        .expect(201);
      expect((await postBinary(gw.url, { source: '/huge', id: 'huge-answer' })).status).toBe(202);
      await waitForLagZero(gw.url, sub.body.id);
      expect(requests).toBe(1); // delivered by its 200, not retried
      // The socket buffers hold a few MiB besides what was read.
      expect(written).toBeLessThan(16 * 1024 * 1024);
    } finally {
      await gw.close();
      sink.closeAllConnections();
      await new Promise((resolve) => sink.close(resolve));
    }
  });
});
