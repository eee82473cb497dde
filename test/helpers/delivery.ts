import request from 'supertest';
import { startTestGateway, type Env, type TestGateway } from './gateway';
import { createContractClient, type ContractChecker, type ContractClient } from './openapi';
import { startReceiver, waitFor, type ReceivedRequest, type Receiver } from './receiver';
import { cleanupTmpDirs } from './tmp';

/** Where one event was appended, as `POST /events` answers for each event. */
export interface AppendResult {
  id: string;
  partition: number;
  offset: number;
}

/** A gateway and a webhook receiver shared by every test of a file. */
export interface DeliveryFixture {
  /** The running gateway; read `url` inside tests and hooks. */
  gw: { readonly url: string };
  /** Reads through to the running receiver, so it can be captured before `beforeAll` has run. */
  receiver: Receiver;
}

function running<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`the ${what} is not running: use it inside a test or hook`);
  return value;
}

/**
 * Starts a gateway (with `env`) and a receiver answering 204 for the whole test file (`beforeAll`),
 * then closes both and removes the temp data dirs (`afterAll`).
 */
export function useDeliveryFixture(env: Env = {}): DeliveryFixture {
  let gateway: TestGateway | undefined;
  let receiver: Receiver | undefined;
  beforeAll(async () => {
    gateway = await startTestGateway(env);
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await receiver?.close();
    await gateway?.close();
    cleanupTmpDirs();
  });
  return {
    gw: {
      get url() {
        return running(gateway, 'gateway').url;
      },
    },
    receiver: {
      get url() {
        return running(receiver, 'receiver').url;
      },
      get requests() {
        return running(receiver, 'receiver').requests;
      },
      setResponder: (next) => running(receiver, 'receiver').setResponder(next),
      close: () => running(receiver, 'receiver').close(),
    },
  };
}

/** A contract client for a fixture's gateway: it can be made before `beforeAll` has started the gateway. */
export function contractClientFor(gw: { readonly url: string }, checker: ContractChecker): ContractClient {
  return (method, url, opts) => createContractClient(gw.url, checker)(method, url, opts);
}

/**
 * Returns a `createSubscription(body)` that POSTs /subscriptions (expecting 201), and registers an
 * `afterEach` that deletes the subscription it created last in that test.
 */
export function useLastSubscriptionCleanup(gw: { readonly url: string }): (body: Record<string, unknown>) => Promise<{ id: string }> {
  let current: string | undefined;
  afterEach(async () => {
    if (current) await request(gw.url).delete(`/subscriptions/${current}`);
    current = undefined;
  });
  return async (body) => {
    const res = await request(gw.url).post('/subscriptions').send(body).expect(201);
    current = res.body.id;
    return res.body as { id: string };
  };
}

/** POSTs events as one `application/cloudevents-batch+json` request, expects 202 and returns the append results in input order. */
export async function publishBatch(url: string, events: object[]): Promise<AppendResult[]> {
  const res = await request(url).post('/events').set('content-type', 'application/cloudevents-batch+json').send(JSON.stringify(events));
  expect(res.status).toBe(202);
  return res.body.results as AppendResult[];
}

/**
 * Publishes one event per id, all of `type` from `source`, as one batch (via {@link publishBatch}).
 * The type is the partition key, so the events share a partition and are delivered in order; each
 * event's data is `{ id }`.
 */
export const publishOfType = (url: string, source: string, type: string, ids: string[]): Promise<AppendResult[]> =>
  publishBatch(
    url,
    ids.map((id) => ({ specversion: '1.0', id, source, type, partitionkey: type, data: { id } })),
  );

/** `GET /subscriptions/{id}`, expecting 200; returns the subscription with its stats. */
export async function getSubscription(url: string, id: string) {
  return (await request(url).get(`/subscriptions/${id}`).expect(200)).body;
}

/** Polls the subscription until every partition has lag 0 (bounded by `timeoutMs`, default as `waitFor`); returns it. */
export function waitForLagZero(url: string, id: string, opts: { timeoutMs?: number; what?: string } = {}) {
  return waitFor(
    async () => {
      const sub = await getSubscription(url, id);
      return sub.stats.partitions.every((p: { lag: number }) => p.lag === 0) ? sub : undefined;
    },
    { timeoutMs: opts.timeoutMs, what: opts.what ?? 'lag 0' },
  );
}

/** The sum of a subscription's lag over its partitions. */
export const totalLag = (sub: { stats: { partitions: { lag: number }[] } }) => sub.stats.partitions.reduce((n, p) => n + p.lag, 0);

/** The requests a receiver got for one subscription, optionally only those for one event id (`ce-id`). */
export const requestsForSubscription = (receiver: Receiver, subscriptionId: string, ceId?: string): ReceivedRequest[] =>
  receiver.requests.filter(
    (q) => q.headers['herald-subscription-id'] === subscriptionId && (ceId === undefined || q.headers['ce-id'] === ceId),
  );
