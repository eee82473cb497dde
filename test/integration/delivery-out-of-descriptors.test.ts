/**
 * Delivery when the gateway runs out of file descriptors (a low `ulimit -n`, as systemd or a container
 * may set): a connection it cannot open is its own failure, not the receiver's (limits probe: healthy
 * receivers' events were dead-lettered `max_attempts` with `connect EMFILE` as their last error).
 */
import { killIfRunning, type ChildGateway } from '../helpers/gateway';
import { startReceiver, type Receiver } from '../helpers/receiver';
import { callRetrying, deliveredTo, restartStarved } from '../helpers/starved';
import { tmpDir } from '../helpers/tmp';

jest.setTimeout(90_000);

describe('delivery out of file descriptors', () => {
  const receivers: Receiver[] = [];
  let gw: ChildGateway | undefined;
  afterAll(async () => {
    await killIfRunning(gw);
    for (const r of receivers) await r.close();
  });

  it('spends no attempt on a connection it cannot open: every event reaches its healthy receiver, none is dead-lettered', async () => {
    const events = 60;
    for (let i = 0; i < 3; i++) receivers.push(await startReceiver(() => ({ status: 204, delayMs: 300 })));
    // A few descriptors to spare, where the three subscriptions want up to 192 connections at once.
    const started = await restartStarved({
      env: { HERALD_DATA_DIR: tmpDir() },
      receivers,
      delivery: { maxInFlight: 64, retry: { maxAttempts: 2, initialDelayMs: 50, maxDelayMs: 50 } },
      events,
      idPrefix: 'fd',
      spare: 20,
      running: (g) => (gw = g),
    });
    expect(await deliveredTo(receivers, events, 60_000)).toEqual([events, events, events]);
    for (const id of started.ids) {
      const sub = (await (await callRetrying(`${started.gw.url}/subscriptions/${id}`)).json()) as { stats: { deadLetters: number } };
      // Was: most of them dead-lettered, `lastError` "connect EMFILE".
      expect(sub.stats.deadLetters).toBe(0);
    }
    expect(started.gw.output()).toContain('this process is out of file descriptors');
  });
});
