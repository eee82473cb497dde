import pino from 'pino';
import request from 'supertest';
import { loadConfig } from '../../src/config';
import { startJetStreamGateway } from '../../src/jetstream-gateway';
import { describeWithNats, uniquePrefix } from '../helpers/nats-cluster';
import { useJetStreamCluster } from '../helpers/gateway';

/**
 * Every DELETE that deletes a subscription says so in one `info` line (README, "Operations": `subscription deleted`),
 * on the JetStream engine too, where the node's own watch of the subscriptions bucket often hears the delete before
 * the DELETE's compare-and-set delete answers (a churn probe: 88 lines for 333 DELETEs).
 */
describeWithNats('the JetStream engine logs each subscription it deletes', () => {
  const fixture = useJetStreamCluster({ size: 1 });

  it('one `subscription deleted` line per DELETE', async () => {
    const lines: { msg?: string; subscription?: string }[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as { msg?: string }) });
    const config = loadConfig({
      HERALD_PORT: '0',
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: fixture.cluster.serversEnv,
      HERALD_NATS_REPLICAS: '1',
      HERALD_NATS_PREFIX: uniquePrefix('dellog'),
      HERALD_PARTITIONS: '2',
      HERALD_SINK_ALLOW_PRIVATE: 'true',
    });
    const gw = fixture.keep(await startJetStreamGateway(config, { log }));
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const res = await request(gw.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/x' }).expect(201);
      ids.push(res.body.id as string);
    }
    for (const id of ids) await request(gw.url).delete(`/subscriptions/${id}`).expect(204);
    for (const id of ids) await request(gw.url).delete(`/subscriptions/${id}`).expect(404);
    const said = lines.filter((l) => l.msg === 'subscription deleted').map((l) => l.subscription);
    // Was: about one DELETE in four logged it.
    expect(said.sort()).toEqual([...ids].sort());
  }, 120_000);
});
