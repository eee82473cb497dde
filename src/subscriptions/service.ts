import { randomUUID } from 'node:crypto';
import { toStructured } from '../cloudevents/format';
import { allowedRate, grantsOrigin, newSigningSecret, previousSecretAt } from '../webhook-policy';
import { AppError } from '../errors';
import { readOne, type EventStore } from '../wal/event-store';
import type { Db } from '../store/db';
import { createSubscriptionsRepo, type SubscriptionRecord } from '../store/subscriptions-repo';
import type { Logger } from '../logger';
import type { DeliveryControl } from './delivery-control';
import { compileFilters } from './filter';
import {
  applyDeliveryChange,
  maskDelivery,
  type CreateSubscriptionInput,
  type DeliveryOptions,
  type PatchSubscriptionInput,
  type RotateSecretInput,
} from './schema';
import { createSinkPolicy, type SinkPolicy } from './sink-policy';
import type { SeekTarget } from './seek-schema';
import { newValidationToken, VALIDATION_WAIT_MS, type Handshakes } from './handshake';

interface Live {
  record: SubscriptionRecord;
}

/** What the service reports outward (the metrics): filter errors, and deletions so per-subscription series go too. */
export interface SubscriptionHooks {
  filterError(subscriptionId: string): void;
  deleted(subscriptionId: string): void;
  /** Paused with reason `failing` (issue 12 §5): `herald_subscription_auto_disabled_total`. */
  autoDisabled?(subscriptionId: string): void;
}

/**
 * Subscriptions: their records (SQLite `subscriptions`), secrets, the validation handshake's outcome,
 * and delivery's lifecycle hooks. Methods take input the API has validated (the schemas' output
 * types) and return records as the API shows them; delivery's state, stats and dead letters are
 * asked of `delivery`, which owns them.
 */
export function createSubscriptionsService(deps: {
  db: Db;
  /** The log, for the events of dead letters. */
  store: EventStore;
  delivery: DeliveryControl;
  log: Logger;
  /** `HERALD_SINK_ALLOW_PRIVATE`; every sink is allowed without one. */
  sinkPolicy?: SinkPolicy;
  hooks?: SubscriptionHooks;
  /** CloudEvents validation handshakes (`validation: cloudevents`); such subscriptions stay `validating` without. */
  handshakes?: Handshakes;
  clock?: () => number;
}) {
  const clock = deps.clock ?? Date.now;
  const sinks = deps.sinkPolicy ?? createSinkPolicy({ allowPrivate: true });
  const repo = createSubscriptionsRepo(deps.db);
  const live = new Map<string, Live>();
  const handshakes = deps.handshakes;
  handshakes?.onOutcome({ consent, fail: failValidation });

  function liveOf(id: string): Live {
    const found = live.get(id);
    if (!found) throw new AppError('not_found', `subscription ${id} does not exist`);
    return found;
  }

  /**
   * Filters are compiled here only to refuse those that do not compile (a 400 naming them);
   * delivery compiles its own from the record it is sent.
   */
  function checkFilters(filters: unknown): void {
    compileFilters(filters);
  }

  /** Delivery answers later (the delivery thread): its failure to hear of a change is logged, never thrown at a caller that saved it. */
  function tell(what: string, id: string, call: () => unknown): void {
    const failed = (err: unknown) => deps.log.warn({ subscription: id, err }, `delivery did not take the subscription's ${what}`);
    try {
      Promise.resolve(call()).catch(failed);
    } catch (err) {
      failed(err);
    }
  }

  /** Delivery starts for the record; a delivery thread down now is given it again when it restarts. */
  function attach(record: SubscriptionRecord): void {
    const entry: Live = { record };
    live.set(record.id, entry);
    tell('start', record.id, () =>
      deps.delivery.add(record, {
        onGone: () => {
          if (live.has(record.id)) setState(record.id, 'paused', 'gone');
        },
        onFailing: (detail) => {
          if (live.get(record.id)?.record.state !== 'active') return;
          setState(record.id, 'paused', 'failing', detail);
          deps.hooks?.autoDisabled?.(record.id);
        },
        onFilterError: () => deps.hooks?.filterError(record.id),
      }),
    );
  }

  /** Saves a change of the record and sends it to delivery (which keeps its own copy). */
  function save(entry: Live, changes: Partial<SubscriptionRecord>): SubscriptionRecord {
    entry.record = { ...entry.record, ...changes, updatedAt: clock() };
    repo.update(entry.record);
    const record = entry.record;
    tell('update', record.id, () => deps.delivery.update(record));
    return record;
  }

  function setState(
    id: string,
    state: 'active' | 'paused',
    reason: string | null,
    failing?: { failingSince: number; lastError: string },
  ): SubscriptionRecord {
    const entry = liveOf(id);
    const record = save(entry, { state, stateReason: reason });
    if (state === 'active') tell('resume', id, () => deps.delivery.resume(id));
    if (reason === 'gone') deps.log.warn({ subscription: id, stateReason: reason }, 'subscription paused: the receiver answered 410 Gone');
    else if (reason === 'failing' && failing)
      deps.log.warn(
        {
          subscription: id,
          stateReason: reason,
          failingSince: new Date(failing.failingSince).toISOString(),
          disableAfterFailingMs: record.delivery.disableAfterFailingMs,
          lastError: failing.lastError,
        },
        'subscription paused: every delivery attempt has failed for disableAfterFailingMs',
      );
    else deps.log.info({ subscription: id, stateReason: reason }, state === 'active' ? 'subscription resumed' : 'subscription paused');
    return record;
  }

  async function view(record: SubscriptionRecord, withStats: boolean) {
    const stats = withStats ? await deps.delivery.stats(record.id) : null;
    return {
      id: record.id,
      sink: record.sink,
      filters: record.filters,
      delivery: maskDelivery(record.delivery),
      startAt: record.startAt,
      validation: record.validation,
      state: record.state,
      stateReason: record.stateReason,
      createdAt: new Date(record.createdAt).toISOString(),
      stats,
      // Shown while the replaced secret still signs (after a rotation with overlap), absent otherwise.
      ...(previousSecretAt(record, clock()) !== null && {
        previousSecretExpiresAt: new Date(record.previousSecretExpiresAt!).toISOString(),
      }),
    };
  }

  /**
   * (Re)starts the CloudEvents validation handshake (issue 12 §4): `validating`, with a new callback
   * token and a deadline 10 minutes away. Consent makes it `active`; refusal, no answer or the
   * deadline pause it with `validation_failed`.
   */
  function beginValidation(entry: Live): SubscriptionRecord {
    const record = save(entry, {
      state: 'validating',
      stateReason: null,
      validatedAt: null,
      validationToken: newValidationToken(),
      validationDeadline: clock() + VALIDATION_WAIT_MS,
    });
    handshakes?.start(record);
    return record;
  }

  /** The entry whose handshake `token` is still the current one, or undefined (answered late, paused, deleted). */
  function validating(id: string, token: string): Live | undefined {
    const entry = live.get(id);
    return entry?.record.state === 'validating' && entry.record.validationToken === token ? entry : undefined;
  }

  /** The sink consented: `WebHook-Allowed-Rate` (when given) becomes the rate limit, `*` removes it. */
  function consent(id: string, token: string, rateLimit: { perSecond: number } | null | undefined): void {
    const entry = validating(id, token);
    if (!entry) return;
    handshakes?.cancel(id);
    const { rateLimit: _current, ...rest } = entry.record.delivery;
    const delivery: DeliveryOptions = rateLimit === undefined ? entry.record.delivery : rateLimit === null ? rest : { ...rest, rateLimit };
    save(entry, { state: 'active', stateReason: null, validationToken: null, validationDeadline: null, validatedAt: clock(), delivery });
    tell('resume', id, () => deps.delivery.resume(id));
    deps.log.info({ subscription: id, rateLimit: delivery.rateLimit ?? null }, 'sink consented to deliveries (validation handshake)');
  }

  function failValidation(id: string, token: string, reason: string): void {
    const entry = validating(id, token);
    if (!entry) return;
    handshakes?.cancel(id);
    save(entry, { state: 'paused', stateReason: 'validation_failed', validationToken: null, validationDeadline: null });
    deps.log.warn({ subscription: id, stateReason: 'validation_failed', reason }, 'subscription paused: the sink did not consent');
  }

  return {
    /** Starts delivery for every stored subscription (at boot). */
    startAll(): void {
      for (const record of repo.all()) {
        attach(record);
        // A handshake under way at shutdown: sent again (its token and deadline kept), or failed if its time is up.
        if (record.state !== 'validating') continue;
        if ((record.validationDeadline ?? 0) <= clock())
          failValidation(record.id, record.validationToken ?? '', 'no consent within 10 minutes');
        else handshakes?.start(record);
      }
    },
    /**
     * @throws AppError `sink_not_allowed`, or `invalid_request` for filters that do not compile or
     * delivery options that are not valid together
     */
    async create(input: CreateSubscriptionInput) {
      await sinks.check(input.sink);
      const id = randomUUID();
      checkFilters(input.filters);
      const delivery = applyDeliveryChange(undefined, input.delivery, { ackMode: input.ackMode, retry: input.retry });
      const now = clock();
      const record: SubscriptionRecord = {
        id,
        sink: input.sink,
        filters: input.filters,
        delivery,
        startAt: input.startAt,
        state: 'active',
        stateReason: null,
        secret: newSigningSecret(),
        previousSecret: null,
        previousSecretExpiresAt: null,
        validation: input.validation,
        validationToken: null,
        validationDeadline: null,
        validatedAt: null,
        createdAt: now,
        updatedAt: now,
      };
      deps.db.transaction(() => {
        repo.insert(record);
        deps.delivery.initOffsets(record.id, record.startAt);
      })();
      attach(record);
      deps.log.info({ subscription: id, sink: record.sink, startAt: record.startAt, state: record.state }, 'subscription created');
      // Nothing is delivered before the sink consents: the handshake comes first.
      const shown = record.validation === 'cloudevents' ? beginValidation(live.get(id)!) : record;
      return { ...(await view(shown, true)), secret: shown.secret };
    },
    /** Per subscription, what `/metrics` shows (one dead-letter count query per subscription). */
    metricsSnapshot() {
      return Promise.all(
        [...live.values()].map(async ({ record }) => {
          const { partitions, deadLetters } = await deps.delivery.stats(record.id);
          const ages = partitions.map((p) => p.oldestPendingAgeMs).filter((a): a is number => a !== null);
          return {
            id: record.id,
            state: record.state,
            deadLetters,
            inFlight: partitions.reduce((n, p) => n + p.inFlight, 0),
            oldestPendingAgeMs: ages.length > 0 ? Math.max(...ages) : null,
            lag: partitions.map((p) => ({ partition: p.partition, lag: p.lag })),
          };
        }),
      );
    },
    list() {
      return Promise.all([...live.values()].map((l) => view(l.record, true)));
    },
    get(id: string) {
      return view(liveOf(id).record, true);
    },
    /**
     * For the API to answer 404 before it checks a body, as it always has.
     * @throws AppError `not_found`
     */
    assertExists(id: string): void {
      liveOf(id);
    },
    async patch(id: string, input: PatchSubscriptionInput) {
      liveOf(id);
      if (input.sink !== undefined) await sinks.check(input.sink);
      // Read after the check: the subscription may have changed, or gone, during a DNS lookup.
      const entry = liveOf(id);
      if (input.filters !== undefined) checkFilters(input.filters);
      const delivery = input.delivery !== undefined ? applyDeliveryChange(entry.record.delivery, input.delivery) : entry.record.delivery;
      const sinkChanged = input.sink !== undefined && input.sink !== entry.record.sink;
      let record = save(entry, { sink: input.sink ?? entry.record.sink, filters: input.filters ?? entry.record.filters, delivery });
      // Consent is given for one sink URL: a new sink validates again (at once, or on resume if paused).
      if (record.validation === 'cloudevents' && sinkChanged) {
        record = record.state === 'paused' ? save(entry, { validatedAt: null }) : beginValidation(entry);
      }
      await deps.delivery.resume(id);
      deps.log.info({ subscription: id, fields: Object.keys(input) }, 'subscription updated');
      return view(record, true);
    },
    async remove(id: string): Promise<void> {
      liveOf(id);
      // Delivery first, and waited for: nothing it buffered for the subscription may be written after its rows go.
      await deps.delivery.remove(id);
      if (!live.has(id)) return; // removed meanwhile by another request
      handshakes?.cancel(id);
      live.delete(id);
      repo.remove(id);
      deps.hooks?.deleted(id);
      deps.log.info({ subscription: id }, 'subscription deleted');
    },
    pause(id: string) {
      handshakes?.cancel(id); // a handshake under way is abandoned (its token is cleared): resume starts a new one
      if (liveOf(id).record.state === 'validating') save(liveOf(id), { validationToken: null, validationDeadline: null });
      return view(setState(id, 'paused', 'user'), true);
    },
    /** A `validation: cloudevents` subscription the sink has not consented to validates (again) first. */
    resume(id: string) {
      const entry = liveOf(id);
      if (entry.record.validation === 'cloudevents' && entry.record.validatedAt === null) {
        const record = beginValidation(entry);
        deps.log.info({ subscription: id }, 'subscription resumed: validating the sink first');
        return view(record, true);
      }
      return view(setState(id, 'active', null), true);
    },
    /**
     * The handshake's callback URL, called by the sink (GET or POST) to consent later: it must carry
     * `WebHook-Allowed-Origin` (this origin or `*`); `WebHook-Allowed-Rate` sets the rate limit.
     * @throws AppError `not_found` for a token that is unknown or no longer waited for; `invalid_request` without consent
     */
    validationCallback(token: string, headers: Record<string, string | string[] | undefined>) {
      const entry = [...live.values()].find((l) => l.record.state === 'validating' && l.record.validationToken === token);
      if (!entry || !handshakes) throw new AppError('not_found', 'no validation handshake is waiting for this callback');
      const origin = handshakes.origin();
      if (!grantsOrigin(headers, origin)) {
        const message = `consent needs WebHook-Allowed-Origin: ${origin} (or *)`;
        throw new AppError('invalid_request', `the callback does not consent: ${message}`, {
          details: [{ attribute: 'webhook-allowed-origin', message }],
        });
      }
      consent(entry.record.id, token, allowedRate(headers['webhook-allowed-rate']));
      return { state: 'active' as const };
    },
    /**
     * Restarts delivery elsewhere in the log (issue 12 §2): every partition at its first or head
     * offset, or at its first event stored at or after a time, or the named partitions at given
     * offsets. Pending attempts of the moved partitions are dropped (not dead-lettered), their open
     * requests aborted; the replay has new webhook-ids and starts a new previous-offset chain.
     * @throws AppError `invalid_request` naming each partition that does not exist or offset past the head
     */
    async seek(id: string, target: SeekTarget) {
      liveOf(id);
      const { generation } = await deps.delivery.seek(id, target);
      deps.log.info(
        { subscription: id, ...('time' in target ? { time: new Date(target.time).toISOString() } : target), generation },
        'subscription sought',
      );
      return view(liveOf(id).record, true);
    },
    /**
     * A new secret. With `overlapSeconds` > 0 (default one day) the replaced one keeps signing, after
     * the new one, until then; a rotation during an overlap keeps only the newest previous secret.
     * 0: the replaced secret stops at once.
     */
    async rotateSecret(id: string, { overlapSeconds }: RotateSecretInput) {
      const entry = liveOf(id);
      const overlap = overlapSeconds > 0;
      const record = save(entry, {
        secret: newSigningSecret(),
        previousSecret: overlap ? entry.record.secret : null,
        previousSecretExpiresAt: overlap ? clock() + overlapSeconds * 1000 : null,
      });
      deps.log.info({ subscription: id, overlapSeconds }, 'signing secret rotated');
      return { ...(await view(record, false)), secret: record.secret };
    },
    /** The attempt log (issue 13 §1), newest first; `next` is the cursor of the following page. */
    async attempts(id: string, page: { limit: number; before: number }) {
      liveOf(id);
      // One more than asked tells whether an older page exists, so the last page says `next: null`.
      const rows = await deps.delivery.attempts(id, { before: page.before, limit: page.limit + 1 });
      const more = rows.length > page.limit;
      if (more) rows.length = page.limit;
      return {
        attempts: rows.map((row) => ({
          deliveryId: row.deliveryId,
          partition: row.partition,
          offset: row.offset,
          attempt: row.attempt,
          status: row.status,
          error: row.error,
          durationMs: row.durationMs,
          startedAt: new Date(row.startedAt).toISOString(),
          outcome: row.outcome,
        })),
        next: more ? rows[rows.length - 1]!.id : null,
      };
    },
    async deadLetters(id: string, page: { limit: number; after: number }) {
      liveOf(id);
      const rows = await deps.delivery.deadLetters(id, page);
      return {
        deadLetters: rows.map((row) => {
          const stored = readOne(deps.store, row.partition, row.offset);
          return {
            id: row.id,
            partition: row.partition,
            offset: row.offset,
            event: stored && stored !== 'corrupt' ? toStructured(stored.event) : null,
            attempts: row.attempts,
            lastStatus: row.lastStatus,
            lastError: row.lastError,
            reason: row.reason,
            deadAt: new Date(row.deadAt).toISOString(),
          };
        }),
        // limit=0 is allowed and returns an empty page, which has no last id.
        nextAfter: rows.length > 0 && rows.length === page.limit ? rows[rows.length - 1]!.id : null,
      };
    },
    /** Queues dead letters for delivery again with a fresh attempt count; returns how many. */
    async redeliver(id: string, ids: string[] | undefined): Promise<number> {
      liveOf(id);
      const count = await deps.delivery.redeliver(id, ids);
      deps.log.info({ subscription: id, deadLetters: count }, 'dead letters redelivered');
      return count;
    },
    async deleteDeadLetter(id: string, deadLetterId: string): Promise<void> {
      liveOf(id);
      if (!(await deps.delivery.deleteDeadLetter(id, deadLetterId)))
        throw new AppError('not_found', `no dead letter ${deadLetterId} in subscription ${id}`);
      deps.log.info({ subscription: id, deadLetter: deadLetterId }, 'dead letter deleted');
    },
  };
}
export type SubscriptionsService = ReturnType<typeof createSubscriptionsService>;
