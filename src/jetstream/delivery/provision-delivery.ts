import { DiscardPolicy, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager, type KV, type StreamConfig } from 'nats';
import { withSafeUpdate } from '../kv-update';
import { bucketStream, type MadeStreams } from '../made-streams';
import { streamInfo } from '../provision';
import type { DeliveryNames } from './names';

/** TTL of the ack map: longer than the longest lease (`ackDeadlineMs` ≤ 1 day, extended by ≤ 12 h), so a repeated callback is recognised. */
const ACK_MAP_TTL_MS = 2 * 86_400_000;
/** Newest attempts kept per subscription (as on the local engine). */
export const ATTEMPTS_PER_SUBSCRIPTION = 1000;

export interface DeliveryBuckets {
  acks: KV;
  generations: KV;
  positions: KV;
  /** The generations bucket was made before and is made again now, empty (HERALD_RECOVERY=recreate-missing). */
  generationsRemade: boolean;
}

const isAlreadyInUse = (err: unknown) => /already in use|already exists/i.test((err as Error)?.message ?? '');

/** Creates a stream unless it exists (several nodes start at once: a lost race is fine); one made before and deleted is refused. */
async function ensureStream(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
  made: MadeStreams | undefined,
  holds: string,
): Promise<void> {
  const exists = (await streamInfo(jsm, config.name)) !== undefined;
  made?.checkPresent(config.name, exists, holds);
  if (exists) return;
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
 * once its attempts end). With `made` (the layout's list), one made before and deleted since is
 * refused rather than made again empty, and what is made is added to the list.
 */
export async function provisionDelivery(
  js: JetStreamClient,
  jsm: JetStreamManager,
  names: DeliveryNames,
  prefix: string,
  replicas: number,
  made?: MadeStreams,
): Promise<DeliveryBuckets> {
  const common = { num_replicas: replicas, storage: StorageType.File, discard: DiscardPolicy.Old, allow_direct: true };
  const stream = (config: Partial<StreamConfig> & { name: string }, holds: string) =>
    ensureStream(jsm, { ...common, ...config }, made, holds);
  await stream({ name: names.deadStream, subjects: [`${prefix}.dead.*`], retention: RetentionPolicy.Limits }, 'every dead letter');
  await stream(
    {
      name: names.attemptsStream,
      subjects: [`${prefix}.attempts.*`],
      retention: RetentionPolicy.Limits,
      max_msgs_per_subject: ATTEMPTS_PER_SUBSCRIPTION,
    },
    'the attempt log',
  );
  await stream(
    { name: names.redriveStream, subjects: [`${prefix}.redrive.*`], retention: RetentionPolicy.Workqueue },
    'the redeliveries of dead letters not yet made',
  );
  // Read from the bucket's leader (no direct gets), so a write through one node is seen at once through every other.
  const remade = new Set<string>();
  const kv = async (bucket: string, holds: string, ttl?: number) => {
    if (made?.checkPresent(bucketStream(bucket), (await streamInfo(jsm, bucketStream(bucket))) !== undefined, holds)) remade.add(bucket);
    return withSafeUpdate(
      await js.views.kv(bucket, { replicas, history: 1, storage: StorageType.File, allow_direct: false, ...(ttl ? { ttl } : {}) }),
      js,
      bucket,
    );
  };
  const buckets = {
    acks: await kv(names.ackBucket, 'the open deliveries awaiting a callback', ACK_MAP_TTL_MS),
    generations: await kv(
      names.generationBucket,
      "every subscription's seek generations (made again, each is recovered from the consumers that exist; a seek's target is forgotten)",
    ),
    positions: await kv(
      names.positionBucket,
      "every subscription's last matched offsets (made again, the next event's herald-previous-offset is left out once per partition, and a consumer deleted behind Herald is made again from its generation's start)",
    ),
    generationsRemade: remade.has(names.generationBucket),
  };
  await made?.record([
    names.deadStream,
    names.attemptsStream,
    names.redriveStream,
    ...[names.ackBucket, names.generationBucket, names.positionBucket].map(bucketStream),
  ]);
  return buckets;
}
