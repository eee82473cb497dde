import { randomUUID } from 'node:crypto';
import { connect, StorageType, type KV, type NatsConnection } from 'nats';
import pino from 'pino';
import { CLOCK_KEY, createFailingWindows, failingKey, type FailingWindows } from '../../src/jetstream/delivery/failing-windows';
import { describeWithNats, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster';
import { waitFor } from '../helpers/receiver';

/**
 * Auto-disable's window on the JetStream engine, shared by the nodes through one KV entry per
 * subscription: two (and three) engines' windows on their own connections to a real nats-server
 * bucket, each with its own clock, as nodes have. The windows' times are on the server's clock, which each node
 * estimates (its offset) by a write: nodes' views of one time agree within a few milliseconds, not exactly.
 */

const LIMIT_MS = 60_000;
/** What two nodes' estimates of the server's clock may differ by here (a loopback round trip is well under it). */
const SLACK_MS = 500;
const HOUR_MS = 3_600_000;
const near = (actual: number | undefined, expected: number) => actual !== undefined && Math.abs(actual - expected) <= SLACK_MS;

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

  /**
   * A node: its own connection to the bucket and its own windows, watching; its wall clock is the test's, `skewMs`
   * off (and `step` moves it), its monotonic clock the test's.
   */
  async function node(
    skewMs = 0,
    log = pino({ level: 'silent' }),
  ): Promise<{ kv: KV; windows: FailingWindows; step: (byMs: number) => void }> {
    const nc = await connect({ servers: cluster.urls });
    conns.push(nc);
    const kv = await nc.jetstream().views.kv(bucket, { history: 1, storage: StorageType.Memory });
    let skew = skewMs;
    const w = createFailingWindows({ kv, log, clock: () => now + skew, monotonic: clock });
    await w.start();
    windows.push(w);
    return { kv, windows: w, step: (byMs) => void (skew += byMs) };
  }

  /** The window's start as stored (on the server's clock), read on the node's clock. */
  const stored = async ({ kv, windows: w }: { kv: KV; windows: FailingWindows }, token: string) => {
    const entry = await kv.get(failingKey(token));
    return entry && entry.operation === 'PUT' ? (JSON.parse(entry.string()) as { since: number }).since - w.clockOffset()! : undefined;
  };

  it("pauses once every node's attempts have failed for the limit since the first node's first failure", async () => {
    const a = await node();
    const b = await node();
    const opened = now;
    expect(a.windows.failed('sub1', LIMIT_MS)).toBeUndefined(); // opens the window
    await waitFor(async () => (await stored(a, 'sub1')) === opened, { what: 'the window stored' });
    now += 10_000;
    // B's first failure finds A's window: A's time stands, not B's.
    expect(b.windows.failed('sub1', LIMIT_MS)).toBeUndefined();
    await waitFor(async () => (await stored(a, 'sub1')) === opened, { what: "A's time kept" });
    await waitFor(() => near(b.windows.failingSince('sub1'), opened), { what: "B took A's time" });
    now = opened + LIMIT_MS - SLACK_MS;
    expect(b.windows.failed('sub1', LIMIT_MS)).toBeUndefined();
    now = opened + LIMIT_MS + SLACK_MS;
    expect(near(b.windows.failed('sub1', LIMIT_MS), opened)).toBe(true);
    // The pause ends the window, on every node.
    await waitFor(async () => (await stored(a, 'sub1')) === undefined, { what: 'the window deleted' });
    await waitFor(() => a.windows.failingSince('sub1') === undefined, { what: 'A heard' });
    now += 1;
    expect(a.windows.failed('sub1', LIMIT_MS)).toBeUndefined();
  });

  it('ends the window on every node when any node gets a 2xx', async () => {
    const a = await node();
    const b = await node();
    const opened = now;
    a.windows.failed('sub2', LIMIT_MS);
    await waitFor(async () => (await stored(a, 'sub2')) === opened, { what: 'the window stored' });
    // B heard of the window (its watch) and ends it with its success, although B itself never failed.
    await waitFor(() => near(b.windows.failingSince('sub2'), opened), { what: 'B heard' });
    b.windows.succeeded('sub2');
    await waitFor(async () => (await stored(a, 'sub2')) === undefined, { what: 'the window deleted' });
    // A heard of it: past the limit, its next failure opens a new window rather than pausing.
    await waitFor(() => a.windows.failingSince('sub2') === undefined, { what: 'A heard' });
    now = opened + 2 * LIMIT_MS;
    expect(a.windows.failed('sub2', LIMIT_MS)).toBeUndefined();
    await waitFor(async () => (await stored(a, 'sub2')) === now, { what: 'a new window' });
  });

  it('ends a window that a 2xx on another node came after, though that node had not heard of it yet (review)', async () => {
    const a = await node();
    const b = await node();
    a.windows.failed('sub4', LIMIT_MS); // its write is under way: B cannot have heard of it
    now += SLACK_MS;
    b.windows.succeeded('sub4');
    await waitFor(async () => (await stored(a, 'sub4')) === undefined && a.windows.failingSince('sub4') === undefined, {
      what: 'the window ended on both nodes',
    });
    now += LIMIT_MS;
    expect(a.windows.failed('sub4', LIMIT_MS)).toBeUndefined(); // a new window, not a pause
  });

  it('says once a minute, not once per window, that windows cannot be written (a churn probe: 3,421 lines in 80 s)', async () => {
    const lines: { msg: string; suppressed?: number }[] = [];
    const a = await node(0, pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) }));
    // The bucket refuses every write (a message size limit of 1 byte).
    const jsm = await conns.at(-1)!.jetstreamManager();
    const { config } = await jsm.streams.info(`KV_${bucket}`);
    await jsm.streams.update(`KV_${bucket}`, { ...config, max_msg_size: 1 });
    for (let i = 0; i < 5; i++) expect(a.windows.failed(`refused${i}`, LIMIT_MS)).toBeUndefined();
    await waitFor(() => lines.some((l) => l.msg.startsWith('could not write a failing delivery window')) || undefined, {
      what: 'the warning',
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(lines.filter((l) => l.msg.startsWith('could not write a failing delivery window'))).toHaveLength(1); // was 5
  });

  it('keeps no window in the cluster while the limit is 0 (review: alternating answers wrote to it four times a pair)', async () => {
    const a = await node();
    for (let i = 0; i < 5; i++) {
      expect(a.windows.failed('sub0', 0)).toBeUndefined();
      a.windows.succeeded('sub0');
    }
    expect(a.windows.failed('sub0', 0)).toBeUndefined();
    const keys: string[] = [];
    for await (const key of await a.kv.keys()) keys.push(key);
    expect(keys).toEqual([CLOCK_KEY]); // the node's estimate of the server's clock, no window
    expect(a.windows.failingSince('sub0')).toBeUndefined();
  });

  it('keeps a window across a node restart (a new node hears it) and never pauses with a limit of 0', async () => {
    const a = await node();
    const opened = now;
    a.windows.failed('sub3', LIMIT_MS);
    await waitFor(async () => (await stored(a, 'sub3')) === opened, { what: 'the window stored' });
    a.windows.stop();
    const restarted = await node();
    await waitFor(() => near(restarted.windows.failingSince('sub3'), opened), { what: 'the window heard at start' });
    now = opened + LIMIT_MS + SLACK_MS;
    expect(restarted.windows.failed('sub3', 0)).toBeUndefined();
    expect(near(restarted.windows.failed('sub3', LIMIT_MS), opened)).toBe(true);
  });

  it("takes the server's store time for a window whose start cannot be on the server's clock (a node with no estimate yet, or an older version)", async () => {
    const a = await node();
    const opened = now;
    await a.kv.create(failingKey('old'), JSON.stringify({ since: opened - HOUR_MS })); // that node's clock an hour behind
    await waitFor(() => a.windows.failingSince('old') !== undefined, { what: 'A heard the window' });
    expect(near(a.windows.failingSince('old'), opened)).toBe(true);
    now = opened + LIMIT_MS - SLACK_MS;
    expect(a.windows.failed('old', LIMIT_MS)).toBeUndefined();
  });

  /*
   * Nodes whose clocks differ by an hour (review: the window's start was the opening node's clock, compared with
   * each node's own: a node an hour behind made the others pause after 1.6 s of a 10-minute limit, one ahead never).
   */
  it('gives every node an estimate of the server clock when nodes start together (probe: the clock key overwritten between one write and its read left 19 of 30 with none)', async () => {
    for (let round = 0; round < 5; round++) {
      const started = await Promise.all([node(), node(), node(HOUR_MS), node(-HOUR_MS)]);
      expect(started.map((n) => n.windows.clockOffset() === undefined)).toEqual([false, false, false, false]);
    }
  });

  it("a step of a node's wall clock after its estimate moves no window (re-probe: a step of an hour paused a subscription 6.4 s into a 20 s limit)", async () => {
    const a = await node();
    const s = await node();
    const opened = now;
    expect(a.windows.failed('step1', LIMIT_MS)).toBeUndefined();
    await waitFor(() => s.windows.failingSince('step1') !== undefined, { what: 'the other node heard the window' });
    s.step(HOUR_MS);
    now = opened + LIMIT_MS - SLACK_MS;
    expect(s.windows.failed('step1', LIMIT_MS)).toBeUndefined();
    now = opened + LIMIT_MS + SLACK_MS;
    // Reported on the stepped wall clock.
    expect(near(s.windows.failed('step1', LIMIT_MS), opened + HOUR_MS)).toBe(true);
  });

  describe.each([
    ['an hour ahead', HOUR_MS],
    ['an hour behind', -HOUR_MS],
  ])('with a node whose clock is %s', (_name, skew) => {
    it('a window the skewed node opens pauses the other node at the limit, not before', async () => {
      const a = await node();
      const s = await node(skew);
      const opened = now;
      expect(s.windows.failed('skew1', LIMIT_MS)).toBeUndefined();
      await waitFor(() => a.windows.failingSince('skew1') !== undefined, { what: 'A heard the window' });
      expect(near(a.windows.failingSince('skew1'), opened)).toBe(true);
      now = opened + LIMIT_MS - SLACK_MS;
      expect(a.windows.failed('skew1', LIMIT_MS)).toBeUndefined();
      now = opened + LIMIT_MS + SLACK_MS;
      expect(near(a.windows.failed('skew1', LIMIT_MS), opened)).toBe(true);
    });

    it('a window the other node opens pauses the skewed node at the limit, not before', async () => {
      const a = await node();
      const s = await node(skew);
      const opened = now;
      expect(a.windows.failed('skew2', LIMIT_MS)).toBeUndefined();
      await waitFor(() => s.windows.failingSince('skew2') !== undefined, { what: 'the skewed node heard the window' });
      // Reported on the skewed node's own clock.
      expect(near(s.windows.failingSince('skew2'), opened + skew)).toBe(true);
      now = opened + LIMIT_MS - SLACK_MS;
      expect(s.windows.failed('skew2', LIMIT_MS)).toBeUndefined();
      now = opened + LIMIT_MS + SLACK_MS;
      expect(near(s.windows.failed('skew2', LIMIT_MS), opened + skew)).toBe(true);
    });

    it('a 2xx on the skewed node ends a window opened before it (not yet heard there), not one opened after it', async () => {
      const a = await node();
      const s = await node(skew);
      a.windows.failed('skew3', LIMIT_MS); // its write is under way: the skewed node cannot have heard of it
      now += SLACK_MS;
      s.windows.succeeded('skew3');
      await waitFor(async () => (await stored(a, 'skew3')) === undefined && a.windows.failingSince('skew3') === undefined, {
        what: 'the window ended on both nodes',
      });
      // A 2xx before the window opened leaves it standing, on every node.
      s.windows.succeeded('skew4');
      now += SLACK_MS;
      const opened = now;
      a.windows.failed('skew4', LIMIT_MS);
      await waitFor(() => s.windows.failingSince('skew4') !== undefined, { what: 'the skewed node heard the window' });
      await new Promise((r) => setTimeout(r, 200));
      expect(await stored(a, 'skew4')).toBe(opened);
      expect(near(s.windows.failingSince('skew4'), opened + skew)).toBe(true);
      now = opened + LIMIT_MS + SLACK_MS;
      expect(near(a.windows.failed('skew4', LIMIT_MS), opened)).toBe(true);
    });
  });
});
