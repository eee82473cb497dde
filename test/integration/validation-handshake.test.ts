import Database from 'better-sqlite3';
import path from 'node:path';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { createContractChecker, createContractClient, loadContract, type ContractClient } from '../helpers/openapi';
import { startReceiver, waitFor, type Receiver, type ReceivedRequest, type Reply } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * The CloudEvents webhook validation handshake (issue 12 §4; http-webhook.md §4): consent in the
 * answer to OPTIONS, consent later through the callback URL, refusal, and the 10-minute wait across
 * a restart. Nothing is delivered before consent; every delivery after it names its origin.
 */

const checker = createContractChecker(loadContract());
let gw: TestGateway;
let call: ContractClient;
let receiver: Receiver;
/** How the receiver answers OPTIONS, per test; deliveries get 204. */
let answerOptions: (req: ReceivedRequest) => Reply = () => ({ status: 405 });

beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
  call = createContractClient(gw.url, checker);
  receiver = await startReceiver((req) => (req.method === 'OPTIONS' ? answerOptions(req) : { status: 204 }));
});

afterAll(async () => {
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

/** Each test uses its own sink path, so the receiver's requests can be told apart. */
const sinkFor = (name: string) => `${receiver.url}/${name}`;
const requestsTo = (name: string) => receiver.requests.filter((r) => r.url === `/hook/${name}`);
const ORIGIN = '127.0.0.1'; // the host of the gateway's URL (HERALD_PUBLIC_URL unset)

async function subscribe(name: string, delivery: Record<string, unknown> = {}) {
  const res = await call('POST', '/subscriptions', {
    json: { sink: sinkFor(name), filters: [{ exact: { source: `/handshake/${name}` } }], validation: 'cloudevents', delivery },
  });
  expect(res.status).toBe(201);
  expect(res.body).toMatchObject({ validation: 'cloudevents', state: 'validating', stateReason: null });
  return res.body as { id: string };
}

async function publish(name: string, id: string): Promise<void> {
  const res = await call('POST', '/events', {
    headers: { 'content-type': 'application/cloudevents+json' },
    json: { specversion: '1.0', id, source: `/handshake/${name}`, type: 'handshake.test', data: { id } },
  });
  expect(res.status).toBe(202);
}

const stateOf = async (id: string) => (await call('GET', `/subscriptions/${id}`)).body;

describe('validation: cloudevents', () => {
  it('sends OPTIONS first and delivers once the answer carries WebHook-Allowed-Origin; WebHook-Allowed-Rate is kept as the grant', async () => {
    answerOptions = () => ({ status: 200, headers: { 'WebHook-Allowed-Origin': ORIGIN, 'WebHook-Allowed-Rate': '120' } });
    const sub = await subscribe('sync', { rateLimit: { perSecond: 1 } });
    const active = await waitFor(async () => {
      const s = await stateOf(sub.id);
      return s.state === 'active' ? s : undefined;
    });
    // Was: the grant (2/s) replaced the operator's 1/s. A grant caps the rate; it never raises it.
    expect([active.delivery.rateLimit, active.allowedRate]).toEqual([{ perSecond: 1 }, { perSecond: 2 }]);

    const [options] = requestsTo('sync');
    expect(options!.method).toBe('OPTIONS');
    expect(options!.headers['webhook-request-origin']).toBe(ORIGIN);
    expect(options!.headers['webhook-request-rate']).toBe('60');
    expect(String(options!.headers['webhook-request-callback'])).toMatch(new RegExp(`^${gw.url}/validations/val_[A-Za-z0-9_-]{43}$`));

    await publish('sync', 'sync-1');
    const delivery = await waitFor(() => requestsTo('sync').find((r) => r.method === 'POST'));
    checker.checkWebhookRequest(delivery);
    expect(delivery.headers['webhook-request-origin']).toBe(ORIGIN);
    expect(delivery.headers['ce-id']).toBe('sync-1');
  });

  it.each([
    // [the operator's limit, the grant per minute, the grant per second]
    ['a lower grant slows deliveries down', 2, '60', 1],
    // Was: the grant replaced the limit, so this sink raised its deliveries to 2 a second.
    ['a higher grant does not speed them up', 1, '120', 2],
  ])(
    'delivers at the lower of the rate limit and the rate the sink allowed: %s',
    async (name, own, grant, granted) => {
      const sink = name.replace(/ /g, '-');
      answerOptions = () => ({ status: 200, headers: { 'WebHook-Allowed-Origin': ORIGIN, 'WebHook-Allowed-Rate': grant } });
      const sub = await subscribe(sink, { rateLimit: { perSecond: own } });
      await waitFor(async () => ((await stateOf(sub.id)).state === 'active' ? true : undefined));
      expect((await stateOf(sub.id)).allowedRate).toEqual({ perSecond: granted });
      for (let i = 0; i < 4; i++) await publish(sink, `${sink}-${i}`);
      const posts = await waitFor(
        () => {
          const sent = requestsTo(sink).filter((r) => r.method === 'POST');
          return sent.length === 4 ? sent : undefined;
        },
        { timeoutMs: 15_000 },
      );
      // One token a second (a bucket of one): the 4th is sent 3 s after the 1st at the earliest; at 2 a
      // second it came after 1.5 s. (A lower bound: a rate limiter is never faster than its rate.)
      expect(posts[3]!.receivedAt - posts[0]!.receivedAt).toBeGreaterThanOrEqual(2_900);
    },
    30_000,
  );

  it('waits after a 2xx without consent (the status alone never counts) until the callback consents', async () => {
    answerOptions = () => ({ status: 200 });
    const sub = await subscribe('async');
    const options = await waitFor(() => requestsTo('async').find((r) => r.method === 'OPTIONS'));
    expect(options.headers).not.toHaveProperty('webhook-request-rate');
    const callback = String(options.headers['webhook-request-callback']).slice(gw.url.length);
    await publish('async', 'async-1');
    // Give a wrongly-consenting gateway a chance to deliver (not a timing assertion: correct code never does).
    await new Promise((r) => setTimeout(r, 200));
    expect((await stateOf(sub.id)).state).toBe('validating');
    expect(requestsTo('async').filter((r) => r.method === 'POST')).toEqual([]);

    // A callback naming another origin is no consent.
    const other = await call('POST', callback, { headers: { 'webhook-allowed-origin': 'evil.example' } });
    expect(other.status).toBe(400);
    expect(other.body.errors).toEqual([expect.objectContaining({ attribute: 'webhook-allowed-origin' })]);
    expect((await stateOf(sub.id)).state).toBe('validating');

    const granted = await call('POST', callback, { headers: { 'WebHook-Allowed-Origin': '*', 'WebHook-Allowed-Rate': '*' } });
    expect(granted).toMatchObject({ status: 200, body: { state: 'active' } });
    expect(await stateOf(sub.id)).toMatchObject({ state: 'active', stateReason: null });
    const delivery = await waitFor(() => requestsTo('async').find((r) => r.method === 'POST'));
    expect(delivery.headers['webhook-request-origin']).toBe(ORIGIN);
    // The token was for one consent: it is no longer waited for.
    expect((await call('GET', callback, { headers: { 'webhook-allowed-origin': '*' } })).status).toBe(404);
    expect((await call('GET', '/validations/val_unknown')).status).toBe(404);
  });

  it('takes a plain GET of the callback URL, as a browser sends it, as consent (http-webhook §4.1.3)', async () => {
    answerOptions = () => ({ status: 200 });
    const sub = await subscribe('by-hand');
    const options = await waitFor(() => requestsTo('by-hand').find((r) => r.method === 'OPTIONS'));
    const callback = String(options.headers['webhook-request-callback']).slice(gw.url.length);
    await publish('by-hand', 'by-hand-1');
    // A HEAD (a link checker's) is no consent: express would have answered it with the GET handler.
    expect((await fetch(`${gw.url}${callback}`, { method: 'HEAD' })).status).toBe(404);
    expect((await stateOf(sub.id)).state).toBe('validating');
    // Was: 400 "consent needs WebHook-Allowed-Origin", which a browser cannot send; the subscription failed after 10 minutes.
    const opened = await call('GET', callback);
    expect(opened).toMatchObject({ status: 200, body: { state: 'active' } });
    const delivery = await waitFor(() => requestsTo('by-hand').find((r) => r.method === 'POST'));
    expect(delivery.headers['ce-id']).toBe('by-hand-1');
    expect((await stateOf(sub.id)).delivery.rateLimit ?? null).toBeNull();
  });

  it('pauses with validation_failed when the sink refuses, and resume validates again', async () => {
    answerOptions = () => ({ status: 405 });
    const sub = await subscribe('refused');
    const paused = await waitFor(async () => {
      const s = await stateOf(sub.id);
      return s.state === 'paused' ? s : undefined;
    });
    expect(paused.stateReason).toBe('validation_failed');
    await publish('refused', 'refused-1');

    answerOptions = () => ({ status: 204, headers: { 'webhook-allowed-origin': ORIGIN } });
    const resumed = await call('POST', `/subscriptions/${sub.id}/resume`);
    expect(resumed.body).toMatchObject({ state: 'validating', stateReason: null });
    await waitFor(async () => (await stateOf(sub.id)).state === 'active');
    // Subscribed before the event was published: it is delivered now, and only now.
    const delivery = await waitFor(() => requestsTo('refused').find((r) => r.method === 'POST'));
    expect(delivery.headers['ce-id']).toBe('refused-1');
    expect(requestsTo('refused').map((r) => r.method)).toEqual(['OPTIONS', 'OPTIONS', 'POST']);
  });

  it('pauses with validation_failed when the sink does not answer', async () => {
    answerOptions = () => ({ status: 200, destroy: true });
    const sub = await subscribe('silent');
    await waitFor(async () => (await stateOf(sub.id)).stateReason === 'validation_failed');
  });

  it('sends the handshake again after a restart, and fails it once the 10 minutes have passed', async () => {
    answerOptions = () => ({ status: 202 });
    const own = await startTestGateway({ HERALD_PARTITIONS: '1' });
    const ownCall = createContractClient(own.url, checker);
    const created = await ownCall('POST', '/subscriptions', { json: { sink: sinkFor('restart'), validation: 'cloudevents' } });
    const id = created.body.id as string;
    await waitFor(() => requestsTo('restart').length === 1);
    await own.close();

    const again = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_DATA_DIR: own.dataDir });
    try {
      await waitFor(() => requestsTo('restart').length === 2, { what: 'the handshake sent again' });
      expect((await createContractClient(again.url, checker)('GET', `/subscriptions/${id}`)).body.state).toBe('validating');
    } finally {
      await again.close();
    }
    // The wait has run out while the gateway was down.
    const db = new Database(path.join(own.dataDir, 'herald.db'));
    db.prepare('UPDATE subscriptions SET validation_deadline = ? WHERE id = ?').run(Date.now() - 1, id);
    db.close();
    const late = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_DATA_DIR: own.dataDir });
    try {
      const body = (await createContractClient(late.url, checker)('GET', `/subscriptions/${id}`)).body;
      expect(body).toMatchObject({ state: 'paused', stateReason: 'validation_failed' });
      expect(requestsTo('restart')).toHaveLength(2);
    } finally {
      await late.close();
    }
  });
});
