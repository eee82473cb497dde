import type { Subscription } from 'nats';
import type { AttemptTarget, EngineContext } from './context';
import type { LocalSubscription } from './local-subscription';
import { isNotFound } from '../nats-errors';
import { storeDeadLetter } from './settle';

/** What nats-server publishes when a consumer gives up on a message at its `max_deliver`. */
const ADVISORIES = '$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>';

/** This node's subscription a partition consumer's name belongs to, with the consumer's seek generation. */
export type FindConsumer = (consumer: string) => { entry: LocalSubscription; generation: number } | undefined;
/** This node's subscription a redrive consumer's name belongs to. */
export type FindRedriveConsumer = (consumer: string) => LocalSubscription | undefined;

interface Advisory {
  stream?: unknown;
  consumer?: unknown;
  stream_seq?: unknown;
  deliveries?: unknown;
}

/**
 * Herald's consumers have no `max_deliver` (it bounds attempts itself), so this advisory means one was
 * changed behind Herald (JetStream probe: `nats consumer edit … --max-deliver 1` made a failing event vanish:
 * never retried, never dead-lettered, no word logged). The event is dead-lettered (`max_attempts`, once
 * across nodes: every node hears the advisory) and the consumer's settings are set back at once. A
 * redelivery given up on is dead-lettered again the same way (its queue entry, which JetStream never
 * acks, is read for the event's partition and offset, then removed), and the redrive consumer set back.
 */
export function watchMaxDeliveries(
  ctx: EngineContext,
  partitions: number,
  find: FindConsumer,
  findRedrive: FindRedriveConsumer,
): Subscription {
  const partitionOf = new Map(Array.from({ length: partitions }, (_, p) => [ctx.events.stream(p), p] as const));

  async function handle(data: Uint8Array): Promise<void> {
    let a: Advisory;
    try {
      a = JSON.parse(Buffer.from(data).toString('utf8')) as Advisory;
    } catch {
      return;
    }
    if (typeof a.stream !== 'string' || typeof a.consumer !== 'string' || !Number.isSafeInteger(a.stream_seq)) return;
    const seq = a.stream_seq as number;
    const deliveries = Number.isSafeInteger(a.deliveries) ? (a.deliveries as number) : 0;
    if (a.stream === ctx.names.redriveStream) return redriveDropped(a.consumer, seq, deliveries);
    const partition = partitionOf.get(a.stream);
    const found = partition === undefined ? undefined : find(a.consumer);
    if (partition === undefined || !found) return; // another prefix's, or a subscription this node does not run
    found.entry.checkLeasesNow();
    if ((found.entry.generations()[partition] ?? 0) !== found.generation) return; // a seek has moved past that consumer
    const target: AttemptTarget = {
      reply: '',
      subscriptionId: found.entry.id,
      partition,
      offset: seq - 1, // offset o is stream sequence o + 1
      generation: found.generation,
      redrive: false,
    };
    ctx.log.error(
      { subscription: target.subscriptionId, partition, offset: target.offset, consumer: a.consumer, deliveries },
      "JetStream stopped delivering an event at its consumer's max_deliver, changed outside Herald: dead-lettered (max_attempts)",
    );
    await deadLetter(target, 'delivering', a.consumer, seq, deliveries);
  }

  /** Stores the dead letter once across nodes (its message id is the same on every node that heard the advisory). */
  function deadLetter(target: AttemptTarget, what: 'delivering' | 'redelivering', consumer: string, seq: number, deliveries: number) {
    const lastError = `JetStream stopped ${what} it after ${deliveries} deliveries: its consumer's max_deliver was changed outside Herald`;
    return storeDeadLetter(
      ctx,
      target,
      'max_attempts',
      { attempt: deliveries, lastStatus: null, lastError },
      `maxdeliver-${consumer}-${seq}`,
    );
  }

  /**
   * Was: an error line only, and the dead letter was gone from the API (taken off when queued), its event
   * sent to nobody (JetStream probe: 4 redelivered dead letters vanished, the redrive consumer stayed at
   * max_deliver 1 until the periodic check).
   */
  async function redriveDropped(consumer: string, seq: number, deliveries: number): Promise<void> {
    const entry = findRedrive(consumer);
    if (!entry) return; // a subscription this node does not run (deleted)
    entry.checkLeasesNow();
    let queued: { partition?: unknown; offset?: unknown; generation?: unknown };
    try {
      const stored = await ctx.jsm.streams.getMessage(ctx.names.redriveStream, { seq });
      queued = JSON.parse(Buffer.from(stored.data).toString('utf8')) as typeof queued;
    } catch (err) {
      if (isNotFound(err)) return; // dead-lettered again by another node already
      throw err;
    }
    const { partition, offset } = queued;
    if (!Number.isSafeInteger(partition) || !Number.isSafeInteger(offset)) return;
    const p = partition as number;
    const target: AttemptTarget = {
      reply: '',
      subscriptionId: entry.id,
      partition: p,
      offset: offset as number,
      generation: Number.isSafeInteger(queued.generation) ? (queued.generation as number) : (entry.generations()[p] ?? 0),
      redrive: true,
    };
    ctx.log.error(
      { subscription: entry.id, partition: p, offset: target.offset, consumer, streamSequence: seq, deliveries },
      "JetStream stopped redelivering a dead letter at its consumer's max_deliver, changed outside Herald: dead-lettered again (max_attempts)",
    );
    await deadLetter(target, 'redelivering', consumer, seq, deliveries);
    // JetStream will not send it again, nor ack it: the work queue would keep it for ever.
    await ctx.jsm.streams.deleteMessage(ctx.names.redriveStream, seq).catch(() => undefined);
  }

  return ctx.nc.subscribe(ADVISORIES, {
    callback: (err, msg) => {
      if (err) return;
      handle(msg.data).catch((e: unknown) =>
        ctx.log.error({ err: e, subject: msg.subject }, 'could not dead-letter an event JetStream stopped delivering at max_deliver'),
      );
    },
  });
}
