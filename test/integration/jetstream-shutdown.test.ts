/**
 * JetStream engine: a node shutting down (SIGTERM) pulls nothing more from the moment it begins,
 * while its HTTP server still waits for open requests (a live tail, up to 10 s): a delivery started
 * then would name an ack URL that no longer takes callbacks, and its event would be sent again once
 * its lease ran out.
 */
import request from 'supertest';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, uniquePrefix, waitUntil } from '../helpers/nats-cluster';
import { startReceiver, type Receiver } from '../helpers/receiver';

jest.setTimeout(90_000);

describeWithNats('jetstream: a node that shuts down', () => {
  const js = useJetStreamCluster({ size: 1 });
  let receiver: Receiver | undefined;
  afterAll(() => receiver?.close());

  it('pulls nothing more while its HTTP server waits for an open live tail', async () => {
    const env = {
      HERALD_NATS_REPLICAS: '1',
      HERALD_PARTITIONS: '1',
      HERALD_NATS_PREFIX: uniquePrefix('shutdown'),
      HERALD_SHUTDOWN_TIMEOUT_MS: '8000', // the HTTP server waits for open requests up to 4 s
    };
    const a = await js.start(env);
    const b = await js.start(env);
    receiver = await startReceiver();
    const r = receiver;
    await request(a.url)
      .post('/subscriptions')
      .send({ sink: r.url, delivery: { ordering: 'none', maxInFlight: 16 } })
      .expect(201);
    await new Promise((res) => setTimeout(res, 500)); // both nodes pull
    const tail = new AbortController();
    const open = await fetch(`${a.url}/events/stream?partition=0`, { signal: tail.signal });
    expect(open.status).toBe(200);
    const closing = a.close();
    await new Promise((res) => setTimeout(res, 500)); // a's HTTP server now waits for the tail
    const ids = Array.from({ length: 40 }, (_, i) => `s${i}`);
    for (const id of ids)
      await request(b.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/shutdown', 'ce-type': 'com.example.t' })
        .expect(202);
    const ceIds = () => new Set(r.requests.map((q) => (JSON.parse(q.body.toString('utf8')) as { id: string }).id));
    await waitUntil('every event delivered', () => ids.every((id) => ceIds().has(id)), 30_000, 50);
    const byA = r.requests.filter((q) => String(q.headers['herald-ack-url'] ?? '').startsWith(a.url));
    expect(r.requests.every((q) => q.headers['herald-ack-url'] !== undefined)).toBe(true);
    // Was: a kept pulling until its HTTP server closed and delivered about half of them.
    expect(byA.map((q) => q.headers['herald-offset'])).toEqual([]);
    tail.abort();
    await closing;
  });
});
