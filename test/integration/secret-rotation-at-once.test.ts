/**
 * "`{"overlapSeconds": 0}` stops the old secret at once" (README, Rotating a secret). Once
 * POST /subscriptions/{id}/rotate-secret has answered 200 with the new secret, no delivery attempt
 * may *start* signed with the old secret alone: a receiver that switches to the new secret on that
 * answer would refuse it.
 */
import { createHmac } from 'node:crypto';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver, type ReceivedRequest } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

let gw: TestGateway;
let receiver: Receiver;
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '8' });
  receiver = await startReceiver(() => ({ status: 204 }));
});
afterAll(async () => {
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

function signedWith(secret: string, req: ReceivedRequest): boolean {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const expected = createHmac('sha256', key)
    .update(`${req.headers['webhook-id']}.${req.headers['webhook-timestamp']}.`)
    .update(req.body)
    .digest('base64');
  return String(req.headers['webhook-signature']).split(' ').includes(`v1,${expected}`);
}

it('signs no attempt started after the rotation was answered with the old secret only', async () => {
  const created = await fetch(`${gw.url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink: receiver.url, startAt: 'earliest', delivery: { ordering: 'none', maxInFlight: 64 } }),
  });
  const { id: sub, secret: first } = (await created.json()) as { id: string; secret: string };
  let secret = first;
  const events = Array.from({ length: 5000 }, (_, i) => ({ specversion: '1.0', id: `r-${i}`, source: '/rotate', type: 't', data: {} }));
  for (let i = 0; i < events.length; i += 1000) {
    const res = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents-batch+json' },
      body: JSON.stringify(events.slice(i, i + 1000)),
    });
    await res.arrayBuffer(); // read: an answer left unread holds its connection open past the test
  }
  await waitFor(() => receiver.requests.length > 100, { timeoutMs: 10_000, what: 'deliveries under way' });

  const violations: { startedMsAfterAnswer: number; deliveryId: string }[] = [];
  for (let round = 0; round < 10 && violations.length === 0; round++) {
    const old = secret;
    const res = await fetch(`${gw.url}/subscriptions/${sub}/rotate-secret`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"overlapSeconds": 0}',
    });
    const answeredAt = Date.now();
    secret = ((await res.json()) as { secret: string }).secret;
    await new Promise((r) => setTimeout(r, 50));
    const page = (await (await fetch(`${gw.url}/subscriptions/${sub}/attempts?limit=1000`)).json()) as {
      attempts: { deliveryId: string; startedAt: string }[];
    };
    const startedAt = new Map(page.attempts.map((a) => [a.deliveryId, Date.parse(a.startedAt)]));
    for (const req of receiver.requests) {
      const started = startedAt.get(String(req.headers['herald-delivery-id']));
      if (started !== undefined && started > answeredAt && signedWith(old, req) && !signedWith(secret, req))
        violations.push({ startedMsAfterAnswer: started - answeredAt, deliveryId: String(req.headers['herald-delivery-id']) });
    }
  }
  // Before the fix: attempts started a few ms after the 200 carry only the old secret's signature (the
  // delivery thread is told of the new secret after the answer is sent, and keeps sending meanwhile).
  expect(violations).toEqual([]);
});
