import type { AttemptEffect, AttemptPolicy, AttemptState, CallbackOutcome, Step } from '../../delivery/attempt-machine';
import type { AttemptTarget } from './context';
import type { DeadLetterReason } from '../../subscriptions/delivery-records';

/**
 * What one step of the local engine's attempt machine (`delivery/attempt-machine.ts`) means for a
 * JetStream message. The machine decides the outcome (the same table as the local engine: 2xx,
 * 202, retry with Retry-After, 410, dead letters, callbacks); this maps its effects onto the
 * message's acknowledgement, whose timers and counts live in the cluster. Pure.
 */
export type JsAction =
  /** Finished: `+ACK` (the consumer moves on). */
  | { kind: 'ack' }
  /** Given up: a dead letter, then `+TERM`. */
  | { kind: 'deadLetter'; reason: DeadLetterReason }
  /** Tried again after `delayMs`: `-NAK` with that delay (JetStream counts the attempt). */
  | { kind: 'retry'; delayMs: number }
  /** 410: the subscription pauses; `-NAK` so the event is delivered again once it resumes. */
  | { kind: 'gone' }
  /** Awaiting a callback until `leaseUntil`: `+WPI` restarts the message's ack timer. */
  | { kind: 'hold'; leaseUntil: number }
  /** An extended lease (or the floor of the lease a 202 will start). */
  | { kind: 'extended'; until: number }
  /** Nothing to do: the input was stale (an answer after a callback settled the attempt). */
  | { kind: 'none' };

const has = (effects: readonly AttemptEffect[], kind: AttemptEffect['kind']) => effects.some((e) => e.kind === kind);

export function jsActionOf(step: Step, now: number): JsAction {
  const { state, effects } = step;
  const dead = effects.find((e): e is Extract<AttemptEffect, { kind: 'deadLetter' }> => e.kind === 'deadLetter');
  if (dead) return { kind: 'deadLetter', reason: dead.reason };
  if (has(effects, 'pauseSubscription')) return { kind: 'gone' };
  if (has(effects, 'commitOffset')) return { kind: 'ack' };
  if (state.phase === 'scheduled' && has(effects, 'scheduleAt')) return { kind: 'retry', delayMs: Math.max(0, state.nextAttemptAt - now) };
  const extended = effects.find((e): e is Extract<AttemptEffect, { kind: 'extended' }> => e.kind === 'extended');
  if (extended) return { kind: 'extended', until: extended.until };
  if (state.phase === 'awaiting_ack' && has(effects, 'armLease')) return { kind: 'hold', leaseUntil: state.leaseUntil };
  return { kind: 'none' };
}

/** The callback outcome the step settled its attempt with (null: still open). */
export function settledOutcome(step: Step): CallbackOutcome | null {
  for (const e of step.effects) if (e.kind === 'settle') return e.outcome;
  return null;
}

/** What the ack map keeps of an attempt that may be settled by a callback on any node. */
export interface AckEntry extends AttemptTarget {
  attempt: number;
  /** `sending` and `awaiting_ack` are open; any other value is how the attempt was settled. */
  state: 'sending' | 'awaiting_ack' | CallbackOutcome;
  leaseUntil: number | null;
  leaseFloor: number | null;
  lastStatus: number | null;
  lastError: string | null;
  policy: AttemptPolicy;
  /** The consumer's `ack_wait` when the attempt started: how often a long lease must be renewed. */
  ackWaitMs: number;
  /** When the attempt was opened (ms; absent in entries of earlier versions). */
  openedAt?: number;
}

/**
 * Whether JetStream may already have given the message of a `sending` entry to another attempt: one
 * `ack_wait` after it was opened (or past an extend's lease) with no answer read, its node stopped
 * or died mid-request (a live node reads an answer within `timeoutMs`, under `ack_wait`). A callback
 * must not settle it then: its ack subject would settle the message's current delivery. An early
 * answer only, on the opening node's clock: what makes such a callback a 409 whatever the clocks say
 * is the next delivery closing the entry before it is sent (`closeEarlier` in `message-handler.ts`).
 */
export function sendingLeaseOver(entry: AckEntry, now: number): boolean {
  if (entry.state !== 'sending' || entry.openedAt === undefined) return false;
  return now > Math.max(entry.openedAt + entry.ackWaitMs, entry.leaseFloor ?? 0);
}

/**
 * Until when the lease of an open entry holds the message: awaiting its ack, its lease; still
 * `sending`, the floor an extend set (0 without one); settled, 0 (nothing to hold).
 */
export function leaseEnd(entry: AckEntry): number {
  if (entry.state === 'awaiting_ack') return entry.leaseUntil ?? 0;
  if (entry.state === 'sending') return entry.leaseFloor ?? 0;
  return 0;
}

/** The attempt machine's state for an open entry (a callback's starting point). */
export function stateOfEntry(deliveryId: string, entry: AckEntry): AttemptState | null {
  const base = { attempt: entry.attempt, deliveryId, lastStatus: entry.lastStatus, lastError: entry.lastError };
  if (entry.state === 'sending') {
    const sentUnder = { ackMode: entry.policy.ackMode, ackDeadlineMs: entry.policy.ackDeadlineMs };
    return { ...base, phase: 'sending', leaseFloor: entry.leaseFloor, sentUnder };
  }
  if (entry.state === 'awaiting_ack') return { ...base, phase: 'awaiting_ack', leaseUntil: entry.leaseUntil ?? 0 };
  return null;
}
