import { AckPolicy, DeliverPolicy, nanos, type ConsumerConfig } from 'nats';
import type { SubscriptionRecord } from '../../subscriptions/record';

/**
 * Pure mapping from a subscription's delivery options to its JetStream consumers' settings.
 *
 * - `ack_wait` is the lease JetStream gives one attempt: long enough for the request (`timeoutMs`)
 *   and for a 202's acknowledgement (`ackDeadlineMs`; a 202 resets the timer with `+WPI`), plus a
 *   margin for the nak or ack to reach the server. A node that dies mid-attempt loses its lease
 *   after it, and another node gets the message.
 * - `max_deliver` is unlimited (-1): Herald itself dead-letters after `retry.maxAttempts`. A cap
 *   would make JetStream drop a message silently once reached, and a `PATCH` lowering
 *   `maxAttempts` below what an event waiting for its retry had already been delivered did exactly
 *   that: the event was never sent again nor dead-lettered (see `message-handler.ts` for the bound).
 * - `max_ack_pending` 1 with `ordering: partition`: one event in flight per partition, whichever
 *   node holds it; `maxInFlight` with `ordering: none`.
 * - Replicas are left out: a consumer then has its stream's.
 */

/** Added to the longer of `timeoutMs` and `ackDeadlineMs` for `ack_wait`. */
export const ACK_WAIT_MARGIN_MS = 1000;

/** Where a new consumer starts: every stored event, those stored at or after a time, or at a stream sequence. */
export type ConsumerStart = { kind: 'all' } | { kind: 'time'; ms: number } | { kind: 'seq'; seq: number };

type Options = Pick<SubscriptionRecord['delivery'], 'timeoutMs' | 'ackDeadlineMs' | 'ordering' | 'maxInFlight' | 'retry'>;

export function ackWaitMs(delivery: Pick<Options, 'timeoutMs' | 'ackDeadlineMs'>): number {
  return Math.max(delivery.timeoutMs, delivery.ackDeadlineMs) + ACK_WAIT_MARGIN_MS;
}

/** The settings of a consumer that can change after it is created (updated on every node's `update`). */
function leaseSettings(delivery: Options): Pick<ConsumerConfig, 'ack_wait' | 'max_deliver' | 'max_ack_pending'> {
  return {
    ack_wait: nanos(ackWaitMs(delivery)),
    max_deliver: -1,
    max_ack_pending: delivery.ordering === 'partition' ? 1 : delivery.maxInFlight,
  };
}

/** `startAt` of a new subscription: `earliest` is everything stored; `latest` what is stored from its creation on (the same on every node). */
export function startOf(record: Pick<SubscriptionRecord, 'startAt' | 'createdAt'>): ConsumerStart {
  return record.startAt === 'earliest' ? { kind: 'all' } : { kind: 'time', ms: record.createdAt };
}

/** The times nats-server can hold (Go's nanoseconds since 1970 in an int64), with a year to spare at either end. */
const SERVER_TIMES = { first: Date.UTC(1678, 0, 1), last: Date.UTC(2261, 0, 1) };

/**
 * `ms` within {@link SERVER_TIMES}: past them nats-server's arithmetic wraps (JetStream probe: a seek to
 * 2300 sent every event again, one to 1600 went to the heads). Every stored event lies between them,
 * so a time before is "from the first event" and one after is "from the head", as a start at it was.
 */
const serverTime = (ms: number): number => Math.min(Math.max(ms, SERVER_TIMES.first), SERVER_TIMES.last);

function deliverPolicy(start: ConsumerStart): Pick<ConsumerConfig, 'deliver_policy' | 'opt_start_seq' | 'opt_start_time'> {
  switch (start.kind) {
    case 'all':
      return { deliver_policy: DeliverPolicy.All };
    case 'time':
      return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(serverTime(start.ms)).toISOString() };
    case 'seq':
      return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, start.seq) };
  }
}

/** A durable pull consumer of a partition stream (its only subject, so no filter). */
export function partitionConsumerConfig(name: string, delivery: Options, start: ConsumerStart): Partial<ConsumerConfig> {
  return {
    durable_name: name,
    ack_policy: AckPolicy.Explicit,
    ...deliverPolicy(start),
    ...leaseSettings(delivery),
  };
}

/** The subscription's redelivery consumer: its subject of the redrive work queue, from the start. */
export function redriveConsumerConfig(name: string, subject: string, delivery: Options): Partial<ConsumerConfig> {
  return {
    durable_name: name,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    filter_subject: subject,
    ...leaseSettings(delivery),
    // Redeliveries run in parallel (they carry no order): up to maxInFlight.
    max_ack_pending: delivery.maxInFlight,
  };
}

/**
 * Whether an existing consumer's lease settings differ from those wanted (then it is updated). A `backoff`
 * (Herald's consumers have none) counts: JetStream then uses its first value as `ack_wait`, and refuses an
 * unlimited `max_deliver` beside it.
 */
export function needsUpdate(existing: Partial<ConsumerConfig>, wanted: Partial<ConsumerConfig>): boolean {
  return (
    (existing.backoff?.length ?? 0) > 0 ||
    existing.ack_wait !== wanted.ack_wait ||
    existing.max_deliver !== wanted.max_deliver ||
    existing.max_ack_pending !== wanted.max_ack_pending
  );
}
