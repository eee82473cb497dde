/**
 * The subscription life cycle as data: for each state (`active`, `paused`, `validating`) and each input,
 * the fields that change, or nothing. Pure: the service calls {@link transition} inside its
 * compare-and-set save (so it is decided again on a record another request or node wrote meanwhile)
 * and performs the effects (delivery told, handshake started, logs) on what was written.
 */
import type { SubscriptionRecord, SubscriptionState } from './record';

export type LifecycleInput =
  /** `POST …/pause`: paused by the user, whatever the state; a handshake under way is abandoned. */
  | { kind: 'pause' }
  /** `POST …/resume`: active, or validating first when the sink has not consented. */
  | { kind: 'resume' }
  /** The sink consented to the handshake whose token is `token`; `rateLimit` from `WebHook-Allowed-Rate` (null: `*`; undefined: none). */
  | { kind: 'consent'; token: string; rateLimit: { perSecond: number } | null | undefined }
  /** The handshake whose token is `token` failed (refused, or no consent in time). */
  | { kind: 'refused'; token: string }
  /** The receiver answered 410 Gone. */
  | { kind: 'gone' }
  /** Every delivery attempt failed for `disableAfterFailingMs`. */
  | { kind: 'failing' }
  /** `PATCH` gave a new sink URL: consent is given for one URL, so it validates again. */
  | { kind: 'sink-changed' };

export type LifecycleInputKind = LifecycleInput['kind'];

export interface LifecycleContext {
  now: number;
  /** A new handshake token (random in the service; fixed in tests). */
  newToken: () => string;
  /** How long a handshake waits for consent, ms. */
  validationWaitMs: number;
}

type Changes = Partial<SubscriptionRecord>;
/** Changes that name the state they lead to. */
type StateChanges = Changes & Pick<SubscriptionRecord, 'state' | 'stateReason'>;
type Step<K extends LifecycleInputKind> = (
  record: SubscriptionRecord,
  input: Extract<LifecycleInput, { kind: K }>,
  ctx: LifecycleContext,
) => Changes | undefined;

/** The fields that (re)start a validation handshake: `validating`, a new token, a deadline. */
export const validationStart = (ctx: LifecycleContext): StateChanges => ({
  state: 'validating',
  stateReason: null,
  validatedAt: null,
  // The grant came with the last consent: the sink is asked again.
  allowedRate: null,
  validationToken: ctx.newToken(),
  validationDeadline: ctx.now + ctx.validationWaitMs,
});

const ignore = (): undefined => undefined;
const awaited = (record: SubscriptionRecord, token: string) => record.validationToken === token;
const handshakeCleared: Changes = { validationToken: null, validationDeadline: null };

const pausedByUser: Step<'pause'> = () => ({ state: 'paused', stateReason: 'user' });
const resumed: Step<'resume'> = (record, _input, ctx) =>
  record.validation === 'cloudevents' && record.validatedAt === null ? validationStart(ctx) : { state: 'active', stateReason: null };
const pausedGone: Step<'gone'> = () => ({ state: 'paused', stateReason: 'gone' });

/**
 * Every state × every input. A cell that is `ignore` is an input that means nothing in that state
 * (a consent for a paused subscription, a 410 reported twice): nothing is written.
 */
const TABLE: { [S in SubscriptionState]: { [K in LifecycleInputKind]: Step<K> } } = {
  active: {
    pause: pausedByUser,
    resume: resumed,
    consent: ignore,
    refused: ignore,
    gone: pausedGone,
    failing: () => ({ state: 'paused', stateReason: 'failing' }),
    'sink-changed': (record, _input, ctx) => (record.validation === 'cloudevents' ? validationStart(ctx) : undefined),
  },
  paused: {
    pause: pausedByUser,
    resume: resumed,
    consent: ignore,
    refused: ignore,
    gone: (record, input, ctx) => (record.stateReason === 'gone' ? undefined : pausedGone(record, input, ctx)),
    failing: ignore,
    // Stays paused; resume validates the new sink first.
    'sink-changed': (record) => (record.validation === 'cloudevents' ? { validatedAt: null, allowedRate: null } : undefined),
  },
  validating: {
    pause: (record, input, ctx) => ({ ...pausedByUser(record, input, ctx), ...handshakeCleared }),
    resume: resumed,
    consent: (record, input, ctx) =>
      awaited(record, input.token)
        ? {
            state: 'active',
            stateReason: null,
            ...handshakeCleared,
            validatedAt: ctx.now,
            // A rate granted caps the operator's rate limit (never raises it); `*` or none grants no cap.
            allowedRate: input.rateLimit ?? null,
          }
        : undefined,
    refused: (record, input) =>
      awaited(record, input.token) ? { state: 'paused', stateReason: 'validation_failed', ...handshakeCleared } : undefined,
    gone: (record, input, ctx) => ({ ...pausedGone(record, input, ctx), ...handshakeCleared }),
    // Nothing is delivered while validating: no attempt can have failed for long.
    failing: ignore,
    'sink-changed': (_record, _input, ctx) => validationStart(ctx),
  },
};

/** The fields `input` changes on `record` in its state, or undefined when it changes nothing there. */
export function transition(record: SubscriptionRecord, input: LifecycleInput, ctx: LifecycleContext): Changes | undefined {
  const step = TABLE[record.state][input.kind] as Step<LifecycleInputKind>;
  return step(record, input, ctx);
}

/** A new subscription's state: validating first when it asks for the CloudEvents handshake, else active. */
export function initialState(validation: SubscriptionRecord['validation'], ctx: LifecycleContext): StateChanges {
  return validation === 'cloudevents' ? validationStart(ctx) : { state: 'active', stateReason: null };
}
