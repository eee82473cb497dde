import { DEAD_LETTER_LINE_MS, throttledLine } from '../../logger';
import { signal } from './ack-map';
import type { AttemptTarget, EngineContext } from './context';
import { markMatched } from './positions';
import type { JsAction } from './outcome';
import type { DeadLetterReason } from '../../subscriptions/delivery-records';
import type { AttemptEffect } from '../../delivery/attempt-machine';

/** Counts a settled step's `observe` effects (the metrics), as the local engine's worker does with them. */
export function observeEffects(ctx: EngineContext, subscriptionId: string, effects: readonly AttemptEffect[]): void {
  if (!ctx.observer) return;
  for (const e of effects) if (e.kind === 'observe') ctx.observer.outcome(subscriptionId, e.outcome);
}

/** Per engine and subscription, the `event dead-lettered` line: at most one a second, as on the local engine. */
const deadLetterLines = new WeakMap<EngineContext, Map<string, ReturnType<typeof throttledLine>>>();
function deadLetterLine(ctx: EngineContext, subscriptionId: string): ReturnType<typeof throttledLine> {
  let lines = deadLetterLines.get(ctx);
  if (!lines) deadLetterLines.set(ctx, (lines = new Map()));
  if (lines.size >= 10_000) lines.clear(); // deleted subscriptions' lines go with the rest, now and then
  let line = lines.get(subscriptionId);
  if (!line) lines.set(subscriptionId, (line = throttledLine(DEAD_LETTER_LINE_MS, ctx.clock)));
  return line;
}

/** How long after a 410 the event may be pulled again (see `settleMessage`). */
const GONE_REDELIVERY_DELAY_MS = 1000;

/** The last attempt's result, for a dead letter. */
export interface LastResult {
  attempt: number;
  lastStatus: number | null;
  lastError: string | null;
}

/** Stores a dead letter; `msgId` (the attempt's delivery id) makes a retried publish store it once. */
export async function storeDeadLetter(ctx: EngineContext, t: AttemptTarget, reason: DeadLetterReason, last: LastResult, msgId: string) {
  await ctx.deadLetters.add(
    {
      subscriptionId: t.subscriptionId,
      partition: t.partition,
      offset: t.offset,
      attempts: last.attempt,
      lastStatus: last.lastStatus,
      lastError: last.lastError?.slice(0, 1024) ?? null,
      reason,
      deadAt: ctx.clock(),
      seekGeneration: t.generation,
    },
    msgId,
  );
}

/**
 * Performs what the attempt machine decided on the JetStream message, from whichever node: the
 * cluster-side records first (position, dead letter), the message's ack last, so a node dying
 * between them redelivers (at least once) rather than loses. `gone` and `hold`/`extended` leases are
 * handled by the caller (they need the subscription or a renewal timer).
 */
export async function settleMessage(ctx: EngineContext, action: JsAction, t: AttemptTarget, last: LastResult, deliveryId: string) {
  switch (action.kind) {
    case 'ack':
      await markMatched(ctx, t);
      return signal(ctx.nc, t.reply, { kind: 'ack' });
    case 'deadLetter':
      deadLetterLine(
        ctx,
        t.subscriptionId,
      )((suppressed) =>
        ctx.log.warn(
          { subscription: t.subscriptionId, partition: t.partition, offset: t.offset, reason: action.reason, ...last, suppressed },
          'event dead-lettered',
        ),
      );
      await storeDeadLetter(ctx, t, action.reason, last, deliveryId);
      await markMatched(ctx, t);
      return signal(ctx.nc, t.reply, { kind: 'term' });
    case 'retry':
      return signal(ctx.nc, t.reply, { kind: 'nak', delayMs: action.delayMs });
    case 'gone':
      // Redelivered after a second, by when the pause has reached every node (the service's update
      // through its KV watch): a node that has not heard of it yet would send the event to a gone
      // receiver again. Once paused, nobody pulls it until the subscription resumes.
      return signal(ctx.nc, t.reply, { kind: 'nak', delayMs: GONE_REDELIVERY_DELAY_MS });
    case 'hold':
    case 'extended':
      return signal(ctx.nc, t.reply, { kind: 'progress' });
    case 'none':
      return;
  }
}
