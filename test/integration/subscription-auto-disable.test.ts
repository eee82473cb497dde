import request from 'supertest';
import { loadConfig } from '../../src/config';
import { startGateway, type Gateway } from '../../src/gateway';
import { createLogger } from '../../src/logger';
import { getSubscription, publishOfType, requestsForSubscription, waitForLagZero } from '../helpers/delivery';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * Auto-disable of a failing endpoint (issue 12 §5): when every attempt has failed for
 * `delivery.disableAfterFailingMs` (default 5 days) the subscription pauses with `stateReason:
 * failing`; `resume` continues where it stopped. Delivery's clock is injected, so "5 days later" is
 * one step of it; retries are real and a few milliseconds apart.
 */

const DAY = 86_400_000;
// Shared with the delivery thread: what is added here is added to the time delivery and subscriptions see.
const skew = new Float64Array(new SharedArrayBuffer(8));
let receiver: Receiver;
const running: Gateway[] = [];

async function start(dataDir: string): Promise<Gateway> {
  const config = loadConfig({ HERALD_PORT: '0', HERALD_LOG_LEVEL: 'silent', HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir });
  const gw = await startGateway(config, { log: createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent'), clockSkew: skew });
  running.push(gw);
  return gw;
}

beforeAll(async () => {
  receiver = await startReceiver();
});
afterEach(async () => {
  for (const gw of running.splice(0)) await gw.close();
  skew[0] = 0;
  receiver.setResponder(() => ({ status: 204 }));
});
afterAll(async () => {
  await receiver?.close();
  cleanupTmpDirs();
});

const FAST_RETRY = { maxAttempts: 1000, initialDelayMs: 5, maxDelayMs: 20, jitter: 0 };

async function subscribe(gw: Gateway, type: string, delivery: Record<string, unknown> = {}): Promise<string> {
  const res = await request(gw.url)
    .post('/subscriptions')
    .send({ sink: receiver.url, filters: [{ exact: { type } }], delivery: { retry: FAST_RETRY, ...delivery } })
    .expect(201);
  return res.body.id;
}

const attempts = (id: string) => requestsForSubscription(receiver, id).length;

describe('auto-disable', () => {
  it('pauses with stateReason failing after every attempt failed for the default 5 days; resume continues in order', async () => {
    const gw = await start(tmpDir());
    receiver.setResponder(() => ({ status: 500 }));
    const id = await subscribe(gw, 'failing.default');
    expect((await getSubscription(gw.url, id)).delivery.disableAfterFailingMs).toBe(5 * DAY);
    await publishOfType(gw.url, '/failing', 'failing.default', ['f0', 'f1']);
    await waitFor(() => attempts(id) >= 3, { what: 'failed attempts' });
    expect((await getSubscription(gw.url, id)).state).toBe('active');

    skew[0]! += 5 * DAY;
    const paused = await waitFor(
      async () => {
        const sub = await getSubscription(gw.url, id);
        return sub.state === 'paused' ? sub : undefined;
      },
      { what: 'the pause' },
    );
    expect(paused.stateReason).toBe('failing');
    expect(paused.stats.deadLetters).toBe(0);
    const metrics = await request(gw.url).get('/metrics').expect(200);
    expect(metrics.text).toContain(`herald_subscription_auto_disabled_total{subscription="${id}"} 1`);

    // Nothing more is sent while paused; resume continues with the same event, in order.
    receiver.setResponder(() => ({ status: 204 }));
    const sentBeforeResume = attempts(id);
    const resumed = await request(gw.url).post(`/subscriptions/${id}/resume`).expect(200);
    expect(resumed.body).toMatchObject({ state: 'active', stateReason: null });
    await waitForLagZero(gw.url, id);
    const after = requestsForSubscription(receiver, id).slice(sentBeforeResume);
    expect(after.map((q) => q.headers['ce-id'])).toEqual(['f0', 'f1']);
    expect(Number(after[0]!.headers['herald-attempt'])).toBeGreaterThan(1);
    expect((await getSubscription(gw.url, id)).stats.deadLetters).toBe(0);
  });

  it('never pauses with disableAfterFailingMs 0, and a success starts the window again', async () => {
    const gw = await start(tmpDir());
    let w0Succeeds = false;
    receiver.setResponder((q) => ({ status: q.headers['ce-id'] === 'w0' && w0Succeeds ? 204 : 500 }));
    const never = await subscribe(gw, 'failing.never', { disableAfterFailingMs: 0 });
    const windowed = await subscribe(gw, 'failing.window', { disableAfterFailingMs: DAY });
    await publishOfType(gw.url, '/failing', 'failing.never', ['n0']);
    await publishOfType(gw.url, '/failing', 'failing.window', ['w0', 'w1']);
    const more = async (id: string, n: number, what: string) => {
      const from = attempts(id);
      await waitFor(() => attempts(id) >= from + n, { what });
    };
    await more(windowed, 2, 'failures of w0');
    skew[0]! += 0.6 * DAY;
    await more(windowed, 2, 'failures of w0 later');
    // w0 succeeds: the window ends. w1 keeps failing, so a new one starts at its first failure.
    w0Succeeds = true;
    await waitFor(() => requestsForSubscription(receiver, windowed, 'w1').length >= 2, { what: 'failures of w1' });
    skew[0]! += 0.6 * DAY; // 1.2 days after the first failure of w0, 0.6 after the first of w1
    await more(windowed, 3, 'failures of w1 later');
    expect((await getSubscription(gw.url, windowed)).state).toBe('active');
    skew[0]! += 0.6 * DAY;
    await waitFor(async () => (await getSubscription(gw.url, windowed)).state === 'paused', { what: 'the pause' });
    await more(never, 3, 'failures of n0');
    expect((await getSubscription(gw.url, never)).state).toBe('active');
  });

  it('keeps the start of the failures across a restart', async () => {
    const dataDir = tmpDir();
    let gw = await start(dataDir);
    receiver.setResponder(() => ({ status: 500 }));
    const id = await subscribe(gw, 'failing.restart', { retry: { ...FAST_RETRY, initialDelayMs: 50, maxDelayMs: 50 } });
    await publishOfType(gw.url, '/failing', 'failing.restart', ['r0']);
    await waitFor(() => attempts(id) >= 2, { what: 'failed attempts' });
    await running.pop()!.close();

    skew[0]! += 5 * DAY;
    gw = await start(dataDir);
    await waitFor(async () => (await getSubscription(gw.url, id)).state === 'paused', { what: 'the pause after the restart' });
    expect((await getSubscription(gw.url, id)).stateReason).toBe('failing');
  });
});
