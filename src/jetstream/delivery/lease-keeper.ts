import { signal } from './ack-map';
import type { EngineContext } from './context';
import { leaseEnd, type AckEntry } from './outcome';

/** How often leases that have ended are forgotten. */
const SWEEP_MS = 5000;
/** A renewal that failed is tried again this soon (at most; a quarter of `ack_wait` when that is shorter). */
const RENEW_RETRY_MS = 1000;

/**
 * Keeps the leases of the attempts this node holds (answered 202, or extended) alive in JetStream:
 * `+WPI` restarts the message's timer for one `ack_wait`, so a lease longer than that is renewed
 * every half `ack_wait` until it ends or its attempt is settled (checked in the ack map before each
 * renewal). It runs on the node that took the extend (or the 202): if that node stops, JetStream
 * redelivers the event one `ack_wait` after the last renewal, possibly before the lease promised to
 * the receiver ends (a late ack is then a 409). An extend taken while the request is still open (the
 * entry `sending`, on this node or another) is held as well, to its lease's floor: the node sending
 * may stop or lose the request, and its answer may come from another node than the extend's (probe:
 * one `+WPI` and no renewal, so the event came again one `ack_wait` in, inside the lease promised).
 *
 * A PATCH that lowers a subscription's `ack_wait` (a shorter `ackDeadlineMs` or `timeoutMs`) applies
 * to messages already out: every lease held here is renewed at once and then on the new schedule,
 * so the leases already promised still hold. Every hold is remembered until its lease ends for that.
 */
/** A request open on this node: how to renew its message, and its renewal timer once one is needed. */
interface OpenSend {
  subscriptionId: string;
  renew: () => void;
  timer?: NodeJS.Timeout;
}

export function createLeaseKeeper(ctx: EngineContext) {
  /** `failing`: its last renewal failed (logged once until one goes through). */
  const holds = new Map<string, { entry: AckEntry; timer?: NodeJS.Timeout; failing?: boolean }>();
  /** A subscription's `ack_wait` since a PATCH changed it, for holds taken under the one before. */
  const current = new Map<string, number>();
  const open = new Set<OpenSend>();
  let stopped = false;

  const ackWaitOf = (entry: AckEntry) => Math.min(entry.ackWaitMs, current.get(entry.subscriptionId) ?? Infinity);

  function keep(deliveryId: string, entry: AckEntry): void {
    if (stopped) return;
    const until = leaseEnd(entry);
    const held = holds.get(deliveryId);
    clearTimeout(held?.timer);
    if (until <= ctx.clock()) {
      holds.delete(deliveryId);
      return;
    }
    const half = ackWaitOf(entry) / 2;
    // One renewal (already sent) covers the lease: remembered only in case the ack_wait is lowered.
    if (until <= ctx.clock() + half) return void holds.set(deliveryId, { entry });
    const timer = setTimeout(() => void renew(deliveryId), Math.max(10, half));
    timer.unref();
    holds.set(deliveryId, { entry, timer });
  }

  async function renew(deliveryId: string): Promise<void> {
    const held = holds.get(deliveryId);
    clearTimeout(held?.timer);
    try {
      const got = await ctx.ackMap.get(deliveryId);
      if (stopped || !got || leaseEnd(got.entry) <= ctx.clock()) {
        holds.delete(deliveryId);
        return;
      }
      await signal(ctx.nc, got.entry.reply, { kind: 'progress' });
      if (held?.failing) ctx.log.info({ deliveryId }, 'ack lease renewed again');
      keep(deliveryId, got.entry);
    } catch (err) {
      retryRenewal(deliveryId, held, err);
    }
  }

  /**
   * A renewal that failed (a NATS server that stalled a moment, a leader election) is tried again
   * soon while the lease lasts: given up, the lease ended one `ack_wait` after the last renewal, the
   * event came again inside it and the receiver's ack was a 409 (re-probe). Left alone when an extend
   * replaced the hold meanwhile.
   */
  function retryRenewal(deliveryId: string, held: { entry: AckEntry; failing?: boolean } | undefined, err: unknown): void {
    if (!held?.failing)
      ctx.log.warn(
        { err, deliveryId },
        'could not renew an ack lease; trying again (JetStream redelivers the event if none goes through in time)',
      );
    if (stopped || !held || holds.get(deliveryId) !== held) return;
    if (leaseEnd(held.entry) <= ctx.clock()) return void holds.delete(deliveryId);
    const timer = setTimeout(() => void renew(deliveryId), Math.max(10, Math.min(RENEW_RETRY_MS, ackWaitOf(held.entry) / 4)));
    timer.unref();
    holds.set(deliveryId, { entry: held.entry, timer, failing: true });
  }

  const sweep = setInterval(() => {
    const now = ctx.clock();
    for (const [id, held] of holds) if (!held.timer && leaseEnd(held.entry) <= now) holds.delete(id);
  }, SWEEP_MS);
  sweep.unref();

  /** Renews an open request's message now and every half of the subscription's `ack_wait` until it is answered. */
  function renewOpen(send: OpenSend): void {
    clearTimeout(send.timer);
    send.renew();
    send.timer = setTimeout(() => renewOpen(send), Math.max(10, (current.get(send.subscriptionId) ?? 0) / 2));
    send.timer.unref();
  }

  return {
    keep,
    /** A request of the subscription is open (`renew` sends its message's `+WPI`); the function returned ends it. */
    sending(subscriptionId: string, renew: () => void): () => void {
      const send: OpenSend = { subscriptionId, renew };
      open.add(send);
      return () => {
        clearTimeout(send.timer);
        open.delete(send);
      };
    },
    /**
     * The subscription's consumer is about to get another `ack_wait`. When shorter, the leases held
     * here are renewed now and then every half of it, so none ends in JetStream before the receiver's.
     */
    ackWaitChanged(subscriptionId: string, ackWaitMs: number, before: number): void {
      if (stopped) return;
      current.set(subscriptionId, ackWaitMs);
      if (ackWaitMs >= before) return;
      for (const [id, held] of holds) if (held.entry.subscriptionId === subscriptionId) void renew(id);
      // A request sent under the longer ack_wait may outlast the new one.
      for (const send of open) if (send.subscriptionId === subscriptionId) renewOpen(send);
    },
    /** The subscription is gone from this node: its holds are forgotten. */
    forget(subscriptionId: string): void {
      current.delete(subscriptionId);
      for (const [id, held] of holds)
        if (held.entry.subscriptionId === subscriptionId) {
          clearTimeout(held.timer);
          holds.delete(id);
        }
    },
    stop(): void {
      stopped = true;
      clearInterval(sweep);
      for (const held of holds.values()) clearTimeout(held.timer);
      holds.clear();
      for (const send of open) clearTimeout(send.timer);
      open.clear();
    },
  };
}
export type LeaseKeeper = ReturnType<typeof createLeaseKeeper>;
