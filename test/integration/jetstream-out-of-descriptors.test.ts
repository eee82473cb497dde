/**
 * JetStream engine: delivery when the node runs out of file descriptors (a low `ulimit -n`). A connection it
 * cannot open is its own failure, not the receiver's: as on the local engine, no attempt is spent, and the
 * message is sent again shortly (was: counted as a failed attempt, healthy receivers' events dead-lettered).
 */
import { killIfRunning, useJetStreamCluster, type ChildGateway } from '../helpers/gateway';
import { describeWithNats, uniquePrefix } from '../helpers/nats-cluster';
import { startReceiver, type Receiver } from '../helpers/receiver';
import { callRetrying, deliveredTo, restartStarved } from '../helpers/starved';

jest.setTimeout(120_000);

describeWithNats('jetstream: delivery out of file descriptors', () => {
  const js = useJetStreamCluster({ size: 1 });
  const receivers: Receiver[] = [];
  let gw: ChildGateway | undefined;
  afterAll(async () => {
    await killIfRunning(gw);
    for (const r of receivers) await r.close();
  });
  const envOf = (prefix: string) => ({
    HERALD_STORE: 'jetstream',
    HERALD_NATS_SERVERS: js.cluster.serversEnv,
    HERALD_NATS_REPLICAS: '1',
    HERALD_PARTITIONS: '1',
    HERALD_NATS_PREFIX: uniquePrefix(prefix),
  });
  const deadLetters = async (url: string, id: string) =>
    ((await (await callRetrying(`${url}/subscriptions/${id}/dead-letters`)).json()) as { deadLetters: unknown[] }).deadLetters;

  it('spends no attempt on a connection it cannot open: every event reaches its healthy receiver, none is dead-lettered', async () => {
    const events = 60;
    for (let i = 0; i < 3; i++) receivers.push(await startReceiver(() => ({ status: 204, delayMs: 300 })));
    // A few descriptors to spare, where the three subscriptions want up to 192 connections at once.
    const started = await restartStarved({
      env: envOf('jsfd'),
      receivers,
      delivery: { ordering: 'none', maxInFlight: 64, retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 50 } },
      events,
      idPrefix: 'jsfd',
      spare: 20,
      running: (g) => (gw = g),
    });
    expect(await deliveredTo(receivers, events, 60_000)).toEqual([events, events, events]);
    // Was: dead-lettered, `lastError` "connect EMFILE".
    for (const id of started.ids) expect(await deadLetters(started.gw.url, id)).toEqual([]);
    expect(started.gw.output()).toContain('this process is out of file descriptors');
  });

  it('renews the lease of a message it keeps: starved for many ack_waits, nothing is redelivered by JetStream nor dead-lettered', async () => {
    await killIfRunning(gw);
    const events = 40;
    const slow: Receiver[] = [];
    for (let i = 0; i < 3; i++) slow.push(await startReceiver(() => ({ status: 204, delayMs: 2500 })));
    receivers.push(...slow);
    const started = await restartStarved({
      env: envOf('jsfdl'),
      receivers: slow,
      // ack_wait 4 s: the starvation below lasts several of them.
      delivery: {
        ordering: 'none',
        maxInFlight: 64,
        timeoutMs: 3000,
        ackDeadlineMs: 3000,
        retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 50 },
      },
      events,
      idPrefix: 'jsfdl',
      spare: 12,
      running: (g) => (gw = g),
    });
    expect(await deliveredTo(slow, events, 90_000)).toEqual([events, events, events]);
    // Was: the kept message's lease was never renewed (the 1 s resend cancelled the renewal due at a third of
    // ack_wait), so JetStream redelivered it every ack_wait: attempts spent, events dead-lettered unsent.
    for (const r of slow) expect(r.requests.every((q) => q.headers['herald-attempt'] === '1')).toBe(true);
    for (const id of started.ids) expect(await deadLetters(started.gw.url, id)).toEqual([]);
  });
});
