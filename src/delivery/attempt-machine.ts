import type { PendingRow, PendingState } from '../store/delivery-state-repo';
import type { DeliveryOutcome } from './tally';
import { classifyStatus } from './request';
import type { SendResult } from './http-sender';
import { parseRetryAfter, retryDelayMs, type RetryPolicy } from './retry';
import type { AttemptOutcome, DeadLetterReason } from '../subscriptions/delivery-records';

/**
 * The life cycle of one pending event's delivery attempts, as data (Delivery engine v2 §2):
 * `transition(state, input, ctx)` returns the next state and the effects the worker performs. Pure:
 * no I/O, no timers, no clock and no randomness but what `ctx` brings. The rules are `TABLE`, one
 * cell per phase and input; an input with no cell in the current phase, or naming an attempt that is
 * not the current one (a stale answer or callback), changes nothing and has no effect.
 */

/** Where an event's attempts stand while it is pending; the first four are stored (see `ROW_STATE`). */
export type LivePhase = 'ready' | 'sending' | 'awaiting_ack' | 'scheduled';
/** How it ended: delivered (or skipped), dead-lettered, let go by retention, or dropped by a seek or a delete. */
export type EndPhase = 'done' | 'dead' | 'released' | 'dropped';
export type Phase = LivePhase | EndPhase;

export const PHASES: readonly Phase[] = ['ready', 'sending', 'awaiting_ack', 'scheduled', 'done', 'dead', 'released', 'dropped'];

/** What every phase carries: the attempts so far and the latest one's id and result. */
interface Attempts {
  /** Attempts started (the next one is `attempt + 1`). */
  attempt: number;
  /** The latest attempt's id (its callback URL); null before the first. */
  deliveryId: string | null;
  lastStatus: number | null;
  lastError: string | null;
}

/** To be sent: new, or restored from a row `in_flight` at a crash (delivered again, same webhook-id, callbacks still open). */
export interface Ready extends Attempts {
  phase: 'ready';
}
/** The current attempt's request is open. */
export interface Sending extends Attempts {
  phase: 'sending';
  deliveryId: string;
  /** Lease asked for by `extend` before the answer: the lease will not end before it, nor a retry start inside it. */
  leaseFloor: number | null;
  /**
   * The ack terms in force when the request was sent: its answer means what they said then (a PATCH
   * meanwhile takes effect for the next attempt, not for the answer to this one).
   */
  sentUnder: SentUnder;
}
export type SentUnder = Pick<AttemptPolicy, 'ackMode' | 'ackDeadlineMs'>;
/** Answered 202 (or 2xx under ackMode manual): waits for a callback until `leaseUntil`. */
export interface AwaitingAck extends Attempts {
  phase: 'awaiting_ack';
  leaseUntil: number;
}
/** The next attempt is due at `nextAttemptAt` (a retry; after a 410, as soon as the subscription is resumed). */
export interface Scheduled extends Attempts {
  phase: 'scheduled';
  nextAttemptAt: number;
}
export interface Done extends Attempts {
  phase: 'done';
}
export interface Dead extends Attempts {
  phase: 'dead';
  reason: DeadLetterReason;
}
export interface Released extends Attempts {
  phase: 'released';
}
export interface Dropped extends Attempts {
  phase: 'dropped';
}

export type AttemptState = Ready | Sending | AwaitingAck | Scheduled | Done | Dead | Released | Dropped;
type StateOf<P extends Phase> = Extract<AttemptState, { phase: P }>;

/** The `pending_deliveries.state` each live phase is stored as; an ended event has no row. */
export const ROW_STATE: Readonly<Record<Phase, PendingState | null>> = {
  ready: 'in_flight',
  sending: 'in_flight',
  awaiting_ack: 'awaiting_ack',
  scheduled: 'scheduled',
  done: null,
  dead: null,
  released: null,
  dropped: null,
};

export type CallbackOutcome = 'acked' | 'nacked' | 'rejected' | 'expired' | 'failed' | 'superseded';

export type AttemptInput =
  /** The worker has a slot and a token and the event: attempt `attempt + 1` starts under a fresh id. */
  | { kind: 'start'; newAttemptId: string }
  /**
   * The receiver's answer; `status` null: the request failed (no answer). `sinkMoved`: it came from a sink a
   * PATCH has replaced since the request was sent (its 410, 4xx or 3xx, or refused address, then says nothing of the new sink).
   */
  | {
      kind: 'answer';
      attemptId: string;
      status: number | null;
      retryAfter?: string;
      error?: string;
      sinkNotAllowed?: boolean;
      sinkMoved?: boolean;
    }
  /** No complete answer within `timeoutMs`. */
  | { kind: 'timeout'; attemptId: string; error?: string }
  /**
   * The request never left: it waited for a connection to the sink and, when one was free, the
   * subscription was paused (or delivery was stopping). The attempt is not spent: it is sent later.
   */
  | { kind: 'withdraw'; attemptId: string }
  | { kind: 'ack'; attemptId: string }
  | { kind: 'nack'; attemptId: string; delayMs?: number }
  | { kind: 'extend'; attemptId: string; ms: number }
  | { kind: 'reject'; attemptId: string; reason?: string }
  | { kind: 'leaseExpired'; attemptId: string }
  /** The subscription is found paused (or delivery is off) when the attempt comes due: it waits for `resume`. */
  | { kind: 'pause' }
  | { kind: 'resume' }
  /** Loaded from its row at start: its timers are armed again (a lease that ran out meanwhile has failed). */
  | { kind: 'restore' }
  /** The partition was moved (its pending events are dropped, not dead-lettered). */
  | { kind: 'seek' }
  /** The subscription was deleted. */
  | { kind: 'delete' }
  /** Retention deleted the event before it was finished (it is counted as expired). */
  | { kind: 'expire' }
  /** The event's record fails its checksum: it can never be delivered. */
  | { kind: 'corrupt' }
  /** The event's record is not in the log any more: skipped. */
  | { kind: 'missing' }
  /**
   * The event's record cannot be read now (its segment file cannot be reached, index.db waits for a
   * restart): not known bad, so it is tried again after `delayMs`, no attempt spent.
   */
  | { kind: 'unavailable'; delayMs: number };
/**
 * What the receiver's answer (or its absence) is to the machine, on either engine: no status within the
 * timeout is a `timeout`, unless the sink's address was refused (an `answer` that dead-letters it).
 */
export function answerInput(attemptId: string, result: SendResult, sinkMoved = false): AttemptInput {
  if (result.status === null && result.timedOut && !result.sinkNotAllowed) return { kind: 'timeout', attemptId, error: result.error };
  return {
    kind: 'answer',
    attemptId,
    status: result.status,
    retryAfter: result.retryAfter,
    error: result.error,
    sinkNotAllowed: result.sinkNotAllowed,
    ...(sinkMoved && { sinkMoved }),
  };
}

export type InputKind = AttemptInput['kind'];
type InputOf<K extends InputKind> = Extract<AttemptInput, { kind: K }>;

export const INPUT_KINDS: readonly InputKind[] = [
  'start',
  'answer',
  'timeout',
  'withdraw',
  'ack',
  'nack',
  'extend',
  'reject',
  'leaseExpired',
  'pause',
  'resume',
  'restore',
  'seek',
  'delete',
  'expire',
  'corrupt',
  'missing',
  'unavailable',
];

export type AttemptEffect =
  /** Post attempt `attempt` with id `attemptId` (any timer of the event is cancelled). */
  | { kind: 'send'; attemptId: string; attempt: number }
  /** Make `attemptId` a callback id routed to this event. */
  | { kind: 'openCallback'; attemptId: string }
  /** Settle a callback id (the first settlement of an id wins; later ones change nothing). */
  | { kind: 'settle'; attemptId: string; outcome: CallbackOutcome }
  /** Write the event's row (write-behind). */
  | { kind: 'persist' }
  /** (Re)arm the event's timer: at `at` the worker tries to start the next attempt. */
  | { kind: 'scheduleAt'; at: number }
  /** (Re)arm the event's timer: at `until` the worker feeds `leaseExpired` for `attemptId`. */
  | { kind: 'armLease'; attemptId: string; until: number }
  | { kind: 'clearTimer' }
  /** The next attempt is due now: the worker starts it once the subscription is active and flow control allows. */
  | { kind: 'due' }
  /** Finished: its offset is marked finished and the committed offset moves (a redrive just ends); its row goes. Ends timers. */
  | { kind: 'commitOffset' }
  /** Record a dead letter (a `commitOffset` follows). */
  | { kind: 'deadLetter'; reason: DeadLetterReason }
  /** Let go without finishing its offset (retention is already past it): its row goes. Ends timers. */
  | { kind: 'release' }
  /** Forgotten (a seek or a delete has dealt with its row and position). Ends timers. */
  | { kind: 'drop' }
  /** Count a delivery outcome (metrics). */
  | { kind: 'observe'; outcome: DeliveryOutcome }
  /**
   * The current attempt was answered (or timed out): no worker action; `answerOutcome` reads it off the
   * step for the attempt log (a step without it was a stale answer).
   */
  | { kind: 'answered' }
  /** For auto-disable: the answer was a 2xx, or a failure (410 is neither: it pauses anyway). */
  | { kind: 'health'; ok: true }
  | { kind: 'health'; ok: false; error: string }
  /** The receiver answered 410 Gone: pause the subscription (reason `gone`). */
  | { kind: 'pauseSubscription' }
  /** The answer to an `extend`: the lease (or the floor of the lease to come) now ends at `until`. */
  | { kind: 'extended'; until: number };

export interface AttemptPolicy {
  retry: RetryPolicy;
  ackDeadlineMs: number;
  ackMode: 'auto' | 'manual';
}

export interface AttemptContext {
  now: number;
  policy: AttemptPolicy;
  /** In [0, 1): the retry backoff's jitter. */
  random: () => number;
  /**
   * Retention has deleted the event (its partition's committed offset is past it): a failure ends in
   * `released` instead of a retry or a dead letter.
   */
  expired?: boolean;
}

export interface Step {
  state: AttemptState;
  effects: AttemptEffect[];
}

/** A new pending event, before its first attempt. */
export function initialState(): Ready {
  return { phase: 'ready', attempt: 0, deliveryId: null, lastStatus: null, lastError: null };
}

/** The state a stored row stands for (a restart); `restore` then re-arms its timers. */
export function stateFromRow(row: PendingRow): AttemptState {
  const attempts: Attempts = { attempt: row.attempt, deliveryId: row.deliveryId, lastStatus: row.lastStatus, lastError: row.lastError };
  switch (row.state) {
    case 'in_flight':
      // Extended by the receiver before the crash cut its request: it has the event and works on it.
      return row.leaseUntil !== null ? { ...attempts, phase: 'awaiting_ack', leaseUntil: row.leaseUntil } : { ...attempts, phase: 'ready' };
    case 'awaiting_ack':
      return { ...attempts, phase: 'awaiting_ack', leaseUntil: row.leaseUntil ?? 0 };
    case 'scheduled':
      return { ...attempts, phase: 'scheduled', nextAttemptAt: row.nextAttemptAt ?? 0 };
  }
}

export const isEnded = (state: AttemptState): boolean => ROW_STATE[state.phase] === null;

/** The state with its wall-clock deadlines moved by `byMs` (the wall clock stepped: see `clock-steps.ts`). */
export function shiftTimes(state: AttemptState, byMs: number): AttemptState {
  switch (state.phase) {
    case 'sending':
      return state.leaseFloor === null ? state : { ...state, leaseFloor: state.leaseFloor + byMs };
    case 'awaiting_ack':
      return { ...state, leaseUntil: state.leaseUntil + byMs };
    case 'scheduled':
      return { ...state, nextAttemptAt: state.nextAttemptAt + byMs };
    default:
      return state;
  }
}

// ---------------------------------------------------------------------------------------------
// The cells. Each builds the next state from the fields every phase carries (`attempts`), so no
// field of one phase (a lease, a due time) is carried into another.

const attempts = (s: AttemptState): Attempts => ({
  attempt: s.attempt,
  deliveryId: s.deliveryId,
  lastStatus: s.lastStatus,
  lastError: s.lastError,
});

/** Settles the latest attempt's callback id, when there is one. */
const settle = (s: Attempts, outcome: CallbackOutcome): AttemptEffect[] =>
  s.deliveryId === null ? [] : [{ kind: 'settle', attemptId: s.deliveryId, outcome }];

const CORRUPT_RECORD_ERROR = 'the record fails its checksum or cannot be read; it is never delivered';

/** Lets an expired event go: no retry and no dead letter (it is already counted as expired). */
function release(s: Attempts, before: AttemptEffect[]): Step {
  const settled = before.some((e) => e.kind === 'settle');
  return { state: { ...s, phase: 'released' }, effects: [...before, ...(settled ? [] : settle(s, 'superseded')), { kind: 'release' }] };
}

/** Dead-letters the event (or lets it go when expired); `before` has settled the callback when it had to. */
function deadLetter(s: Attempts, reason: DeadLetterReason, ctx: AttemptContext, before: AttemptEffect[]): Step {
  if (ctx.expired) return release(s, before);
  return {
    state: { ...s, phase: 'dead', reason },
    effects: [...before, { kind: 'observe', outcome: 'dead_letter' }, { kind: 'deadLetter', reason }, { kind: 'commitOffset' }],
  };
}

/**
 * A failed attempt: retried after the backoff (or the receiver's `delayMs`), dead-lettered after
 * `maxAttempts`, let go when expired. `before` has settled the callback; otherwise it settles `failed`.
 */
function fail(s: Attempts, error: string, ctx: AttemptContext, before: AttemptEffect[], delayMs?: number): Step {
  const next: Attempts = { ...s, lastError: error };
  const effects = before.some((e) => e.kind === 'settle') ? before : [...before, ...settle(next, 'failed')];
  // No retry follows these: the attempt is not counted `retry` (probe: `retry` 3 and `dead_letter` 1 for 3 attempts).
  if (ctx.expired) return release(next, effects.filter(notRetry));
  if (next.attempt >= ctx.policy.retry.maxAttempts) return deadLetter(next, 'max_attempts', ctx, effects.filter(notRetry));
  const at = ctx.now + retryDelayMs(next.attempt, ctx.policy.retry, { retryAfterMs: delayMs, random: ctx.random });
  return {
    state: { ...next, phase: 'scheduled', nextAttemptAt: at },
    effects: [...effects, { kind: 'persist' }, { kind: 'scheduleAt', at }],
  };
}

const notRetry = (e: AttemptEffect) => !(e.kind === 'observe' && e.outcome === 'retry');

// Effects without fields, shared: the worker only reads effects. The hot cells (start, answer)
// push into one array instead of spreading several: they run once or twice per delivered event.
const PERSIST: AttemptEffect = { kind: 'persist' };
const COMMIT: AttemptEffect = { kind: 'commitOffset' };
const HEALTHY: AttemptEffect = { kind: 'health', ok: true };
const DELIVERED: AttemptEffect = { kind: 'observe', outcome: 'delivered' };
const ANSWERED: AttemptEffect = { kind: 'answered' };

function start(s: Ready | Scheduled, input: InputOf<'start'>, ctx: AttemptContext): Step {
  const attempt = s.attempt + 1;
  const id = input.newAttemptId;
  const effects = settle(s, 'superseded');
  effects.push({ kind: 'openCallback', attemptId: id }, PERSIST, { kind: 'send', attemptId: id, attempt });
  const sentUnder = { ackMode: ctx.policy.ackMode, ackDeadlineMs: ctx.policy.ackDeadlineMs };
  return {
    state: { phase: 'sending', attempt, deliveryId: id, lastStatus: s.lastStatus, lastError: s.lastError, leaseFloor: null, sentUnder },
    effects,
  };
}

/**
 * A retry comes due: started, unless `maxAttempts` was lowered (a PATCH) since it was scheduled to at
 * or below the attempts already made; then it is dead-lettered instead (probe: a fourth attempt went
 * out after `maxAttempts` became 2, as the policy said when the third failed). An event a 410 kept is sent
 * whatever its attempts and whatever `maxAttempts` is now: the 410 held it for the resume.
 */
function startRetry(s: Scheduled, input: InputOf<'start'>, ctx: AttemptContext): Step {
  if (s.attempt < ctx.policy.retry.maxAttempts) return start(s, input, ctx);
  // A 410 keeps its event for the resume, whichever attempt it answered: the one after it is sent, past
  // `maxAttempts` when the 410 answered the last or one after it (churn probe: the resume dead-lettered it unsent).
  // No loop: each such attempt waits for an operator's resume.
  if (s.lastStatus === 410) return start(s, input, ctx);
  return deadLetter(attempts(s), 'max_attempts', ctx, settle(s, 'failed'));
}

/**
 * No answer (a timeout, a lost connection) after the receiver extended the lease while its request
 * was open: it has the event and said it is working on it, so the attempt awaits its ack under that
 * lease, callbacks still open, as after a restart that cut the request, rather than being sent again
 * inside the lease. An answer with a status is the receiver's word and is followed as usual.
 */
function heldByExtend(s: Sending, base: Attempts, error: string, ctx: AttemptContext, answered: AttemptEffect[]): Step | undefined {
  if (s.leaseFloor === null || s.leaseFloor <= ctx.now) return undefined;
  const until = s.leaseFloor;
  return {
    state: { ...base, lastError: error, phase: 'awaiting_ack', leaseUntil: until },
    effects: [...answered, { kind: 'armLease', attemptId: s.deliveryId, until }, PERSIST],
  };
}

function answer(s: Sending, input: InputOf<'answer'>, ctx: AttemptContext): Step {
  const { status } = input;
  const base: Attempts = { attempt: s.attempt, deliveryId: s.deliveryId, lastStatus: status, lastError: s.lastError };
  const outcome = status === null ? 'error' : classifyStatus(status, s.sentUnder.ackMode);
  // An empty excerpt (a 500 with no body) says nothing: the status does (JetStream probe: `"lastError":""` in the pause's line).
  const failure = input.error || `HTTP ${status}`;
  const answered: AttemptEffect[] = [ANSWERED];
  if (status !== null && status >= 200 && status < 300) answered.push(HEALTHY);
  // A replaced sink's failures say nothing of the new one's health (its auto-disable window).
  else if (status !== 410 && !input.sinkMoved) answered.push({ kind: 'health', ok: false, error: failure });
  // From a sink a PATCH replaced meanwhile, an answer that would end the event or pause the subscription (a 410, a
  // 4xx or 3xx, a refused address) speaks for that URL only: the event is retried, to the new sink (hostile-receiver
  // probe: a late 410 of the old receiver paused the subscription, a late 404 dead-lettered an event the new one never saw).
  if (input.sinkMoved && (input.sinkNotAllowed || outcome === 'gone' || outcome === 'dead')) {
    const error = input.sinkNotAllowed ? (input.error ?? 'the sink address is not allowed') : failure;
    return fail(base, `${error} from the sink a PATCH has replaced`, ctx, [...answered, { kind: 'observe', outcome: 'retry' }]);
  }
  if (input.sinkNotAllowed) {
    // HERALD_SINK_ALLOW_PRIVATE=false refused the address at connect time: retrying cannot help.
    const next = { ...base, lastError: input.error ?? 'the sink address is not allowed' };
    return deadLetter(next, 'sink_not_allowed', ctx, [...answered, ...settle(next, 'failed')]);
  }
  switch (outcome) {
    case 'error': {
      const error = input.error ?? 'request failed';
      answered.push({ kind: 'observe', outcome: 'retry' });
      return heldByExtend(s, base, error, ctx, answered) ?? fail(base, error, ctx, answered);
    }
    case 'done':
      answered.push(DELIVERED, { kind: 'settle', attemptId: s.deliveryId, outcome: 'acked' }, COMMIT);
      return { state: { ...base, phase: 'done', lastError: null }, effects: answered };
    case 'await_ack': {
      const leaseUntil = Math.max(ctx.now + s.sentUnder.ackDeadlineMs, s.leaseFloor ?? 0);
      return {
        state: { ...base, phase: 'awaiting_ack', leaseUntil },
        effects: [...answered, { kind: 'armLease', attemptId: s.deliveryId, until: leaseUntil }, { kind: 'persist' }],
      };
    }
    case 'gone': {
      // Keeps the event: it is tried again as soon as the subscription is resumed (no timer until then).
      const next = { ...base, lastError: input.error || 'subscriber answered 410 Gone' };
      return {
        state: { ...next, phase: 'scheduled', nextAttemptAt: ctx.now },
        effects: [
          ...answered,
          { kind: 'observe', outcome: 'gone' },
          ...settle(next, 'failed'),
          { kind: 'persist' },
          { kind: 'pauseSubscription' },
        ],
      };
    }
    case 'retry': {
      // Retry-After means "come back later" only on 429 and 503 (RFC 9110 §10.2.3); other statuses use the backoff.
      const retryAfter = status === 429 || status === 503 ? input.retryAfter : undefined;
      return fail(base, failure, ctx, [...answered, { kind: 'observe', outcome: 'retry' }], parseRetryAfter(retryAfter, ctx.now));
    }
    case 'dead': {
      const next = { ...base, lastError: failure };
      return deadLetter(next, 'rejected_status', ctx, [...answered, ...settle(next, 'failed')]);
    }
  }
}

function timeout(s: Sending, input: InputOf<'timeout'>, ctx: AttemptContext): Step {
  const base: Attempts = { ...attempts(s), lastStatus: null };
  const answered: AttemptEffect[] = [
    ANSWERED,
    { kind: 'health', ok: false, error: input.error ?? 'HTTP null' },
    { kind: 'observe', outcome: 'timeout' },
  ];
  const error = input.error ?? 'request failed';
  return heldByExtend(s, base, error, ctx, answered) ?? fail(base, error, ctx, answered);
}

/** A callback for the current attempt (ready after a restart, sending, or awaiting its ack). */
type Open = Ready | Sending | AwaitingAck;

function ack(s: Open): Step {
  const base = { ...attempts(s), lastError: null };
  return {
    state: { ...base, phase: 'done' },
    effects: [...settle(s, 'acked'), { kind: 'observe', outcome: 'acked' }, { kind: 'commitOffset' }],
  };
}

function nack(s: Open, input: InputOf<'nack'>, ctx: AttemptContext): Step {
  // Capped at maxDelayMs, as documented: unlike a Retry-After (http-webhook §2.2), a nack's delay is not obeyed past the policy.
  const delayMs = input.delayMs === undefined ? undefined : Math.min(input.delayMs, ctx.policy.retry.maxDelayMs);
  return fail(
    attempts(s),
    'negatively acknowledged by the receiver',
    ctx,
    [...settle(s, 'nacked'), { kind: 'observe', outcome: 'nacked' }],
    delayMs,
  );
}

function reject(s: Open, input: InputOf<'reject'>, ctx: AttemptContext): Step {
  const next = { ...attempts(s), lastError: input.reason ?? 'rejected by the receiver' };
  return deadLetter(next, 'receiver_rejected', ctx, [...settle(s, 'rejected'), { kind: 'observe', outcome: 'rejected' }]);
}

/**
 * Extending never shortens a lease. Before the 202 it sets the lease's floor. Restored in flight (a
 * restart before the answer), the receiver has the event and says it is working on it: the attempt
 * awaits its ack under that lease rather than being sent again now.
 */
function extend(s: Open, input: InputOf<'extend'>, ctx: AttemptContext): Step {
  const asked = ctx.now + input.ms;
  switch (s.phase) {
    case 'ready':
      return {
        state: { ...attempts(s), phase: 'awaiting_ack', leaseUntil: asked },
        effects: [{ kind: 'armLease', attemptId: input.attemptId, until: asked }, { kind: 'persist' }, { kind: 'extended', until: asked }],
      };
    case 'sending': {
      // Written (as the in-flight row's lease): after a crash the attempt awaits its ack under it, not sent again.
      const until = Math.max(asked, s.leaseFloor ?? 0);
      return { state: { ...s, leaseFloor: until }, effects: [{ kind: 'persist' }, { kind: 'extended', until }] };
    }
    case 'awaiting_ack': {
      const until = Math.max(asked, s.leaseUntil);
      return {
        state: { ...s, leaseUntil: until },
        effects: [{ kind: 'armLease', attemptId: input.attemptId, until }, { kind: 'persist' }, { kind: 'extended', until }],
      };
    }
  }
}

function leaseExpired(s: AwaitingAck, _input: InputOf<'leaseExpired'>, ctx: AttemptContext): Step {
  const error = `no acknowledgement within the lease (ackDeadlineMs=${ctx.policy.ackDeadlineMs})`;
  return fail(attempts(s), error, ctx, [...settle(s, 'expired'), { kind: 'observe', outcome: 'lease_expired' }]);
}

/** After a restart: a lease still running is armed again; one that ran out meanwhile is a failed attempt. */
function restoreLease(s: AwaitingAck, _input: InputOf<'restore'>, ctx: AttemptContext): Step {
  if (s.deliveryId !== null && s.leaseUntil > ctx.now) {
    return { state: s, effects: [{ kind: 'armLease', attemptId: s.deliveryId, until: s.leaseUntil }] };
  }
  // Counted as one that runs out while the gateway is up is (probe: a restart's were left out of herald_deliveries_total).
  return fail(attempts(s), 'ack lease ran out while the gateway was down', ctx, [
    ...settle(s, 'expired'),
    { kind: 'observe', outcome: 'lease_expired' },
  ]);
}

const armRetry = (s: Scheduled): Step => ({ state: s, effects: [{ kind: 'scheduleAt', at: s.nextAttemptAt }] });

const due = (s: Ready): Step => ({ state: s, effects: [{ kind: 'due' }] });

const pause = (s: Scheduled): Step => ({ state: s, effects: [{ kind: 'clearTimer' }] });

const expire = (s: Ready | Scheduled): Step => release(attempts(s), []);

const corrupt = (s: Ready | Scheduled, _input: InputOf<'corrupt'>, ctx: AttemptContext): Step => {
  const next = { ...attempts(s), lastError: CORRUPT_RECORD_ERROR };
  return deadLetter(next, 'corrupt_record', ctx, settle(next, 'failed'));
};

/** Tried again later, as it stands: nothing is written, so a crash meanwhile finds it as it was. */
const later = (s: Ready | Scheduled, input: InputOf<'unavailable'>, ctx: AttemptContext): Step => ({
  state: s,
  effects: [{ kind: 'scheduleAt', at: ctx.now + input.delayMs }],
});

const missing = (s: Ready | Scheduled): Step => ({
  state: { ...attempts(s), phase: 'done' },
  effects: [...settle(s, 'superseded'), { kind: 'commitOffset' }],
});

const seek = (s: AttemptState): Step => ({
  state: { ...attempts(s), phase: 'dropped' },
  effects: [...settle(s, 'superseded'), { kind: 'drop' }],
});

/** The dispatcher forgets a deleted subscription's callback ids itself (they answer 404 after it). */
const remove = (s: AttemptState): Step => ({ state: { ...attempts(s), phase: 'dropped' }, effects: [{ kind: 'drop' }] });

type Cell<P extends Phase, K extends InputKind> = (state: StateOf<P>, input: InputOf<K>, ctx: AttemptContext) => Step;
type Row<P extends Phase> = { readonly [K in InputKind]?: Cell<P, K> };
type Table = { readonly [P in Phase]: Row<P> };

/** Back to ready as before the start: its number unspent, its callback id closed (the receiver never saw it). */
function withdraw(s: Sending): Step {
  return {
    state: { phase: 'ready', attempt: s.attempt - 1, deliveryId: null, lastStatus: s.lastStatus, lastError: s.lastError },
    effects: [...settle(s, 'superseded'), PERSIST],
  };
}

/**
 * The legal transitions: phase × input. A missing cell is an input that means nothing in that phase
 * (an answer while nothing is sent, a callback once the event has ended, a lease expiry after an ack).
 */
export const TABLE: Table = {
  ready: { start, resume: due, ack, nack, extend, reject, expire, corrupt, missing, unavailable: later, seek, delete: remove },
  sending: { answer, timeout, withdraw, ack, nack, extend, reject, seek, delete: remove },
  awaiting_ack: { ack, nack, extend, reject, leaseExpired, restore: restoreLease, seek, delete: remove },
  scheduled: {
    start: startRetry,
    resume: armRetry,
    restore: armRetry,
    pause,
    expire,
    corrupt,
    missing,
    unavailable: later,
    seek,
    delete: remove,
  },
  done: {},
  dead: {},
  released: {},
  dropped: {},
};

export function transition(state: AttemptState, input: AttemptInput, ctx: AttemptContext): Step {
  const cell = TABLE[state.phase][input.kind] as Cell<Phase, InputKind> | undefined;
  // A stale answer or callback: for an attempt that is not the current one.
  if (cell === undefined || ('attemptId' in input && input.attemptId !== state.deliveryId)) return { state, effects: [] };
  return cell(state, input, ctx);
}

/**
 * What the attempt log says was done with an answer or timeout, read off the step it caused: no
 * `answered` effect means the attempt was no longer current (`stale`); a dead letter wins over the
 * retry it ended.
 */
export function answerOutcome(state: AttemptState, effects: readonly AttemptEffect[]): AttemptOutcome {
  if (!effects.some((e) => e.kind === 'answered')) return 'stale';
  if (effects.some((e) => e.kind === 'deadLetter')) return 'dead_lettered';
  if (state.phase === 'awaiting_ack') return 'awaiting_ack';
  for (const e of effects) if (e.kind === 'observe') return OBSERVED_OUTCOME[e.outcome] ?? 'retry';
  return 'retry';
}

const OBSERVED_OUTCOME: Partial<Record<DeliveryOutcome, AttemptOutcome>> = {
  delivered: 'delivered',
  retry: 'retry',
  timeout: 'timeout',
  gone: 'gone',
};
