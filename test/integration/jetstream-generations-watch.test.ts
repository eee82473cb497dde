/**
 * JetStream engine: the watch of seek generations (`<prefix>_dgen`) ending with an error (nats.js cannot make
 * its consumer again: the bucket's stream deleted behind Herald, a cluster that does not answer) must not
 * end the node. Was: an unhandled rejection, and the gateway process exited (a storage probe, h44b).
 */
import { connect } from 'nats';
import { useChildGateways } from '../helpers/gateway';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';

describeWithNats('jetstream: the seek generations watch failing', () => {
  let cluster: NatsCluster;
  const spawn = useChildGateways();

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
  }, 120_000);

  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('keeps the node running (logged, watched again) when the generations bucket is deleted behind it', async () => {
    const prefix = uniquePrefix('genwatch');
    const gw = await spawn({
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: cluster.serversEnv,
      HERALD_NATS_REPLICAS: '1',
      HERALD_NATS_PREFIX: prefix,
      HERALD_PARTITIONS: '1',
    });
    const created = await fetch(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: 'http://127.0.0.1:9/hook' }),
    });
    expect(created.status).toBe(201);

    const nc = await connect({ servers: cluster.urls });
    try {
      await (await nc.jetstreamManager()).streams.delete(`KV_${prefix}_dgen`);
    } finally {
      await nc.close();
    }
    // nats.js notices the lost consumer by its missed heartbeats (seconds), then fails to make it again.
    const deadline = Date.now() + 60_000;
    const ended = () => gw.child.exitCode !== null || gw.child.signalCode !== null;
    while (Date.now() < deadline && !ended() && !/the watch of seek generations failed/.test(gw.output()))
      await new Promise((resolve) => setTimeout(resolve, 250));
    await new Promise((resolve) => setTimeout(resolve, 1000));

    expect({ exitCode: gw.child.exitCode, signal: gw.child.signalCode }).toEqual({ exitCode: null, signal: null });
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    expect(gw.output()).toMatch(/the watch of seek generations failed/);
  }, 120_000);
});
