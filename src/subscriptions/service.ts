import { randomUUID } from 'node:crypto';
import { toStructured } from '../cloudevents/format';
import { allowedRate, callbackGrants, newSigningSecret, previousSecretAt, sinkForLog } from '../webhook-policy';
import { AppError, isUnavailable } from '../errors';
import { PAGE_BYTES, readStored, type EventLog } from '../wal/event-store';
import type { SubscriptionRecord } from './record';
import type { Logger } from '../logger';
import type { DeliveryControl } from './delivery-control';
import { compileFilters } from '../filters/filter';
import {
  applyDeliveryChange,
  checkHeadersFollowSink,
  maskDelivery,
  uriOfSink,
  type CreateSubscriptionInput,
  type PatchSubscriptionInput,
  type RotateSecretInput,
} from './schema';
import { createSinkPolicy, type SinkPolicy } from './sink-policy';
import type { SeekTarget } from './seek-schema';
import { newValidationToken, VALIDATION_WAIT_MS, type Handshakes } from './handshake';
import { initialState, transition, type LifecycleInput } from './lifecycle';
import { createDeliveryCalls } from './delivery-calls';
import { createLiveRecords, type Change } from './live-records';
import type { SubscriptionStore } from './record-store';

/** What the service reports outward (the metrics): filter errors, and deletions so per-subscription series go too. */
export interface SubscriptionHooks {
  filterError(subscriptionId: string): void;
  deleted(subscriptionId: string): void;
  /** Paused with reason `failing` (issue 12 §5): `herald_subscription_auto_disabled_total`. */
  autoDisabled?(subscriptionId: string): void;
}

/** Where a page of the subscription list starts: after this subscription, in creation order. */
export interface ListPosition {
  createdAt: number;
  id: string;
}

/** A page of `list`: after `after` (from the start without it), at most `limit` (all without it). */
export interface ListPage {
  after?: ListPosition;
  limit?: number;
}

/** Creation order: `createdAt`, then `id` for those created in the same millisecond. */
const byCreation = (a: ListPosition, b: ListPosition): number => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * Subscriptions: their records (kept through the {@link SubscriptionStore} port: SQLite on the local
 * engine, a watched KV bucket on the JetStream engine), secrets, the validation handshake's outcome,
 * and delivery's lifecycle hooks. Methods take input the API has validated (the schemas' output
 * types) and return records as the API shows them; delivery's state, stats and dead letters are
 * asked of `delivery`, which owns them.
 *
 * Every change is decided on the record as stored and written only if nobody wrote it meanwhile
 * (`live-records.ts`): concurrent requests, on one node or several, never lose each other's change.
 * On a shared store every node starts, updates and stops delivery for every record it learns of.
 */
export function createSubscriptionsService(deps: {
  records: SubscriptionStore;
  /** The log, for the events of dead letters. */
  store: Pick<EventLog, 'read'>;
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
  const handshakes = deps.handshakes;
  /** Deletions under way through this node: delivery was already told, the store's echo need not tell it again. */
  const removing = new Set<string>();
  /** Known and not being deleted here: delivery's not_found for it means "not started yet", not gone. */
  const exists = (id: string) => live.has(id) && !removing.has(id);
  /** Deletions running through this node, by id. */
  const removals = new Map<string, Promise<void>>();

  /** Deletes through delivery, then the store: the DELETE's work once no other deletion of `id` runs here. */
  async function removeOnce(id: string): Promise<void> {
    await live.find(id);
    removing.add(id);
    try {
      // Delivery first, and waited for: nothing it buffered for the subscription may be written after its rows go.
      // A step that fails fails the DELETE with the record kept: delivery is attached again (from the state it
      // wrote), should its removal have gone part-way.
      const orReattach = (err: unknown): never => {
        const record = live.peek(id);
        if (record) attach(record);
        throw err;
      };
      await calls.ask(id, () => deps.delivery.remove(id)).catch(orReattach);
      // Deleted meanwhile through another node (seen here already, or found so by the store's compare-and-set
      // delete): this DELETE deleted nothing, as one arriving after it.
      const deleted = live.has(id) && (await deps.records.remove(id).catch(orReattach));
      if (!deleted) throw new AppError('not_found', `subscription ${id} does not exist`);
      // This DELETE deleted it: said once, also when the store's own report of it came first (JetStream's watch
      // of its own delete often does; was: no line for about 3 DELETEs in 4 on that engine).
      deps.log.info({ subscription: id }, 'subscription deleted');
      if (!live.forget(id)) return; // the store's own report of this deletion came first: dropped already
      dropped(id);
    } finally {
      removing.delete(id);
    }
  }
  const calls = createDeliveryCalls({ delivery: deps.delivery, log: deps.log, exists });
  const tell = calls.tell;
  const live = createLiveRecords({
    records: deps.records,
    clock,
    hooks: {
      added: attach,
      changed(record) {
        calls.retryFailedStart(record.id);
        tell('update', record.id, () => deps.delivery.update(record));
        // Another node ended the handshake (consent, refusal, pause): this node's deadline has nothing left to end.
        if (record.state !== 'validating') handshakes?.cancel(record.id);
      },
      removed(id) {
        if (!removing.has(id)) tell('removal', id, () => deps.delivery.remove(id));
        dropped(id);
      },
    },
  });
  handshakes?.onOutcome({
    consent: (id, token, rateLimit) => void consent(id, token, rateLimit).catch((err: unknown) => failedInBackground('consent', id, err)),
    fail: (id, token, reason) => void failValidation(id, token, reason).catch((err: unknown) => failedInBackground('failure', id, err)),
  });

  function failedInBackground(what: string, id: string, err: unknown): void {
    deps.log.warn({ subscription: id, err }, `could not record the subscription's ${what}`);
  }

  /**
   * Filters are compiled here only to refuse those that do not compile (a 400 naming them), or that
   * name an attribute no event can carry; delivery compiles its own from the record it is sent.
   */
  function checkFilters(filters: unknown): void {
    compileFilters(filters, { attributeNamesOnly: true });
  }

  /**
   * Delivery starts for the record; a delivery thread down now is given it again when it restarts.
   * Its reports may come from every node delivering the subscription: the pauses they cause are
   * decided on the stored record, so the second changes nothing.
   */
  function attach(record: SubscriptionRecord): void {
    const id = record.id;
    calls.start(id, () => live.peek(id), {
      onGone: () => {
        if (live.has(id)) void pauseFor(id, 'gone').catch((err: unknown) => failedInBackground('pause (gone)', id, err));
      },
      onFailing: (detail) => {
        if (live.peek(id)?.state !== 'active') return;
        void pauseFor(id, 'failing', detail).catch((err: unknown) => failedInBackground('pause (failing)', id, err));
      },
      onFilterError: () => deps.hooks?.filterError(id),
    });
  }

  /** What every node does when a subscription is gone (deleted here or elsewhere). */
  function dropped(id: string): void {
    handshakes?.cancel(id);
    deps.hooks?.deleted(id);
  }

  async function save(id: string, change: Change): Promise<{ record: SubscriptionRecord; changed: boolean }> {
    return live.save(id, change);
  }

  const lifecycle = () => ({ now: clock(), newToken: newValidationToken, validationWaitMs: VALIDATION_WAIT_MS });
  /** Moves the record along its life cycle (`lifecycle.ts`), decided on the record as stored. */
  const step = (id: string, input: LifecycleInput) => save(id, (current) => transition(current, input, lifecycle()));

  /** Pauses on delivery's report (410 Gone, or failing for too long), once across nodes. */
  async function pauseFor(id: string, reason: 'gone' | 'failing', failing?: { failingSince: number; lastError: string }): Promise<void> {
    const { record, changed } = await step(id, { kind: reason });
    if (!changed) return;
    if (reason === 'gone') {
      deps.log.warn({ subscription: id, stateReason: reason }, 'subscription paused: the receiver answered 410 Gone');
      return;
    }
    deps.hooks?.autoDisabled?.(id);
    deps.log.warn(
      {
        subscription: id,
        stateReason: reason,
        ...(failing && { failingSince: new Date(failing.failingSince).toISOString(), lastError: failing.lastError }),
        disableAfterFailingMs: record.delivery.disableAfterFailingMs,
      },
      'subscription paused: every delivery attempt has failed for disableAfterFailingMs',
    );
  }

  /**
   * The record as the API shows it. `stats`: read from delivery (`required`: a 503 while delivery does
   * not know the subscription; `listed`: null then, so that one subscription never hides the others;
   * `saved`: null then too, answering a change that was stored, which a 503 would deny).
   */
  async function view(record: SubscriptionRecord, withStats: 'required' | 'listed' | 'saved' | 'none') {
    const read = () => deps.delivery.stats(record.id);
    if (withStats === 'none') return shown(record, null);
    if (withStats === 'required') return shown(record, await calls.read(record.id, read));
    const stats = await calls
      .readIfStarted(record.id, read)
      .catch((err: unknown) => (withStats === 'saved' ? unlessUnavailable(err) : Promise.reject(err)));
    return shown(record, stats);
  }

  function shown(record: SubscriptionRecord, stats: Awaited<ReturnType<DeliveryControl['stats']>> | null) {
    return {
      id: record.id,
      sink: uriOfSink(record.sink),
      filters: record.filters,
      delivery: maskDelivery(record.delivery),
      startAt: record.startAt,
      validation: record.validation,
      state: record.state,
      stateReason: record.stateReason,
      createdAt: new Date(record.createdAt).toISOString(),
      // What the sink granted at its consent, when it caps the rate (see effectiveRateLimit).
      ...(record.allowedRate && { allowedRate: record.allowedRate }),
      stats,
      // Shown while the replaced secret still signs (after a rotation with overlap), absent otherwise.
      ...(previousSecretAt(record, clock()) !== null && {
        previousSecretExpiresAt: new Date(record.previousSecretExpiresAt!).toISOString(),
      }),
    };
  }

  /**
   * `each` for every subscription; one deleted meanwhile (delivery already answers "no such
   * subscription") is left out rather than failing the whole answer with its 404.
   */
  async function forEachLive<T>(each: (record: SubscriptionRecord) => Promise<T>, records = live.records()): Promise<T[]> {
    const gone = Symbol('gone');
    const all = await Promise.all(
      records.map((record) =>
        each(record).catch((err: unknown) => {
          if (err instanceof AppError && err.code === 'not_found' && !exists(record.id)) return gone;
          throw err;
        }),
      ),
    );
    return all.filter((v): v is Awaited<T> => v !== gone);
  }

  /** Whether `record` waits for the handshake whose token is `token` (not answered late, paused, deleted). */
  const awaits = (record: SubscriptionRecord, token: string) => record.state === 'validating' && record.validationToken === token;

  /** The sink consented: `WebHook-Allowed-Rate` (when a number) caps the rate limit, `*` or none does not. */
  async function consent(id: string, token: string, rateLimit: { perSecond: number } | null | undefined): Promise<void> {
    if (!live.has(id)) return;
    const { record, changed } = await step(id, { kind: 'consent', token, rateLimit });
    if (!changed) return;
    handshakes?.cancel(id);
    tell('resume', id, () => deps.delivery.resume(id));
    deps.log.info(
      { subscription: id, rateLimit: record.delivery.rateLimit ?? null, allowedRate: record.allowedRate },
      'sink consented to deliveries (validation handshake)',
    );
  }

  async function failValidation(id: string, token: string, reason: string): Promise<void> {
    if (!live.has(id)) return;
    const { changed } = await step(id, { kind: 'refused', token });
    if (!changed) return;
    handshakes?.cancel(id);
    deps.log.warn({ subscription: id, stateReason: 'validation_failed', reason }, 'subscription paused: the sink did not consent');
  }

  /** Sends the handshake of a record that `save` just made `validating` (a new token). */
  function validate(record: SubscriptionRecord): void {
    if (record.state === 'validating') handshakes?.start(record);
  }

  return {
    /**
     * Starts delivery for every stored subscription (at boot) and, on a shared store, follows every
     * node's changes from then on.
     */
    async startAll(): Promise<void> {
      await live.open();
      for (const record of live.records()) {
        // A handshake under way at shutdown: sent again (its token and deadline kept), or failed if its time is up.
        if (record.state !== 'validating') continue;
        if ((record.validationDeadline ?? 0) <= clock())
          await failValidation(record.id, record.validationToken ?? '', 'no consent within 10 minutes');
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
        secret: newSigningSecret(),
        previousSecret: null,
        previousSecretExpiresAt: null,
        validation: input.validation,
        validationToken: null,
        validationDeadline: null,
        validatedAt: null,
        allowedRate: null,
        createdAt: now,
        updatedAt: now,
        // Nothing is delivered before the sink consents: delivery starts with the record already validating.
        ...initialState(input.validation, lifecycle()),
      };
      // The local store writes the first offsets in the insert's transaction; on JetStream, `add` makes them.
      live.inserted(record, await deps.records.insert(record));
      deps.log.info(
        { subscription: id, sink: sinkForLog(record.sink), startAt: record.startAt, state: record.state },
        'subscription created',
      );
      validate(record);
      return { ...(await view(record, 'saved')), secret: record.secret };
    },
    /** Stops starting delivery again for subscriptions whose start failed (at shutdown, before delivery closes). */
    close(): void {
      calls.close();
    },
    /** Per subscription, what `/metrics` shows (one dead-letter count query per subscription). */
    metricsSnapshot() {
      return forEachLive(async (record) => {
        // A scrape answers with what it has: a subscription whose stats cannot be read now (a cluster outage) shows its state.
        const stats = await calls.readIfStarted(record.id, () => deps.delivery.stats(record.id)).catch(unlessUnavailable);
        if (!stats) return { id: record.id, state: record.state, delivery: null };
        const { partitions, deadLetters } = stats;
        const ages = partitions.map((p) => p.oldestPendingAgeMs).filter((a): a is number => a !== null);
        // A partition that never held an event has no lag or expiry to show (metrics probe: 4,096 partitions ×
        // 100 subscriptions wrote 819,200 such series, 86 MB a scrape, all but 100 at 0). Its series appear,
        // at their value, with its first event, before retention can have deleted any of it.
        const used = partitions.filter((p) => p.headOffset > 0);
        return {
          id: record.id,
          state: record.state,
          delivery: {
            deadLetters,
            inFlight: partitions.reduce((n, p) => n + p.inFlight, 0),
            oldestPendingAgeMs: ages.length > 0 ? Math.max(...ages) : null,
            lag: used.map((p) => ({ partition: p.partition, lag: p.lag })),
            expired: used.map((p) => ({ partition: p.partition, expired: p.expired })),
          },
        };
      });
    },
    /**
     * Subscriptions oldest first (by `createdAt`, then `id`), those after `page.after` when given, at most
     * `page.limit`; `next` is where the following page starts, `null` when none follows.
     */
    async list(page: ListPage = {}) {
      const after = page.after;
      const ordered = live
        .records()
        .sort(byCreation)
        .filter((r) => after === undefined || byCreation(r, after) > 0);
      const shownNow = page.limit === undefined ? ordered : ordered.slice(0, page.limit);
      const last = shownNow.at(-1);
      const next = shownNow.length < ordered.length && last ? { createdAt: last.createdAt, id: last.id } : null;
      return { subscriptions: await forEachLive((record) => view(record, 'listed'), shownNow), next };
    },
    async get(id: string) {
      return view((await live.find(id)).record, 'required');
    },
    /**
     * For the API to answer 404 before it checks a body, as it always has.
     * @throws AppError `not_found`
     */
    async assertExists(id: string): Promise<void> {
      await live.find(id);
    },
    async patch(id: string, input: PatchSubscriptionInput) {
      await live.find(id);
      if (input.sink !== undefined) await sinks.check(input.sink);
      if (input.filters !== undefined) checkFilters(input.filters);
      let revalidate = false;
      // Decided on the record as stored when written: it may have changed, or gone, during a DNS lookup.
      const { record } = await save(id, (current) => {
        if (input.sink !== undefined) {
          const given = input.delivery?.headers as Record<string, string> | undefined;
          checkHeadersFollowSink(
            { sink: uriOfSink(current.sink), headers: current.delivery.headers },
            { sink: input.sink, headers: given },
          );
        }
        const delivery = input.delivery !== undefined ? applyDeliveryChange(current.delivery, input.delivery) : current.delivery;
        const changes: Partial<SubscriptionRecord> = {
          sink: input.sink ?? current.sink,
          filters: input.filters ?? current.filters,
          delivery,
        };
        // Consent is given for one sink URL: a new sink validates again (at once, or on resume if paused).
        const moved =
          input.sink !== undefined && input.sink !== uriOfSink(current.sink)
            ? transition(current, { kind: 'sink-changed' }, lifecycle())
            : undefined;
        revalidate = moved !== undefined;
        return { ...changes, ...moved };
      });
      if (revalidate) validate(record);
      // Stored: delivery that cannot take it now (not started, restarting) reads the record when it starts.
      await calls.ask(id, () => deps.delivery.resume(id)).catch(unlessUnavailable);
      deps.log.info({ subscription: id, fields: Object.keys(input) }, 'subscription updated');
      return view(record, 'saved');
    },
    async remove(id: string): Promise<void> {
      // One deletion of an id at a time on this node: a DELETE arriving while another runs waits for it, and
      // then finds nothing (404), as a DELETE after it would (delivery probe: three at once all answered 204).
      for (let running = removals.get(id); running; running = removals.get(id)) await running.catch(() => undefined);
      const removal = removeOnce(id);
      removals.set(id, removal);
      try {
        await removal;
      } finally {
        if (removals.get(id) === removal) removals.delete(id);
      }
    },
    async pause(id: string) {
      handshakes?.cancel(id); // a handshake under way is abandoned (its token is cleared): resume starts a new one
      const { record } = await step(id, { kind: 'pause' });
      // Answered once delivery has it (queued behind a resume that may have raced it): no attempt starts after the 200.
      await calls.settled(id);
      deps.log.info({ subscription: id, stateReason: 'user' }, 'subscription paused');
      return view(record, 'saved');
    },
    /** A `validation: cloudevents` subscription the sink has not consented to validates (again) first. */
    async resume(id: string) {
      const { record } = await step(id, { kind: 'resume' });
      if (record.state === 'validating') {
        validate(record);
        deps.log.info({ subscription: id }, 'subscription resumed: validating the sink first');
        return view(record, 'saved');
      }
      tell('resume', id, () => deps.delivery.resume(id));
      deps.log.info({ subscription: id, stateReason: null }, 'subscription resumed');
      return view(record, 'saved');
    },
    /**
     * The handshake's callback URL, called by the sink (GET or POST) or by hand (a browser) to consent
     * later: the call consents unless its `WebHook-Allowed-Origin` names another origin;
     * `WebHook-Allowed-Rate` sets the rate limit.
     * @throws AppError `not_found` for a token that is unknown or no longer waited for; `invalid_request` naming another origin
     */
    async validationCallback(token: string, headers: Record<string, string | string[] | undefined>) {
      const record = live.records().find((r) => awaits(r, token));
      if (!record || !handshakes) throw new AppError('not_found', 'no validation handshake is waiting for this callback');
      const origin = handshakes.origin();
      if (!callbackGrants(headers, origin)) {
        const message = `WebHook-Allowed-Origin names another origin: consent names ${origin} (or *), or leaves the header out`;
        throw new AppError('invalid_request', `the callback does not consent: ${message}`, {
          details: [{ attribute: 'webhook-allowed-origin', message }],
        });
      }
      await consent(record.id, token, allowedRate(headers['webhook-allowed-rate']));
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
      await live.find(id);
      const { generation } = await calls.ask(id, () => deps.delivery.seek(id, target));
      deps.log.info(
        { subscription: id, ...('time' in target ? { time: new Date(target.time).toISOString() } : target), generation },
        'subscription sought',
      );
      // Sought already: figures that cannot be read now leave `stats` null, not a 503 that would have the
      // client seek again (re-probe: 1 seek in 80 answered 503 on a timed-out read of them, though recorded).
      return view((await live.find(id)).record, 'saved');
    },
    /**
     * A new secret. With `overlapSeconds` > 0 (default one day) the replaced one keeps signing, after
     * the new one, until then; a rotation during an overlap keeps only the newest previous secret.
     * 0: the replaced secret stops at once.
     */
    async rotateSecret(id: string, { overlapSeconds }: RotateSecretInput) {
      const overlap = overlapSeconds > 0;
      const secret = newSigningSecret();
      const { record } = await save(id, (current) => ({
        secret,
        previousSecret: overlap ? current.secret : null,
        previousSecretExpiresAt: overlap ? clock() + overlapSeconds * 1000 : null,
      }));
      // Answered once delivery signs with it: with no overlap, no attempt started after the 200 carries the old secret only.
      await calls.settled(id);
      deps.log.info({ subscription: id, overlapSeconds }, 'signing secret rotated');
      return { ...(await view(record, 'none')), secret: record.secret };
    },
    /** The attempt log (issue 13 §1), newest first; `next` is the cursor of the following page. */
    async attempts(id: string, page: { limit: number; before: number }) {
      await live.find(id);
      // One more than asked tells whether an older page exists, so the last page says `next: null`.
      const rows = await calls.read(id, () => deps.delivery.attempts(id, { before: page.before, limit: page.limit + 1 }));
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
      await live.find(id);
      const rows = await calls.read(id, () => deps.delivery.deadLetters(id, page));
      // One read at a time: a page holds up to 1000, and on JetStream each is a round trip to the cluster.
      // The page ends early once its events pass PAGE_BYTES (at least one is listed): events of up to
      // HERALD_MAX_BODY_BYTES each make the count alone no bound on the answer.
      const deadLetters = [];
      let bytes = 0;
      for (const row of rows) {
        if (deadLetters.length > 0 && bytes >= PAGE_BYTES) break;
        const stored = await readStored(deps.store, row.partition, row.offset);
        const event = stored && stored !== 'corrupt' ? toStructured(stored.event) : null;
        bytes += event ? Buffer.byteLength(JSON.stringify(event)) : 0;
        deadLetters.push({
          id: row.id,
          partition: row.partition,
          offset: row.offset,
          event,
          attempts: row.attempts,
          lastStatus: row.lastStatus,
          lastError: row.lastError,
          reason: row.reason,
          deadAt: new Date(row.deadAt).toISOString(),
        });
      }
      const full = deadLetters.length > 0 && (deadLetters.length < rows.length || rows.length === page.limit);
      return {
        deadLetters,
        nextAfter: full ? deadLetters[deadLetters.length - 1]!.id : null,
      };
    },
    /** Queues dead letters for delivery again with a fresh attempt count; returns how many. */
    async redeliver(id: string, ids: string[] | undefined): Promise<number> {
      await live.find(id);
      const count = await calls.ask(id, () => deps.delivery.redeliver(id, ids));
      deps.log.info({ subscription: id, deadLetters: count }, 'dead letters redelivered');
      return count;
    },
    async deleteDeadLetter(id: string, deadLetterId: string): Promise<void> {
      await live.find(id);
      if (!(await calls.ask(id, () => deps.delivery.deleteDeadLetter(id, deadLetterId))))
        throw new AppError('not_found', `no dead letter ${deadLetterId} in subscription ${id}`);
      deps.log.info({ subscription: id, deadLetter: deadLetterId }, 'dead letter deleted');
    },
  };
}
export type SubscriptionsService = ReturnType<typeof createSubscriptionsService>;

/** For a change already stored: delivery that cannot answer now (not started, its thread restarting) is no 503. */
function unlessUnavailable(err: unknown): null {
  if (isUnavailable(err)) return null;
  throw err;
}
