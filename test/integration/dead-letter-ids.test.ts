/**
 * Dead letter ids are digits (OpenAPI: "A dead letter's `id` (digits)"). An id written otherwise
 * ("1e0", "0x1", " 1", "1.0") names no dead letter: it must be a 404 (or 400), never delete or
 * redeliver dead letter 1.
 */
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

let gw: TestGateway;
let receiver: Receiver;
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
  receiver = await startReceiver(() => ({ status: 400 })); // every delivery is dead-lettered at once
});
afterAll(async () => {
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

async function subscriptionWithOneDeadLetter(): Promise<{ sub: string; deadLetter: string }> {
  const res = await fetch(`${gw.url}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sink: receiver.url }),
  });
  const sub = ((await res.json()) as { id: string }).id;
  await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { 'ce-specversion': '1.0', 'ce-id': `dl-${sub}`, 'ce-source': '/dl', 'ce-type': 't', 'content-type': 'application/json' },
    body: '{}',
  });
  const deadLetter = await waitFor(
    async () => {
      const page = (await (await fetch(`${gw.url}/subscriptions/${sub}/dead-letters`)).json()) as { deadLetters: { id: string }[] };
      return page.deadLetters[0]?.id;
    },
    { timeoutMs: 15_000, what: 'a dead letter' },
  );
  return { sub, deadLetter };
}

it('DELETE /subscriptions/{id}/dead-letters/{deadLetterId} with a non-digit spelling of an id deletes nothing', async () => {
  const { sub, deadLetter } = await subscriptionWithOneDeadLetter();
  const spelled = `${deadLetter}e0`; // e.g. "1e0": Number() reads it as 1
  const res = await fetch(`${gw.url}/subscriptions/${sub}/dead-letters/${spelled}`, { method: 'DELETE' });
  const after = (await (await fetch(`${gw.url}/subscriptions/${sub}/dead-letters`)).json()) as { deadLetters: { id: string }[] };
  // Before the fix: 204, and dead letter <deadLetter> is gone.
  expect({ status: res.status, remaining: after.deadLetters.map((d) => d.id) }).toEqual({ status: 404, remaining: [deadLetter] });
});

it('POST .../dead-letters/redeliver with a non-digit spelling of an id redelivers nothing', async () => {
  const { sub, deadLetter } = await subscriptionWithOneDeadLetter();
  const res = await fetch(`${gw.url}/subscriptions/${sub}/dead-letters/redeliver`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ids: [`0x${Number(deadLetter).toString(16)}`] }),
  });
  // Before the fix: 202 {"redelivering": 1}.
  expect(res.status === 400 || ((await res.json()) as { redelivering: number }).redelivering === 0).toBe(true);
});
