/**
 * The JetStream delivery engine (`HERALD_STORE=jetstream`): the subscriptions service's
 * `DeliveryControl` and the callbacks' `DeliveryCallbacks`, with every piece of delivery state in
 * the cluster, so any number of Herald nodes deliver together and any of them may stop.
 *
 * Names on the cluster (prefix `P` = HERALD_NATS_PREFIX, `S` = subscription id, `g` = seek generation):
 * - consumer `P_d_S_g<g>` on each partition stream `P_p<n>`: durable, pull, explicit ack;
 *   `max_ack_pending` 1 (ordering `partition`) or `maxInFlight` (`none`); `ack_wait` =
 *   max(timeoutMs, ackDeadlineMs) + 1 s; `max_deliver` unlimited (Herald bounds attempts); replicas of the
 *   stream; starts at `startAt` (`earliest`: all; `latest`: stored since the subscription's creation).
 *   Attempt counts (JetStream's delivery count), retry delays (`-NAK` with delay), leases (ack_wait,
 *   `+WPI`) and the committed position (the ack floor) all live in it (see `consumer-config.ts`).
 * - stream `P_dead` (subject `P.dead.S`): dead letters; a row's id is its sequence.
 * - stream `P_attempts` (subject `P.attempts.S`, 1,000 kept per subject): the attempt log.
 * - stream `P_redrive` (work queue, subject `P.redrive.S`) and consumer `P_rd_S` on it: dead letters
 *   queued again by `redeliver` (a new message, so a fresh attempt count), sent with `herald-redelivery`.
 * - KV `P_acks` (TTL 2 days): delivery id → the attempt's ack subject, subscription, partition,
 *   offset, attempt and state; KV `P_dgen`: subscription → each partition's seek generation (every
 *   node watches it); KV `P_dpos`: last matched offset per (subscription, partition, generation),
 *   which gives `herald-previous-offset` whichever node sent the previous event.
 *
 * Every node pulls every active subscription's consumers; JetStream hands each message to one node.
 * What failures cause:
 * - a node dies mid-attempt: its message is unacked; after ack_wait JetStream gives it to another
 *   node (next attempt number, same webhook-id). Per-partition order holds (max_ack_pending 1). The
 *   receiver may get it twice (at least once). Dying after a dead letter is stored and before the
 *   term stores it twice. A redelivery past the last attempt (its node died, or it was answered 410
 *   and the subscription resumed) is sent once more, as the local engine does; one past that is
 *   dead-lettered without a request.
 * - a NATS server dies: the client reconnects to another; R3 streams and consumers keep their
 *   state. Pulls and signals fail meanwhile (logged, retried after 0.5 s); an ack that was lost means
 *   a redelivery. With the cluster down nothing is delivered, and nothing is lost.
 * - a callback on another node: the ack map names the message's ack subject; any node publishes
 *   `+ACK`/`-NAK`/`+TERM`/`+WPI` to it. A compare-and-set on the entry lets exactly one settlement
 *   win (a callback or the request's own answer, which is then `stale` in the attempt log).
 * - a duplicate callback: the same one again is answered `repeated: true`; another is a 409; an
 *   unknown, deleted or expired-lease id answers as on the local engine (404, 409 `expired`).
 * - a seek: new consumers at the target under a new generation, the record moved by
 *   compare-and-set, the old consumers deleted; every node re-binds on the KV watch (or on the
 *   "consumer not found" of its next pull). Open attempts of the old consumers are abandoned.
 * - a 410: the node pauses the subscription locally at once, tells the service, and naks the event
 *   with a 1 s delay (the pause reaches the other nodes first); it is pulled again on resume.
 * - a lease that runs out (no callback): JetStream redelivers after ack_wait (not after the retry
 *   backoff, as the local engine does); a callback after `leaseUntil` is a 409 `expired`.
 * - a consumer deleted behind Herald: the next pull fails, and it is made again, just after the
 *   last finished event when marked under `ordering: partition` (`P_dpos`), else where its
 *   generation started (see `consumers.ts`). `P_dgen` deleted and made again
 *   (`recreate-missing`): the records are filled from the consumers that exist
 *   (`recover-generations.ts`).
 * - `quiesce()` (a shutdown begins, before the HTTP server waits for its open requests): nothing
 *   more is pulled, so no delivery names an ack URL about to refuse callbacks.
 * - `close()`: pulling stops, open requests get 1 s and their answers settle (a 2xx acks, a 202
 *   keeps its entry for a callback through any node); then they are aborted, and their messages
 *   stay unacked and go to another node after ack_wait.
 *
 * Not on this engine (yet): rate limits and AIMD concurrency (`currentMaxInFlight` is `maxInFlight`,
 * `throttled` false), retention (`expired` stays 0). Delivery metrics are counted per node: each node
 * counts the attempts it made and the callbacks it took. Auto-disable's window is the cluster's (see
 * `failing-windows.ts`).
 * `maxInFlight` with `ordering: none` holds per partition (the consumer's `max_ack_pending`), not
 * across the subscription.
 */
import type { KV } from 'nats';
import { KvWatchInclude, type NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { NatsConfig } from '../../config';
import type { DeliveryCallbacks } from '../../delivery/dispatcher';
import { createHttpSender } from '../../delivery/http-sender';
import { createFailingWindows } from './failing-windows';
import type { DeliveryObserver } from '../../delivery/tally';
import { AppError, StartupError } from '../../errors';
import { throttledLine } from '../../logger';
import type { SubscriptionRecord } from '../../subscriptions/record';
import type { DeliveryControl, DeliveryStats, PartitionStats, SubscriptionEvents } from '../../subscriptions/delivery-control';
import type { SeekTarget } from '../../subscriptions/seek-schema';
import { connectToCluster } from '../connection';
import { removeCurrent } from '../kv-update';
import { clusterUnavailable, isNotFound, natsReason } from '../nats-errors';
import { failed } from '../provision';
import { jetStreamNames } from '../names';
import { createAckMap } from './ack-map';
import { createCallbacks } from './callbacks';
import { createConsumers, type Consumers } from './consumers';
import type { EngineContext } from './context';
import { createLeaseKeeper } from './lease-keeper';
import { createLocalSubscription, type LocalSubscription } from './local-subscription';
import { watchMaxDeliveries } from './max-deliveries';
import { deliveryNames, idToken } from './names';
import { provisionDelivery, ATTEMPTS_PER_SUBSCRIPTION } from './provision-delivery';
import { bucketStream, type MadeStreams } from '../made-streams';
import { createAttemptLog, createDeadLetters, createSequenceWatch, leaderGet } from './records';
import type { DeadLetterRow } from '../../subscriptions/delivery-records';
import { recoverGenerations } from './recover-generations';
import { seekStarts } from './seek-starts';

export interface JetStreamDelivery extends DeliveryControl, DeliveryCallbacks {
  /** A shutdown has begun: nothing more is pulled; open attempts go on and settle. `close` ends the rest. */
  quiesce(): void;
  close(): Promise<void>;
}

export interface JetStreamDeliveryDeps {
  nats: Readonly<NatsConfig>;
  partitions: number;
  log: Logger;
  /** Sink policy of the HTTP sender (`HERALD_SINK_ALLOW_PRIVATE`). */
  allowPrivateSinks: boolean;
  clock?: () => number;
  /** Tests only: see `EngineContext.beforeOpen`. */
  beforeOpen?: EngineContext['beforeOpen'];
  /** Base of `herald-ack-url` (HERALD_PUBLIC_URL); the gateway must pass it. */
  ackUrlBase?: () => string;
  /** The layout's list of what Herald made (the event store's): delivery's streams and buckets are checked and recorded there. */
  made?: MadeStreams;
  /** About how often each subscription's consumers are checked for lease settings changed behind Herald (tests shorten it). */
  leaseCheckMs?: number;
  /** What this node's attempts and callbacks count (`herald_deliveries_total` and the delivery histograms). */
  observer?: DeliveryObserver;
}

/** API timeout of the engine's own connection. */
const API_TIMEOUT_MS = 5000;
/** Of consumer deletes and the stats' consumer infos, asked again when unanswered (see consumers.ts). */
const SHORT_TIMEOUT_MS = 1000;
/** How long `close` lets open requests finish (their answers settle) before aborting them (their messages stay unacked). */
const CLOSE_GRACE_MS = 1000;
/** Dead letters read per page when all of a subscription's are redelivered (bounded by their count). */
const REDRIVE_PAGE = 1000;
/** Dead letters whose redelivery is published at once (see `redrive`). */
const REDRIVE_BATCH = 64;
/** Queued redeliveries of one subscription looked through for the one a dead letter's DELETE cancels. */
const CANCEL_SCAN_LIMIT = 10_000;
/** See `JetStreamDeliveryDeps.leaseCheckMs`: a consumer info per consumer per minute and node. */
const LEASE_CHECK_MS = 60_000;

export async function createJetStreamDelivery(deps: JetStreamDeliveryDeps): Promise<JetStreamDelivery> {
  const { log, partitions } = deps;
  const clock = deps.clock ?? Date.now;
  const names = deliveryNames(deps.nats.prefix);
  const events = jetStreamNames(deps.nats.prefix);
  const ackUrlBase =
    deps.ackUrlBase ??
    (() => {
      log.warn('JetStream delivery started without ackUrlBase: herald-ack-url points at http://127.0.0.1:8080');
      const fallback = 'http://127.0.0.1:8080';
      return () => fallback;
    })();
  const nc = await connectToCluster(deps.nats, log.child({ part: 'delivery' }));
  try {
    const js = nc.jetstream({ timeout: API_TIMEOUT_MS });
    const jsm = await nc.jetstreamManager({ timeout: API_TIMEOUT_MS, checkAPI: false });
    const buckets = await provisionDelivery(js, jsm, names, deps.nats.prefix, deps.nats.replicas, deps.made);
    const ctx: EngineContext = {
      nc,
      jsm,
      names,
      events,
      ackMap: createAckMap(buckets.acks),
      deadLetters: createDeadLetters({ js, jsm, names, watch: wentBackWatch(names.deadStream, 'dead letters', log) }),
      attemptLog: createAttemptLog({ js, jsm, names, kept: ATTEMPTS_PER_SUBSCRIPTION }),
      positions: buckets.positions,
      idempotency: once(() => js.views.kv(events.idempotencyBucket, { bindOnly: true })),
      sender: createHttpSender({ allowPrivate: deps.allowPrivateSinks }),
      log,
      clock,
      ...(deps.beforeOpen ? { beforeOpen: deps.beforeOpen } : {}),
      ...(deps.observer ? { observer: deps.observer } : {}),
      failing: createFailingWindows({ kv: buckets.positions, log, clock }),
      random: Math.random,
      ackUrlBase,
    };
    const consumers = createConsumers({
      jsm,
      shortJsm: await nc.jetstreamManager({ timeout: SHORT_TIMEOUT_MS, checkAPI: false }),
      generations: buckets.generations,
      positions: buckets.positions,
      names,
      events,
      partitions,
      log,
    });
    // Before any subscription is added: each then finds its record and goes on with the consumers it had.
    if (buckets.generationsRemade) {
      await recoverGenerations({ jsm, consumers, names, events, partitions, log }).catch(async (err: unknown) => {
        // Deleted again, the bucket is still listed and missing at the next start, which recovers again instead of finding it half-filled.
        await jsm.streams.delete(bucketStream(names.generationBucket)).catch(() => undefined);
        throw err;
      });
    }
    const leaseCheckMs = deps.leaseCheckMs ?? LEASE_CHECK_MS;
    return await composeEngine({ ctx, js, nc, consumers, generations: buckets.generations, partitions, leaseCheckMs });
  } catch (err) {
    await nc.close().catch(() => undefined);
    // A cluster call that failed here is a start-up failure (one line, exit 2; a timeout is asked again), not a stack.
    throw err instanceof StartupError || err instanceof AppError ? err : failed('start delivery', err);
  }
}

/** A stream's sequence watched for going back (see `createSequenceWatch`), said in an `error` line. */
const wentBackWatch = (stream: string, what: string, log: Logger) =>
  createSequenceWatch(stream, what, (message, fields) => log.error(fields, message));

async function composeEngine(parts: {
  ctx: EngineContext;
  js: ReturnType<NatsConnection['jetstream']>;
  nc: NatsConnection;
  consumers: Consumers;
  generations: KV;
  partitions: number;
  leaseCheckMs: number;
}): Promise<JetStreamDelivery> {
  const { ctx, js, nc, consumers, partitions, leaseCheckMs } = parts;
  const { log, names, events } = ctx;
  const subs = new Map<string, LocalSubscription>();
  /** Deleted here: an `add` still making its consumers must not start pulling. */
  const removedIds = new Set<string>();
  const byToken = new Map<string, string>();
  const adding = new Map<string, Promise<void>>();
  const leases = createLeaseKeeper(ctx);
  const redriveWatch = wentBackWatch(names.redriveStream, 'queued redeliveries (their dead letters already deleted)', log);
  let closed = false;
  let quiescing = false;

  const callback = createCallbacks({
    ctx,
    generations: async (id) => subs.get(id)?.generations() ?? (await consumers.generations(id))?.gens,
    keepLease: leases.keep,
  });

  function entryOf(id: string): LocalSubscription {
    const entry = subs.get(id);
    if (!entry) throw new AppError('not_found', `subscription ${id} does not exist`);
    return entry;
  }

  /** A watch of the generation records that ended with an error is made again this much later, until one is. */
  const GENERATIONS_REWATCH_MS = 1000;
  /** Every node watches the generation records, so a seek through any node moves every node's pullers. */
  async function watchGenerations(): Promise<() => void> {
    let stopped = false;
    let retry: NodeJS.Timeout | undefined;
    const retryLine = throttledLine(60_000);
    // A watch made again starts from each record's last value: a seek made while none was open is caught up (rebind
    // never moves back, so a value already applied changes nothing).
    const open = async (include = KvWatchInclude.UpdatesOnly) => {
      const watch = await parts.generations.watch({ include });
      // Stopped while it was being made (a retry's): stopped now, or it would last as long as the connection.
      if (stopped) return watch.stop();
      current = watch;
      void (async () => {
        try {
          for await (const e of watch) {
            const id = byToken.get(e.key);
            const entry = id === undefined ? undefined : subs.get(id);
            if (!entry || e.operation !== 'PUT') continue;
            try {
              entry.rebind((JSON.parse(Buffer.from(e.value).toString('utf8')) as { gens: number[] }).gens);
            } catch (err) {
              log.warn({ err, key: e.key }, 'unreadable seek generation record');
            }
          }
        } catch (err) {
          // nats.js ends the watch with an error when it cannot make its consumer again (the bucket's stream
          // deleted behind Herald, a cluster that does not answer): was an unhandled rejection, the node exited.
          log.error({ err: natsReason(err) }, 'the watch of seek generations failed; watching again');
        }
        again();
      })();
    };
    const again = () => {
      if (stopped) return;
      retry = setTimeout(() => {
        open(KvWatchInclude.LastValue).catch((err: unknown) => {
          retryLine((suppressed) =>
            log.warn(
              { err: natsReason(err), suppressed },
              'could not watch seek generations; trying again every second (logged once a minute)',
            ),
          );
          again();
        });
      }, GENERATIONS_REWATCH_MS);
      retry.unref();
    };
    let current: { stop(): void } | undefined;
    await open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      current?.stop();
    };
  }
  // Awaited here: a watch that cannot be made (a timeout) fails the start, instead of an unhandled rejection later.
  const stopWatching = await watchGenerations();
  await ctx.failing?.start();
  const droppedByJetStream = watchMaxDeliveries(
    ctx,
    partitions,
    (consumer) => {
      const parsed = names.parseConsumer(consumer);
      const id = parsed && byToken.get(parsed.token);
      const entry = id === undefined ? undefined : subs.get(id);
      return entry && parsed ? { entry, generation: parsed.generation } : undefined;
    },
    (consumer) => [...subs.values()].find((entry) => names.redriveConsumer(entry.id) === consumer),
  );

  async function addOnce(record: SubscriptionRecord, subEvents: SubscriptionEvents): Promise<void> {
    const { gens } = await consumers.ensureGenerations(record.id);
    await consumers.ensureAll(record, gens);
    // Closed, or deleted while its consumers were being made: nothing to pull.
    if (closed || removedIds.has(record.id)) return;
    const entry = createLocalSubscription(
      { ctx, js, consumers, leases, partitions, closed: () => closed || quiescing, leaseCheckMs },
      record,
      subEvents,
      gens,
    );
    subs.set(record.id, entry);
    byToken.set(names.generationKey(record.id), record.id);
    // A seek between reading the generations and starting: catch up now.
    const latest = await consumers.generations(record.id);
    if (latest) entry.rebind(latest.gens);
  }

  const engine: JetStreamDelivery = {
    /** Idempotent and safe on several nodes at once: creates what is missing, then pulls. */
    async add(record, subEvents) {
      if (subs.has(record.id)) return engine.update(record);
      const pending = adding.get(record.id) ?? addOnce(record, subEvents).finally(() => adding.delete(record.id));
      adding.set(record.id, pending);
      await pending;
    },
    async update(record) {
      await subs.get(record.id)?.update(record);
    },
    /** Nothing to write at creation: `add` creates the consumers (from `startAt`), on whichever node first. */
    initOffsets() {},
    resume(id) {
      entryOf(id); // pullers look at the record's state before every pull
    },
    /**
     * Read first, so that a cluster out of reach fails it with nothing changed. Should a later step fail,
     * the subscription may be added again (its record was not deleted: the service re-attaches it), and a
     * DELETE retried finishes the removal.
     */
    async remove(id) {
      const current = await consumers.generations(id);
      const entry = subs.get(id);
      removedIds.add(id);
      subs.delete(id);
      byToken.delete(names.generationKey(id));
      try {
        await entry?.stop({ graceMs: 0, removed: true });
        const gens = current?.gens ?? entry?.generations() ?? [];
        // The record first, so no node re-creates a consumer for a deleted subscription (see `repair`).
        await removeCurrent(parts.generations, names.generationKey(id), 'purge').catch(() => undefined);
        await Promise.all(gens.map((g, p) => consumers.removePartitionConsumer(id, p, g)));
        await consumers.removeRedriveConsumer(id);
        await Promise.all([
          ctx.deadLetters.purge(id),
          ctx.attemptLog.purge(id),
          ctx.jsm.streams.purge(names.redriveStream, { filter: names.redriveSubject(id) }),
          ctx.jsm.streams.purge(`KV_${names.positionBucket}`, { filter: `$KV.${names.positionBucket}.${idToken(id)}.>` }),
        ]);
      } catch (err) {
        removedIds.delete(id); // an `add` after the failure pulls again
        throw err;
      }
      // Ack map entries expire with the bucket's TTL; callbacks for them answer 404 from now on.
    },
    async seek(id, target: SeekTarget) {
      const entry = entryOf(id);
      const bounds = await Promise.all(
        Array.from({ length: partitions }, async (_, p) => {
          const { state } = await ctx.jsm.streams.info(events.stream(p));
          return { first: state.messages === 0 ? state.last_seq : state.first_seq - 1, head: state.last_seq };
        }),
      );
      const moves = seekStarts(target, bounds);
      const current = await consumers.generations(id);
      if (!current) throw new AppError('not_found', `subscription ${id} does not exist`);
      const generation = Math.max(0, ...current.gens) + 1;
      const gens = [...current.gens];
      const starts = [...current.starts];
      for (const m of moves) {
        gens[m.partition] = generation;
        starts[m.partition] = m.start;
      }
      // Claimed first, by compare-and-set of the generation record: of two seeks at once (through any
      // nodes) one moves the record and the other makes nothing. Was: both made the generation's
      // consumers (a 503 when their starts differed), and the loser deleted the winner's, which every
      // node then made again from its marks, sending events again (probe).
      if (!(await consumers.swapGenerations(id, { gens, starts }, current.revision))) {
        throw new AppError('conflict', `subscription ${id} was sought or deleted meanwhile; try again`);
      }
      // The seek is recorded. Its consumers start where the record says: a node whose puller finds one
      // missing first makes the same (see startOfMissing), so a failure here is repaired, not undone.
      const failed = await consumers.makeConsumers(
        entry.record(),
        moves.map((m) => ({ partition: m.partition, generation, start: m.start })),
      );
      if (failed)
        log.warn({ err: failed.reason, subscription: id, generation }, 'seek recorded; its consumers are made once the cluster answers');
      entry.rebind(gens);
      await Promise.all(moves.map((m) => consumers.removePartitionConsumer(id, m.partition, current.gens[m.partition]!))).catch(
        (err: unknown) => log.warn({ err, subscription: id }, 'seek: the consumers of the generations it left could not all be deleted'),
      );
      return { generation };
    },
    async stats(id): Promise<DeliveryStats> {
      const entry = entryOf(id);
      const stats = await Promise.all(Array.from({ length: partitions }, (_, p) => partitionStats(entry, p)));
      return {
        partitions: stats,
        deadLetters: await ctx.deadLetters.count(id),
        currentMaxInFlight: entry.record().delivery.maxInFlight,
        throttled: false,
      };
    },
    async attempts(id, page) {
      entryOf(id);
      return ctx.attemptLog.page(id, page.before, page.limit);
    },
    async deadLetters(id, page) {
      entryOf(id);
      return ctx.deadLetters.page(id, page.after, page.limit);
    },
    async redeliver(id, ids) {
      entryOf(id);
      // All of them, read first; or those named, each once however often it is given: the answer counts the dead
      // letters found (JetStream probe: [X, X, X] counted 3). Named ones are looked up a batch at a time, as they are
      // published: 10,000 ids are not 10,000 requests to the servers at once.
      const wanted: readonly (DeadLetterRow | string)[] = ids ? [...new Set(ids)] : await allDeadLetters(id);
      let found = 0;
      for (let i = 0; i < wanted.length; i += REDRIVE_BATCH) {
        const batch = wanted.slice(i, i + REDRIVE_BATCH);
        const looked = await Promise.all(batch.map((d) => (typeof d === 'string' ? ctx.deadLetters.get(id, d) : d)));
        const rows = looked.filter((r) => r !== undefined);
        await redrive(id, rows);
        found += rows.length;
      }
      return found;
    },
    async deleteDeadLetter(id, deadLetterId) {
      entryOf(id);
      return (await ctx.deadLetters.remove(id, deadLetterId)) || cancelQueuedRedelivery(id, deadLetterId);
    },
    callback,
    quiesce() {
      quiescing = true;
    },
    async close() {
      if (closed) return;
      closed = true;
      leases.stop();
      stopWatching();
      ctx.failing?.stop();
      droppedByJetStream.unsubscribe();
      await Promise.all([...subs.values()].map((e) => e.stop({ graceMs: CLOSE_GRACE_MS })));
      await ctx.sender.close(Date.now() + CLOSE_GRACE_MS);
      if (!nc.isClosed()) await nc.drain().catch(() => nc.close());
    },
  };

  /**
   * A batch of dead letters redelivered: a new message each (fresh delivery count) in the redrive queue,
   * sent together (was: one round trip after another, ~3 ms per dead letter: a probe's 20,000 took 64 s);
   * then each dead letter whose message is stored goes. One whose publish failed stays listed, and the
   * request fails with that error. A corrupt_record dead letter never had its filter checked (its event
   * could not be read: a newer node's, during a rolling upgrade): its redelivery checks it. It keeps the
   * generation it was dead-lettered under: its webhook-id, whatever seek came since.
   */
  async function redrive(id: string, rows: readonly DeadLetterRow[]): Promise<void> {
    const published = await Promise.allSettled(
      rows.map((row) => {
        const redrive = {
          partition: row.partition,
          offset: row.offset,
          ...(typeof row.seekGeneration === 'number' ? { generation: row.seekGeneration } : {}),
          ...(row.reason === 'corrupt_record' ? { filter: true } : {}),
        };
        return js.publish(names.redriveSubject(id), JSON.stringify(redrive), { msgID: `rd_${idToken(id)}_${row.id}` });
      }),
    );
    for (const p of published) if (p.status === 'fulfilled') redriveWatch.stored(p.value.seq, p.value.duplicate);
    await Promise.all(rows.filter((_, i) => published[i]!.status === 'fulfilled').map((row) => ctx.deadLetters.removeRow(row)));
    const failed = published.find((p): p is PromiseRejectedResult => p.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * A dead letter whose redelivery still waits in the queue (the subscription paused, or behind `maxInFlight`) left
   * the list when it was queued; deleted, its redelivery is cancelled, as on the local engine (a parity probe: it
   * answered 404 and was sent at the resume). Its message in the redrive queue (not acknowledged yet: a work queue
   * keeps no other), found by the `Nats-Msg-Id` its `redrive` publish gave it, is deleted; a node holding it through
   * a pause finds it gone before it sends it (`locate` in message-handler.ts). One whose attempt is already open
   * ends with that attempt: no retry follows.
   */
  async function cancelQueuedRedelivery(id: string, deadLetterId: string): Promise<boolean> {
    if (!/^[1-9][0-9]{0,15}$/.test(deadLetterId)) return false;
    const msgId = `rd_${idToken(id)}_${deadLetterId}`;
    const consumer = await ctx.jsm.consumers.info(names.redriveStream, names.redriveConsumer(id)).catch((err: unknown) => {
      if (isNotFound(err)) return undefined;
      throw err;
    });
    if (!consumer) return false;
    const subject = names.redriveSubject(id);
    for (let seq = consumer.ack_floor.stream_seq + 1, looked = 0; looked < CANCEL_SCAN_LIMIT; looked++) {
      const queued = await leaderGet(ctx.jsm, names.redriveStream, { seq, next_by_subj: subject });
      if (!queued) return false;
      if (queued.header?.get('Nats-Msg-Id') === msgId) {
        return ctx.jsm.streams.deleteMessage(names.redriveStream, queued.seq, false).catch((err: unknown) => {
          if (isNotFound(err)) return false; // handed out and acknowledged meanwhile
          throw err;
        });
      }
      seq = queued.seq + 1;
    }
    return false;
  }

  async function allDeadLetters(id: string) {
    const rows = [];
    const total = await ctx.deadLetters.count(id);
    for (let after = 0; rows.length < total;) {
      const page = await ctx.deadLetters.page(id, after, REDRIVE_PAGE);
      if (page.length === 0) break;
      rows.push(...page);
      after = Number(page[page.length - 1]!.id);
    }
    return rows;
  }

  /** One partition's figures from its consumer (ack floor, pending, ack pending) and stream (head). */
  async function partitionStats(entry: LocalSubscription, partition: number): Promise<PartitionStats> {
    const [info, stream] = await Promise.all([
      consumers.info(entry.id, partition, entry.generations()[partition] ?? 0),
      ctx.jsm.streams.info(events.stream(partition)),
    ]);
    const head = stream.state.last_seq;
    const committed = Math.min(head, Math.max(info.ack_floor.stream_seq, head - info.num_pending - info.num_ack_pending));
    let oldestPendingAgeMs: number | null = null;
    if (committed < head) {
      const oldest = await ctx.jsm.streams.getMessage(events.stream(partition), { seq: committed + 1 }).catch(() => undefined);
      if (oldest) oldestPendingAgeMs = Math.max(0, ctx.clock() - oldest.time.getTime());
    }
    return {
      partition,
      committedOffset: committed,
      headOffset: head,
      lag: head - committed,
      inFlight: info.num_ack_pending,
      oldestPendingAgeMs,
      expired: 0,
    };
  }

  return unavailableWhenClusterFails(engine);
}

/**
 * The engine's cluster calls fail with raw NATS errors (timeouts, no responders, a lost connection).
 * To a client they all mean: retry later. So every asynchronous operation answers them as `503
 * unavailable` with `Retry-After`, never a 500; its own AppErrors (404, 409) pass through.
 */
function unavailableWhenClusterFails(engine: JetStreamDelivery): JetStreamDelivery {
  const guard =
    <A extends unknown[], R>(what: string, call: (...args: A) => R | Promise<R>) =>
    async (...args: A): Promise<R> => {
      try {
        return await call(...args);
      } catch (err) {
        throw err instanceof AppError ? err : clusterUnavailable(err, what);
      }
    };
  return {
    ...engine,
    add: guard('start delivery', engine.add),
    update: guard('change delivery', engine.update),
    remove: guard('remove delivery', engine.remove),
    seek: guard('move the subscription', engine.seek),
    stats: guard('read delivery figures', engine.stats),
    attempts: guard('read the attempt log', engine.attempts),
    deadLetters: guard('read dead letters', engine.deadLetters),
    redeliver: guard('queue dead letters again', engine.redeliver),
    deleteDeadLetter: guard('delete the dead letter', engine.deleteDeadLetter),
    callback: guard('settle the callback', engine.callback),
  };
}

/** `make()` once, shared; made again after a failure (the bucket may not be reachable yet). */
function once<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => {
    made ??= make().catch((err: unknown) => {
      made = undefined;
      throw err;
    });
    return made;
  };
}
