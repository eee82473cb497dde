import { DiscardPolicy, type JetStreamManager } from 'nats';
import pino from 'pino';
import request from 'supertest';
import { createAppender } from '../../src/jetstream/appender';
import { decodeClaim } from '../../src/jetstream/codec';
import { createClusterMonitor } from '../../src/jetstream/cluster-monitor';
import { idempotencyKey, jetStreamNames } from '../../src/jetstream/names';
import { clusterUnavailable, natsReason } from '../../src/jetstream/nats-errors';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, freePort, uniquePrefix } from '../helpers/nats-cluster';

/**
 * A NATS server whose store refuses writes (a store probe): a stream out of room (`discard: new` at its limit, as a
 * server at max_file_store) makes the node unready naming it while ingest answers `storage_full`, until a write is
 * taken again; a server that failed to store a write (the probe injected EIO on a stream leader's block file with
 * strace, which CI does not have: here the server's answer as nats.js gives it, told to the node's cluster monitor)
 * fences the node. One real nats-server.
 */

jest.setTimeout(60_000);

describeWithNats('the jetstream engine when a server cannot store', () => {
  const js = useJetStreamCluster({ size: 1 });
  let gw: JetStreamGateway;
  let jsm: JetStreamManager;
  let prefix: string;

  beforeAll(async () => {
    prefix = uniquePrefix('store');
    gw = await js.start({
      HERALD_PORT: String(await freePort()),
      HERALD_NATS_REPLICAS: '1',
      HERALD_PARTITIONS: '1',
      HERALD_NATS_PREFIX: prefix,
    });
    jsm = await gw.store.connection.jetstreamManager();
  });

  const publish = (id: string) =>
    request(gw.url)
      .post('/events')
      .set({ 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/store', 'ce-type': 'store.t', 'content-type': 'application/json' })
      .send('{}');
  const ready = async () => (await request(gw.url).get('/readyz')).body as { status: string; checks: { log: string } };
  const writable = async () => /^herald_log_writable (\d)$/m.exec((await request(gw.url).get('/metrics')).text)?.[1];

  it('while a stream refuses writes for want of room: herald_log_writable 0 and /readyz naming it, until one is taken', async () => {
    const stream = `${prefix}_p0`;
    const info = await jsm.streams.info(stream);
    await jsm.streams.update(stream, { ...info.config, max_msgs: info.state.messages + 1, discard: DiscardPolicy.New });
    expect((await publish('fits')).status).toBe(202);
    const full = await publish('past-the-limit');
    expect(full.status).toBe(503);
    expect(full.body.code).toBe('storage_full');
    expect(await writable()).toBe('0');
    expect(await ready()).toMatchObject({ status: 'unavailable', checks: { log: expect.stringContaining(stream) } });

    await jsm.streams.update(stream, { ...info.config, max_msgs: -1 });
    expect((await publish('past-the-limit')).status).toBe(202); // still tried: it is taken once there is room
    expect(await writable()).toBe('1');
    expect((await ready()).status).toBe('ready');
  });

  it('a store write that failed on a server fences the node until a restart, naming the stream and the error (was: ready; later 202s took offsets followers held for other events)', async () => {
    const monitor = createClusterMonitor({
      jsm,
      names: jetStreamNames(prefix),
      partitions: 1,
      replicas: 1,
      log: pino({ level: 'silent' }),
    });
    await monitor.start();
    try {
      expect(monitor.health()).toMatchObject({ writable: true });
      const stream = `${prefix}_p0`;
      const eio = { code: '503', api_error: { code: 503, description: `write …/streams/${stream}/msgs/1.blk: input/output error` } };
      const answer = clusterUnavailable(eio, `store events in stream ${stream}`);
      expect(answer.message).toMatch(/takes no more writes until it is restarted/);
      monitor.refused(stream, answer.code, natsReason(eio));
      expect(monitor.health()).toEqual({ writable: false, reason: expect.stringContaining(`stream ${stream} failed to store a write`) });
      expect(monitor.refusal()).toMatch(/input\/output error/);
      // A write taken later (the disk works again) does not lift it, nor does a probe that finds the stream fine.
      monitor.took(stream);
      await new Promise((r) => setTimeout(r, 1500));
      expect(monitor.refusal()).toMatch(/failed to store a write/);
    } finally {
      monitor.stop();
    }
  });

  it('a publish on its way when another one through the node is refused so is not acknowledged (was: 202 at an offset the followers held for another event)', async () => {
    const names = jetStreamNames(prefix);
    const monitor = createClusterMonitor({ jsm, names, partitions: 1, replicas: 1, log: pino({ level: 'silent' }) });
    await monitor.start();
    try {
      const js = gw.store.connection.jetstream();
      const kv = await js.views.kv(names.idempotencyBucket);
      const stream = names.stream(0);
      const eio = { code: '503', api_error: { code: 503, description: `write …/streams/${stream}/msgs/1.blk: input/output error` } };
      const appender = createAppender({
        js,
        kv,
        names,
        partitions: 1,
        maxPayload: () => undefined,
        knownGoneBelow: () => 0,
        // Read as the publish goes out: the refusal of another publish (the EIO answer) lands while this one is on its way.
        knownHead: () => {
          monitor.refused(stream, 'unavailable', natsReason(eio));
          return 0;
        },
        wentBack: () => undefined,
        refused: (s, code, reason) => monitor.refused(s, code, reason),
        took: (s) => monitor.took(s),
        fenced: () => monitor.fenced(),
      });
      const before = (await jsm.streams.info(stream)).state.last_seq;
      const event = {
        attributes: { specversion: '1.0', id: 'in-flight', source: '/store', type: 'store.t' },
        data: { kind: 'json', value: {} },
      } as never;
      await expect(appender.append([event])).rejects.toMatchObject({
        code: 'unavailable',
        message: expect.stringMatching(/not acknowledged/),
      });
      expect((await jsm.streams.info(stream)).state.last_seq).toBe(before + 1); // stored, but no offset given to it
      const record = await kv.get(idempotencyKey('/store', 'in-flight'));
      expect(record && decodeClaim(record.value).o).toBeUndefined();
    } finally {
      monitor.stop();
    }
  });

  it('a stream refusing writes for want of storage, then taking one, by turns: one warning a minute, not one per refusal', async () => {
    const lines: { msg: string; suppressed?: number }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const monitor = createClusterMonitor({ jsm, names: jetStreamNames(prefix), partitions: 1, replicas: 1, log });
    await monitor.start();
    try {
      const stream = `${prefix}_p0`;
      for (let i = 0; i < 5; i++) {
        monitor.refused(stream, 'storage_full', '503: maximum bytes exceeded');
        monitor.took(stream);
      }
      // Was: 5 (a re-probe: 132 in 40 s while the stream's room freed and filled by turns).
      expect(lines.filter((l) => l.msg === 'a stream refuses writes for want of storage')).toHaveLength(1);
    } finally {
      monitor.stop();
    }
  });
});
