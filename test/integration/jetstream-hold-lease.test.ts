/**
 * Messages a node keeps unsent while a receiver's Retry-After holds its requests (withdrawn: they
 * waited while the 429 came) have their leases renewed, so JetStream does not hand them out again:
 * each event goes once when the hold ends. Was: the first renewal came a third of ack_wait after the
 * withdrawal, not after the delivery, so a message withdrawn late in its lease lapsed, and both the
 * kept copy and JetStream's redelivery were sent; and a kept message whose lease lapsed anyway (the
 * node stalled past it) was sent beside the redelivery.
 * One real nats-server; one engine instance; the slow handling is the engine's test hook, the stall a
 * blocked event loop (a long GC pause).
 */
import { randomUUID } from 'node:crypto';
import { createLogger } from '../../src/logger';
import { openJetStreamEventStore, type JetStreamEventStore } from '../../src/jetstream/jetstream-event-store';
import { createJetStreamDelivery, type JetStreamDeliveryDeps } from '../../src/jetstream/delivery/jetstream-delivery';
import { deliverySchema } from '../../src/subscriptions/schema';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type ReceivedRequest, type Receiver } from '../helpers/receiver';
import { subscriptionRecord } from '../helpers/subscription-record';

jest.setTimeout(60_000);
const WAIT = { timeoutMs: 20_000, intervalMs: 25 };
const PARTITIONS = 2;
const log = createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent');
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
const header = (req: ReceivedRequest, name: string) => req.headers[name] as string | undefined;
/** Blocks this process's event loop (timers, sockets): a node frozen as by a long GC pause. */
const freeze = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

describeWithNats('jetstream: messages kept unsent under a Retry-After hold', () => {
  let cluster: NatsCluster;
  let store: JetStreamEventStore;
  const receivers: Receiver[] = [];
  const prefix = uniquePrefix('holdlease');
  const nats = () => ({ servers: cluster.urls, replicas: 1, prefix });
  const node = (name: string, beforeOpen: JetStreamDeliveryDeps['beforeOpen']) =>
    createJetStreamDelivery({
      nats: nats(),
      partitions: PARTITIONS,
      log,
      allowPrivateSinks: true,
      ackUrlBase: () => `http://${name}.invalid`,
      beforeOpen,
    });

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    store = await openJetStreamEventStore({ nats: nats(), partitions: PARTITIONS, idempotencyWindowMs: 3_600_000, log });
  });
  afterAll(async () => {
    for (const r of receivers) await r.close();
    await store?.close();
    await cluster?.stop();
  });

  async function publish(source: string, ids: string[]): Promise<void> {
    for (const id of ids)
      await store.append([{ attributes: { specversion: '1.0', id, source, type: 't' }, data: { kind: 'json', value: { id } } } as never]);
  }

  /**
   * h1 is answered 429 with `Retry-After: 4` (after 300 ms); h2..h5, published while its request is open, are
   * handled only `handlingMs` later (the hook), when the hold is in force: withdrawn and kept. `whileHeld` runs
   * once they are kept. Resolves with the requests once every event was answered 2xx and nothing is in flight.
   */
  async function heldAndReleased(handlingMs: number, whileHeld: () => void = () => {}) {
    const r = await startReceiver((_req, i) =>
      i === 0 ? { status: 429, headers: { 'retry-after': '4' }, delayMs: 300 } : { status: 204 },
    );
    receivers.push(r);
    const source = `/s/${randomUUID()}`;
    // ack_wait 2 s (timeoutMs and ackDeadlineMs 1 s), as in jetstream-delivery.test.ts.
    const delivery = deliverySchema.parse({ ordering: 'none', maxInFlight: 8, timeoutMs: 1000, ackDeadlineMs: 1000 });
    const sub = subscriptionRecord({ sink: r.url, filters: [{ exact: { source } }], delivery });
    const withheld = new Set<string>();
    const beforeOpen: JetStreamDeliveryDeps['beforeOpen'] = async ({ subscriptionId, partition, offset }) => {
      // The first handling of each of h2..h5 only (h1's request is open), not the one that sends it at the end of the hold.
      if (subscriptionId !== sub.id || r.requests.length === 0 || withheld.has(`${partition}/${offset}`)) return;
      withheld.add(`${partition}/${offset}`);
      await sleep(handlingMs);
    };
    const n = await node('n', beforeOpen);
    try {
      await n.add(sub, { onGone: () => {} });
      await publish(source, ['h1']);
      await waitFor(() => r.requests.length >= 1, WAIT);
      await publish(source, ['h2', 'h3', 'h4', 'h5']);
      await waitFor(() => withheld.size === 4, WAIT);
      await sleep(handlingMs + 100); // withdrawn and kept by now (the 429 was read after 300 ms)
      whileHeld();
      await waitFor(() => new Set(r.requests.slice(1).map((q) => header(q, 'ce-id'))).size === 5, WAIT);
      await waitFor(async () => {
        const s = await Promise.resolve(n.stats(sub.id)).catch(() => undefined);
        return s?.partitions.every((p) => p.lag === 0 && p.inFlight === 0);
      }, WAIT);
      await sleep(2500); // a redelivery after another ack_wait would have come by now
      return r.requests;
    } finally {
      await Promise.resolve(n.remove(sub.id)).catch(() => undefined);
      await n.close();
    }
  }

  const perEvent = (requests: ReceivedRequest[]) => {
    const counts: Record<string, number> = {};
    for (const q of requests.slice(1)) counts[header(q, 'ce-id')!] = (counts[header(q, 'ce-id')!] ?? 0) + 1;
    return counts;
  };

  /** Each event's `herald-attempt` after the refused request, by event. */
  const attempts = (requests: ReceivedRequest[]) =>
    requests
      .slice(1)
      .map((q) => [header(q, 'ce-id'), header(q, 'herald-attempt')])
      .sort();
  const ATTEMPTS = [
    ['h1', '2'],
    ['h2', '1'],
    ['h3', '1'],
    ['h4', '1'],
    ['h5', '1'],
  ];

  it('a message withdrawn late in its lease is renewed at once: each event goes once, as attempt 1 (h1: 2)', async () => {
    const requests = await heldAndReleased(1200);
    expect(perEvent(requests)).toEqual({ h1: 1, h2: 1, h3: 1, h4: 1, h5: 1 });
    expect(attempts(requests)).toEqual(ATTEMPTS);
  });

  it('a node frozen past the lease of the messages it keeps sends each event once when the hold ends', async () => {
    const requests = await heldAndReleased(500, () => freeze(2500));
    expect(perEvent(requests)).toEqual({ h1: 1, h2: 1, h3: 1, h4: 1, h5: 1 });
    // JetStream's redeliveries, each as attempt 1: the lapsed first delivery was no attempt (noted, as a give-back is).
    expect(attempts(requests)).toEqual(ATTEMPTS);
  });
});
