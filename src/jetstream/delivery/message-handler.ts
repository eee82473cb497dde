import type { JetStreamManager, JsMsg, StoredMsg } from 'nats';
import type { CloudEvent } from '../../cloudevents/event';
import {
  answerInput,
  answerOutcome,
  transition,
  type AttemptEffect,
  type AttemptInput,
  type AttemptState,
} from '../../delivery/attempt-machine';
import type { AbortGroup, SendResult } from '../../delivery/http-sender';
import { requestFor } from '../../delivery/request';
import { retryAfterHoldUntil } from '../../delivery/retry';
import { newDeliveryId } from '../../delivery/subscription-worker';
import type { SubscriptionRecord } from '../../subscriptions/record';
import type { Attributes } from '../../filters/filter';
import { NewerFormatError, decodeClaim, decodeEventMessage, formatOf, publishedAtOf } from '../codec';
import { idempotencyKey } from '../names';
import { DUPLICATE_WINDOW_MS } from '../provision';
import { isNotFound } from '../nats-errors';
import { leaderGet } from './records';
import { ackWaitMs } from './consumer-config';
import type { AttemptTarget, EngineContext } from './context';
import { jsActionOf, settledOutcome, stateOfEntry, type AckEntry, type JsAction } from './outcome';
import type { LeaseKeeper } from './lease-keeper';
import { finishedPast, positionRecord, previousFrom } from './positions';
import { observeEffects, settleMessage } from './settle';
import type { Latest } from './ack-map';
import type { DeadLetterReason } from '../../subscriptions/delivery-records';
import { throttledLine } from '../../logger';

/** A subscription as its messages' handler sees it (see `jetstream-delivery.ts`). */
export interface SubscriptionView {
  id: string;
  record(): SubscriptionRecord;
  matches(attributes: Attributes): boolean;
  /** The partition's seek generation in force on this node. */
  generation(partition: number): number;
  /** The receiver answered 410: paused here at once; the service is told. */
  gone(): void;
  /** An answer settled: a 2xx (`error` undefined) or a failure, for auto-disable's window. */
  health(error?: string): void;
  /** A 429 or 503 with `Retry-After`: this node starts no request of the subscription before `until`. */
  holdUntil(until: number): void;
  /** Whether such a hold is in force on this node now. */
  held(): boolean;
  /** Deleted or closing: nothing more is pulled. */
  closing(): boolean;
  /** Deleted: an answer no longer settles anything (the message stays unacked and JetStream redelivers it). */
  removed(): boolean;
  /** Whether the subscription is still on the cluster (a closing node no longer hears of a delete through another). */
  exists(): Promise<boolean>;
}

/** Where a message came from: a partition's consumer (the message is the event) or the redrive queue (it names one). */
export type Source = { kind: 'partition'; partition: number; generation: number } | { kind: 'redrive' };

/** Tries to settle an attempt whose entry a callback may change: bounded (each round loses only to another write). */
const SWAP_ROUNDS = 5;
/** A node out of descriptors says so once a minute, not once a message. */
const localFailureLine = throttledLine(60_000);

type WithDirectGet = JetStreamManager & { direct: { getMessage(stream: string, query: { seq: number }): Promise<StoredMsg> } };

/** The message's ack subject (nats.js has it on every JetStream message, though its interface does not list it). */
const replyOf = (msg: JsMsg): string => (msg as JsMsg & { reply: string }).reply;

interface Located {
  target: AttemptTarget;
  /** `cancelled`: a redelivery whose message was deleted from the queue (its dead letter's DELETE). */
  event: CloudEvent | 'corrupt' | 'missing' | 'newer' | 'cancelled';
  storedAt: number;
}

async function locate(ctx: EngineContext, sub: SubscriptionView, msg: JsMsg, source: Source): Promise<Located> {
  if (source.kind === 'partition') {
    const target = { reply: replyOf(msg), subscriptionId: sub.id, ...source, offset: msg.seq - 1, redrive: false };
    return { target, event: decodeOr(msg.data, formatOf(msg.headers)), storedAt: Math.floor(msg.info.timestampNanos / 1e6) };
  }
  const { partition, offset, filter, generation } = JSON.parse(Buffer.from(msg.data).toString('utf8')) as {
    partition: number;
    offset: number;
    filter?: boolean;
    /** The dead letter's (absent from redeliveries queued before it was kept). */
    generation?: number;
  };
  const target = {
    reply: replyOf(msg),
    subscriptionId: sub.id,
    partition,
    offset,
    generation: typeof generation === 'number' ? generation : sub.generation(partition),
    redrive: true,
    ...(filter === true ? { filter: true } : {}),
  };
  // Still queued? A DELETE of its dead letter removes it from the queue, also while a node holds it through a pause.
  const queued = await leaderGet(ctx.jsm, ctx.names.redriveStream, { seq: msg.info.streamSequence });
  if (!queued) return { target, event: 'cancelled', storedAt: 0 };
  try {
    const stored = await (ctx.jsm as WithDirectGet).direct.getMessage(ctx.events.stream(partition), { seq: offset + 1 });
    return { target, event: decodeOr(stored.data, formatOf(stored.header)), storedAt: stored.time.getTime() };
  } catch (err) {
    if (isNotFound(err)) return { target, event: 'missing', storedAt: 0 };
    throw err;
  }
}

function decodeOr(data: Uint8Array, format: number): CloudEvent | 'corrupt' | 'newer' {
  try {
    return decodeEventMessage(data, format);
  } catch (err) {
    return err instanceof NewerFormatError ? 'newer' : 'corrupt';
  }
}

/** Stored this long after its publish was made, a copy may have missed JetStream's de-duplication (2 minutes); half, for clock skew. */
const LATE_COPY_MS = DUPLICATE_WINDOW_MS / 2;

/**
 * Whether the message is a late second copy: stored {@link LATE_COPY_MS} or more after its publish was
 * made (a node frozen with it unsent, resumed after the de-duplication window), while the event's
 * idempotency record is settled on another offset, the copy that was acknowledged and is delivered.
 * Only such late messages cost a read of the record.
 */
async function isLateCopy(ctx: EngineContext, msg: JsMsg, event: CloudEvent, target: AttemptTarget): Promise<boolean> {
  const publishedAt = publishedAtOf(msg.headers);
  if (publishedAt === undefined || msg.info.timestampNanos / 1e6 - publishedAt < LATE_COPY_MS) return false;
  const entry = await (await ctx.idempotency()).get(idempotencyKey(String(event.attributes.source), String(event.attributes.id)));
  if (!entry || entry.operation !== 'PUT') return false;
  const claim = decodeClaim(entry.value);
  return claim.o !== undefined && (claim.p !== target.partition || claim.o !== target.offset);
}

/** Whether the consumer's ack floor is at or past the message: some node acknowledged it already. */
async function ackedByAnyNode(ctx: EngineContext, msg: JsMsg): Promise<boolean> {
  const info = await ctx.jsm.consumers.info(msg.info.stream, msg.info.consumer);
  return info.ack_floor.stream_seq >= msg.info.streamSequence;
}

/**
 * One delivery attempt of one JetStream message: the attempt number is JetStream's delivery count,
 * the outcome the attempt machine's (as on the local engine), the settlement a signal on the
 * message's ack subject. Under `ackMode: manual` the attempt is in the ack map before it is sent (a
 * callback may come before the answer); under `auto` only once a 202 asks for one.
 */
export async function handleMessage(
  ctx: EngineContext,
  sub: SubscriptionView,
  msg: JsMsg,
  source: Source,
  group: AbortGroup,
  leases: Pick<LeaseKeeper, 'keep' | 'sending'>,
  key: string,
): Promise<'withdrawn' | 'later' | void> {
  // Before anything is awaited: the nearest this node comes to when JetStream handed the message out.
  const openedAt = ctx.clock();
  const { target, event, storedAt } = await locate(ctx, sub, msg, source);
  if (event === 'cancelled') {
    ctx.log.info(
      { subscription: sub.id, partition: target.partition, offset: target.offset },
      'redelivery cancelled: its dead letter was deleted',
    );
    return msg.ack();
  }
  const record = sub.record();
  // JetStream's delivery count, less the deliveries that were give-backs of a stopping node, not attempts.
  const count = msg.info.deliveryCount;
  const manual = record.delivery.ackMode === 'manual';
  // What stands in for an earlier attempt closed before its entry was written (see `closeEarlier`): made
  // only then, not for every message.
  const closedStandIn = (): AckEntry => ({
    ...target,
    reply: '',
    attempt: 0,
    state: 'expired',
    leaseUntil: null,
    leaseFloor: null,
    lastStatus: null,
    lastError: 'closed by a later delivery of the message before it was opened',
    policy: { retry: record.delivery.retry, ackDeadlineMs: record.delivery.ackDeadlineMs, ackMode: record.delivery.ackMode },
    ackWaitMs: ackWaitMs(record.delivery),
  });
  /**
   * What closing an earlier attempt found ends the message when a callback settled it (completed, not
   * sent again) or its lapsed lease was the last attempt (dead-lettered, as on the local engine). True then.
   */
  const endedBy = async (earlier: Earlier | undefined): Promise<boolean> => {
    if (earlier?.kind === 'settled') {
      await completeEarlier(ctx, earlier);
      return true;
    }
    return earlier?.kind === 'leaseRanOut' && (await deadIfLastLapsed(ctx, sub, target, earlier));
  };
  // An earlier attempt whose pointer was written after `seen` was read (its node stalled before it wrote), found
  // by the claim's compare-and-set: closed as the one read first is, and ending the message as that does (was: sent
  // once more, a lapsed last attempt included). False when it ended it.
  const close = async (earlier: Latest): Promise<boolean> => !(await endedBy(await closeEarlier(ctx, earlier.id, closedStandIn)));
  const [givenBack, seen] =
    count > 1 ? await Promise.all([ctx.ackMap.unspent(key).catch(() => 0), ctx.ackMap.latest(key)]) : [0, undefined];
  const logStale = () =>
    ctx.log.info(
      { subscription: sub.id, partition: target.partition, offset: target.offset, deliveryCount: count },
      'a delivery a later one of the same message has started (its node stalled): not sent, and the message is left to that one',
    );
  // Another node already started a later delivery of this message: this one is not sent nor settled.
  if (seen && seen.count > count) return logStale();
  const earlier = seen ? await closeEarlier(ctx, seen.id, closedStandIn) : undefined;
  // A callback settled the earlier attempt before it could be closed: the event is not sent again. Its lease
  // ran out with no callback: a failed attempt, as on the local engine, so one that was the last is
  // dead-lettered now rather than sent once more (re-probe: maxAttempts 1 sent every such event twice).
  if (await endedBy(earlier)) return;
  const attempt = count - Math.min(givenBack, count - 1);
  const deliveryId = newDeliveryId();
  const last = { attempt, lastStatus: null, lastError: null };
  const ordered = record.delivery.ordering === 'partition';
  // Left out by the filters: acknowledged before anything else is read for it.
  if (typeof event === 'object' && (!target.redrive || target.filter) && !sub.matches(event.attributes as Attributes)) return msg.ack();
  // Held through a stall past ack_wait while another node sent it and went on: not sent again (it would
  // arrive after later events), nor counted or dead-lettered. The mark says so; JetStream's ack floor
  // confirms it (a retry from before a PATCH to `partition` can come after a later mark, unacknowledged).
  const ownPosition = ordered && !target.redrive ? await positionRecord(ctx, target) : undefined;
  if (ordered && finishedPast(ownPosition, target.offset) && (await ackedByAnyNode(ctx, msg))) {
    ctx.log.info(
      { subscription: sub.id, partition: target.partition, offset: target.offset },
      'a message held past ack_wait was delivered by another node, which went on: not sent again',
    );
    return msg.ack();
  }
  if (event === 'missing') {
    ctx.log.error({ subscription: sub.id, partition: target.partition, offset: target.offset }, 'event missing from the log; skipping');
    return msg.ack();
  }
  if (source.kind === 'partition' && typeof event === 'object' && (await isLateCopy(ctx, msg, event, target))) {
    ctx.log.warn(
      {
        subscription: sub.id,
        partition: target.partition,
        offset: target.offset,
        source: event.attributes.source,
        id: event.attributes.id,
      },
      'a second copy of an event, stored by a node that resumed after holding its publish past the de-duplication window: not sent',
    );
    return msg.ack();
  }
  /** Dead-lettered without a request, counted once it is stored (a failure leaves the message to be redelivered). */
  const deadUnsent = async (reason: DeadLetterReason, lastError: string) => {
    await settleMessage(ctx, { kind: 'deadLetter', reason }, target, { ...last, lastError }, deliveryId);
    ctx.observer?.outcome(sub.id, 'dead_letter');
  };
  // Dead-lettered, not left for another node: each offer to an older node would count as an attempt
  // (JetStream's delivery count), so an upgraded node could find its attempts used up. Redelivered
  // from the dead letters once every node is upgraded, it is read as it was stored.
  if (event === 'newer') {
    const error = 'stored by a newer version of Herald than this node runs; redeliver it once every node is upgraded';
    ctx.log.warn({ subscription: sub.id, partition: target.partition, offset: target.offset }, `an event ${error}`);
    return deadUnsent('corrupt_record', error);
  }
  if (event === 'corrupt') return deadUnsent('corrupt_record', 'the stored event cannot be read; it is never delivered');
  // One delivery past the last attempt is sent, as the local engine sends an attempt a restart cut or a
  // 410 paused: the node holding it stopped, or a 410's -NAK counted. Past that (retry.maxAttempts was
  // lowered below the attempts made, or nodes kept stopping) it is dead-lettered without a request.
  if (attempt > record.delivery.retry.maxAttempts + 1) {
    return deadUnsent(
      'max_attempts',
      `delivered ${attempt} times, more than retry.maxAttempts (${record.delivery.retry.maxAttempts}) allows`,
    );
  }
  // Read only for an event that is sent (under `ordering: partition` already, above).
  const position = target.redrive ? undefined : ordered ? ownPosition : await positionRecord(ctx, target);
  const previousOffset = position === undefined ? null : previousFrom(position, target.offset);
  target.previousOffset = previousOffset;
  target.ordered = ordered;
  const entry: AckEntry = {
    ...target,
    attempt,
    state: 'sending',
    leaseUntil: null,
    leaseFloor: null,
    lastStatus: null,
    lastError: null,
    policy: { retry: record.delivery.retry, ackDeadlineMs: record.delivery.ackDeadlineMs, ackMode: record.delivery.ackMode },
    ackWaitMs: ackWaitMs(record.delivery),
    openedAt,
  };
  await ctx.beforeOpen?.({ subscriptionId: sub.id, partition: target.partition, offset: target.offset, deliveryCount: count });
  // The message's pointer names this attempt (compare-and-set, beside the entry's create under manual
  // ack: attempt 1 pays no round trip more). Auto ack writes the entry only at a 202, so a redelivery
  // claims the pointer before it sends (attempt 1 does at its 202, see `decide`).
  let revision: number | undefined;
  if (manual) {
    const [opened, claimed] = await Promise.all([
      ctx.ackMap.open(deliveryId, entry),
      ctx.ackMap.claim(key, count, deliveryId, seen, close),
    ]);
    if (opened === undefined || claimed !== 'claimed') {
      if (opened !== undefined) await expireQuietly(ctx, deliveryId, entry, opened);
      return claimed === 'ended' ? undefined : logStale();
    }
    revision = opened;
  } else if (count > 1) {
    const claimed = await ctx.ackMap.claim(key, count, deliveryId, seen, close);
    if (claimed === 'ended') return;
    if (claimed === 'stale') return logStale();
  }
  // Auto mode: a callback reaching this node before the 202 is read waits for it (see `callbacks.ts`).
  const answered = revision === undefined ? ctx.ackMap.sending(deliveryId) : undefined;
  let result!: SendResult;
  let decided: Decided;
  /** When the request was built, a connection to the sink being free (set again then: see `send`). */
  let startedAt = ctx.clock();
  /** The same on the monotonic clock: the attempt's duration for the metrics, from the request, as on the local engine. */
  let began = performance.now();
  const requestBuilt = (at: number) => {
    startedAt = at;
    began = performance.now();
  };
  /** Writes this attempt to the attempt log (a failure is a `warn` line, never the delivery's). */
  const logAttempt = (outcome: Decided['outcome']): Promise<void> =>
    ctx.attemptLog
      .add({
        subscriptionId: sub.id,
        deliveryId,
        partition: target.partition,
        offset: target.offset,
        attempt,
        status: result.status,
        error: result.error?.slice(0, 1024) ?? null,
        durationMs: Math.max(0, Math.round(ctx.clock() - startedAt)),
        startedAt,
        outcome,
      })
      .catch((err: unknown) => ctx.log.warn({ err, subscription: sub.id }, 'could not record a delivery attempt'));
  // While the request is open: a PATCH that shortens ack_wait renews the message, so it stays this attempt's.
  const sent = leases.sending(sub.id, () => msg.working());
  try {
    // A node that stalled this long since it took the message may have been overtaken by a redelivery
    // (which closed this attempt, or claimed the message): read again, not sent when it was.
    if (ctx.clock() - openedAt >= recheckMs(entry) && (await overtaken(ctx, { deliveryId, key, count }, revision !== undefined))) {
      return logStale();
    }
    let sentTo: string;
    ({ result, sink: sentTo } = await send(ctx, sub, target, event, { deliveryId, attempt, previousOffset }, group, requestBuilt));
    // Never sent (paused or closing while it waited for a connection): its callback id is closed, and
    // the puller keeps the message for the resume, its delivery count unspent on a request.
    if (result.withdrawn) {
      if (sub.removed()) return; // deleted: nothing is given back or kept
      if (revision !== undefined) await ctx.ackMap.swap(deliveryId, { ...entry, state: 'superseded' }, revision).catch(() => undefined);
      return 'withdrawn';
    }
    // Not sent either: this process could not open a connection (out of descriptors). The receiver did nothing wrong,
    // so no attempt is spent: the puller keeps the message and sends it again shortly (as on the local engine).
    if (result.localFailure) {
      if (sub.removed()) return;
      if (revision !== undefined) await ctx.ackMap.swap(deliveryId, { ...entry, state: 'superseded' }, revision).catch(() => undefined);
      localFailureLine((suppressed) =>
        ctx.log.error(
          { subscription: sub.id, partition: target.partition, offset: target.offset, err: result?.error, suppressed },
          'delivery cannot open a connection (this process is out of file descriptors); the attempt waits and goes again, no attempt spent (logged once a minute)',
        ),
      );
      return 'later';
    }
    // Deleted meanwhile, or aborted (a close's grace ran out, a seek moved delivery): settle nothing;
    // JetStream redelivers the message after ack_wait. An answer within a close's grace settles, as on
    // the local engine: a rolling restart sends nothing twice and holds no partition for ack_wait.
    if (sub.removed()) return;
    if (group.aborted) {
      // A seek's abort is logged as on the local engine (`stale`, saying why); a close's is not (the connection is going).
      if (group.reason !== undefined) await logAttempt('stale');
      return;
    }
    ctx.observer?.answered(sub.id, performance.now() - began);
    if (result.status !== null && result.status >= 200 && result.status < 300) ctx.observer?.succeeded(sub.id, ctx.clock() - storedAt);
    // A 410 pauses here before anything is awaited: the sender hands the freed connection to a request
    // that waited for it one turn later, and that request must not go out after the 410 (deciding can
    // wait on the ack map for longer). Even an answer the ack map finds stale is the receiver's "gone".
    // Unless it came from a sink a PATCH has replaced since: that URL is gone, not the subscription's sink, so the
    // event is retried to the new one, as on the local engine (probe: a late 410 of the old receiver paused it).
    const sinkMoved = sub.record().sink !== sentTo;
    if (result.status === 410 && !sinkMoved) sub.gone();
    // Likewise a Retry-After: it holds this node's requests of the subscription (the event's own retry is the machine's -NAK).
    const holdUntil = sinkMoved ? undefined : retryAfterHoldUntil(result, ctx.clock(), sub.record().delivery.retry);
    if (holdUntil !== undefined) sub.holdUntil(holdUntil);
    // Closing: this node stopped watching the subscriptions, so a delete through another node is
    // looked up; settling then would leave its dead letter and marks behind for no subscription.
    if (sub.closing() && (await deletedMeanwhile(sub))) return;
    decided = await decide(ctx, { deliveryId, key, count }, entry, revision, answerInput(deliveryId, result, sinkMoved), close);
    // Auto ack: an answer from a node that stalled long enough to have been overtaken settles nothing
    // (its signal would settle the later delivery), and a 202's entry is closed, when a later delivery
    // was started.
    if (
      revision === undefined &&
      decided.action.kind !== 'none' &&
      ctx.clock() - openedAt >= recheckMs(entry) &&
      (await overtaken(ctx, { deliveryId, key, count }, false))
    ) {
      if (decided.action.kind === 'hold') await closeOwn(ctx, deliveryId);
      decided = { action: { kind: 'none' }, state: decided.state, outcome: 'stale', effects: [] };
    }
  } finally {
    sent();
    answered?.();
  }
  // Logged before the settlement (lag 0 means logged), except a hold's: its +WPI must reach JetStream
  // within ack_wait's 1 s margin past timeoutMs, so the two writes go together.
  const logged = logAttempt(decided.outcome);
  const { action } = decided;
  if (action.kind !== 'hold') await logged;
  const lastResult = { attempt, lastStatus: decided.state.lastStatus, lastError: decided.state.lastError };
  try {
    await settleMessage(ctx, action, target, lastResult, deliveryId);
  } catch (err) {
    // Deleted (through any node) while this attempt was open: its consumer is gone, so the signal has
    // no one to answer it and nothing is redelivered. Not an error worth a line at `error`.
    if (await deletedMeanwhile(sub)) return;
    throw err;
  } finally {
    await logged;
  }
  // A subscription deleted meanwhile has had its series removed: none is made again for it.
  if (!sub.removed()) observeEffects(ctx, sub.id, decided.effects);
  for (const e of decided.effects) if (e.kind === 'health') sub.health(e.ok ? undefined : e.error);
  if (action.kind === 'hold' && decided.entry) leases.keep(deliveryId, decided.entry);
}

/** Past this long since a node took a message, it reads whether a redelivery overtook it before it sends or settles (ack_wait is the least a stall takes for that). */
const recheckMs = (entry: AckEntry): number => entry.ackWaitMs / 2;

/**
 * Whether a later delivery overtook this attempt: under manual ack its entry is no longer `sending`
 * (a redelivery closed it), under auto the message's pointer names a later delivery.
 */
async function overtaken(ctx: EngineContext, a: { deliveryId: string; key: string; count: number }, hasEntry: boolean): Promise<boolean> {
  if (hasEntry) {
    const got = await ctx.ackMap.get(a.deliveryId);
    return got === undefined || got.entry.state !== 'sending';
  }
  const latest = await ctx.ackMap.latest(a.key);
  return latest !== undefined && latest.count > a.count;
}

/** Closes an attempt's open entry (`revision`: as read or written), best effort: a later delivery closes it too. */
async function expireQuietly(ctx: EngineContext, deliveryId: string, entry: AckEntry, revision: number): Promise<void> {
  await ctx.ackMap.swap(deliveryId, { ...entry, state: 'expired' }, revision).catch(() => undefined);
}

/** Closes this node's own open entry of an attempt found overtaken (best effort: the later delivery closes it too). */
async function closeOwn(ctx: EngineContext, deliveryId: string): Promise<void> {
  const got = await ctx.ackMap.get(deliveryId).catch(() => undefined);
  if (got && (got.entry.state === 'sending' || got.entry.state === 'awaiting_ack'))
    await expireQuietly(ctx, deliveryId, got.entry, got.revision);
}

/**
 * What closing the message's earlier attempt found: a callback had settled it first (`settled`), or its
 * lease had run out with no callback (`leaseRanOut`, now closed).
 */
interface Earlier {
  kind: 'settled' | 'leaseRanOut';
  deliveryId: string;
  entry: AckEntry;
}

/**
 * A redelivery (JetStream's delivery count past 1) first closes the message's earlier attempt when
 * its entry is still open (its node was cut mid-request, or died or stopped holding a lease): it is
 * written `expired` by compare-and-set, so a late callback for it is a 409, whatever the clocks of
 * the nodes say, rather than a `+ACK` on its ack subject that would settle this delivery while it
 * is open (and, under `ordering: partition`, let the next event out beside it). Of the callback and
 * the close, the one whose write comes first wins; a callback that won with `ack` or `reject` is
 * returned, to be completed rather than the event sent again, and so is a lease closed unanswered
 * (a failed attempt, possibly the last). Only redeliveries pay these reads.
 */
async function closeEarlier(ctx: EngineContext, deliveryId: string, standIn: () => AckEntry): Promise<Earlier | undefined> {
  for (let round = 0; round < SWAP_ROUNDS; round++) {
    const got = await ctx.ackMap.get(deliveryId);
    // Its node wrote the pointer but not (yet) the entry: a closed one takes the id, so its create fails.
    if (!got) {
      if (await ctx.ackMap.preempt(deliveryId, standIn())) return undefined;
      continue;
    }
    const { entry, revision } = got;
    if (entry.state === 'acked' || entry.state === 'rejected') return { kind: 'settled', deliveryId, entry };
    if (entry.state !== 'sending' && entry.state !== 'awaiting_ack') return undefined;
    if ((await ctx.ackMap.swap(deliveryId, { ...entry, state: 'expired' }, revision)) !== undefined) {
      // Its lease ran out uncalled (JetStream redelivered it): counted as on the local engine. An attempt cut while
      // `sending` (its node died mid-request) is not; the local engine sends such an attempt again uncounted too. Nor
      // is a lease still running whose nodes stopped renewing it (JetStream redelivered at ack_wait): the receiver
      // may still be at work on it, so it is sent again rather than dead-lettered under it (review).
      if (entry.state !== 'awaiting_ack' || (entry.leaseUntil ?? 0) > ctx.clock()) return undefined;
      ctx.observer?.outcome(entry.subscriptionId, 'lease_expired');
      return { kind: 'leaseRanOut', deliveryId, entry };
    }
  }
  throw new Error(`the earlier attempt ${deliveryId} kept changing; the message is left to be redelivered`);
}

/**
 * Does what the callback that settled the earlier attempt does (its node may have died before):
 * `ack` marks the position and acknowledges the message, `reject` dead-letters it (stored once:
 * the earlier delivery id is the dead letter's message id) and terminates it.
 */
async function completeEarlier(ctx: EngineContext, { deliveryId, entry }: Earlier): Promise<void> {
  ctx.log.info(
    { subscription: entry.subscriptionId, partition: entry.partition, offset: entry.offset, deliveryId, outcome: entry.state },
    'a redelivered event whose earlier attempt a callback settled: completed, not sent again',
  );
  const action: JsAction = entry.state === 'acked' ? { kind: 'ack' } : { kind: 'deadLetter', reason: 'receiver_rejected' };
  const last = { attempt: entry.attempt, lastStatus: entry.lastStatus, lastError: entry.lastError };
  await settleMessage(ctx, action, entry, last, deliveryId);
}

/**
 * An attempt whose lease ran out is fed to the attempt machine as on the local engine (with the retry
 * policy in force now): when that dead-letters it (it was the last), this delivery of the message stores
 * the dead letter and terminates the message instead of sending it. True when it did.
 */
async function deadIfLastLapsed(ctx: EngineContext, sub: SubscriptionView, target: AttemptTarget, lapsed: Earlier): Promise<boolean> {
  const state = stateOfEntry(lapsed.deliveryId, lapsed.entry);
  if (!state) return false;
  const now = ctx.clock();
  const policy = { ...lapsed.entry.policy, retry: sub.record().delivery.retry };
  const step = transition(state, { kind: 'leaseExpired', attemptId: lapsed.deliveryId }, { now, policy, random: ctx.random });
  const action = jsActionOf(step, now);
  if (action.kind !== 'deadLetter') return false;
  const last = { attempt: lapsed.entry.attempt, lastStatus: lapsed.entry.lastStatus, lastError: step.state.lastError };
  // Stored once whichever node does it: the lapsed attempt's id is the dead letter's message id.
  await settleMessage(ctx, action, target, last, lapsed.deliveryId);
  // `lease_expired` was counted as the lease was closed; the dead letter now.
  if (!sub.removed()) ctx.observer?.outcome(sub.id, 'dead_letter');
  return true;
}

/** Whether the subscription was deleted (here or through another node); when that cannot be read, not. */
async function deletedMeanwhile(sub: SubscriptionView): Promise<boolean> {
  return !(await sub.exists().catch(() => true));
}

async function send(
  ctx: EngineContext,
  sub: SubscriptionView,
  t: AttemptTarget,
  event: CloudEvent,
  a: { deliveryId: string; attempt: number; previousOffset: number | null },
  group: AbortGroup,
  /** Told when the request is built (its wall-clock time): what its duration is timed from, not the wait for a connection. */
  built: (at: number) => void,
): Promise<{ result: SendResult; sink: string }> {
  let sink = sub.record().sink;
  for (;;) {
    let moved = false;
    // Built (and signed) once a connection to the sink is free, so its timestamp is when it goes out,
    // with the record of then (a rotated secret, a new timeout); none once a pause or a close has come.
    const build = () => {
      const now = sub.record();
      if (now.state !== 'active' || sub.closing() || sub.held()) return undefined;
      // A PATCH moved the sink while it waited: this connection is to the old one; it goes to the new one.
      if (now.sink !== sink) {
        moved = true;
        return undefined;
      }
      const at = ctx.clock();
      built(at);
      const request = requestFor(now, at, ctx.ackUrlBase(), {
        partition: t.partition,
        offset: t.offset,
        seekGeneration: t.generation,
        previousOffset: a.previousOffset,
        attempt: a.attempt,
        deliveryId: a.deliveryId,
        redrive: t.redrive,
        event,
      });
      return { headers: request.headers, body: request.body, timeoutMs: now.delivery.timeoutMs };
    };
    const result = await ctx.sender.send(sink, build, sub.record().delivery.timeoutMs, group, sub.id);
    if (!moved) return { result, sink };
    sink = sub.record().sink;
  }
}

interface Decided {
  action: JsAction;
  state: AttemptState;
  outcome: ReturnType<typeof answerOutcome>;
  /** The step's effects, none when the answer was stale: its `observe` ones are counted once it is settled. */
  effects: readonly AttemptEffect[];
  /** The ack map's entry when the attempt now awaits a callback. */
  entry?: AckEntry;
}

/**
 * Feeds the answer to the attempt machine and, when a callback could have settled the attempt
 * first, settles it in the ack map by compare-and-set: losing to a callback makes the answer stale.
 */
async function decide(
  ctx: EngineContext,
  { deliveryId, key, count }: { deliveryId: string; key: string; count: number },
  entry: AckEntry,
  revision: number | undefined,
  input: AttemptInput,
  close: (earlier: Latest) => Promise<boolean>,
): Promise<Decided> {
  let current = entry;
  let rev = revision;
  for (let round = 0; round < SWAP_ROUNDS; round++) {
    const now = ctx.clock();
    const from = stateOfEntry(deliveryId, current);
    if (from === null) return { action: { kind: 'none' }, state: { ...current, deliveryId, phase: 'done' }, outcome: 'stale', effects: [] };
    const step = transition(from, input, { now, policy: current.policy, random: ctx.random });
    const action = jsActionOf(step, now);
    const outcome = answerOutcome(step.state, step.effects);
    const { effects } = step;
    const next: AckEntry = {
      ...current,
      state: action.kind === 'hold' ? 'awaiting_ack' : (settledOutcome(step) ?? 'failed'),
      leaseUntil: action.kind === 'hold' ? action.leaseUntil : null,
      lastStatus: step.state.lastStatus,
      lastError: step.state.lastError,
    };
    if (rev === undefined) {
      // Auto ack mode: only a 202 opens the attempt to callbacks.
      if (action.kind !== 'hold') return { action, state: step.state, outcome, effects, entry: next };
      // A redelivery claimed the message's pointer before it sent; attempt 1 does now, beside the entry.
      const [opened, claimed] = await Promise.all([
        ctx.ackMap.open(deliveryId, next),
        count > 1 ? ('claimed' as const) : ctx.ackMap.claim(key, count, deliveryId, undefined, close),
      ]);
      if (opened !== undefined && claimed === 'claimed') return { action, state: step.state, outcome, effects, entry: next };
      // Overtaken by a later delivery (a node that stalled): the 202 holds nothing; its callbacks are 409s.
      if (opened !== undefined) await expireQuietly(ctx, deliveryId, next, opened);
      break;
    }
    if ((await ctx.ackMap.swap(deliveryId, next, rev)) !== undefined) return { action, state: step.state, outcome, effects, entry: next };
    const now2 = await ctx.ackMap.get(deliveryId);
    if (!now2) break;
    current = now2.entry;
    rev = now2.revision;
  }
  return { action: { kind: 'none' }, state: { ...entry, deliveryId, phase: 'done' }, outcome: 'stale', effects: [] };
}
