import { randomUUID } from 'node:crypto';
import { toStructured } from '../cloudevents/format';
import type { Dispatcher } from '../delivery/dispatcher';
import { newSigningSecret, previousSecretAt } from '../delivery/signing';
import { AppError } from '../errors';
import { readOne, type EventStore } from '../wal/event-store';
import type { Db } from '../store/db';
import { createDeadLettersRepo } from '../store/dead-letters-repo';
import { createSubscriptionsRepo, type SubscriptionRecord } from '../store/subscriptions-repo';
import { parseInput } from '../api/query';
import type { Logger } from '../logger';
import { compileFilters, createFilterErrorReporter, type FilterEvaluationError, type Matcher } from './filter';
import {
  createSubscriptionSchema,
  deliverySchema,
  maskDelivery,
  mergeDelivery,
  patchSubscriptionSchema,
  rotateSecretSchema,
} from './schema';
import { createSinkPolicy, type SinkPolicy } from './sink-policy';
import { seekPositions } from '../delivery/seek';
import { seekSchema } from './seek-schema';
import { allowedRate, grantsOrigin } from '../delivery/webhook-handshake';
import type { DeliveryOptions } from './schema';
import { newValidationToken, VALIDATION_WAIT_MS, type Handshakes } from './handshake';

interface Live {
  record: SubscriptionRecord;
  matcher: Matcher;
}

const REDRIVE_PAGE = 1000;

/** What the service reports outward (the metrics): filter errors, and deletions so per-subscription series go too. */
export interface SubscriptionHooks {
  filterError(subscriptionId: string): void;
  deleted(subscriptionId: string): void;
  /** Paused with reason `failing` (issue 12 §5): `herald_subscription_auto_disabled_total`. */
  autoDisabled?(subscriptionId: string): void;
}

/** Subscriptions: their records (SQLite `subscriptions`), validation, secrets, and the dispatcher's lifecycle hooks. */
export function createSubscriptionsService(deps: {
  db: Db;
  store: EventStore;
  dispatcher: Dispatcher;
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
  const deadLetters = createDeadLettersRepo(deps.db);
  const live = new Map<string, Live>();
  const handshakes = deps.handshakes;
  handshakes?.onOutcome({ consent, fail: failValidation });

  function liveOf(id: string): Live {
    const found = live.get(id);
    if (!found) throw new AppError('not_found', `subscription ${id} does not exist`);
    return found;
  }

  const reporters = new Map<string, (err: FilterEvaluationError) => void>();
  /** One reporter per subscription, kept across PATCHes, so "once a minute" holds per subscription. */
  function matcherFor(id: string, filters: unknown): Matcher {
    let report = reporters.get(id);
    if (!report) {
      const count = () => deps.hooks?.filterError(id);
      reporters.set(id, (report = createFilterErrorReporter({ log: deps.log, subscriptionId: id, clock, count })));
    }
    return compileFilters(filters, { onError: report });
  }

  function attach(record: SubscriptionRecord, matcher = matcherFor(record.id, record.filters)): void {
    const entry: Live = { record, matcher };
    live.set(record.id, entry);
    deps.dispatcher.add({
      record: () => entry.record,
      matcher: () => entry.matcher,
      onGone: () => setState(record.id, 'paused', 'gone'),
      onFailing: (detail) => {
        if (live.get(record.id)?.record.state !== 'active') return;
        setState(record.id, 'paused', 'failing', detail);
        deps.hooks?.autoDisabled?.(record.id);
      },
    });
  }

  function save(entry: Live, changes: Partial<SubscriptionRecord>): SubscriptionRecord {
    entry.record = { ...entry.record, ...changes, updatedAt: clock() };
    repo.update(entry.record);
    return entry.record;
  }

  function setState(
    id: string,
    state: 'active' | 'paused',
    reason: string | null,
    failing?: { failingSince: number; lastError: string },
  ): SubscriptionRecord {
    const entry = liveOf(id);
    const record = save(entry, { state, stateReason: reason });
    if (state === 'active') deps.dispatcher.resume(id);
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

  function view(record: SubscriptionRecord, withStats: boolean) {
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
      stats: withStats ? stats(record.id) : null,
      // Shown while the replaced secret still signs (after a rotation with overlap), absent otherwise.
      ...(previousSecretAt(record, clock()) !== null && {
        previousSecretExpiresAt: new Date(record.previousSecretExpiresAt!).toISOString(),
      }),
    };
  }

  function stats(id: string) {
    deps.dispatcher.flush();
    return { partitions: deps.dispatcher.stats(id), deadLetters: deadLetters.count(id), ...deps.dispatcher.flowStats(id) };
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
    deps.dispatcher.resume(id);
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
    async create(body: unknown) {
      const input = parseInput(createSubscriptionSchema, body, 'subscription');
      await sinks.check(input.sink);
      const id = randomUUID();
      const matcher = matcherFor(id, input.filters);
      const delivery = parseInput(
        deliverySchema,
        mergeDelivery(undefined, input.delivery, { ackMode: input.ackMode, retry: input.retry }),
        'delivery options',
      );
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
        deps.dispatcher.initOffsets(record.id, record.startAt);
      })();
      attach(record, matcher);
      deps.log.info({ subscription: id, sink: record.sink, startAt: record.startAt, state: record.state }, 'subscription created');
      // Nothing is delivered before the sink consents: the handshake comes first.
      const shown = record.validation === 'cloudevents' ? beginValidation(live.get(id)!) : record;
      return { ...view(shown, true), secret: shown.secret };
    },
    /** Per subscription, what `/metrics` shows: one flush, then one dead-letter count query per subscription. */
    metricsSnapshot() {
      deps.dispatcher.flush();
      return [...live.values()].map(({ record }) => {
        const partitions = deps.dispatcher.stats(record.id);
        const ages = partitions.map((p) => p.oldestPendingAgeMs).filter((a): a is number => a !== null);
        return {
          id: record.id,
          state: record.state,
          deadLetters: deadLetters.count(record.id),
          inFlight: partitions.reduce((n, p) => n + p.inFlight, 0),
          oldestPendingAgeMs: ages.length > 0 ? Math.max(...ages) : null,
          lag: partitions.map((p) => ({ partition: p.partition, lag: p.lag })),
        };
      });
    },
    list() {
      return [...live.values()].map((l) => view(l.record, true));
    },
    get(id: string) {
      return view(liveOf(id).record, true);
    },
    async patch(id: string, body: unknown) {
      liveOf(id);
      const input = parseInput(patchSubscriptionSchema, body, 'subscription update');
      if (input.sink !== undefined) await sinks.check(input.sink);
      // Read after the check: the subscription may have changed, or gone, during a DNS lookup.
      const entry = liveOf(id);
      const matcher = input.filters !== undefined ? matcherFor(id, input.filters) : entry.matcher;
      const delivery =
        input.delivery !== undefined
          ? parseInput(deliverySchema, mergeDelivery(entry.record.delivery, input.delivery), 'delivery options')
          : entry.record.delivery;
      const sinkChanged = input.sink !== undefined && input.sink !== entry.record.sink;
      let record = save(entry, { sink: input.sink ?? entry.record.sink, filters: input.filters ?? entry.record.filters, delivery });
      entry.matcher = matcher;
      // Consent is given for one sink URL: a new sink validates again (at once, or on resume if paused).
      if (record.validation === 'cloudevents' && sinkChanged) {
        record = record.state === 'paused' ? save(entry, { validatedAt: null }) : beginValidation(entry);
      }
      deps.dispatcher.resume(id);
      deps.log.info({ subscription: id, fields: Object.keys(input) }, 'subscription updated');
      return view(record, true);
    },
    remove(id: string): void {
      liveOf(id);
      deps.dispatcher.remove(id);
      handshakes?.cancel(id);
      live.delete(id);
      reporters.delete(id);
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
     * A new secret. With `overlapSeconds` > 0 (default one day) the replaced one keeps signing, after
     * the new one, until then; a rotation during an overlap keeps only the newest previous secret.
     * 0: the replaced secret stops at once.
     */
    /**
     * Restarts delivery elsewhere in the log (issue 12 §2): every partition at its first or head
     * offset, or at its first event stored at or after a time, or the named partitions at given
     * offsets. Pending attempts of the moved partitions are dropped (not dead-lettered), their open
     * requests aborted; the replay has new webhook-ids and starts a new previous-offset chain.
     */
    seek(id: string, body: unknown) {
      liveOf(id);
      const target = parseInput(seekSchema, body ?? {}, 'seek');
      const positions = seekPositions(deps.store, target);
      const { generation } = deps.dispatcher.seek(id, positions);
      deps.log.info(
        { subscription: id, ...('time' in target ? { time: new Date(target.time).toISOString() } : target), generation },
        'subscription sought',
      );
      return view(liveOf(id).record, true);
    },
    rotateSecret(id: string, body: unknown) {
      const entry = liveOf(id);
      const { overlapSeconds } = parseInput(rotateSecretSchema, body ?? {}, 'request');
      const overlap = overlapSeconds > 0;
      const record = save(entry, {
        secret: newSigningSecret(),
        previousSecret: overlap ? entry.record.secret : null,
        previousSecretExpiresAt: overlap ? clock() + overlapSeconds * 1000 : null,
      });
      deps.log.info({ subscription: id, overlapSeconds }, 'signing secret rotated');
      return { ...view(record, false), secret: record.secret };
    },
    deadLetters(id: string, page: { limit: number; after: number }) {
      liveOf(id);
      deps.dispatcher.flush();
      const rows = deadLetters.page(id, page.after, page.limit);
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
    redeliver(id: string, ids: string[] | undefined): number {
      liveOf(id);
      deps.dispatcher.flush();
      const items: { deadLetterId: string; partition: number; offset: number }[] = [];
      if (ids) {
        const numeric = ids.map(Number).filter((n) => Number.isSafeInteger(n));
        for (const row of deadLetters.byIds(id, numeric))
          items.push({ deadLetterId: row.id, partition: row.partition, offset: row.offset });
      } else {
        let after = 0;
        for (;;) {
          const rows = deadLetters.page(id, after, REDRIVE_PAGE);
          for (const row of rows) items.push({ deadLetterId: row.id, partition: row.partition, offset: row.offset });
          if (rows.length < REDRIVE_PAGE) break;
          after = Number(rows[rows.length - 1]!.id);
        }
      }
      deps.dispatcher.redrive(id, items);
      deps.log.info({ subscription: id, deadLetters: items.length }, 'dead letters redelivered');
      return items.length;
    },
    deleteDeadLetter(id: string, deadLetterId: string): void {
      liveOf(id);
      deps.dispatcher.flush();
      const n = Number(deadLetterId);
      if (!Number.isSafeInteger(n) || !deadLetters.remove(id, n))
        throw new AppError('not_found', `no dead letter ${deadLetterId} in subscription ${id}`);
      deps.log.info({ subscription: id, deadLetter: deadLetterId }, 'dead letter deleted');
    },
  };
}
export type SubscriptionsService = ReturnType<typeof createSubscriptionsService>;
