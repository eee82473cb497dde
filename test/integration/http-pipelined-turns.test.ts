import net from 'node:net';
import request from 'supertest';
import { useDeliveryFixture, useLastSubscriptionCleanup } from '../helpers/delivery';
import { waitFor } from '../helpers/receiver';

/**
 * Requests pipelined on one connection take turns (RFC 9112 §9.3.2): a request other than a publish
 * starts once every request before it was answered, so what the client sent first takes effect first,
 * and a client that never reads its answers holds the next request, not the gateway's memory.
 */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });
const createSubscription = useLastSubscriptionCleanup(gw);

const SOURCE = '/pipelined-turns';

function publish(id: string, body: string, partitionKey = 'k'): string {
  return (
    `POST /events HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: ${SOURCE}\r\nce-type: t\r\n` +
    `ce-partitionkey: ${partitionKey}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

const get = (target: string) => `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`;

function post(path: string, body: string): string {
  return `POST ${path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** Writes `text` at once, half-closes, and resolves with everything answered until the gateway closes. */
function exchange(text: string): Promise<string> {
  const { hostname, port } = new URL(gw.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.end(text));
    let got = '';
    socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy());
  });
}

/** Each answer's status line and JSON body, in order (bodies here are small JSON documents). */
function answers(text: string): { status: number; body: string }[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3})[^]*?\r\n\r\n(\{[^\r]*?\}(?=HTTP\/1\.1 |$))/g)].map((m) => ({
    status: Number(m[1]),
    body: m[2]!,
  }));
}

describe('requests pipelined on one connection', () => {
  it('a read behind a publish finds the published event (HTTP probe: 404, 10 of 10)', async () => {
    for (let i = 0; i < 5; i++) {
      const id = `read-after-${i}`;
      const text = await exchange(publish(id, '{"n":1}') + get(`/events?source=${encodeURIComponent(SOURCE)}&id=${id}`));
      const [stored, read] = answers(text);
      expect(stored?.status).toBe(202);
      expect(read?.status).toBe(200);
      expect(JSON.parse(read!.body)).toMatchObject({ event: { id, source: SOURCE } });
    }
  });

  it('an ack behind a reject of the same delivery is answered as after the reject: 409, the event dead-lettered', async () => {
    const sub = await createSubscription({
      sink: receiver.url,
      filters: [{ exact: { type: 'turns.reject' } }],
      delivery: { ackDeadlineMs: 30_000 },
    });
    receiver.setResponder(() => ({ status: 202 }));
    await request(gw.url)
      .post('/events')
      .set({ 'ce-specversion': '1.0', 'ce-id': 'rejected-1', 'ce-source': SOURCE, 'ce-type': 'turns.reject' })
      .set('content-type', 'application/json')
      .send('{}')
      .expect(202);
    const delivered = await waitFor(() => receiver.requests.find((q) => q.headers['ce-id'] === 'rejected-1'), { what: 'the delivery' });
    const path = new URL(delivered.headers['herald-ack-url'] as string).pathname.replace(/\/ack$/, '');
    const text = await exchange(
      post(`${path}/reject`, '{"reason":"bad"}') + `POST ${path}/ack HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n`,
    );
    expect(answers(text).map((a) => a.status)).toEqual([200, 409]);
    const dead = await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters`).expect(200);
    expect(dead.body.deadLetters).toEqual([expect.objectContaining({ reason: 'receiver_rejected' })]);
  });

  it('page reads never read by their client are served one at a time: a publish behind them waits (probe: 5 GB)', async () => {
    // 10 events of 900 KB in one partition: each page of them is about 9 MB, more than the kernel's buffers take.
    const big = JSON.stringify({ pad: 'x'.repeat(900_000) });
    let partition = -1;
    for (let i = 0; i < 10; i++) {
      const res = await request(gw.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': `big-${i}`, 'ce-source': SOURCE, 'ce-type': 't', 'ce-partitionkey': 'big' })
        .set('content-type', 'application/json')
        .send(big)
        .expect(202);
      partition = res.body.results[0].partition;
    }
    const { hostname, port } = new URL(gw.url);
    const unread = async (text: string) => {
      const socket = net.connect(Number(port), hostname);
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.pause(); // reads nothing
      socket.write(text);
      return socket;
    };
    const page = get(`/partitions/${partition}/events?limit=1000`);
    const pages = 40;
    const socket = await unread(page.repeat(pages) + publish('behind-pages', '{}', 'other'));
    const one = await unread(page + publish('behind-one-page', '{}', 'other'));
    const stored = (id: string) => request(gw.url).get('/events').query({ source: SOURCE, id });
    // Served at once, the publish behind the pages was stored within milliseconds (each page built meanwhile).
    await new Promise((r) => setTimeout(r, 1500));
    expect((await stored('behind-pages')).status).toBe(404);
    expect((await stored('behind-one-page')).status).toBe(404);
    // Its connection closing, a request waiting for its turn is dropped: never started, nothing stored.
    one.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect((await stored('behind-one-page')).status).toBe(404);

    // Read on: every page is answered, in order, then the publish.
    let got = 0;
    let text = '';
    socket.on('data', (c: Buffer) => {
      got += c.length;
      text = (text + c.toString('latin1')).slice(-4096);
    });
    socket.resume();
    await waitFor(async () => ((await stored('behind-pages')).status === 200 ? true : undefined), {
      what: 'the publish behind the pages',
      timeoutMs: 30_000,
    });
    await waitFor(() => (text.includes('"id":"behind-pages"') ? true : undefined), { what: 'its answer', timeoutMs: 30_000 });
    expect(got).toBeGreaterThan(pages * 9_000_000);
    socket.destroy();
  }, 60_000);
  it('requests waiting behind one refused with Connection: close are never started (nothing stored, nothing deleted)', async () => {
    const sub = await createSubscription({ sink: receiver.url, filters: [{ exact: { type: 'turns.none' } }] });
    const text = await exchange(
      publish('before-refusal', '{}') +
        'GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n' +
        `DELETE /subscriptions/${sub.id} HTTP/1.1\r\nHost: x\r\n\r\n` +
        publish('after-refusal', '{}'),
    );
    expect(answers(text).map((a) => a.status)).toEqual([202, 400]);
    const after = await request(gw.url).get('/events').query({ source: SOURCE, id: 'after-refusal' });
    expect(after.status).toBe(404);
    await request(gw.url).get(`/subscriptions/${sub.id}`).expect(200);
  });

  it('a connection with more than 256 requests waiting for their turn is cut; 200 are all answered', async () => {
    const text = await exchange(get('/healthz').repeat(200));
    expect([...text.matchAll(/HTTP\/1\.1 200 /g)]).toHaveLength(200);
    const cut = await exchange(get('/healthz').repeat(300));
    expect([...cut.matchAll(/HTTP\/1\.1 200 /g)].length).toBeLessThan(300);
  });
  it('publishes being stored when more than 256 requests wait behind them are answered before the connection is cut', async () => {
    // Was: the 257th request waiting destroyed the connection at once, and the publishes before the read,
    // stored meanwhile, were never answered (JetStream probe: 20 of 20 stored, none answered).
    const ids = Array.from({ length: 20 }, (_, i) => `before-waiting-${i}`);
    const text = await exchange(
      ids.map((id) => publish(id, '{"n":1}')).join('') +
        get('/healthz') +
        Array.from({ length: 300 }, (_, i) => publish(`behind-waiting-${i}`, '{"n":1}')).join(''),
    );
    const stored = [];
    for (const id of ids) {
      const found = await request(gw.url).get('/events').query({ source: SOURCE, id });
      if (found.status === 200) stored.push(id);
    }
    expect(stored).toEqual(ids);
    expect(answers(text).map((a) => a.status)).toEqual(ids.map(() => 202));
    const behind = await request(gw.url).get('/events').query({ source: SOURCE, id: 'behind-waiting-0' });
    expect(behind.status).toBe(404);
  });
  it('a publish before a live tail with more than 32 requests behind it is answered before the connection is cut', async () => {
    // Was: the 33rd request dropped behind the tail destroyed the connection at once, and the publish, stored
    // meanwhile, was never answered (HTTP re-probe: 10 of 10).
    for (let i = 0; i < 3; i++) {
      const id = `before-tail-${i}`;
      const text = await exchange(publish(id, '{"n":1}') + get('/events/stream') + get('/healthz').repeat(40));
      expect(text).toMatch(/^HTTP\/1\.1 202/);
      expect(text).toContain(`"id":"${id}"`);
    }
  });
});
