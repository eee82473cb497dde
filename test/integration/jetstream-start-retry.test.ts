/**
 * JetStream engine: a node started while the cluster is reachable but cannot answer yet (two of three
 * servers down, so no JetStream leader) keeps asking for a while instead of exiting on the first
 * timeout; a supervisor restarting every node at once after an outage is the case.
 */
import request from 'supertest';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, freePort, uniquePrefix, waitUntil } from '../helpers/nats-cluster';

describeWithNats('jetstream: a start while the cluster has no leader', () => {
  const js = useJetStreamCluster({ size: 3 });

  it('waits for the servers to come back and starts, rather than giving up on the first timeout', async () => {
    const env = { HERALD_NATS_REPLICAS: '3', HERALD_PARTITIONS: '2', HERALD_NATS_PREFIX: uniquePrefix('startretry') };
    const cluster = js.cluster;
    // The deployment exists, with a subscription.
    const first = await js.start(env);
    await request(first.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/never' }).expect(201);
    await first.close();
    await cluster.kill(1);
    await cluster.kill(2);
    const port = await freePort();
    const starting = js.start({ ...env, HERALD_PORT: String(port) }, cluster.urls[0]);
    let settled = false;
    starting.then(
      () => (settled = true),
      () => (settled = true),
    );
    // Longer than one cluster call's timeout: was a StartupError "… TIMEOUT" (exit 2) before they returned.
    await new Promise((resolve) => setTimeout(resolve, 8000));
    expect(settled).toBe(false); // still asking, neither started nor given up
    // Meanwhile it listens: alive (a liveness probe must not restart it in a loop), not ready, and every
    // other request a 503 to retry (was: connection refused, /healthz too, for up to a minute).
    const url = `http://127.0.0.1:${port}`;
    expect((await request(url).get('/healthz')).body).toEqual({ status: 'ok' });
    const ready = await request(url).get('/readyz');
    expect([ready.status, ready.body.status, ready.body.checks.log]).toEqual([503, 'unavailable', expect.stringMatching(/^starting: /)]);
    const publish = await request(url)
      .post('/events')
      .set({ 'ce-specversion': '1.0', 'ce-id': 'early', 'ce-source': '/retry', 'ce-type': 't', 'content-type': 'application/json' })
      .send('{}');
    expect([publish.status, publish.headers['retry-after'], publish.body.code]).toEqual([503, '1', 'unavailable']);
    expect((await request(url).get('/subscriptions')).status).toBe(503);
    expect((await request(url).get('/openapi.json')).status).toBe(200);
    // From here until it has started, the list is a 503 or the whole list: never a 200 without the subscription
    // (probe: a start served the API before its subscriptions were loaded, an empty list and ready).
    const listed: string[] = [];
    const watching = (async () => {
      while (!settled) {
        const res = await request(url).get('/subscriptions');
        listed.push(res.status === 200 ? `200 with ${res.body.subscriptions.length}` : String(res.status));
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    await cluster.restart(1);
    await cluster.restart(2);
    const node = await starting;
    await watching;
    expect(listed.filter((l) => l !== '503' && l !== '200 with 1')).toEqual([]);
    // Started; writable once the partition streams have leaders again (503 with Retry-After until then).
    await waitUntil(
      'an event accepted',
      async () =>
        (
          await request(node.url)
            .post('/events')
            .set({ 'ce-specversion': '1.0', 'ce-id': 'after', 'ce-source': '/retry', 'ce-type': 't', 'content-type': 'application/json' })
            .send('{}')
        ).status === 202,
      30_000,
      250,
    );
  }, 90_000);
});
