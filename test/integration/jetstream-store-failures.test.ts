import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { DiscardPolicy, type JetStreamManager } from 'nats';
import request from 'supertest';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { useJetStreamCluster } from '../helpers/gateway';
import { describeWithNats, freePort, uniquePrefix } from '../helpers/nats-cluster';

/**
 * A NATS server whose store refuses or fails writes (a store probe): a stream out of room (`discard: new` at its
 * limit, as a server at max_file_store) makes the node unready naming it while ingest answers `storage_full`, until
 * a write is taken again; an I/O error on a stream's block file (strace injects EIO) stops writes through the node,
 * since a leader that failed after the commit gives later events offsets its followers hold for others.
 * One real nats-server.
 */

jest.setTimeout(60_000);

const canTrace = spawnSync('strace', ['-V']).status === 0;

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

  (canTrace ? it : it.skip)('a store write that fails on the server (EIO) stops writes through the node, naming the stream', async () => {
    const stream = `${prefix}_p0`;
    const node = js.cluster.nodes[0]!;
    const block = `${node.storeDir}/jetstream/$G/streams/${stream}/msgs/1.blk`;
    const args = ['-f', '-qq', '-p', String(node.pid()), '-e', 'trace=write,pwrite64,writev', '-P', block];
    const strace: ChildProcess = spawn('strace', [...args, '-e', 'inject=write,pwrite64,writev:error=EIO'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 1000)); // attached
      const failed = await publish('eio');
      expect(failed.status).toBe(503);
    } finally {
      strace.kill();
      await new Promise((r) => strace.once('exit', r));
    }
    await new Promise((r) => setTimeout(r, 1500)); // a probe of the cluster, which finds the stream fine, has run
    expect(await writable()).toBe('0');
    expect(await ready()).toMatchObject({ status: 'unavailable', checks: { log: expect.stringContaining(stream) } });
    // The disk works again, but the stream's replicas may differ: nothing more is acknowledged through this node.
    const after = await publish('after-eio');
    expect(after.status).toBe(503);
    expect(after.body.detail).toMatch(/input\/output error/);
  });
});
