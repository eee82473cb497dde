import { connect, type NatsConnection } from 'nats';
import request from 'supertest';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { publishOfType } from '../helpers/delivery';
import { startJetStreamTestGateway } from '../helpers/gateway';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';

/**
 * Auto-disable on the JetStream engine with two Herald nodes failing together: the pause ends the
 * window on every node. A node that had not yet heard the pause kept opening a new window with the
 * failures it still got, and that window, left in `<prefix>_dpos`, paused the subscription again at
 * the first failure after a resume (hostile probe: 2 of 3 resumes paused again within 150 ms, limit 2 s).
 */

const LIMIT_MS = 1500;
const ROUNDS = 3;
const WAIT = { timeoutMs: 30_000, intervalMs: 25 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeWithNats('auto-disable on the jetstream engine with two nodes failing', () => {
  let cluster: NatsCluster;
  let a: JetStreamGateway;
  let b: JetStreamGateway;
  let receiver: Receiver;
  let nc: NatsConnection;
  const prefix = uniquePrefix('fail2');
  const env = { HERALD_PARTITIONS: '1', HERALD_NATS_PREFIX: prefix, HERALD_NATS_REPLICAS: '1' };

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    a = await startJetStreamTestGateway(cluster.serversEnv, env);
    b = await startJetStreamTestGateway(cluster.serversEnv, env);
    receiver = await startReceiver(() => ({ status: 500 }));
    nc = await connect({ servers: cluster.urls });
  }, 120_000);

  afterAll(async () => {
    await nc?.close();
    await receiver?.close();
    await a?.close();
    await b?.close();
    await cluster?.stop();
  }, 60_000);

  const state = async (id: string) => (await request(b.url).get(`/subscriptions/${id}`).expect(200)).body.state as string;
  const windowOf = async (id: string) => {
    const kv = await nc.jetstream().views.kv(`${prefix}_dpos`);
    const entry = await kv.get(`${id}.failing`);
    return entry && entry.operation === 'PUT' ? entry.string() : undefined;
  };

  it('leaves no window behind a pause for failing: after resume the next one starts with the next failure', async () => {
    const sub = (
      await request(a.url)
        .post('/subscriptions')
        .send({
          sink: receiver.url,
          filters: [{ exact: { type: 'fail2.t' } }],
          delivery: {
            ordering: 'none',
            maxInFlight: 64,
            disableAfterFailingMs: LIMIT_MS,
            retry: { maxAttempts: 1000, initialDelayMs: 0, maxDelayMs: 0 },
          },
        })
        .expect(201)
    ).body as { id: string };
    await publishOfType(
      a.url,
      '/fail2',
      'fail2.t',
      Array.from({ length: 64 }, (_, i) => `e${i}`),
    );
    await waitFor(async () => (await state(sub.id)) === 'paused', { ...WAIT, what: 'the first pause' });
    for (let round = 0; round < ROUNDS; round++) {
      // Both nodes have heard the pause (and the answers of requests open then have come) within this.
      await sleep(500);
      expect(await windowOf(sub.id)).toBeUndefined();
      await sleep(LIMIT_MS);
      const resumedAt = Date.now();
      await request(a.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
      await waitFor(async () => (await state(sub.id)) === 'paused', { ...WAIT, what: `the pause after resume ${round}` });
      // A window opened by the first failure after the resume: not before the limit.
      expect(Date.now() - resumedAt).toBeGreaterThanOrEqual(LIMIT_MS);
    }
  }, 90_000);
});
