import { randomUUID } from 'node:crypto';
import { connect, StorageType, type KV, type NatsConnection } from 'nats';
import pino from 'pino';
import { createFailingWindows, failingKey, type FailingWindows } from '../../src/jetstream/delivery/failing-windows';
import { describeWithNats, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster';
import { waitFor } from '../helpers/receiver';

/**
 * Auto-disable's window on the JetStream engine, shared by the nodes through one KV entry per
 * subscription: two (and three) engines' windows on their own connections to a real nats-server
 * bucket, each with its own clock, as nodes have.
 */

const LIMIT_MS = 60_000;

describeWithNats('the failing windows of the JetStream engine', () => {
  let cluster: NatsCluster;
  const conns: NatsConnection[] = [];
  const windows: FailingWindows[] = [];
  let bucket: string;
  let now = 1_000_000;
  const clock = () => now;

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
  }, 60_000);

  afterAll(async () => {
    for (const w of windows) w.stop();
    for (const nc of conns) await nc.close();
    await cluster?.stop();
  }, 60_000);

  beforeEach(() => {
    bucket = `dpos_${randomUUID().slice(0, 8)}`;
  });

  /** A node: its own connection to the bucket and its own windows, watching. */
  async function node(): Promise<{ kv: KV; windows: FailingWindows }> {
    const nc = await connect({ servers: cluster.urls });
    conns.push(nc);
    const kv = await nc.jetstream().views.kv(bucket, { history: 1, storage: StorageType.Memory });
    const w = createFailingWindows({ kv, log: pino({ level: 'silent' }), clock });
    await w.start();
    windows.push(w);
    return { kv, windows: w };
  }

  const stored = async (kv: KV, token: string) => {
    const entry = await kv.get(failingKey(token));
    return entry && entry.operation === 'PUT' ? (JSON.parse(entry.string()) as { since: number }).since : undefined;
  };

  it("pauses once every node's attempts have failed for the limit since the first node's first failure", async () => {
    const a = await node();
    const b = await node();
    const opened = now;
    expect(a.windows.failed('sub1', LIMIT_MS)).toBeUndefined(); // opens the window
    await waitFor(async () => (await stored(a.kv, 'sub1')) === opened, { what: 'the window stored' });
    now += 10_000;
    // B's first failure finds A's window: A's time stands, not B's.
    expect(b.windows.failed('sub1', LIMIT_MS)).toBeUndefined();
    await waitFor(async () => (await stored(a.kv, 'sub1')) === opened, { what: "A's time kept" });
    await waitFor(() => b.windows.failingSince('sub1') === opened, { what: "B took A's time" });
    now = opened + LIMIT_MS - 1;
    expect(b.windows.failed('sub1', LIMIT_MS)).toBeUndefined();
    now = opened + LIMIT_MS;
    expect(b.windows.failed('sub1', LIMIT_MS)).toBe(opened);
    // The pause ends the window, on every node.
    await waitFor(async () => (await stored(a.kv, 'sub1')) === undefined, { what: 'the window deleted' });
    await waitFor(() => a.windows.failingSince('sub1') === undefined, { what: 'A heard' });
    now += 1;
    expect(a.windows.failed('sub1', LIMIT_MS)).toBeUndefined();
  });

  it('ends the window on every node when any node gets a 2xx', async () => {
    const a = await node();
    const b = await node();
    const opened = now;
    a.windows.failed('sub2', LIMIT_MS);
    await waitFor(async () => (await stored(a.kv, 'sub2')) === opened, { what: 'the window stored' });
    // B heard of the window (its watch) and ends it with its success, although B itself never failed.
    await waitFor(() => b.windows.failingSince('sub2') === opened, { what: 'B heard' });
    b.windows.succeeded('sub2');
    await waitFor(async () => (await stored(a.kv, 'sub2')) === undefined, { what: 'the window deleted' });
    // A heard of it: past the limit, its next failure opens a new window rather than pausing.
    await waitFor(() => a.windows.failingSince('sub2') === undefined, { what: 'A heard' });
    now = opened + 2 * LIMIT_MS;
    expect(a.windows.failed('sub2', LIMIT_MS)).toBeUndefined();
    await waitFor(async () => (await stored(a.kv, 'sub2')) === now, { what: 'a new window' });
  });

  it('ends a window that a 2xx on another node came after, though that node had not heard of it yet (review)', async () => {
    const a = await node();
    const b = await node();
    a.windows.failed('sub4', LIMIT_MS); // its write is under way: B cannot have heard of it
    now += 1;
    b.windows.succeeded('sub4');
    await waitFor(async () => (await stored(a.kv, 'sub4')) === undefined && a.windows.failingSince('sub4') === undefined, {
      what: 'the window ended on both nodes',
    });
    now += LIMIT_MS;
    expect(a.windows.failed('sub4', LIMIT_MS)).toBeUndefined(); // a new window, not a pause
  });

  it('keeps no window in the cluster while the limit is 0 (review: alternating answers wrote to it four times a pair)', async () => {
    const a = await node();
    for (let i = 0; i < 5; i++) {
      expect(a.windows.failed('sub0', 0)).toBeUndefined();
      a.windows.succeeded('sub0');
    }
    expect(a.windows.failed('sub0', 0)).toBeUndefined();
    const status = await a.kv.status();
    expect(status.values).toBe(0);
    expect(a.windows.failingSince('sub0')).toBeUndefined();
  });

  it('keeps a window across a node restart (a new node hears it) and never pauses with a limit of 0', async () => {
    const a = await node();
    const opened = now;
    a.windows.failed('sub3', LIMIT_MS);
    await waitFor(async () => (await stored(a.kv, 'sub3')) === opened, { what: 'the window stored' });
    a.windows.stop();
    const restarted = await node();
    await waitFor(() => restarted.windows.failingSince('sub3') === opened, { what: 'the window heard at start' });
    now = opened + LIMIT_MS;
    expect(restarted.windows.failed('sub3', 0)).toBeUndefined();
    expect(restarted.windows.failed('sub3', LIMIT_MS)).toBe(opened);
  });
});
