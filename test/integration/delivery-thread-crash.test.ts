import pino from 'pino';
import request from 'supertest';
import { loadConfig } from '../../src/config';
import { startGateway, type Gateway, type GatewayOptions } from '../../src/gateway';
import { publishBatch, requestsForSubscription } from '../helpers/delivery';
import { createContractChecker, createContractClient, loadContract } from '../helpers/openapi';
import { startReceiver, waitFor, type ReceivedRequest, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * Delivery runs in its own thread (issue 10 §1). A crash of that thread is survived: the gateway
 * starts it again from what it persisted, so every event is delivered at least once and in order
 * per partition, and the only repeats are of events the dead thread had not finished persisting
 * (same webhook-id); past its restart limit the gateway gives up (so a supervisor restarts it) and
 * answers what needs delivery with 503 meanwhile. The crash is a test-only option of startGateway,
 * which nothing in the API can set.
 */

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

let receiver: Receiver;
const running: Gateway[] = [];

async function start(options: GatewayOptions, env: Record<string, string> = {}) {
  const lines: LogLine[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  const config = loadConfig({ HERALD_PORT: '0', HERALD_PARTITIONS: '4', HERALD_DATA_DIR: tmpDir(), ...env });
  const gw = await startGateway(config, { log, ...options });
  running.push(gw);
  return { gw, lines };
}

beforeAll(async () => {
  receiver = await startReceiver();
});
afterEach(async () => {
  for (const gw of running.splice(0)) await gw.close();
  receiver.setResponder(() => ({ status: 204 }));
});
afterAll(async () => {
  await receiver?.close();
  cleanupTmpDirs();
});

const KEYS = ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7'];
const event = (i: number) => ({
  specversion: '1.0',
  id: `e${i}`,
  source: '/crash',
  type: 'crash.t',
  partitionkey: KEYS[i % KEYS.length],
  data: { i },
});

const header = (q: ReceivedRequest, name: string) => q.headers[name] as string | undefined;

describe('a crash of the delivery thread', () => {
  it('is survived: the thread restarts, every event arrives at least once and in order per partition, repeats keep their webhook-id', async () => {
    const { gw, lines } = await start({ deliveryCrashAfterAnswers: 40 });
    // The crash must find an attempt open whatever the machine's timing: e3's first answer takes 4 s, so its
    // partition waits behind it while the others reach the 40 answers that crash the thread. The rest answer
    // slowly enough that other attempts are usually open too.
    let heldOnce = false;
    receiver.setResponder((req) => {
      if (header(req, 'ce-id') !== 'e3' || heldOnce) return { status: 204, delayMs: 3 };
      heldOnce = true;
      return { status: 204, delayMs: 4000 };
    });
    const id = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body.id as string;
    const published = [];
    for (let batch = 0; batch < 6; batch++) {
      published.push(
        ...(await publishBatch(
          gw.url,
          Array.from({ length: 50 }, (_, i) => event(batch * 50 + i)),
        )),
      );
    }
    // A read made while the thread is down is answered 503 (Retry-After): asked again.
    await waitFor(
      async () => {
        const res = await request(gw.url).get(`/subscriptions/${id}`);
        if (res.status === 503) return undefined;
        expect(res.status).toBe(200);
        return (res.body.stats.partitions as { lag: number }[]).every((p) => p.lag === 0) || undefined;
      },
      { timeoutMs: 30_000, what: 'lag 0 after the restart' },
    );
    expect(lines.filter((l) => l.msg.startsWith('delivery thread exited; restarting it'))).toHaveLength(1);

    const received = requestsForSubscription(receiver, id);
    // Every event at least once.
    expect(new Set(received.map((q) => header(q, 'ce-id')))).toEqual(new Set(published.map((p) => p.id)));

    const byPartition = new Map<number, number[]>();
    for (const p of published) byPartition.set(p.partition, [...(byPartition.get(p.partition) ?? []), p.offset]);
    const firstWebhookId = new Map<string, string>();
    let repeats = 0;
    for (const [partition, offsets] of byPartition) {
      const here = received.filter((q) => Number(header(q, 'herald-partition')) === partition);
      const arrived = here.map((q) => Number(header(q, 'herald-offset')));
      // In order, but for at most one step back (the restart), after which delivery resumes in order.
      const stepsBack = arrived.filter((offset, i) => i > 0 && offset <= arrived[i - 1]!).length;
      expect(stepsBack).toBeLessThanOrEqual(1);
      for (let i = 1; i < arrived.length; i++) if (arrived[i]! > arrived[i - 1]!) expect(arrived[i]).toBe(arrived[i - 1]! + 1);
      expect([...new Set(arrived)].sort((a, b) => a - b)).toEqual(offsets);
      for (const q of here) {
        const offset = Number(header(q, 'herald-offset'));
        // The previous-offset chain is the partition's chain on every delivery, repeats included.
        const previous = offsets[offsets.indexOf(offset) - 1];
        expect(header(q, 'herald-previous-offset')).toBe(previous === undefined ? undefined : String(previous));
        const key = `${partition}:${offset}`;
        const webhookId = header(q, 'webhook-id')!;
        if (firstWebhookId.has(key)) {
          repeats++;
          expect(webhookId).toBe(firstWebhookId.get(key));
        } else firstWebhookId.set(key, webhookId);
      }
    }
    // Repeats are of what the dead thread had open or not yet persisted, a few per partition at most.
    expect(repeats).toBe(received.length - published.length);
    // The attempt open at the crash was sent again, as the same message.
    const e3 = received.filter((q) => header(q, 'ce-id') === 'e3');
    expect(e3).toHaveLength(2);
    expect(header(e3[1]!, 'webhook-id')).toBe(header(e3[0]!, 'webhook-id'));
    expect(repeats).toBeLessThan(published.length / 4);
  });

  it('past the restart limit gives up (onFatal) and answers subscription reads and callbacks with 503 and Retry-After', async () => {
    const fatal: Error[] = [];
    receiver.setResponder(() => ({ status: 202 }));
    const { gw } = await start({
      deliveryCrashAfterAnswers: 1,
      deliveryRestarts: { max: 0, windowMs: 60_000 },
      onFatal: (err) => fatal.push(err),
    });
    const id = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body.id as string;
    await publishBatch(gw.url, [event(0)]);
    await waitFor(() => fatal.length === 1, { what: 'the delivery thread to give up' });
    expect(fatal[0]!.message).toMatch(/delivery thread died/);

    const deliveryId = header(requestsForSubscription(receiver, id)[0]!, 'herald-delivery-id')!;
    // Each answer is checked against the contract (the document's DeliveryUnavailable response).
    const call = createContractClient(gw.url, createContractChecker(loadContract()));
    const ack = await call('POST', `/deliveries/${deliveryId}/ack`);
    expect(ack.status).toBe(503);
    expect(ack.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(ack.headers.get('retry-after')).toBe('1');
    const read = await call('GET', `/subscriptions/${id}`);
    expect(read.status).toBe(503);
    expect(read.headers.get('retry-after')).toBe('1');
    expect((await call('GET', `/subscriptions/${id}/attempts`)).status).toBe(503);
    // Ingest goes on: a dead delivery thread never stops events from being stored.
    expect(await publishBatch(gw.url, [event(1)])).toEqual([expect.objectContaining({ id: 'e1', offset: expect.any(Number) })]);
  });
});
