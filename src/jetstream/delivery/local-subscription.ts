import type { JetStreamClient, JsMsg } from 'nats';
import type { SubscriptionRecord } from '../../subscriptions/record';
import type { SubscriptionEvents } from '../../subscriptions/delivery-control';
import { compileFilters, createFilterErrorReporter, type Matcher } from '../../filters/filter';
import { ackWaitMs } from './consumer-config';
import type { Consumers } from './consumers';
import type { EngineContext } from './context';
import type { LeaseKeeper } from './lease-keeper';
import { handleMessage, type Source, type SubscriptionView } from './message-handler';
import { messageKey } from './ack-map';
import { createPuller, type Puller } from './puller';

export interface LocalSubscriptionDeps {
  ctx: EngineContext;
  js: JetStreamClient;
  consumers: Consumers;
  leases: LeaseKeeper;
  partitions: number;
  /** The engine is closing: nothing more is pulled or settled. */
  closed: () => boolean;
  /** About how often the consumers' lease settings are checked against the subscription's (see `restoreLeaseSettings`). */
  leaseCheckMs: number;
}

type Channel = number | 'redrive';

/**
 * One subscription on this node: the service's latest record, its compiled filters, and a puller
 * per partition consumer (at the partition's seek generation) plus one for its redrive queue.
 * Nothing here is durable: it is rebuilt from the record and the cluster by `add`.
 */
export function createLocalSubscription(
  deps: LocalSubscriptionDeps,
  initial: SubscriptionRecord,
  events: SubscriptionEvents,
  gens: readonly number[],
) {
  const { ctx, consumers } = deps;
  const { log, names } = ctx;
  const id = initial.id;
  let record = initial;
  let removed = false;
  /** Until when a receiver's Retry-After holds this node's requests of the subscription. */
  let heldUntil = 0;
  const generations = [...gens];
  const report = createFilterErrorReporter({ log, subscriptionId: id, clock: ctx.clock, count: () => events.onFilterError?.() });
  let matcher: Matcher = compileFilters(record.filters, { onError: report, sizeLimits: false });
  const pullers = new Map<Channel, Puller>();

  const view: SubscriptionView = {
    id,
    record: () => record,
    matches: (attributes) => {
      try {
        return matcher(attributes);
      } catch (err) {
        log.warn({ subscription: id, err }, 'filter evaluation failed; the event does not match');
        return false;
      }
    },
    generation: (partition) => generations[partition] ?? 0,
    gone: () => {
      // Paused here at once, so this node pulls nothing more before the service's update arrives.
      record = { ...record, state: 'paused', stateReason: 'gone' };
      events.onGone();
    },
    health: (error) => {
      const token = names.generationKey(id);
      if (error === undefined) return ctx.failing?.succeeded(token);
      // As on the local engine: nothing counts while the subscription is not active (answers of requests still open).
      if (removed || record.state !== 'active') return;
      const failingSince = ctx.failing?.failed(token, record.delivery.disableAfterFailingMs);
      if (failingSince === undefined) return;
      // Paused here at once, so this node pulls nothing more before the service's update arrives.
      record = { ...record, state: 'paused', stateReason: 'failing' };
      events.onFailing?.({ failingSince, lastError: error });
    },
    holdUntil: (until) => {
      heldUntil = Math.max(heldUntil, until);
    },
    held: () => ctx.clock() < heldUntil,
    closing: () => deps.closed() || removed,
    removed: () => removed,
    exists: async () => !removed && (await consumers.generations(id)) !== undefined,
  };

  function startPuller(channel: Channel): Puller {
    const source: Source =
      channel === 'redrive' ? { kind: 'redrive' } : { kind: 'partition', partition: channel, generation: generations[channel]! };
    return createPuller({
      js: deps.js,
      stream: channel === 'redrive' ? names.redriveStream : ctx.events.stream(channel),
      consumer: channel === 'redrive' ? names.redriveConsumer(id) : names.consumer(id, generations[channel]!),
      capacity: () => (channel !== 'redrive' && record.delivery.ordering === 'partition' ? 1 : record.delivery.maxInFlight),
      // Paused and validating subscriptions are not pulled, nor one a receiver's Retry-After holds.
      active: () => !view.closing() && record.state === 'active' && !view.held(),
      leaseMs: () => ackWaitMs(record.delivery),
      closing: () => view.closing(),
      handle: (msg: JsMsg, group, instance) => handleMessage(ctx, view, msg, source, group, deps.leases, messageKey(msg, instance)),
      giveBack: async (msg: JsMsg, delayMs: number, instance: string) => {
        await ctx.ackMap.giveBack(messageKey(msg, instance));
        msg.nak(delayMs);
      },
      onPullError: (err) => repair(channel, err),
      log,
    });
  }

  /** A pull failed: the consumer may have moved (a seek through another node), gone with the subscription, or be missing. */
  async function repair(channel: Channel, err: unknown): Promise<void> {
    if (view.closing()) return;
    log.debug({ err, subscription: id, channel }, 'pull failed; checking the consumer');
    const current = await consumers.generations(id);
    if (!current) return; // deleted: the service removes it here too
    if (channel !== 'redrive' && current.gens[channel] !== generations[channel]) return rebind(current.gens);
    await serially(() => consumers.ensureAll(record, generations));
  }

  /** Moves this node's pullers to the generations the cluster holds (after a seek through any node); never backwards. */
  function rebind(latest: readonly number[]): void {
    if (view.closing()) return;
    for (let p = 0; p < deps.partitions; p++) {
      const gen = latest[p] ?? 0;
      if (gen <= (generations[p] ?? 0)) continue;
      generations[p] = gen;
      const old = pullers.get(p);
      pullers.set(p, startPuller(p));
      // Its open attempts are abandoned (their consumer is deleted): their answers settle nothing.
      void old?.stop(0, 'a seek moved its partition');
      log.info({ subscription: id, partition: p, generation: gen }, 'delivery moved to a sought position');
    }
  }

  /**
   * This node's writes of its consumers' settings, one at a time and each from the record as it is when it runs: a
   * check that read the settings under an older record cannot undo a PATCH's update after it (the update, queued
   * behind it, writes the new settings again).
   */
  let consumerWrites: Promise<unknown> = Promise.resolve();
  function serially<T>(write: () => Promise<T>): Promise<T> {
    const run = consumerWrites.then(write, write);
    consumerWrites = run.catch(() => undefined);
    return run;
  }

  /** Consumers edited behind Herald are set back: now and then (jittered, so nodes spread their reads), and when told. */
  let leaseCheck: NodeJS.Timeout | undefined;
  let checkFailing = false;
  function checkLeasesLater(ms = deps.leaseCheckMs * (0.75 + 0.5 * ctx.random())): void {
    if (leaseCheck) clearTimeout(leaseCheck);
    leaseCheck = view.closing() ? undefined : setTimeout(() => void checkLeases(), ms).unref();
  }
  async function checkLeases(): Promise<void> {
    try {
      await serially(() => consumers.restoreLeaseSettings(record, generations));
    } catch (err) {
      // A warn, once until one goes through: a consumer that cannot be set back keeps what was set behind Herald.
      if (!checkFailing) log.warn({ err, subscription: id }, "could not check the consumers' lease settings; tried again later");
      checkFailing = true;
      return checkLeasesLater();
    }
    checkFailing = false;
    checkLeasesLater();
  }

  for (let p = 0; p < deps.partitions; p++) pullers.set(p, startPuller(p));
  pullers.set('redrive', startPuller('redrive'));
  checkLeasesLater();

  const pausedForFailing = (r: SubscriptionRecord) => r.state === 'paused' && r.stateReason === 'failing';
  return {
    id,
    record: () => record,
    generations: (): readonly number[] => generations,
    rebind,
    /** The service's record changed: filters recompiled, consumer lease settings brought up to date. */
    async update(next: SubscriptionRecord): Promise<void> {
      if (JSON.stringify(next.filters) !== JSON.stringify(record.filters))
        matcher = compileFilters(next.filters, { onError: report, sizeLimits: false });
      const before = record.delivery;
      const movedFrom = record.sink;
      // Paused for failing: every node ends the window once it hears it, so none that it opened before is left over.
      if (pausedForFailing(next) && !pausedForFailing(record)) ctx.failing?.ended(names.generationKey(id));
      record = next;
      // Requests waiting for a connection to the old sink go to the new one now (see `send`), not when the old frees one.
      if (movedFrom !== next.sink) ctx.sender.withdrawWaiting(movedFrom, id);
      if (JSON.stringify(before) === JSON.stringify(next.delivery)) return;
      // Before the consumers change: a shorter ack_wait applies to messages already out, leases promised included.
      if (ackWaitMs(next.delivery) !== ackWaitMs(before)) {
        deps.leases.ackWaitChanged(id, ackWaitMs(next.delivery), ackWaitMs(before));
        if (ackWaitMs(next.delivery) < ackWaitMs(before)) for (const puller of pullers.values()) puller.renewHeld();
      }
      await serially(() => consumers.ensureAll(record, generations));
    },
    /** Checks the consumers' lease settings now (JetStream reported one of them dropping a message). */
    checkLeasesNow: () => checkLeasesLater(0),
    /** Stops pulling; open attempts get `graceMs`, then are aborted (deleted: at once, and nothing more is settled). */
    async stop(opts: { graceMs: number; removed?: boolean }): Promise<void> {
      if (opts.removed) removed = true;
      if (leaseCheck) clearTimeout(leaseCheck);
      leaseCheck = undefined;
      await Promise.all([...pullers.values()].map((p) => p.stop(opts.graceMs)));
      if (opts.removed) deps.leases.forget(id);
    },
  };
}
export type LocalSubscription = ReturnType<typeof createLocalSubscription>;
