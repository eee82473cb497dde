import { createHash } from 'node:crypto';

/**
 * Every name the JetStream delivery engine uses on the cluster, from `HERALD_NATS_PREFIX`. A
 * subscription id becomes a token valid in consumer names, subjects and KV keys (letters, digits,
 * `_`, `-`): Herald's ids (UUIDs) are used as they are; anything else is replaced by a hash.
 */
export interface DeliveryNames {
  /** The durable pull consumer of one subscription on one partition stream, for one seek generation. */
  consumer(subscriptionId: string, generation: number): string;
  /** The same from the subscription's token (its generation key). */
  consumerOfToken(token: string, generation: number): string;
  /** The token and generation a partition consumer's name holds, or undefined for any other name. */
  parseConsumer(name: string): { token: string; generation: number } | undefined;
  /** Dead letters: one stream, one subject per subscription (the row id is the stream sequence). */
  deadStream: string;
  deadSubject(subscriptionId: string): string;
  /** The attempt log: one stream, one subject per subscription, the newest 1,000 kept per subject. */
  attemptsStream: string;
  attemptsSubject(subscriptionId: string): string;
  /** Redelivered dead letters waiting to be sent again: a work queue, one subject and one consumer per subscription. */
  redriveStream: string;
  redriveSubject(subscriptionId: string): string;
  redriveConsumer(subscriptionId: string): string;
  /** KV: delivery id → what settles it (ack reply subject, subscription, partition, offset, attempt). */
  ackBucket: string;
  /** KV: subscription → seek generation of each partition (watched by every node). */
  generationBucket: string;
  generationKey(subscriptionId: string): string;
  /** KV: (subscription, partition, generation) → last matched offset (`herald-previous-offset`). */
  positionBucket: string;
  positionKey(subscriptionId: string, partition: number, generation: number): string;
}

const SAFE = /^[A-Za-z0-9_-]{1,64}$/;

/** A subscription id as a name token: unchanged when already safe, else a hash of it. */
export function idToken(subscriptionId: string): string {
  return SAFE.test(subscriptionId) ? subscriptionId : `h${createHash('sha256').update(subscriptionId).digest('hex').slice(0, 32)}`;
}

export function deliveryNames(prefix: string): DeliveryNames {
  const consumerOfToken = (token: string, generation: number) => `${prefix}_d_${token}_g${generation}`;
  const lead = `${prefix}_d_`;
  return {
    consumer: (id, generation) => consumerOfToken(idToken(id), generation),
    consumerOfToken,
    parseConsumer(name) {
      if (!name.startsWith(lead)) return undefined;
      const m = /^([A-Za-z0-9_-]{1,64})_g(0|[1-9]\d{0,8})$/.exec(name.slice(lead.length));
      return m ? { token: m[1]!, generation: Number(m[2]) } : undefined;
    },
    deadStream: `${prefix}_dead`,
    deadSubject: (id) => `${prefix}.dead.${idToken(id)}`,
    attemptsStream: `${prefix}_attempts`,
    attemptsSubject: (id) => `${prefix}.attempts.${idToken(id)}`,
    redriveStream: `${prefix}_redrive`,
    redriveSubject: (id) => `${prefix}.redrive.${idToken(id)}`,
    redriveConsumer: (id) => `${prefix}_rd_${idToken(id)}`,
    ackBucket: `${prefix}_acks`,
    generationBucket: `${prefix}_dgen`,
    generationKey: (id) => idToken(id),
    positionBucket: `${prefix}_dpos`,
    positionKey: (id, partition, generation) => `${idToken(id)}.${partition}.${generation}`,
  };
}
