import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  millis,
  nanos,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type StreamConfig,
  type StreamInfo,
} from 'nats';
import type { Logger } from 'pino';
import { StartupError } from '../errors';
import { withSafeUpdate } from './kv-update';
import { LAYOUT_KEY, bucketStream, madeStreams, type MadeStreams } from './made-streams';
import type { JetStreamNames } from './names';
import { isStreamNotFound, isTransientClusterError, natsReason } from './nats-errors';

/** JetStream's own publish de-duplication window (`Nats-Msg-Id`): short, it lives in server memory. */
export const DUPLICATE_WINDOW_MS = 120_000;

export interface ProvisionOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  names: JetStreamNames;
  partitions: number;
  replicas: number;
  idempotencyWindowMs: number;
  log: Logger;
  /** `HERALD_RECOVERY=recreate-missing`: a bucket made before and deleted since is made again, empty. */
  recreateMissing: boolean;
}

/** What the streams were created with, kept in `<prefix>_meta` under `layout`. */
interface Layout {
  partitions: number;
  replicas: number;
  createdAt: string;
  /** Every partition stream was created (absent in layouts of earlier versions): from then on a missing one was deleted. */
  streamsCreated?: boolean;
  /** The streams and buckets (`KV_<bucket>`) made under this prefix (absent in layouts of earlier versions). */
  created?: string[];
}

/** One line for a start-up failure of a cluster call: what was being done and why it failed. */
export function failed(what: string, err: unknown): StartupError {
  return new StartupError(`cannot ${what} on the JetStream cluster: ${natsReason(err)} (HERALD_NATS_SERVERS, HERALD_NATS_REPLICAS)`, {
    retryable: isTransientClusterError(err),
  });
}

export async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (isStreamNotFound(err)) return undefined;
    throw failed(`read stream ${name}`, err);
  }
}

/** Refuses a stream that exists with settings Herald's meaning depends on other than configured. */
function checkExisting(info: StreamInfo, want: Partial<StreamConfig>): void {
  const name = info.config.name;
  if (info.config.num_replicas !== want.num_replicas)
    throw new StartupError(
      `JetStream stream ${name} has ${info.config.num_replicas} replicas, but HERALD_NATS_REPLICAS=${want.num_replicas}; start with the value it was created with, or use another HERALD_NATS_PREFIX`,
    );
  if (want.subjects && JSON.stringify(info.config.subjects) !== JSON.stringify(want.subjects))
    throw new StartupError(
      `JetStream stream ${name} holds subjects ${JSON.stringify(info.config.subjects)}, not ${JSON.stringify(want.subjects)}: it is not Herald's; use another HERALD_NATS_PREFIX`,
    );
}

/** Creates the stream, or checks the one that exists (idempotent: several nodes may start at once). */
async function ensureStream(
  jsm: JetStreamManager,
  config: Partial<StreamConfig> & { name: string },
  log: Logger,
  deletedIfMissing: (() => StartupError) | undefined,
): Promise<void> {
  const existing = await streamInfo(jsm, config.name);
  if (existing) return checkExisting(existing, config);
  if (deletedIfMissing) throw deletedIfMissing();
  try {
    await jsm.streams.add(config);
    log.info({ stream: config.name, replicas: config.num_replicas }, 'JetStream stream created');
  } catch (err) {
    // Another node created it between our look and our add: check what it made.
    const raced = await streamInfo(jsm, config.name);
    if (raced) return checkExisting(raced, config);
    throw failed(`create stream ${config.name}`, err);
  }
}

/** The partition streams: one subject each, nothing deleted from the middle, reads from any replica. */
export function partitionStreamConfig(
  names: JetStreamNames,
  partition: number,
  replicas: number,
): Partial<StreamConfig> & { name: string } {
  return {
    name: names.stream(partition),
    subjects: [names.subject(partition)],
    num_replicas: replicas,
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    // Offsets are sequence − 1, dense: a single message may never be deleted (purge and limits, later
    // retention, remove from the front only, which keeps them dense from the first offset).
    deny_delete: true,
    allow_direct: true,
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
  };
}

/** The layout record; undefined when absent or deleted (`get` returns a `kv del`'s marker). */
async function readLayout(kv: KV, opts: ProvisionOptions): Promise<Layout | undefined> {
  const entry = await kv.get(LAYOUT_KEY).catch((e: unknown) => {
    throw failed(`read ${opts.names.metaBucket}`, e);
  });
  return entry && entry.operation === 'PUT' ? entry.json<Layout>() : undefined;
}

/** A stream of this deployment that exists, if any: the first start makes the layout record before any of them. */
async function anyOfThisDeployment(opts: ProvisionOptions): Promise<string | undefined> {
  const { names } = opts;
  for (const stream of [names.stream(0), bucketStream(names.subscriptionsBucket), bucketStream(names.idempotencyBucket)]) {
    if (await streamInfo(opts.jsm, stream)) return stream;
  }
  return undefined;
}

/**
 * Compares the layout record with the configuration, creating it on a fresh cluster (first writer wins).
 * No record while streams of this deployment exist means `<prefix>_meta` or its record was deleted, and
 * with it the list of what Herald made: refused unless `recreate-missing`, which writes it again with the
 * partition streams marked made (a missing one is still refused).
 */
async function checkLayout(kv: KV, opts: ProvisionOptions): Promise<Layout> {
  let found = await readLayout(kv, opts);
  let lost = false;
  if (!found) {
    const existing = await anyOfThisDeployment(opts);
    // A node starting at the same time may have made the record, then that stream, since we looked.
    if (existing) found = await readLayout(kv, opts);
    if (existing && !found) {
      if (!opts.recreateMissing)
        throw new StartupError(
          `the layout record in ${opts.names.metaBucket} is missing, but ${existing} of HERALD_NATS_PREFIX=${opts.names.prefix} exists: ` +
            'the record was deleted, and with it the list of the streams and buckets Herald made, so what is missing now cannot be told. ' +
            'Restore it, or start with HERALD_RECOVERY=recreate-missing to write it again (anything else missing is then made again, empty)',
        );
      opts.log.warn(
        { bucket: opts.names.metaBucket },
        'JetStream: the layout record was missing; written again (HERALD_RECOVERY=recreate-missing)',
      );
      lost = true;
    }
  }
  if (!found) {
    const mine: Layout = {
      partitions: opts.partitions,
      replicas: opts.replicas,
      createdAt: new Date().toISOString(),
      ...(lost ? { streamsCreated: true } : {}),
    };
    try {
      await kv.create(LAYOUT_KEY, JSON.stringify(mine));
      return mine;
    } catch (err) {
      found = await readLayout(kv, opts);
      if (!found) throw failed(`record the layout in ${opts.names.metaBucket}`, err);
    }
  }
  const layout = found;
  if (layout.partitions !== opts.partitions)
    throw new StartupError(
      `the JetStream streams under HERALD_NATS_PREFIX=${opts.names.prefix} were created with ${layout.partitions} partitions, but HERALD_PARTITIONS=${opts.partitions}`,
    );
  if (layout.replicas !== opts.replicas)
    throw new StartupError(
      `the JetStream streams under HERALD_NATS_PREFIX=${opts.names.prefix} were created with ${layout.replicas} replicas, but HERALD_NATS_REPLICAS=${opts.replicas}`,
    );
  return layout;
}

/** A partition stream gone although it was made: its events are lost, and making it again would hand out their offsets again. */
const deletedStream = (opts: ProvisionOptions, stream: string) => () =>
  new StartupError(
    `the JetStream stream ${stream} is missing, but the streams under HERALD_NATS_PREFIX=${opts.names.prefix} were created before: ` +
      'its events are gone, and creating it again would give their offsets to new events. Restore the stream, or start a new ' +
      'deployment (another HERALD_NATS_PREFIX, or delete every stream and bucket of this one)',
  );

async function openBucket(
  opts: ProvisionOptions,
  bucket: string,
  ttlMs: number | undefined,
  made?: { streams: MadeStreams; holds: string },
): Promise<KV> {
  const stream = bucketStream(bucket);
  const existing = await streamInfo(opts.jsm, stream);
  if (existing) checkExisting(existing, { num_replicas: opts.replicas });
  made?.streams.checkPresent(stream, existing !== undefined, made.holds);
  try {
    // allow_direct off: reads go to the stream leader, so a record written through one node is seen
    // at once through every other (a follower that lags could answer "absent").
    const opened = await opts.js.views.kv(bucket, {
      replicas: opts.replicas,
      history: 1,
      storage: StorageType.File,
      allow_direct: false,
      ...(ttlMs ? { ttl: ttlMs } : {}),
    });
    const kept = existing ? millis(existing.config.max_age) : 0;
    // Longer only: a node started with a shorter window (another node's settings) must not let every
    // node store a resend twice once its record expires early.
    if (existing && ttlMs && kept < ttlMs) {
      await opts.jsm.streams.update(stream, { ...existing.config, max_age: nanos(ttlMs) });
      opts.log.info({ bucket, ttlMs }, 'idempotency bucket TTL raised to HERALD_IDEMPOTENCY_WINDOW');
    } else if (existing && ttlMs && kept > ttlMs) {
      opts.log.warn(
        { bucket, clusterWindowMs: kept, configuredMs: ttlMs },
        `the cluster keeps idempotency records longer than this node's HERALD_IDEMPOTENCY_WINDOW; the longer window stays (shorten it on the cluster: the max_age of stream ${stream})`,
      );
    }
    return withSafeUpdate(opened, opts.js, bucket);
  } catch (err) {
    if (err instanceof StartupError) throw err;
    throw failed(`open the KV bucket ${bucket}`, err);
  }
}

/**
 * Creates (or checks) everything Herald keeps on the cluster, at start-up, idempotently: the layout
 * record, one stream per partition, the idempotency bucket with a TTL of HERALD_IDEMPOTENCY_WINDOW,
 * the subscriptions bucket (no TTL: a subscription lives until it is deleted). What it made is listed
 * in the layout, so that one deleted later is refused rather than made again empty (`made-streams.ts`).
 * @throws StartupError when the cluster holds a layout or stream other than configured, misses one made before, or refuses to create one
 */
export async function provision(opts: ProvisionOptions): Promise<{ idempotency: KV; subscriptions: KV; made: MadeStreams }> {
  const meta = await openBucket(opts, opts.names.metaBucket, undefined);
  const layout = await checkLayout(meta, opts);
  const made = madeStreams(meta, {
    prefix: opts.names.prefix,
    metaBucket: opts.names.metaBucket,
    created: layout.created,
    recreateMissing: opts.recreateMissing,
    onRecreate: (stream) =>
      opts.log.warn({ stream }, 'JetStream: made again, empty, a stream deleted since Herald made it (HERALD_RECOVERY=recreate-missing)'),
  });
  const partitionStreams: string[] = [];
  for (let p = 0; p < opts.partitions; p++) {
    const config = partitionStreamConfig(opts.names, p, opts.replicas);
    await ensureStream(opts.jsm, config, opts.log, layout.streamsCreated ? deletedStream(opts, config.name) : undefined);
    partitionStreams.push(config.name);
  }
  await made.record(partitionStreams, { streamsCreated: true });
  const idempotency = await openBucket(opts, opts.names.idempotencyBucket, opts.idempotencyWindowMs, {
    streams: made,
    holds: 'the idempotency records (a resend within HERALD_IDEMPOTENCY_WINDOW would be stored twice)',
  });
  const subscriptions = await openBucket(opts, opts.names.subscriptionsBucket, undefined, {
    streams: made,
    holds: 'every subscription',
  });
  await made.record([bucketStream(opts.names.idempotencyBucket), bucketStream(opts.names.subscriptionsBucket)]);
  return { idempotency, subscriptions, made };
}
