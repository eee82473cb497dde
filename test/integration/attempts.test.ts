import Database from 'better-sqlite3';
import path from 'node:path';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { createContractChecker, createContractClient, loadContract } from '../helpers/openapi';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * `GET /subscriptions/{id}/attempts` (issue 13 §1): the attempt log, newest first, one entry per
 * request sent, the newest 1,000 per subscription kept across restarts, gone with the subscription.
 * Every answer is validated against the OpenAPI document.
 */

const checker = createContractChecker(loadContract());
let gateway: TestGateway;
let receiver: Receiver;
const call = (method: string, url: string, opts?: Parameters<ReturnType<typeof createContractClient>>[2]) =>
  createContractClient(gateway.url, checker)(method, url, opts);

beforeAll(async () => {
  gateway = await startTestGateway({ HERALD_PARTITIONS: '2' });
  receiver = await startReceiver();
});
afterAll(async () => {
  await receiver.close();
  await gateway?.close();
  cleanupTmpDirs();
});

const fastRetry = { maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 10, jitter: 0 };

async function subscribe(source: string, delivery: Record<string, unknown> = {}): Promise<string> {
  const res = await call('POST', '/subscriptions', {
    json: { sink: receiver.url, filters: [{ exact: { source } }], delivery: { retry: fastRetry, ...delivery } },
  });
  expect(res.status).toBe(201);
  return res.body.id as string;
}

async function publish(source: string, ids: string[]): Promise<void> {
  const res = await call('POST', '/events', {
    headers: { 'content-type': 'application/cloudevents-batch+json' },
    json: ids.map((id) => ({ specversion: '1.0', id, source, type: 'attempts.test', partitionkey: 'one', data: { id } })),
  });
  expect(res.status).toBe(202);
}

const attemptsOf = async (id: string, query = '') => {
  const res = await call('GET', `/subscriptions/${id}/attempts${query}`);
  expect(res.status).toBe(200);
  return res.body as { attempts: Record<string, any>[]; next: string | null };
};

describe('GET /subscriptions/{id}/attempts', () => {
  it('lists each request newest first with its status, error, duration and what was done with it', async () => {
    const source = '/attempts/outcomes';
    const sub = await subscribe(source);
    let failures = 0;
    receiver.setResponder((req) => {
      if (req.headers['ce-source'] !== source) return { status: 204 };
      if (req.headers['ce-id'] === 'bad') return { status: 400, body: 'no such order' };
      return failures++ < 2 ? { status: 503, body: 'busy' } : { status: 204 };
    });
    await publish(source, ['flaky']);
    const log = await waitFor(async () => {
      const page = await attemptsOf(sub);
      return page.attempts[0]?.outcome === 'delivered' ? page : undefined;
    });
    expect(log.next).toBeNull();
    expect(log.attempts.map((a) => [a.attempt, a.status, a.outcome])).toEqual([
      [3, 204, 'delivered'],
      [2, 503, 'retry'],
      [1, 503, 'retry'],
    ]);
    expect(log.attempts[1]!.error).toBe('busy');
    expect(log.attempts[0]!.error).toBeNull();
    // The delivery ids are those the receiver saw as herald-delivery-id, newest first.
    const sent = receiver.requests.filter((r) => r.headers['ce-source'] === source).map((r) => r.headers['herald-delivery-id']);
    expect(log.attempts.map((a) => a.deliveryId)).toEqual(sent.reverse());
    for (const a of log.attempts) {
      expect(a.durationMs).toBeGreaterThanOrEqual(0);
      expect(Date.parse(a.startedAt)).toBeLessThanOrEqual(Date.now());
    }

    await publish(source, ['bad']);
    const dead = await waitFor(async () => {
      const page = await attemptsOf(sub, '?limit=1');
      return page.attempts[0]?.outcome === 'dead_lettered' ? page : undefined;
    });
    expect(dead.attempts[0]).toMatchObject({ attempt: 1, status: 400, error: 'no such order' });
    expect(dead.next).not.toBeNull();
  });

  it('shows a 202 in manual-ack mode as awaiting_ack and a connection failure with status null', async () => {
    const source = '/attempts/manual';
    const sub = await subscribe(source, { ackMode: 'manual' });
    receiver.setResponder(() => ({ status: 202 }));
    await publish(source, ['m1']);
    const page = await waitFor(async () => ((await attemptsOf(sub)).attempts.length === 1 ? attemptsOf(sub) : undefined));
    expect(page.attempts[0]).toMatchObject({ attempt: 1, status: 202, outcome: 'awaiting_ack', error: null });

    // A sink nobody listens on: no answer, the error says why.
    const closed = await startReceiver();
    const closedUrl = closed.url;
    await closed.close();
    const created = await call('POST', '/subscriptions', {
      json: { sink: closedUrl, filters: [{ exact: { source: '/attempts/refused' } }], delivery: { retry: fastRetry } },
    });
    expect(created.status).toBe(201);
    await publish('/attempts/refused', ['r1']);
    const refused = await waitFor(async () => {
      const p = await attemptsOf(created.body.id);
      return p.attempts.length > 0 ? p : undefined;
    });
    expect(refused.attempts.at(-1)).toMatchObject({ attempt: 1, status: null, outcome: 'retry' });
    expect(refused.attempts.at(-1)!.error).toMatch(/ECONNREFUSED/);
    expect((await call('DELETE', `/subscriptions/${created.body.id}`)).status).toBe(204);
  });

  it('pages with before/next and refuses a bad cursor, a bad limit and an unknown subscription', async () => {
    const source = '/attempts/pages';
    const sub = await subscribe(source);
    receiver.setResponder(() => ({ status: 204 }));
    await publish(
      source,
      Array.from({ length: 5 }, (_, i) => `p${i}`),
    );
    await waitFor(async () => ((await attemptsOf(sub)).attempts.length === 5 ? true : undefined));
    const first = await attemptsOf(sub, '?limit=2');
    expect(first.attempts).toHaveLength(2);
    const second = await attemptsOf(sub, `?limit=2&before=${first.next}`);
    const third = await attemptsOf(sub, `?limit=2&before=${second.next}`);
    expect(third.next).toBeNull();
    const offsets = [...first.attempts, ...second.attempts, ...third.attempts].map((a) => a.offset);
    expect(offsets).toEqual([...offsets].sort((a, b) => b - a));
    expect(new Set(offsets).size).toBe(5);

    for (const query of ['?before=abc', '?before=-1', '?limit=0', '?limit=1001']) {
      const res = await call('GET', `/subscriptions/${sub}/attempts${query}`);
      expect(res.status).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
    }
    expect((await call('GET', '/subscriptions/nope/attempts')).status).toBe(404);
  });

  it('keeps the newest 1,000 across a restart, and none once the subscription is deleted', async () => {
    const source = '/attempts/kept';
    const sub = await subscribe(source);
    receiver.setResponder(() => ({ status: 204 }));
    const total = 1_050;
    for (let i = 0; i < total; i += 525)
      await publish(
        source,
        Array.from({ length: 525 }, (_, j) => `k${i + j}`),
      );
    await waitFor(
      async () => ((await call('GET', `/subscriptions/${sub}`)).body.stats.partitions.every((p: any) => p.lag === 0) ? true : undefined),
      {
        timeoutMs: 30_000,
      },
    );
    const newest = (await attemptsOf(sub, '?limit=1')).attempts[0]!;

    const { dataDir } = gateway;
    await gateway.close();
    gateway = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir });

    const all = await attemptsOf(sub, '?limit=1000');
    expect(all.attempts).toHaveLength(1000);
    expect(all.next).toBeNull();
    expect(all.attempts[0]).toEqual(newest);
    // The newest 1,000 of 1,050 deliveries of one partition: offsets of the last 1,000 events.
    const offsets = all.attempts.map((a) => a.offset).sort((a, b) => a - b);
    expect(offsets[999]! - offsets[0]!).toBe(999);

    expect((await call('DELETE', `/subscriptions/${sub}`)).status).toBe(204);
    expect((await call('GET', `/subscriptions/${sub}/attempts`)).status).toBe(404);
    const db = new Database(path.join(dataDir, 'herald.db'), { readonly: true });
    try {
      expect(db.prepare('SELECT COUNT(*) AS n FROM delivery_attempts WHERE subscription_id = ?').get(sub)).toEqual({ n: 0 });
    } finally {
      db.close();
    }
  });
});
