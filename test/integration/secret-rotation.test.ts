import { Webhook } from 'standardwebhooks';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { createContractChecker, createContractClient, loadContract, type ContractClient } from '../helpers/openapi';
import { startReceiver, waitFor, type Receiver, type ReceivedRequest } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * Secret rotation with overlap (issue 12 §1): until `previousSecretExpiresAt` every delivery is
 * signed with the new secret and the replaced one (`v1,<new> v1,<old>`), verified here with the
 * `standardwebhooks` package; after it, with the new one only.
 */

const checker = createContractChecker(loadContract());
let gw: TestGateway;
let call: ContractClient;
let receiver: Receiver;
let seq = 0;

beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
  call = createContractClient(gw.url, checker);
  receiver = await startReceiver();
});

afterAll(async () => {
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

/** A structured-mode subscription (`standardwebhooks` verifies UTF-8 JSON bodies) for one event type. */
async function subscribe(type: string): Promise<{ id: string; secret: string }> {
  const res = await call('POST', '/subscriptions', {
    json: { sink: receiver.url, filters: [{ exact: { type } }], delivery: { format: 'structured' } },
  });
  expect(res.status).toBe(201);
  return res.body;
}

/** Publishes one event of `type` and returns the request the receiver got for it (checked against the contract). */
async function deliverOne(type: string): Promise<ReceivedRequest> {
  const id = `rotation-${++seq}`;
  const res = await call('POST', '/events', {
    headers: { 'content-type': 'application/cloudevents+json' },
    json: { specversion: '1.0', id, source: '/rotation', type, data: { seq } },
  });
  expect(res.status).toBe(202);
  const req = await waitFor(() => receiver.requests.find((r) => r.headers['ce-id'] === id || r.body.includes(`"id":"${id}"`)), {
    what: `delivery of ${id}`,
  });
  checker.checkWebhookRequest(req);
  return req;
}

const rotate = (id: string, body?: unknown) => call('POST', `/subscriptions/${id}/rotate-secret`, body === undefined ? {} : { json: body });

/** Whether `secret` verifies the delivery, as a receiver using the `standardwebhooks` package would check it. */
const verifies = (secret: string, req: ReceivedRequest) => {
  try {
    new Webhook(secret).verify(req.body.toString('utf8'), req.headers as Record<string, string>);
    return true;
  } catch {
    return false;
  }
};
const signatures = (req: ReceivedRequest) => String(req.headers['webhook-signature']).split(' ');

describe('rotate-secret with an overlap', () => {
  it('signs with both secrets, new first, until previousSecretExpiresAt, then with the new one only', async () => {
    const sub = await subscribe('rotation.overlap');
    const before = await deliverOne('rotation.overlap');
    expect(verifies(sub.secret, before)).toBe(true);
    expect(signatures(before)).toHaveLength(1);

    const rotated = await rotate(sub.id, { overlapSeconds: 1 });
    expect(rotated.status).toBe(200);
    const newSecret = rotated.body.secret as string;
    expect(newSecret).not.toBe(sub.secret);
    const expiresAt = Date.parse(rotated.body.previousSecretExpiresAt);
    expect(expiresAt).toBeGreaterThan(Date.now());
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 1000);

    const during = await deliverOne('rotation.overlap');
    expect(signatures(during)).toHaveLength(2);
    expect(verifies(newSecret, during)).toBe(true);
    expect(verifies(sub.secret, during)).toBe(true);
    // New first: the first signature alone is the new secret's.
    const newOnly = { ...during, headers: { ...during.headers, 'webhook-signature': signatures(during)[0] } };
    expect(verifies(newSecret, newOnly)).toBe(true);
    expect(verifies(sub.secret, newOnly)).toBe(false);

    // Wait out the one-second overlap (a wait, not a timing assertion).
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now()) + 100));
    expect((await call('GET', `/subscriptions/${sub.id}`)).body).not.toHaveProperty('previousSecretExpiresAt');
    const after = await deliverOne('rotation.overlap');
    expect(signatures(after)).toHaveLength(1);
    expect(verifies(newSecret, after)).toBe(true);
    expect(verifies(sub.secret, after)).toBe(false);
  });

  it('overlaps by a day by default, and a rotation during an overlap keeps only the newest previous secret', async () => {
    const sub = await subscribe('rotation.twice');
    const first = await rotate(sub.id); // no body: the default overlap
    expect(Date.parse(first.body.previousSecretExpiresAt) - Date.now()).toBeGreaterThan(86_400_000 - 60_000);
    const second = await rotate(sub.id, { overlapSeconds: 3600 });
    const req = await deliverOne('rotation.twice');
    expect(signatures(req)).toHaveLength(2);
    expect(verifies(second.body.secret, req)).toBe(true);
    expect(verifies(first.body.secret, req)).toBe(true);
    expect(verifies(sub.secret, req)).toBe(false);
  });

  it('with overlapSeconds 0 the old secret stops at once, an overlap included', async () => {
    const sub = await subscribe('rotation.zero');
    await rotate(sub.id, { overlapSeconds: 3600 });
    const rotated = await rotate(sub.id, { overlapSeconds: 0 });
    expect(rotated.body).not.toHaveProperty('previousSecretExpiresAt');
    const req = await deliverOne('rotation.zero');
    expect(signatures(req)).toHaveLength(1);
    expect(verifies(rotated.body.secret, req)).toBe(true);
  });

  it('keeps the overlap across a restart', async () => {
    const sub = await subscribe('rotation.restart');
    const rotated = await rotate(sub.id, { overlapSeconds: 3600 });
    const dataDir = gw.dataDir;
    await gw.close();
    gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_DATA_DIR: dataDir });
    call = createContractClient(gw.url, checker);
    expect((await call('GET', `/subscriptions/${sub.id}`)).body.previousSecretExpiresAt).toBe(rotated.body.previousSecretExpiresAt);
    const req = await deliverOne('rotation.restart');
    expect(verifies(rotated.body.secret, req)).toBe(true);
    expect(verifies(sub.secret, req)).toBe(true);
  });

  it('refuses a bad overlap and a body that is not JSON', async () => {
    const sub = await subscribe('rotation.bad');
    for (const body of [{ overlapSeconds: -1 }, { overlapSeconds: 604_801 }, { overlapSeconds: 1.5 }, { overlapSeconds: '60' }]) {
      const res = await rotate(sub.id, body);
      expect([body, res.status, res.body.errors[0].attribute]).toEqual([body, 400, 'overlapSeconds']);
    }
    const text = await call('POST', `/subscriptions/${sub.id}/rotate-secret`, { headers: { 'content-type': 'text/plain' }, body: '60' });
    expect(text.status).toBe(415);
  });
});
