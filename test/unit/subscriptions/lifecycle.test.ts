import { SUBSCRIPTION_STATES, type SubscriptionRecord } from '../../../src/subscriptions/record';
import { initialState, transition, type LifecycleInput, type LifecycleInputKind } from '../../../src/subscriptions/lifecycle';
import { subscriptionRecord } from '../../helpers/subscription-record';

/**
 * The subscription life cycle's table: every state × every input, what it changes, and that an input
 * that means nothing in a state (a stale handshake answer, a second 410, a consent after a refusal)
 * changes nothing.
 */

const ctx = { now: 1_000, newToken: () => 'new-token', validationWaitMs: 600_000 };
const validationStart: Partial<SubscriptionRecord> = {
  state: 'validating',
  stateReason: null,
  validatedAt: null,
  allowedRate: null, // each handshake asks the sink again
  validationToken: 'new-token',
  validationDeadline: 601_000,
};

const rec = (overrides: Partial<SubscriptionRecord>) => subscriptionRecord({ id: 's', ...overrides });
const records = {
  activePlain: rec({}),
  activeConsented: rec({ validation: 'cloudevents', validatedAt: 500 }),
  pausedByUser: rec({ state: 'paused', stateReason: 'user', validation: 'cloudevents', validatedAt: 500 }),
  pausedGone: rec({ state: 'paused', stateReason: 'gone' }),
  pausedFailing: rec({ state: 'paused', stateReason: 'failing' }),
  pausedRefused: rec({ state: 'paused', stateReason: 'validation_failed', validation: 'cloudevents' }),
  validating: rec({ state: 'validating', validation: 'cloudevents', validationToken: 'tok', validationDeadline: 9_000 }),
  validatingLimited: rec({
    state: 'validating',
    validation: 'cloudevents',
    validationToken: 'tok',
    validationDeadline: 9_000,
    delivery: { ...subscriptionRecord().delivery, rateLimit: { perSecond: 2 } },
  }),
};
type Name = keyof typeof records;

const consent = (token: string, rateLimit?: { perSecond: number } | null): LifecycleInput => ({ kind: 'consent', token, rateLimit });
const refused = (token: string): LifecycleInput => ({ kind: 'refused', token });
const input = (kind: 'pause' | 'resume' | 'gone' | 'failing' | 'sink-changed'): LifecycleInput => ({ kind });

const paused = (stateReason: string): Partial<SubscriptionRecord> => ({ state: 'paused', stateReason });
const cleared = { validationToken: null, validationDeadline: null };
const active: Partial<SubscriptionRecord> = { state: 'active', stateReason: null };

// [record, input, the fields it changes (undefined: nothing is written)]
const CASES: [Name, LifecycleInput, Partial<SubscriptionRecord> | undefined][] = [
  // active
  ['activePlain', input('pause'), paused('user')],
  ['activePlain', input('resume'), active],
  ['activePlain', consent('tok'), undefined],
  ['activePlain', refused('tok'), undefined],
  ['activePlain', input('gone'), paused('gone')],
  ['activePlain', input('failing'), paused('failing')],
  ['activePlain', input('sink-changed'), undefined],
  ['activeConsented', input('sink-changed'), validationStart],
  ['activeConsented', consent('tok'), undefined], // a late second consent
  // paused
  ['pausedByUser', input('pause'), paused('user')],
  ['pausedByUser', input('resume'), active],
  ['pausedByUser', consent('tok'), undefined],
  ['pausedByUser', refused('tok'), undefined],
  ['pausedByUser', input('gone'), paused('gone')],
  ['pausedByUser', input('failing'), undefined],
  ['pausedByUser', input('sink-changed'), { validatedAt: null, allowedRate: null }], // stays paused; resume validates first
  ['pausedGone', input('gone'), undefined], // a second 410
  ['pausedGone', input('resume'), active],
  ['pausedFailing', input('failing'), undefined],
  ['pausedFailing', input('gone'), paused('gone')],
  ['pausedRefused', input('resume'), validationStart], // never consented: validates first
  ['pausedRefused', consent('tok'), undefined], // a consent after the refusal
  ['pausedRefused', input('sink-changed'), { validatedAt: null, allowedRate: null }],
  // validating
  ['validating', input('pause'), { ...paused('user'), ...cleared }],
  ['validating', input('resume'), validationStart],
  ['validating', consent('tok'), { ...active, ...cleared, validatedAt: 1_000, allowedRate: null }],
  ['validating', consent('older-token'), undefined], // a stale handshake's answer
  ['validating', refused('tok'), { ...paused('validation_failed'), ...cleared }],
  ['validating', refused('older-token'), undefined],
  ['validating', input('gone'), { ...paused('gone'), ...cleared }],
  ['validating', input('failing'), undefined],
  ['validating', input('sink-changed'), validationStart],
];

describe('the subscription life cycle', () => {
  it.each(CASES)('%s, %j → %j', (name, given, expected) => {
    const changes = transition(records[name], given, ctx);
    if (expected === undefined) expect(changes).toBeUndefined();
    else expect(changes).toEqual(expected);
  });

  it('has a case for every state and every input', () => {
    const kinds: LifecycleInputKind[] = ['pause', 'resume', 'consent', 'refused', 'gone', 'failing', 'sink-changed'];
    const covered = new Set(CASES.map(([name, given]) => `${records[name].state}/${given.kind}`));
    const missing = SUBSCRIPTION_STATES.flatMap((state) => kinds.map((kind) => `${state}/${kind}`)).filter((c) => !covered.has(c));
    expect(missing).toEqual([]);
  });

  it("keeps the sink's allowed rate apart from the operator's rate limit: a number is the grant, * or none no grant", () => {
    // Was: the grant replaced delivery.rateLimit, so a sink could raise the limit an operator set.
    const consented = (rateLimit?: { perSecond: number } | null) => transition(records.validatingLimited, consent('tok', rateLimit), ctx);
    expect(consented({ perSecond: 7 })).toMatchObject({ allowedRate: { perSecond: 7 } });
    expect(consented(null)).toMatchObject({ allowedRate: null });
    expect(consented(undefined)).toMatchObject({ allowedRate: null });
    for (const grant of [{ perSecond: 7 }, null, undefined]) expect(consented(grant)).not.toHaveProperty('delivery');
  });

  it('answers each handshake once: after a consent, a repeated consent and a late refusal change nothing', () => {
    const consented = { ...records.validating, ...transition(records.validating, consent('tok'), ctx) } as SubscriptionRecord;
    expect(consented.state).toBe('active');
    expect(transition(consented, consent('tok'), ctx)).toBeUndefined();
    expect(transition(consented, refused('tok'), ctx)).toBeUndefined();
  });

  it('starts a new subscription validating when it asks for the handshake, else active', () => {
    expect(initialState('cloudevents', ctx)).toEqual(validationStart);
    expect(initialState('none', ctx)).toEqual(active);
  });
});
