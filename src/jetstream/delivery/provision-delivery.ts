import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type KV, type StreamConfig } from 'nats';
import { withSafeUpdate } from '../kv-update';
import type { DeliveryNames } from './names';

/** TTL of the ack map: longer than the longest lease (`ackDeadlineMs` ≤ 1 day, extended by ≤ 12 h), so a repeated callback is recognised. */
export const ACK_MAP_TTL_MS = 2 * 86_400_000;
/** Newest attempts kept per subscription (as on the local engine). */
export const ATTEMPTS_PER_SUBSCRIPTION = 1000;

export interface DeliveryBuckets {
  acks: KV;
  generations: KV;
  positions: KV;
}

const isAlreadyInUse = (err: unknown) => /already in use|already exists/i.test((err as Error)?.message ?? '');

/** Creates a stream unless it exists (several nodes start at once: a lost race is fine). */
async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(config.name);
    return;
  } catch {
    // absent (or unreadable: the add below says which)
  }
  try {
    await jsm.streams.add(config);
  } catch (err) {
    if (!isAlreadyInUse(err)) throw err;
  }
}

/**
 * The streams and buckets of delivery, created idempotently by every node at start-up, with the
 * replicas of the event streams. Dead letters and attempts allow direct gets (pages read them one
 * message at a time by subject); the redrive stream is a work queue (a redelivered event leaves it
 * once its attempts end).
 */
export async function provisionDelivery(
  js: JetStreamClient,
  jsm: JetStreamManager,
  names: DeliveryNames,
  prefix: string,
  replicas: number,
): Promise<DeliveryBuckets> {
  const common = { num_replicas: replicas, storage: StorageType.File, discard: DiscardPolicy.Old, allow_direct: true };
  await ensureStream(jsm, { ...common, name: names.deadStream, subjects: [`${prefix}.dead.*`], retention: RetentionPolicy.Limits });
  await ensureStream(jsm, {
    ...common,
    name: names.attemptsStream,
    subjects: [`${prefix}.attempts.*`],
    retention: RetentionPolicy.Limits,
    max_msgs_per_subject: ATTEMPTS_PER_SUBSCRIPTION,
  });
  await ensureStream(jsm, {
    ...common,
    name: names.redriveStream,
    subjects: [`${prefix}.redrive.*`],
    retention: RetentionPolicy.Workqueue,
  });
  // Read from the bucket's leader (no direct gets), so a write through one node is seen at once through every other.
  const kv = async (bucket: string, ttl?: number) =>
    withSafeUpdate(
      await js.views.kv(bucket, { replicas, history: 1, storage: StorageType.File, allow_direct: false, ...(ttl ? { ttl } : {}) }),
      js,
      bucket,
    );
  return {
    acks: await kv(names.ackBucket, ACK_MAP_TTL_MS),
    generations: await kv(names.generationBucket),
    positions: await kv(names.positionBucket),
  };
}
