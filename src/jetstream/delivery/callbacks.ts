import { transition, type AttemptInput, type CallbackOutcome } from '../../delivery/attempt-machine';
import type { CallbackAction, CallbackAnswer } from '../../delivery/dispatcher';
import { AppError } from '../../errors';
import type { EngineContext } from './context';
import { jsActionOf, sendingLeaseOver, settledOutcome, stateOfEntry, type AckEntry } from './outcome';
import { observeEffects, settleMessage } from './settle';

const ACTION_OUTCOME: Record<CallbackAction, CallbackOutcome | null> = { ack: 'acked', nack: 'nacked', reject: 'rejected', extend: null };
/** Rounds of compare-and-set before a callback gives up (each lost round means another write won). */
const SWAP_ROUNDS = 5;

export interface CallbackDeps {
  ctx: EngineContext;
  /**
   * The subscription's seek generation per partition; undefined once it is deleted (its delivery ids
   * answer 404, as on the local engine). An attempt of an older generation was superseded by a seek.
   */
  generations(subscriptionId: string): Promise<readonly number[] | undefined>;
  /** Renews a lease longer than the consumer's ack_wait (see `lease-keeper.ts`). */
  keepLease(deliveryId: string, entry: AckEntry): void;
}

const notFound = (id: string) => new AppError('not_found', `no delivery attempt ${id}`);
const stale = (id: string, outcome?: string) =>
  new AppError('conflict', `delivery attempt ${id} is no longer current${outcome ? ` (${outcome})` : ''}`);

/** A callback on an attempt the ack map says is settled: the same call again is answered 200 (`repeated`), another is a conflict. */
function answerSettled(id: string, action: CallbackAction, outcome: CallbackOutcome): CallbackAnswer {
  if (ACTION_OUTCOME[action] === outcome) return { deliveryId: id, status: outcome, repeated: true };
  throw stale(id, outcome);
}

function inputOf(id: string, action: CallbackAction, arg: { delayMs?: number; ms?: number; reason?: string }): AttemptInput {
  switch (action) {
    case 'ack':
      return { kind: 'ack', attemptId: id };
    case 'nack':
      return { kind: 'nack', attemptId: id, delayMs: arg.delayMs };
    case 'reject':
      return { kind: 'reject', attemptId: id, reason: arg.reason };
    case 'extend':
      return { kind: 'extend', attemptId: id, ms: arg.ms ?? 0 };
  }
}

/**
 * Under ack mode auto, a 202 opens the attempt's entry only once the sending node has read the
 * answer: a callback sent as the 202 goes out (from a fast worker) can arrive first. On the
 * sending node it waits until the answer is decided; on another node, an id of the right shape
 * that is not there yet is looked up again for this long before it is answered 404.
 */
const OPENING_GRACE_MS = 500;
const OPENING_POLL_MS = 50;

async function entryOf(ctx: CallbackDeps['ctx'], id: string) {
  if (!/^dlv_[A-Za-z0-9_-]{24}$/.test(id)) return undefined;
  const sentHere = ctx.ackMap.decided(id);
  if (sentHere) {
    await sentHere;
    return ctx.ackMap.get(id);
  }
  const deadline = Date.now() + OPENING_GRACE_MS;
  for (;;) {
    const got = await ctx.ackMap.get(id);
    if (got || Date.now() >= deadline) return got;
    await new Promise((resolve) => setTimeout(resolve, OPENING_POLL_MS));
  }
}

/**
 * A receiver's callback, on any node: the ack map says what settles the attempt (its message's
 * ack subject), the attempt machine what the callback means (as on the local engine), and a
 * compare-and-set on the entry makes the first settlement win, whichever node it reached; the same
 * callback repeated is answered as such, any other after it is a conflict.
 */
export function createCallbacks(deps: CallbackDeps) {
  const { ctx } = deps;
  return async function callback(
    id: string,
    action: CallbackAction,
    arg: { delayMs?: number; ms?: number; reason?: string } = {},
  ): Promise<CallbackAnswer> {
    for (let round = 0; round < SWAP_ROUNDS; round++) {
      const got = await entryOf(ctx, id);
      const gens = got && (await deps.generations(got.entry.subscriptionId));
      if (!got || !gens) throw notFound(id);
      const { entry, revision } = got;
      // A seek deleted its consumer (its message can no longer be settled): the local engine's 409 too.
      if (!entry.redrive && (gens[entry.partition] ?? 0) > entry.generation) throw stale(id, 'superseded');
      const now = ctx.clock();
      const from = stateOfEntry(id, entry);
      if (from === null) {
        const answer = answerSettled(id, action, entry.state as CallbackOutcome);
        // The entry is written before the message's +ACK: a node that died between them, or a +ACK that
        // failed (the receiver then repeats its ack), left the event to be redelivered. +ACK is
        // idempotent, so a repeated ack sends it again and its 200 holds.
        if (entry.state === 'acked') await settleMessage(ctx, { kind: 'ack' }, entry, entry, id);
        return answer;
      }
      if (from.phase === 'awaiting_ack' && from.leaseUntil <= now) throw stale(id, 'expired');
      // Its request was cut (a close's grace ran out, a crash) and JetStream may have sent it again.
      if (sendingLeaseOver(entry, now)) throw stale(id, 'expired');
      const step = transition(from, inputOf(id, action, arg), { now, policy: entry.policy, random: ctx.random });
      const js = jsActionOf(step, now);
      const outcome = settledOutcome(step);
      const next: AckEntry = {
        ...entry,
        state: outcome ?? entry.state,
        leaseUntil: step.state.phase === 'awaiting_ack' ? step.state.leaseUntil : entry.leaseUntil,
        leaseFloor: step.state.phase === 'sending' ? step.state.leaseFloor : entry.leaseFloor,
        lastError: step.state.lastError,
      };
      if ((await ctx.ackMap.swap(id, next, revision)) === undefined) continue;
      const last = { attempt: entry.attempt, lastStatus: entry.lastStatus, lastError: step.state.lastError };
      try {
        await settleMessage(ctx, js, entry, last, id);
      } finally {
        // Counted once the write above won, whether or not the settlement then went through: that write decided the
        // outcome, once on the cluster (a repeated callback is answered `repeated`, a redelivery completes an ack or
        // a reject, and neither counts it). Was: counted only after the settlement, so a failed one was never counted.
        observeEffects(ctx, entry.subscriptionId, step.effects);
      }
      if (js.kind === 'extended') {
        // Held here while the request is open too (to the floor): its sending node may stop or lose it.
        deps.keepLease(id, next);
        return { deliveryId: id, status: 'extended', leaseUntil: new Date(js.until).toISOString() };
      }
      switch (action) {
        case 'nack':
          return {
            deliveryId: id,
            status: 'nacked',
            nextAttemptAt: step.state.phase === 'scheduled' ? new Date(step.state.nextAttemptAt).toISOString() : null,
          };
        case 'reject':
          return { deliveryId: id, status: 'rejected' };
        default:
          return { deliveryId: id, status: 'acked' };
      }
    }
    throw stale(id);
  };
}
