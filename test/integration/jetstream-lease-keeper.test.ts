import { randomUUID } from 'node:crypto';
import { connect, StorageType, type NatsConnection } from 'nats';
import pino from 'pino';
import { createAckMap, type AckMap } from '../../src/jetstream/delivery/ack-map';
import type { EngineContext } from '../../src/jetstream/delivery/context';
import { createLeaseKeeper } from '../../src/jetstream/delivery/lease-keeper';
import type { AckEntry } from '../../src/jetstream/delivery/outcome';
import { describeWithNats, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster';

/**
 * The lease keeper against a real nats-server and a real ack map, whose reads fail when a test says
 * so (a server that stalled a moment, a leader election): what `+WPI` renewals reach the message's
 * ack subject. The keeper reads only `nc`, `ackMap`, `clock` and `log` of the engine's context.
 */

const ACK_WAIT_MS = 400; // renewed every 200 ms

describeWithNats('the JetStream lease keeper', () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;
  let ackMap: AckMap;
  /** Reads of the ack map still to fail. */
  let failing = 0;

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    nc = await connect({ servers: cluster.urls });
    const kv = await nc.jetstream().views.kv(`leases_${randomUUID().slice(0, 8)}`, { history: 1, storage: StorageType.Memory });
    ackMap = createAckMap(kv);
  }, 60_000);

  afterAll(async () => {
    await nc?.close();
    await cluster?.stop();
  }, 60_000);

  function keeper() {
    const faulty: AckMap = {
      ...ackMap,
      get: async (id) => {
        if (failing > 0) {
          failing--;
          throw Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' });
        }
        return ackMap.get(id);
      },
    };
    const ctx = { nc, ackMap: faulty, clock: Date.now, log: pino({ level: 'silent' }) } as unknown as EngineContext;
    return createLeaseKeeper(ctx);
  }

  /** An attempt awaiting its ack under a lease of `leaseMs`, in the ack map, and the renewals its ack subject gets. */
  async function heldAttempt(leaseMs: number) {
    const deliveryId = `dlv_${randomUUID()}`;
    const reply = `test.ack.${randomUUID()}`;
    const entry: AckEntry = {
      reply,
      subscriptionId: 'sub',
      partition: 0,
      offset: 0,
      generation: 0,
      redrive: false,
      attempt: 1,
      state: 'awaiting_ack',
      leaseUntil: Date.now() + leaseMs,
      leaseFloor: null,
      lastStatus: 202,
      lastError: null,
      policy: { retry: { maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 10 }, ackDeadlineMs: 100, ackMode: 'manual' },
      ackWaitMs: ACK_WAIT_MS,
      openedAt: Date.now(),
    } as AckEntry;
    expect(await ackMap.open(deliveryId, entry)).toBeDefined();
    const renewals: number[] = [];
    const sub = nc.subscribe(reply, { callback: () => void renewals.push(Date.now()) });
    await nc.flush();
    return { deliveryId, entry, renewals, done: () => sub.unsubscribe() };
  }

  it('tries a renewal that failed again at once, so the lease does not end one ack_wait later (re-probe: never renewed again)', async () => {
    const keep = keeper();
    const held = await heldAttempt(2500);
    try {
      failing = 2; // the first renewal and its first retry fail
      keep.keep(held.deliveryId, held.entry);
      await new Promise((r) => setTimeout(r, 1500));
      // Renewals kept coming after the failures, never a gap near ack_wait.
      expect(held.renewals.length).toBeGreaterThanOrEqual(3);
      const gaps = held.renewals.slice(1).map((t, i) => t - held.renewals[i]!);
      expect(Math.max(...gaps)).toBeLessThan(ACK_WAIT_MS);
      // Its lease over, they stop.
      await new Promise((r) => setTimeout(r, 1500));
      const after = held.renewals.length;
      await new Promise((r) => setTimeout(r, 600));
      expect(held.renewals.length).toBe(after);
    } finally {
      failing = 0;
      held.done();
      keep.stop();
    }
  });
});
