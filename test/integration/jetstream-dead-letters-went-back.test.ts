/**
 * JetStream engine: the dead-letter stream going back behind Herald (its servers losing writes they had
 * confirmed: a chaos run on nats-server 2.9.10 saw `_dead` roll back to a stalled replica's copy, 85 dead
 * letters gone and their ids given to new ones, with nothing logged). Herald cannot bring them back; it
 * says so. Stood for here by the stream deleted and made again as it was.
 */
import pino from 'pino';
import request from 'supertest';
import { deliveryNames } from '../../src/jetstream/delivery/names';
import { startJetStreamTestGateway, useJetStreamCluster } from '../helpers/gateway';
import { startReceiver } from '../helpers/receiver';
import { describeWithNats, uniquePrefix, waitUntil } from '../helpers/nats-cluster';

describeWithNats('jetstream: a dead-letter stream that went back', () => {
  const js = useJetStreamCluster({ size: 1 });

  it('logs an error naming the stream, the sequence it knew and the one it got, at the next dead letter', async () => {
    const lines: { level: number; msg: string; stream?: string; known?: number; seen?: number }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const prefix = uniquePrefix('wentback');
    const env = { HERALD_NATS_REPLICAS: '1', HERALD_PARTITIONS: '1', HERALD_NATS_PREFIX: prefix };
    const gw = js.keep(await startJetStreamTestGateway(js.cluster.serversEnv, env, { log }));
    const receiver = await startReceiver();
    receiver.setResponder(() => ({ status: 400 })); // every event dead-lettered at once
    try {
      const sub = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body as { id: string };
      const publish = (id: string) =>
        request(gw.url)
          .post('/events')
          .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/went-back', 'ce-type': 't', 'content-type': 'application/json' })
          .send('{}')
          .expect(202);
      const deadLetters = async () =>
        (await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters`).expect(200)).body.deadLetters as { id: string }[];
      for (const id of ['a', 'b', 'c']) await publish(id);
      await waitUntil('3 dead letters', async () => (await deadLetters()).length === 3, 15_000);
      expect((await deadLetters()).map((d) => d.id)).toEqual(['1', '2', '3']);

      const jsm = await gw.store.connection.jetstreamManager();
      const stream = deliveryNames(prefix).deadStream;
      const { config: kept } = await jsm.streams.info(stream);
      await jsm.streams.delete(stream);
      await jsm.streams.add(kept);
      expect(lines.filter((l) => l.level >= 50)).toEqual([]);

      await publish('d');
      // Was: nothing said, the three dead letters gone and the next one given id 1 again.
      await waitUntil('the error line', async () => lines.some((l) => l.stream === stream), 15_000);
      expect(lines.find((l) => l.stream === stream)).toMatchObject({
        level: 50,
        known: 3,
        seen: 1,
        msg: expect.stringMatching(
          new RegExp(`^stream ${stream} went back from sequence 3 to 1: the NATS servers may have lost up to 3 dead letters`),
        ),
      });
      expect((await deadLetters()).map((d) => d.id)).toEqual(['1']);
    } finally {
      await receiver.close();
    }
  });
});
