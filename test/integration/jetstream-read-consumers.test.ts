import { connect } from 'nats';
import pino from 'pino';
import request from 'supertest';
import { loadConfig } from '../../src/config';
import { deliveryNames } from '../../src/jetstream/delivery/names';
import { startJetStreamGateway } from '../../src/jetstream-gateway';
import { describeWithNats, uniquePrefix } from '../helpers/nats-cluster';
import { useJetStreamCluster } from '../helpers/gateway';

/**
 * A GET of the attempt log or of the dead letters reads through an ephemeral (ordered) consumer: it is deleted once
 * read, not left on the stream for the client's default 5 minutes (a churn probe: one consumer per GET).
 */
describeWithNats('reads of the attempt log and the dead letters leave no consumer behind', () => {
  const fixture = useJetStreamCluster({ size: 1 });

  it('50 GETs of each, then the streams hold no ephemeral consumer', async () => {
    const prefix = uniquePrefix('reads');
    const config = loadConfig({
      HERALD_PORT: '0',
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: fixture.cluster.serversEnv,
      HERALD_NATS_REPLICAS: '1',
      HERALD_NATS_PREFIX: prefix,
      HERALD_PARTITIONS: '1',
      HERALD_SINK_ALLOW_PRIVATE: 'true',
      HERALD_LOG_LEVEL: 'silent',
    });
    const gw = fixture.keep(await startJetStreamGateway(config, { log: pino({ level: 'silent' }) }));
    // A sink that refuses: every event is one attempt and one dead letter.
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: 'http://127.0.0.1:9/x', startAt: 'earliest', delivery: { retry: { maxAttempts: 1 } } })
      .expect(201);
    const id = sub.body.id as string;
    await request(gw.url)
      .post('/events')
      .set('content-type', 'application/cloudevents-batch+json')
      .send([1, 2, 3].map((n) => ({ specversion: '1.0', id: `r${n}`, source: '/reads', type: 't' })))
      .expect((res) => expect(res.status).toBeLessThan(300));
    const names = deliveryNames(prefix);
    const nc = await connect({ servers: fixture.cluster.urls });
    try {
      const jsm = await nc.jetstreamManager();
      const deadline = Date.now() + 30_000;
      while ((await request(gw.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters.length < 3) {
        if (Date.now() > deadline) throw new Error('no dead letters within 30 s');
        await new Promise((r) => setTimeout(r, 200));
      }
      for (let i = 0; i < 50; i++) {
        await request(gw.url).get(`/subscriptions/${id}/attempts?limit=5`).expect(200);
        await request(gw.url).get(`/subscriptions/${id}/dead-letters?limit=5`).expect(200);
      }
      const count = async (stream: string) => (await jsm.consumers.list(stream).next()).length;
      const left = async () => (await count(names.attemptsStream)) + (await count(names.deadStream));
      // The deletes are not awaited by the reads: polled, within 5 s (well inside an abandoned one's 10 s threshold).
      const by = Date.now() + 5_000;
      while ((await left()) > 0 && Date.now() < by) await new Promise((r) => setTimeout(r, 100));
      // Was: 50 or more on each, for 5 minutes.
      expect(await count(names.attemptsStream)).toBe(0);
      expect(await count(names.deadStream)).toBe(0);
    } finally {
      await nc.close();
    }
  }, 120_000);
});
