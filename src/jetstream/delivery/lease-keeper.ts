import { signal } from './ack-map';
import type { EngineContext } from './context';
import type { AckEntry } from './outcome';

/**
 * Keeps a lease longer than the consumer's `ack_wait` alive: `+WPI` restarts JetStream's timer for
 * one `ack_wait`, so an extended lease is renewed every half `ack_wait` until it ends or its attempt
 * is settled (checked in the ack map before each renewal). It runs on the node that took the extend
 * (or the 202): if that node stops, JetStream redelivers the event one `ack_wait` after the last
 * renewal, possibly before the lease promised to the receiver ends (a late ack is then a 409).
 */
export function createLeaseKeeper(ctx: EngineContext) {
  const timers = new Map<string, NodeJS.Timeout>();
  let stopped = false;

  function keep(deliveryId: string, entry: AckEntry): void {
    const until = entry.leaseUntil ?? 0;
    // One renewal (already sent) covers the lease: nothing to keep.
    if (stopped || until <= ctx.clock() + entry.ackWaitMs / 2) return;
    clearTimeout(timers.get(deliveryId));
    const timer = setTimeout(() => void renew(deliveryId), Math.max(10, entry.ackWaitMs / 2));
    timer.unref();
    timers.set(deliveryId, timer);
  }

  async function renew(deliveryId: string): Promise<void> {
    timers.delete(deliveryId);
    try {
      const got = await ctx.ackMap.get(deliveryId);
      if (stopped || !got || got.entry.state !== 'awaiting_ack' || (got.entry.leaseUntil ?? 0) <= ctx.clock()) return;
      await signal(ctx.nc, got.entry.reply, { kind: 'progress' });
      keep(deliveryId, got.entry);
    } catch (err) {
      ctx.log.warn({ err, deliveryId }, 'could not renew an ack lease; JetStream may redeliver the event early');
    }
  }

  return {
    keep,
    stop(): void {
      stopped = true;
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
    },
  };
}
export type LeaseKeeper = ReturnType<typeof createLeaseKeeper>;
