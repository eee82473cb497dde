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
    await (await js.start(env)).close(); // the deployment exists
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
    await cluster.restart(1);
    await cluster.restart(2);
    const node = await starting;
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
