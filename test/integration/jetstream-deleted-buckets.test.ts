/**
 * JetStream engine: a bucket or delivery stream Herald made, deleted behind its back (`nats kv del`,
 * `nats stream rm`). Made again empty, it would erase what it held without a word — every
 * subscription, every dead letter, the idempotency records — so a node starting refuses, naming it,
 * unless `HERALD_RECOVERY=recreate-missing` accepts the loss.
 */
import request from 'supertest';
import { StartupError } from '../../src/errors';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, uniquePrefix } from '../helpers/nats-cluster';

describeWithNats('jetstream: a bucket or stream Herald made, deleted behind its back', () => {
  const js = useJetStreamCluster({ size: 1 });
  const start = (env: Record<string, string>) => js.start(env);
  const settings = (prefix: string) => ({ HERALD_NATS_REPLICAS: '1', HERALD_PARTITIONS: '2', HERALD_NATS_PREFIX: prefix });
  const layoutOf = async (node: JetStreamGateway, prefix: string) =>
    (await (await node.store.connection.jetstream().views.kv(`${prefix}_meta`)).get('layout'))!.json<{ created?: string[] }>();

  it('the subscriptions bucket: refused, naming it; with recreate-missing made again empty, and known from then on', async () => {
    const prefix = uniquePrefix('delsubs');
    const first = await start(settings(prefix));
    await request(first.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/hook' }).expect(201);
    expect((await layoutOf(first, prefix)).created).toEqual(
      expect.arrayContaining([`${prefix}_p0`, `${prefix}_p1`, `KV_${prefix}_subs`, `KV_${prefix}_idem`, `${prefix}_dead`]),
    );
    const jsm = await first.store.connection.jetstreamManager();
    await jsm.streams.delete(`KV_${prefix}_subs`);

    // Was: the bucket made again, empty, and the node listing no subscription at all.
    const refused = start(settings(prefix));
    await expect(refused).rejects.toThrow(StartupError);
    await expect(start(settings(prefix))).rejects.toThrow(
      new RegExp(`stream KV_${prefix}_subs is missing, but Herald made it before.*every subscription.*HERALD_RECOVERY=recreate-missing`),
    );
    expect(await jsm.streams.info(`KV_${prefix}_subs`).catch(() => 'none')).toBe('none'); // nothing made meanwhile

    const accepted = await start({ ...settings(prefix), HERALD_RECOVERY: 'recreate-missing' });
    expect((await request(accepted.url).get('/subscriptions').expect(200)).body.subscriptions).toEqual([]);
    await request(accepted.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/again' }).expect(201);
    const again = await start(settings(prefix)); // made again is made: present, so nothing to refuse
    expect((await request(again.url).get('/subscriptions').expect(200)).body.subscriptions).toHaveLength(1);
  });

  it('the dead-letter stream and the idempotency bucket: refused the same way', async () => {
    for (const [stream, holds] of [
      ['_dead', 'every dead letter'],
      ['KV_', 'the idempotency records'],
    ] as const) {
      const prefix = uniquePrefix('deldead');
      const name = stream === 'KV_' ? `KV_${prefix}_idem` : `${prefix}${stream}`;
      const first = await start(settings(prefix));
      const jsm = await first.store.connection.jetstreamManager();
      await jsm.streams.delete(name);
      await expect(start(settings(prefix))).rejects.toThrow(
        new RegExp(`stream ${name} is missing, but Herald made it before under HERALD_NATS_PREFIX=${prefix}: ${holds}`),
      );
    }
  });

  it('the layout record or its whole bucket deleted (the list with it): refused, since what is missing cannot be told', async () => {
    for (const how of ['bucket', 'key'] as const) {
      const prefix = uniquePrefix(`dellayout${how}`);
      const first = await start(settings(prefix));
      await request(first.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/hook' }).expect(201);
      const jsm = await first.store.connection.jetstreamManager();
      if (how === 'bucket') await jsm.streams.delete(`KV_${prefix}_meta`);
      else await (await first.store.connection.jetstream().views.kv(`${prefix}_meta`)).delete('layout'); // `nats kv del`
      await jsm.streams.delete(`KV_${prefix}_subs`);
      // Was: a fresh layout written (no list), the bucket made again empty, and the loss recorded as normal.
      await expect(start(settings(prefix))).rejects.toThrow(
        new RegExp(`layout record in ${prefix}_meta is missing, but ${prefix}_p0 .*exists.*HERALD_RECOVERY=recreate-missing`),
      );
      const accepted = await start({ ...settings(prefix), HERALD_RECOVERY: 'recreate-missing' });
      expect((await request(accepted.url).get('/subscriptions').expect(200)).body.subscriptions).toEqual([]);
      // Written again with the partition streams marked made: one deleted now is refused, as before.
      await jsm.streams.delete(`${prefix}_p1`);
      await expect(start(settings(prefix))).rejects.toThrow(new RegExp(`stream ${prefix}_p1 is missing`));
    }
  });

  it('a layout of an earlier version (no list): what exists is listed at the next start, and refused once deleted', async () => {
    const prefix = uniquePrefix('dellegacy');
    const first = await start(settings(prefix));
    const meta = await first.store.connection.jetstream().views.kv(`${prefix}_meta`);
    const { created: _created, ...legacy } = await layoutOf(first, prefix);
    await meta.put('layout', JSON.stringify(legacy));
    const jsm = await first.store.connection.jetstreamManager();
    await jsm.streams.delete(`KV_${prefix}_subs`); // not listed: nothing says Herald made it, so it is made

    const upgraded = await start(settings(prefix));
    expect((await layoutOf(upgraded, prefix)).created).toEqual(expect.arrayContaining([`KV_${prefix}_subs`, `${prefix}_attempts`]));
    await jsm.streams.delete(`${prefix}_attempts`);
    await expect(start(settings(prefix))).rejects.toThrow(new RegExp(`stream ${prefix}_attempts is missing`));
  });
});
