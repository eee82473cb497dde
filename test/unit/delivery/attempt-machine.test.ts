import {
  INPUT_KINDS,
  answerInput,
  answerOutcome,
  PHASES,
  ROW_STATE,
  TABLE,
  initialState,
  stateFromRow,
  transition,
  type AttemptContext,
  type AttemptEffect,
  type AttemptInput,
  type AttemptPolicy,
  type AttemptState,
  type InputKind,
  type Phase,
} from '../../../src/delivery/attempt-machine';

/**
 * The attempt life cycle as a table (Delivery engine v2 §2): every legal cell (phase × input) with
 * the state and effects it leads to, and every other cell, or a stale attempt id, changing nothing.
 */

const NOW = 1_000_000;
const policy: AttemptPolicy = {
  retry: { maxAttempts: 3, initialDelayMs: 1000, maxDelayMs: 60_000, multiplier: 2, jitter: 0.5 },
  ackDeadlineMs: 30_000,
  ackMode: 'auto',
};
/** random 0.5 puts the jitter at 0: the first retry comes exactly initialDelayMs later. */
const ctx = (over: Partial<AttemptContext> = {}): AttemptContext => ({ now: NOW, policy, random: () => 0.5, ...over });

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

// One state per phase (frozen: `transition` must never change the state it is given).
const ready = deepFreeze<AttemptState>(initialState());
/** Restored from a row `in_flight` at a crash: attempt 1's callback id is still open. */
const restored = deepFreeze<AttemptState>({ phase: 'ready', attempt: 1, deliveryId: 'dlv_1', lastStatus: null, lastError: null });
/** The ack terms of `policy`, as an attempt sent under it carries them. */
const SENT_UNDER = { ackMode: 'auto', ackDeadlineMs: 30_000 } as const;
const sending = deepFreeze<AttemptState>({
  phase: 'sending',
  attempt: 1,
  deliveryId: 'dlv_1',
  leaseFloor: null,
  sentUnder: SENT_UNDER,
  lastStatus: null,
  lastError: null,
});
const awaiting = deepFreeze<AttemptState>({
  phase: 'awaiting_ack',
  attempt: 1,
  deliveryId: 'dlv_1',
  leaseUntil: NOW + 30_000,
  lastStatus: 202,
  lastError: null,
});
const scheduled = deepFreeze<AttemptState>({
  phase: 'scheduled',
  attempt: 1,
  deliveryId: 'dlv_1',
  nextAttemptAt: NOW + 500,
  lastStatus: 500,
  lastError: 'HTTP 500',
});
const ended = (phase: 'done' | 'released' | 'dropped'): AttemptState =>
  deepFreeze({ phase, attempt: 1, deliveryId: 'dlv_1', lastStatus: 204, lastError: null });
const dead = deepFreeze<AttemptState>({
  phase: 'dead',
  reason: 'rejected_status',
  attempt: 1,
  deliveryId: 'dlv_1',
  lastStatus: 400,
  lastError: 'HTTP 400',
});
const SAMPLE: Record<Phase, AttemptState> = {
  ready: restored,
  sending,
  awaiting_ack: awaiting,
  scheduled,
  done: ended('done'),
  dead,
  released: ended('released'),
  dropped: ended('dropped'),
};

/** Attempt 1 (`dlv_1`) state fields after an answer or callback, for the expected states. */
const was = (over: Partial<AttemptState> = {}) => ({ attempt: 1, deliveryId: 'dlv_1', lastStatus: null, lastError: null, ...over });
const retryAt = (at: number, lastError: string, lastStatus: number | null = null) =>
  ({ phase: 'scheduled', nextAttemptAt: at, ...was({ lastStatus, lastError }) }) as const;
const settle = (outcome: string, attemptId = 'dlv_1'): AttemptEffect => ({ kind: 'settle', attemptId, outcome }) as AttemptEffect;
const observe = (outcome: string): AttemptEffect => ({ kind: 'observe', outcome }) as AttemptEffect;
const retryEffects = (at: number): AttemptEffect[] => [{ kind: 'persist' }, { kind: 'scheduleAt', at }];
const deadEffects = (reason: string): AttemptEffect[] => [
  observe('dead_letter'),
  { kind: 'deadLetter', reason } as AttemptEffect,
  { kind: 'commitOffset' },
];
const answered = (health: 'ok' | string | null): AttemptEffect[] => [
  { kind: 'answered' },
  ...(health === null
    ? []
    : health === 'ok'
      ? [{ kind: 'health', ok: true } as const]
      : [{ kind: 'health', ok: false, error: health } as const]),
];
const atMax = (s: AttemptState): AttemptState => deepFreeze({ ...s, attempt: 3 });

interface Row {
  name: string;
  from: AttemptState;
  input: AttemptInput;
  ctx?: Partial<AttemptContext>;
  to: object;
  effects: AttemptEffect[];
}

const answer = (status: number | null, more: Partial<Extract<AttemptInput, { kind: 'answer' }>> = {}): AttemptInput => ({
  kind: 'answer',
  attemptId: 'dlv_1',
  status,
  ...more,
});

// prettier-ignore
const LEGAL: Row[] = [
  // ready: new, or restored in flight
  { name: 'a new event starts attempt 1', from: ready, input: { kind: 'start', newAttemptId: 'dlv_2' },
    to: { phase: 'sending', attempt: 1, deliveryId: 'dlv_2', leaseFloor: null, sentUnder: SENT_UNDER, lastStatus: null, lastError: null },
    effects: [{ kind: 'openCallback', attemptId: 'dlv_2' }, { kind: 'persist' }, { kind: 'send', attemptId: 'dlv_2', attempt: 1 }] },
  { name: 'a restored event starts attempt 2, superseding attempt 1', from: restored, input: { kind: 'start', newAttemptId: 'dlv_2' },
    to: { phase: 'sending', attempt: 2, deliveryId: 'dlv_2', leaseFloor: null, sentUnder: SENT_UNDER, lastStatus: null, lastError: null },
    effects: [settle('superseded'), { kind: 'openCallback', attemptId: 'dlv_2' }, { kind: 'persist' }, { kind: 'send', attemptId: 'dlv_2', attempt: 2 }] },
  { name: 'resume makes it due', from: restored, input: { kind: 'resume' }, to: restored, effects: [{ kind: 'due' }] },
  { name: 'ack of the restored attempt', from: restored, input: { kind: 'ack', attemptId: 'dlv_1' },
    to: { phase: 'done', ...was() }, effects: [settle('acked'), observe('acked'), { kind: 'commitOffset' }] },
  { name: 'nack of the restored attempt', from: restored, input: { kind: 'nack', attemptId: 'dlv_1' },
    to: retryAt(NOW + 1000, 'negatively acknowledged by the receiver'), effects: [settle('nacked'), observe('nacked'), ...retryEffects(NOW + 1000)] },
  { name: 'extend of the restored attempt awaits its ack under that lease instead of sending it again', from: restored,
    input: { kind: 'extend', attemptId: 'dlv_1', ms: 5000 },
    to: { phase: 'awaiting_ack', leaseUntil: NOW + 5000, ...was() },
    effects: [{ kind: 'armLease', attemptId: 'dlv_1', until: NOW + 5000 }, { kind: 'persist' }, { kind: 'extended', until: NOW + 5000 }] },
  { name: 'reject of the restored attempt', from: restored, input: { kind: 'reject', attemptId: 'dlv_1', reason: 'no' },
    to: { phase: 'dead', reason: 'receiver_rejected', ...was({ lastError: 'no' }) },
    effects: [settle('rejected'), observe('rejected'), ...deadEffects('receiver_rejected')] },
  { name: 'expire lets it go', from: restored, input: { kind: 'expire' }, ctx: { expired: true },
    to: { phase: 'released', ...was() }, effects: [settle('superseded'), { kind: 'release' }] },
  { name: 'a corrupt record is dead-lettered', from: ready, input: { kind: 'corrupt' },
    to: { phase: 'dead', reason: 'corrupt_record', attempt: 0, deliveryId: null, lastStatus: null, lastError: 'the record fails its checksum or cannot be read; it is never delivered' },
    effects: deadEffects('corrupt_record') },
  { name: 'a record that cannot be read now is tried again later, no attempt spent', from: restored,
    input: { kind: 'unavailable', delayMs: 5000 }, to: restored, effects: [{ kind: 'scheduleAt', at: NOW + 5000 }] },
  { name: 'a missing record is skipped', from: ready, input: { kind: 'missing' },
    to: { phase: 'done', attempt: 0, deliveryId: null, lastStatus: null, lastError: null }, effects: [{ kind: 'commitOffset' }] },
  { name: 'seek drops it', from: restored, input: { kind: 'seek' }, to: { phase: 'dropped', ...was() }, effects: [settle('superseded'), { kind: 'drop' }] },
  { name: 'delete drops it', from: restored, input: { kind: 'delete' }, to: { phase: 'dropped', ...was() }, effects: [{ kind: 'drop' }] },

  // sending: the request of attempt 1 is open
  { name: '2xx delivers', from: sending, input: answer(204),
    to: { phase: 'done', ...was({ lastStatus: 204 }) },
    effects: [...answered('ok'), observe('delivered'), settle('acked'), { kind: 'commitOffset' }] },
  { name: '202 awaits the ack under a lease', from: sending, input: answer(202),
    to: { phase: 'awaiting_ack', leaseUntil: NOW + 30_000, ...was({ lastStatus: 202 }) },
    effects: [...answered('ok'), { kind: 'armLease', attemptId: 'dlv_1', until: NOW + 30_000 }, { kind: 'persist' }] },
  { name: '200 of an attempt sent under ackMode manual awaits the ack, though a PATCH made it auto meanwhile', from: deepFreeze({ ...sending, sentUnder: { ...SENT_UNDER, ackMode: 'manual' } }),
    input: answer(200), ctx: { policy: { ...policy, ackMode: 'auto' } },
    to: { phase: 'awaiting_ack', leaseUntil: NOW + 30_000, ...was({ lastStatus: 200 }) },
    effects: [...answered('ok'), { kind: 'armLease', attemptId: 'dlv_1', until: NOW + 30_000 }, { kind: 'persist' }] },
  { name: '200 of an attempt sent under ackMode auto delivers, though a PATCH made it manual meanwhile', from: sending, input: answer(200), ctx: { policy: { ...policy, ackMode: 'manual' } },
    to: { phase: 'done', ...was({ lastStatus: 200 }) },
    effects: [...answered('ok'), observe('delivered'), settle('acked'), { kind: 'commitOffset' }] },
  { name: '202 gets the lease in force at the send, though a PATCH shortened ackDeadlineMs meanwhile', from: sending, input: answer(202), ctx: { policy: { ...policy, ackDeadlineMs: 100 } },
    to: { phase: 'awaiting_ack', leaseUntil: NOW + 30_000, ...was({ lastStatus: 202 }) },
    effects: [...answered('ok'), { kind: 'armLease', attemptId: 'dlv_1', until: NOW + 30_000 }, { kind: 'persist' }] },
  { name: '202 after an early extend keeps the longer lease', from: deepFreeze({ ...sending, leaseFloor: NOW + 90_000 }), input: answer(202),
    to: { phase: 'awaiting_ack', leaseUntil: NOW + 90_000, ...was({ lastStatus: 202 }) },
    effects: [...answered('ok'), { kind: 'armLease', attemptId: 'dlv_1', until: NOW + 90_000 }, { kind: 'persist' }] },
  { name: '410 keeps the event for the resume and pauses', from: sending, input: answer(410),
    to: { phase: 'scheduled', nextAttemptAt: NOW, ...was({ lastStatus: 410, lastError: 'subscriber answered 410 Gone' }) },
    effects: [...answered(null), observe('gone'), settle('failed'), { kind: 'persist' }, { kind: 'pauseSubscription' }] },
  { name: '410 of a sink a PATCH has replaced retries after the backoff, no pause', from: sending, input: answer(410, { sinkMoved: true }),
    to: retryAt(NOW + 1000, 'HTTP 410 from the sink a PATCH has replaced', 410),
    effects: [...answered(null), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: '500 retries after the backoff', from: sending, input: answer(500, { error: 'boom' }),
    to: retryAt(NOW + 1000, 'boom', 500), effects: [...answered('boom'), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: 'the backoff is jittered by ctx.random', from: sending, input: answer(500), ctx: { random: () => 0 },
    to: retryAt(NOW + 500, 'HTTP 500', 500), effects: [...answered('HTTP 500'), observe('retry'), settle('failed'), ...retryEffects(NOW + 500)] },
  { name: '503 honours Retry-After', from: sending, input: answer(503, { retryAfter: '7' }),
    to: retryAt(NOW + 7000, 'HTTP 503', 503), effects: [...answered('HTTP 503'), observe('retry'), settle('failed'), ...retryEffects(NOW + 7000)] },
  { name: '429 Retry-After past maxDelayMs is obeyed (http-webhook §2.2)', from: sending, input: answer(429, { retryAfter: '3600' }),
    to: retryAt(NOW + 3_600_000, 'HTTP 429', 429), effects: [...answered('HTTP 429'), observe('retry'), settle('failed'), ...retryEffects(NOW + 3_600_000)] },
  { name: '429 Retry-After past a day waits a day', from: sending, input: answer(429, { retryAfter: '999999999' }),
    to: retryAt(NOW + 86_400_000, 'HTTP 429', 429), effects: [...answered('HTTP 429'), observe('retry'), settle('failed'), ...retryEffects(NOW + 86_400_000)] },
  { name: '500 ignores Retry-After', from: sending, input: answer(500, { retryAfter: '7' }),
    to: retryAt(NOW + 1000, 'HTTP 500', 500), effects: [...answered('HTTP 500'), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: '500 of the last attempt dead-letters', from: atMax(sending), input: answer(500),
    to: { phase: 'dead', reason: 'max_attempts', ...was({ attempt: 3, lastStatus: 500, lastError: 'HTTP 500' }) },
    // No retry follows: counted `dead_letter` alone, not `retry` as well (delivery probe).
    effects: [...answered('HTTP 500'), settle('failed'), ...deadEffects('max_attempts')] },
  { name: '500 for an expired event lets it go', from: sending, input: answer(500), ctx: { expired: true },
    to: { phase: 'released', ...was({ lastStatus: 500, lastError: 'HTTP 500' }) },
    effects: [...answered('HTTP 500'), settle('failed'), { kind: 'release' }] },
  { name: '400 dead-letters', from: sending, input: answer(400),
    to: { phase: 'dead', reason: 'rejected_status', ...was({ lastStatus: 400, lastError: 'HTTP 400' }) },
    effects: [...answered('HTTP 400'), settle('failed'), ...deadEffects('rejected_status')] },
  { name: '400 for an expired event lets it go, no dead letter', from: sending, input: answer(400), ctx: { expired: true },
    to: { phase: 'released', ...was({ lastStatus: 400, lastError: 'HTTP 400' }) },
    effects: [...answered('HTTP 400'), settle('failed'), { kind: 'release' }] },
  { name: 'a failed request retries', from: sending, input: answer(null, { error: 'ECONNREFUSED' }),
    to: retryAt(NOW + 1000, 'ECONNREFUSED'), effects: [...answered('ECONNREFUSED'), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: 'a refused sink address dead-letters', from: sending, input: answer(null, { sinkNotAllowed: true }),
    to: { phase: 'dead', reason: 'sink_not_allowed', ...was({ lastError: 'the sink address is not allowed' }) },
    effects: [...answered('HTTP null'), settle('failed'), ...deadEffects('sink_not_allowed')] },
  // From a sink a PATCH has replaced: that URL's answer does not end the event; it goes to the new sink (hostile-receiver probe).
  { name: '400 of a sink a PATCH has replaced retries after the backoff, no dead letter', from: sending, input: answer(400, { sinkMoved: true }),
    to: retryAt(NOW + 1000, 'HTTP 400 from the sink a PATCH has replaced', 400),
    effects: [...answered(null), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: 'a refused address of a sink a PATCH has replaced retries', from: sending, input: answer(null, { sinkNotAllowed: true, sinkMoved: true }),
    to: retryAt(NOW + 1000, 'the sink address is not allowed from the sink a PATCH has replaced'),
    effects: [...answered(null), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: '500 of a sink a PATCH has replaced retries without a health failure', from: sending, input: answer(500, { sinkMoved: true }),
    to: retryAt(NOW + 1000, 'HTTP 500', 500), effects: [...answered(null), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: 'a timeout retries', from: sending, input: { kind: 'timeout', attemptId: 'dlv_1', error: 'timed out' },
    to: retryAt(NOW + 1000, 'timed out'), effects: [...answered('timed out'), observe('timeout'), settle('failed'), ...retryEffects(NOW + 1000)] },
  // Was: a request waiting for a connection went out after the pause (or a rotation) answered 200.
  { name: 'a request that never left (paused while it waited for a connection) is withdrawn: back to ready, its number unspent',
    from: sending, input: { kind: 'withdraw', attemptId: 'dlv_1' },
    to: { phase: 'ready', attempt: 0, deliveryId: null, lastStatus: null, lastError: null },
    effects: [settle('superseded'), { kind: 'persist' }] },
  { name: 'ack while the request is open', from: sending, input: { kind: 'ack', attemptId: 'dlv_1' },
    to: { phase: 'done', ...was() }, effects: [settle('acked'), observe('acked'), { kind: 'commitOffset' }] },
  { name: 'nack while the request is open retries after delayMs', from: sending, input: { kind: 'nack', attemptId: 'dlv_1', delayMs: 250 },
    to: retryAt(NOW + 250, 'negatively acknowledged by the receiver'), effects: [settle('nacked'), observe('nacked'), ...retryEffects(NOW + 250)] },
  // Delivery probe: a nack's delayMs of 100 s was obeyed (up to a day, as a Retry-After is) past maxDelayMs.
  { name: "nack's delayMs is capped at retry.maxDelayMs", from: sending, input: { kind: 'nack', attemptId: 'dlv_1', delayMs: 3_600_000 },
    to: retryAt(NOW + 60_000, 'negatively acknowledged by the receiver'), effects: [settle('nacked'), observe('nacked'), ...retryEffects(NOW + 60_000)] },
  { name: 'extend before the 202 sets the lease floor, written', from: sending, input: { kind: 'extend', attemptId: 'dlv_1', ms: 5000 },
    to: { ...sending, leaseFloor: NOW + 5000 }, effects: [{ kind: 'persist' }, { kind: 'extended', until: NOW + 5000 }] },
  { name: 'extend never lowers the lease floor', from: deepFreeze({ ...sending, leaseFloor: NOW + 9000 }), input: { kind: 'extend', attemptId: 'dlv_1', ms: 1 },
    to: { ...sending, leaseFloor: NOW + 9000 }, effects: [{ kind: 'persist' }, { kind: 'extended', until: NOW + 9000 }] },
  { name: 'a timeout after an extend awaits the ack under the extended lease, not sent again inside it', from: deepFreeze({ ...sending, leaseFloor: NOW + 5000 }),
    input: { kind: 'timeout', attemptId: 'dlv_1', error: 'timed out' },
    to: { phase: 'awaiting_ack', leaseUntil: NOW + 5000, ...was({ lastError: 'timed out' }) },
    effects: [...answered('timed out'), observe('timeout'), { kind: 'armLease', attemptId: 'dlv_1', until: NOW + 5000 }, { kind: 'persist' }] },
  { name: 'a lost connection after an extend awaits the ack under the extended lease', from: deepFreeze({ ...sending, leaseFloor: NOW + 5000 }),
    input: answer(null, { error: 'ECONNRESET' }),
    to: { phase: 'awaiting_ack', leaseUntil: NOW + 5000, ...was({ lastError: 'ECONNRESET' }) },
    effects: [...answered('ECONNRESET'), observe('retry'), { kind: 'armLease', attemptId: 'dlv_1', until: NOW + 5000 }, { kind: 'persist' }] },
  { name: 'a 500 after an extend is the receiver\'s word: retried after the backoff', from: deepFreeze({ ...sending, leaseFloor: NOW + 5000 }), input: answer(500),
    to: retryAt(NOW + 1000, 'HTTP 500', 500), effects: [...answered('HTTP 500'), observe('retry'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: 'a timeout once the extended lease has run out retries', from: deepFreeze({ ...sending, leaseFloor: NOW }),
    input: { kind: 'timeout', attemptId: 'dlv_1', error: 'timed out' },
    to: retryAt(NOW + 1000, 'timed out'), effects: [...answered('timed out'), observe('timeout'), settle('failed'), ...retryEffects(NOW + 1000)] },
  { name: 'reject while the request is open', from: sending, input: { kind: 'reject', attemptId: 'dlv_1' },
    to: { phase: 'dead', reason: 'receiver_rejected', ...was({ lastError: 'rejected by the receiver' }) },
    effects: [settle('rejected'), observe('rejected'), ...deadEffects('receiver_rejected')] },
  { name: 'seek drops an open attempt', from: sending, input: { kind: 'seek' }, to: { phase: 'dropped', ...was() }, effects: [settle('superseded'), { kind: 'drop' }] },
  { name: 'delete drops an open attempt', from: sending, input: { kind: 'delete' }, to: { phase: 'dropped', ...was() }, effects: [{ kind: 'drop' }] },

  // awaiting_ack: answered 202, leased until NOW + 30 s
  { name: 'ack finishes', from: awaiting, input: { kind: 'ack', attemptId: 'dlv_1' },
    to: { phase: 'done', ...was({ lastStatus: 202 }) }, effects: [settle('acked'), observe('acked'), { kind: 'commitOffset' }] },
  { name: 'nack retries on the backoff', from: awaiting, input: { kind: 'nack', attemptId: 'dlv_1' },
    to: retryAt(NOW + 1000, 'negatively acknowledged by the receiver', 202), effects: [settle('nacked'), observe('nacked'), ...retryEffects(NOW + 1000)] },
  { name: 'nack of the last attempt dead-letters', from: atMax(awaiting), input: { kind: 'nack', attemptId: 'dlv_1' },
    to: { phase: 'dead', reason: 'max_attempts', ...was({ attempt: 3, lastStatus: 202, lastError: 'negatively acknowledged by the receiver' }) },
    effects: [settle('nacked'), observe('nacked'), ...deadEffects('max_attempts')] },
  { name: 'extend moves the lease', from: awaiting, input: { kind: 'extend', attemptId: 'dlv_1', ms: 60_000 },
    to: { ...awaiting, leaseUntil: NOW + 60_000 },
    effects: [{ kind: 'armLease', attemptId: 'dlv_1', until: NOW + 60_000 }, { kind: 'persist' }, { kind: 'extended', until: NOW + 60_000 }] },
  { name: 'extend never shortens the lease', from: awaiting, input: { kind: 'extend', attemptId: 'dlv_1', ms: 1 },
    to: awaiting, effects: [{ kind: 'armLease', attemptId: 'dlv_1', until: NOW + 30_000 }, { kind: 'persist' }, { kind: 'extended', until: NOW + 30_000 }] },
  { name: 'reject dead-letters', from: awaiting, input: { kind: 'reject', attemptId: 'dlv_1', reason: 'schema mismatch' },
    to: { phase: 'dead', reason: 'receiver_rejected', ...was({ lastStatus: 202, lastError: 'schema mismatch' }) },
    effects: [settle('rejected'), observe('rejected'), ...deadEffects('receiver_rejected')] },
  { name: 'reject of an expired event lets it go', from: awaiting, input: { kind: 'reject', attemptId: 'dlv_1' }, ctx: { expired: true },
    to: { phase: 'released', ...was({ lastStatus: 202, lastError: 'rejected by the receiver' }) },
    effects: [settle('rejected'), observe('rejected'), { kind: 'release' }] },
  { name: 'the lease runs out: retry', from: awaiting, input: { kind: 'leaseExpired', attemptId: 'dlv_1' },
    to: retryAt(NOW + 1000, 'no acknowledgement within the lease (ackDeadlineMs=30000)', 202),
    effects: [settle('expired'), observe('lease_expired'), ...retryEffects(NOW + 1000)] },
  { name: 'a running lease is armed again at restore', from: awaiting, input: { kind: 'restore' },
    to: awaiting, effects: [{ kind: 'armLease', attemptId: 'dlv_1', until: NOW + 30_000 }] },
  { name: 'a lease that ran out while down fails at restore', from: awaiting, input: { kind: 'restore' }, ctx: { now: NOW + 30_000 },
    to: retryAt(NOW + 31_000, 'ack lease ran out while the gateway was down', 202), effects: [settle('expired'), observe('lease_expired'), ...retryEffects(NOW + 31_000)] },
  { name: 'seek drops an awaited attempt', from: awaiting, input: { kind: 'seek' },
    to: { phase: 'dropped', ...was({ lastStatus: 202 }) }, effects: [settle('superseded'), { kind: 'drop' }] },
  { name: 'delete drops an awaited attempt', from: awaiting, input: { kind: 'delete' }, to: { phase: 'dropped', ...was({ lastStatus: 202 }) }, effects: [{ kind: 'drop' }] },

  // scheduled: attempt 1 failed, attempt 2 due at NOW + 500
  { name: 'the retry starts attempt 2', from: scheduled, input: { kind: 'start', newAttemptId: 'dlv_2' },
    to: { phase: 'sending', attempt: 2, deliveryId: 'dlv_2', leaseFloor: null, sentUnder: SENT_UNDER, lastStatus: 500, lastError: 'HTTP 500' },
    effects: [settle('superseded'), { kind: 'openCallback', attemptId: 'dlv_2' }, { kind: 'persist' }, { kind: 'send', attemptId: 'dlv_2', attempt: 2 }] },
  { name: 'maxAttempts lowered to the attempts made since the retry was scheduled: dead-lettered, not sent', from: scheduled,
    input: { kind: 'start', newAttemptId: 'dlv_2' }, ctx: { policy: { ...policy, retry: { ...policy.retry, maxAttempts: 1 } } },
    to: { phase: 'dead', reason: 'max_attempts', ...was({ lastStatus: 500, lastError: 'HTTP 500' }) },
    effects: [settle('failed'), ...deadEffects('max_attempts')] },
  { name: 'a 410 on the last allowed attempt: its event is sent at the resume, one past maxAttempts (was: dead-lettered unsent)',
    from: deepFreeze<AttemptState>({ ...scheduled, lastStatus: 410, lastError: 'subscriber answered 410 Gone' }), input: { kind: 'start', newAttemptId: 'dlv_2' },
    ctx: { policy: { ...policy, retry: { ...policy.retry, maxAttempts: 1 } } },
    to: { phase: 'sending', attempt: 2, deliveryId: 'dlv_2', leaseFloor: null, sentUnder: SENT_UNDER, lastStatus: 410, lastError: 'subscriber answered 410 Gone' },
    effects: [settle('superseded'), { kind: 'openCallback', attemptId: 'dlv_2' }, { kind: 'persist' }, { kind: 'send', attemptId: 'dlv_2', attempt: 2 }] },
  { name: 'a 410 on the attempt past maxAttempts: sent again at the next resume too', from: deepFreeze<AttemptState>({ ...scheduled, attempt: 2, lastStatus: 410, lastError: 'subscriber answered 410 Gone' }),
    input: { kind: 'start', newAttemptId: 'dlv_3' }, ctx: { policy: { ...policy, retry: { ...policy.retry, maxAttempts: 1 } } },
    to: { phase: 'sending', attempt: 3, deliveryId: 'dlv_3', leaseFloor: null, sentUnder: SENT_UNDER, lastStatus: 410, lastError: 'subscriber answered 410 Gone' },
    effects: [settle('superseded'), { kind: 'openCallback', attemptId: 'dlv_3' }, { kind: 'persist' }, { kind: 'send', attemptId: 'dlv_3', attempt: 3 }] },
  { name: 'resume arms the retry again', from: scheduled, input: { kind: 'resume' }, to: scheduled, effects: [{ kind: 'scheduleAt', at: NOW + 500 }] },
  { name: 'restore arms the retry', from: scheduled, input: { kind: 'restore' }, to: scheduled, effects: [{ kind: 'scheduleAt', at: NOW + 500 }] },
  { name: 'due while paused: waits for resume', from: scheduled, input: { kind: 'pause' }, to: scheduled, effects: [{ kind: 'clearTimer' }] },
  { name: 'expire lets a scheduled retry go', from: scheduled, input: { kind: 'expire' }, ctx: { expired: true },
    to: { phase: 'released', ...was({ lastStatus: 500, lastError: 'HTTP 500' }) }, effects: [settle('superseded'), { kind: 'release' }] },
  { name: 'a record found corrupt at the retry', from: scheduled, input: { kind: 'corrupt' },
    to: { phase: 'dead', reason: 'corrupt_record', ...was({ lastStatus: 500, lastError: 'the record fails its checksum or cannot be read; it is never delivered' }) },
    effects: [settle('failed'), ...deadEffects('corrupt_record')] },
  { name: 'a record that cannot be read at the retry is tried again later, no attempt spent', from: scheduled,
    input: { kind: 'unavailable', delayMs: 5000 }, to: scheduled, effects: [{ kind: 'scheduleAt', at: NOW + 5000 }] },
  { name: 'a record missing at the retry', from: scheduled, input: { kind: 'missing' },
    to: { phase: 'done', ...was({ lastStatus: 500, lastError: 'HTTP 500' }) }, effects: [settle('superseded'), { kind: 'commitOffset' }] },
  { name: 'seek drops a scheduled retry', from: scheduled, input: { kind: 'seek' },
    to: { phase: 'dropped', ...was({ lastStatus: 500, lastError: 'HTTP 500' }) }, effects: [settle('superseded'), { kind: 'drop' }] },
  { name: 'delete drops a scheduled retry', from: scheduled, input: { kind: 'delete' },
    to: { phase: 'dropped', ...was({ lastStatus: 500, lastError: 'HTTP 500' }) }, effects: [{ kind: 'drop' }] },
];

const cell = (phase: Phase, kind: InputKind) => `${phase} × ${kind}`;
const tableCells = PHASES.flatMap((phase) => Object.keys(TABLE[phase]).map((kind) => cell(phase, kind as InputKind)));
const legalCells = new Set(LEGAL.map((r) => cell(r.from.phase, r.input.kind)));

/** An input of each kind, naming the current attempt of `state` (so only its phase can make it illegal). */
function sampleInput(kind: InputKind, state: AttemptState): AttemptInput {
  const attemptId = state.deliveryId ?? 'dlv_1';
  switch (kind) {
    case 'start':
      return { kind, newAttemptId: 'dlv_9' };
    case 'answer':
      return { kind, attemptId, status: 204 };
    case 'nack':
      return { kind, attemptId, delayMs: 0 };
    case 'unavailable':
      return { kind, delayMs: 1000 };
    case 'extend':
      return { kind, attemptId, ms: 1000 };
    case 'timeout':
    case 'withdraw':
    case 'ack':
    case 'reject':
    case 'leaseExpired':
      return { kind, attemptId };
    default:
      return { kind };
  }
}

describe('attempt machine: legal transitions', () => {
  it.each(LEGAL)('$from.phase × $input.kind: $name', ({ from, input, ctx: over, to, effects }) => {
    const step = transition(from, input, ctx(over));
    expect(step.state).toEqual(to);
    expect(step.effects).toEqual(effects);
    if (step.state.phase !== from.phase) expect(step.state).not.toBe(from);
  });

  it('covers every cell of the table, and the table has no cell this test does not list', () => {
    expect([...legalCells].sort()).toEqual([...tableCells].sort());
  });

  it('stores each live phase as the pending state its row has always meant', () => {
    expect(ROW_STATE).toEqual({
      ready: 'in_flight',
      sending: 'in_flight',
      awaiting_ack: 'awaiting_ack',
      scheduled: 'scheduled',
      done: null,
      dead: null,
      released: null,
      dropped: null,
    });
    const row = {
      partition: 0,
      offset: 5,
      attempt: 2,
      deliveryId: 'dlv_x',
      previousOffset: 3,
      redrive: false,
      lastStatus: 202,
      lastError: null,
    };
    expect(stateFromRow({ ...row, state: 'in_flight', nextAttemptAt: null, leaseUntil: null })).toEqual({
      phase: 'ready',
      attempt: 2,
      deliveryId: 'dlv_x',
      lastStatus: 202,
      lastError: null,
    });
    // In flight with a lease: the receiver extended the attempt before a crash cut its request; it awaits the ack.
    expect(stateFromRow({ ...row, state: 'in_flight', nextAttemptAt: null, leaseUntil: 66 })).toMatchObject({
      phase: 'awaiting_ack',
      leaseUntil: 66,
    });
    expect(stateFromRow({ ...row, state: 'awaiting_ack', nextAttemptAt: null, leaseUntil: 77 })).toMatchObject({
      phase: 'awaiting_ack',
      leaseUntil: 77,
    });
    expect(stateFromRow({ ...row, state: 'scheduled', nextAttemptAt: 88, leaseUntil: null })).toMatchObject({
      phase: 'scheduled',
      nextAttemptAt: 88,
    });
  });
});

describe('attempt machine: inputs that change nothing', () => {
  const illegal = PHASES.flatMap((phase) =>
    INPUT_KINDS.filter((kind) => !legalCells.has(cell(phase, kind))).map((kind) => ({ phase, kind, name: cell(phase, kind) })),
  );

  it('leaves out some cells in every phase, and every input kind in some phase', () => {
    expect(illegal.length).toBe(PHASES.length * INPUT_KINDS.length - legalCells.size);
    for (const phase of ['done', 'dead', 'released', 'dropped'] as const) {
      expect(illegal.filter((c) => c.phase === phase)).toHaveLength(INPUT_KINDS.length);
    }
  });

  it.each(illegal)('$name', ({ phase, kind }) => {
    const state = SAMPLE[phase];
    for (const expired of [false, true]) {
      const step = transition(state, sampleInput(kind, state), ctx({ expired }));
      expect(step.state).toBe(state);
      expect(step.effects).toEqual([]);
    }
  });

  const withAttemptId = LEGAL.filter((r) => 'attemptId' in r.input);
  it.each(withAttemptId)('a stale attempt id: $from.phase × $input.kind ($name)', ({ from, input, ctx: over }) => {
    const step = transition(from, { ...input, attemptId: 'dlv_0' } as AttemptInput, ctx(over));
    expect(step.state).toBe(from);
    expect(step.effects).toEqual([]);
  });
});

describe('attempt machine: the named cases', () => {
  /** Feeds inputs in turn, returning the final state and every step's effects. */
  function run(from: AttemptState, ...inputs: AttemptInput[]) {
    let state = from;
    const effects: AttemptEffect[][] = [];
    for (const input of inputs) {
      const step = transition(state, input, ctx());
      state = step.state;
      effects.push(step.effects);
    }
    return { state, effects };
  }

  it('a failure whose answer had no body is named by its status, not by an empty excerpt', () => {
    const step = transition(sending, answer(500, { error: '' }), ctx());
    expect(step.state.lastError).toBe('HTTP 500');
    expect(step.effects).toContainEqual({ kind: 'health', ok: false, error: 'HTTP 500' });
  });

  it('a stale answer: attempt 1 answers after a nack started attempt 2, and attempt 2 stays open', () => {
    const { state, effects } = run(
      sending,
      { kind: 'nack', attemptId: 'dlv_1', delayMs: 0 },
      { kind: 'start', newAttemptId: 'dlv_2' },
      answer(204), // attempt 1's request, still open at the nack, answers now
    );
    expect(state).toEqual({
      phase: 'sending',
      attempt: 2,
      deliveryId: 'dlv_2',
      leaseFloor: null,
      sentUnder: SENT_UNDER,
      lastStatus: null,
      lastError: 'negatively acknowledged by the receiver',
    });
    expect(effects[2]).toEqual([]);
    // Attempt 2's request is still open: a resume does not start attempt 3 (the bug the old `sending` flag had).
    expect(transition(state, { kind: 'resume' }, ctx())).toEqual({ state, effects: [] });
    expect(run(state, answer(204, { attemptId: 'dlv_2' })).state).toMatchObject({ phase: 'done', attempt: 2, lastStatus: 204 });
  });

  it('a stale answer also changes nothing while the nacked event waits for its retry', () => {
    const nacked = run(sending, { kind: 'nack', attemptId: 'dlv_1', delayMs: 1000 }).state;
    expect(transition(nacked, answer(204), ctx())).toEqual({ state: nacked, effects: [] });
  });

  it('a repeated callback: the second ack, nack or reject changes nothing', () => {
    for (const input of [
      { kind: 'ack', attemptId: 'dlv_1' },
      { kind: 'nack', attemptId: 'dlv_1' },
      { kind: 'reject', attemptId: 'dlv_1' },
    ] as AttemptInput[]) {
      const once = run(awaiting, input);
      expect(once.effects[0]!.length).toBeGreaterThan(0);
      const twice = transition(once.state, input, ctx());
      expect(twice.state).toBe(once.state);
      expect(twice.effects).toEqual([]);
    }
  });

  it('an ack after a reject changes nothing: the event stays dead-lettered, once', () => {
    const { state, effects } = run(awaiting, { kind: 'reject', attemptId: 'dlv_1', reason: 'bad' }, { kind: 'ack', attemptId: 'dlv_1' });
    expect(state).toMatchObject({ phase: 'dead', reason: 'receiver_rejected', lastError: 'bad' });
    expect(effects[0]!.filter((e) => e.kind === 'deadLetter')).toHaveLength(1);
    expect(effects[1]).toEqual([]);
  });

  it('an ack while the request is open finishes the event; the answer that follows changes nothing', () => {
    const { state, effects } = run(sending, { kind: 'ack', attemptId: 'dlv_1' }, answer(200));
    expect(state).toMatchObject({ phase: 'done' });
    expect(effects[1]).toEqual([]);
  });

  it('a lease expiry after the ack, or for an extended lease of an older attempt, changes nothing', () => {
    const acked = run(awaiting, { kind: 'ack', attemptId: 'dlv_1' }).state;
    expect(transition(acked, { kind: 'leaseExpired', attemptId: 'dlv_1' }, ctx()).effects).toEqual([]);
    const retried = run(
      awaiting,
      { kind: 'nack', attemptId: 'dlv_1' },
      { kind: 'start', newAttemptId: 'dlv_2' },
      answer(202, { attemptId: 'dlv_2' }),
    );
    expect(retried.state).toMatchObject({ phase: 'awaiting_ack', deliveryId: 'dlv_2' });
    expect(transition(retried.state, { kind: 'leaseExpired', attemptId: 'dlv_1' }, ctx())).toEqual({ state: retried.state, effects: [] });
  });

  it('is pure: the same state, input and context give the same step, and the state given is never changed', () => {
    for (const row of LEGAL) {
      expect(transition(row.from, row.input, ctx(row.ctx))).toEqual(transition(row.from, row.input, ctx(row.ctx)));
      expect(Object.isFrozen(row.from)).toBe(true); // a write to it would have thrown
    }
  });
});

describe('answerOutcome: what the attempt log says was done with an answer', () => {
  const outcomeOf = (state: AttemptState, input: AttemptInput, over: Partial<AttemptContext> = {}) => {
    const step = transition(state, input, ctx(over));
    return answerOutcome(step.state, step.effects);
  };
  const lastAttempt = deepFreeze<AttemptState>({ ...sending, attempt: 3 });
  it.each<[string, string, AttemptState, AttemptInput]>([
    ['a 2xx', 'delivered', sending, { kind: 'answer', attemptId: 'dlv_1', status: 204 }],
    ['a 202', 'awaiting_ack', sending, { kind: 'answer', attemptId: 'dlv_1', status: 202 }],
    ['a 503 with attempts left', 'retry', sending, { kind: 'answer', attemptId: 'dlv_1', status: 503 }],
    ['a 503 on the last attempt', 'dead_lettered', lastAttempt, { kind: 'answer', attemptId: 'dlv_1', status: 503 }],
    ['a 400', 'dead_lettered', sending, { kind: 'answer', attemptId: 'dlv_1', status: 400 }],
    ['a 410', 'gone', sending, { kind: 'answer', attemptId: 'dlv_1', status: 410 }],
    ['no answer in time', 'timeout', sending, { kind: 'timeout', attemptId: 'dlv_1' }],
    ['an answer for an older attempt', 'stale', sending, { kind: 'answer', attemptId: 'dlv_0', status: 204 }],
    ['an answer after a callback settled it', 'stale', awaiting, { kind: 'answer', attemptId: 'dlv_1', status: 204 }],
  ])('%s → %s', (_what, expected, state, input) => {
    expect(outcomeOf(state, input)).toBe(expected);
  });
});

describe("answerInput: what the sender's result is to the machine (both engines)", () => {
  it('no status within the timeout is a timeout, with the error', () => {
    expect(answerInput('dlv_1', { status: null, timedOut: true, error: 'timed out' })).toEqual({
      kind: 'timeout',
      attemptId: 'dlv_1',
      error: 'timed out',
    });
  });
  it('a refused sink address is an answer, even when it took the whole timeout: it dead-letters, never retried', () => {
    const input = answerInput('dlv_1', { status: null, timedOut: true, sinkNotAllowed: true, error: 'refused' });
    expect(input).toMatchObject({ kind: 'answer', status: null, sinkNotAllowed: true });
    expect(transition(sending, input, ctx()).state.phase).toBe('dead');
  });
  it('a status or a failed connection is an answer with what came with it', () => {
    expect(answerInput('dlv_1', { status: 503, retryAfter: '7', error: 'busy' })).toEqual({
      kind: 'answer',
      attemptId: 'dlv_1',
      status: 503,
      retryAfter: '7',
      error: 'busy',
      sinkNotAllowed: undefined,
    });
    expect(answerInput('dlv_1', { status: null, error: 'ECONNREFUSED' })).toMatchObject({ kind: 'answer', status: null });
  });
});
