import { createHash } from 'node:crypto';

/**
 * Every name Herald uses on the cluster, built from `HERALD_NATS_PREFIX` (letters, digits, `_`, `-`):
 *
 * - one stream per partition, `<prefix>_p<n>`, holding the subject `<prefix>.p.<n>` and nothing else,
 *   so that an event's offset is its stream sequence − 1 (dense from 0: nothing else is published
 *   there, and the streams deny deleting single messages);
 * - the idempotency bucket `<prefix>_idem` (KV): source+id → claimed partition, then its offset;
 * - the layout bucket `<prefix>_meta` (KV): key `layout`, the partition count and replicas the streams
 *   were created with, so that a node started with other values refuses to start;
 * - the subscriptions bucket `<prefix>_subs` (KV): subscription id → its record (JSON), watched by
 *   every node.
 */
export interface JetStreamNames {
  prefix: string;
  stream(partition: number): string;
  subject(partition: number): string;
  idempotencyBucket: string;
  /** The stream behind the idempotency bucket (JetStream names a KV bucket's stream `KV_<bucket>`). */
  idempotencyStream: string;
  metaBucket: string;
  subscriptionsBucket: string;
}

export function jetStreamNames(prefix: string): JetStreamNames {
  return {
    prefix,
    stream: (partition) => `${prefix}_p${partition}`,
    subject: (partition) => `${prefix}.p.${partition}`,
    idempotencyBucket: `${prefix}_idem`,
    idempotencyStream: `KV_${prefix}_idem`,
    metaBucket: `${prefix}_meta`,
    subscriptionsBucket: `${prefix}_subs`,
  };
}

/**
 * The idempotency key of source+id: a SHA-256 in hex, because KV keys and `Nats-Msg-Id` take a
 * restricted alphabet and bounded length while `source` and `id` are any non-empty strings.
 */
export function idempotencyKey(source: string, id: string): string {
  return createHash('sha256').update(source).update('\u0000').update(id).digest('hex');
}
