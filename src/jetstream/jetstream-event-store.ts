import type { KV, NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { NatsConfig } from '../config';
import { AppError } from '../errors';
import type { CloudEvent } from '../cloudevents/event';
import type { AppendResult, EventLog } from '../wal/event-store';
import { createAppender, type Outcome } from './appender';
import { createClusterMonitor } from './cluster-monitor';
import { connectToCluster } from './connection';
import { jetStreamNames } from './names';
import { RETRY_AFTER_SECONDS, STORE_FULL_RETRY_AFTER_SECONDS } from './nats-errors';
import type { MadeStreams } from './made-streams';
import { provision } from './provision';
import { createReads } from './reads';

/** Timeout of JetStream API calls (stream info, message gets, KV), and of the readiness probe's. */
const API_TIMEOUT_MS = 5000;
const PROBE_TIMEOUT_MS = 2000;
/** How long `close` waits for the connection to drain before it closes it. */
const CLOSE_TIMEOUT_MS = 5000;

export interface JetStreamEventStoreOptions {
  nats: Readonly<NatsConfig>;
  partitions: number;
  idempotencyWindowMs: number;
  log: Logger;
  /** `HERALD_RECOVERY=recreate-missing`: make again, empty, a bucket deleted since Herald made it. */
  recreateMissing?: boolean;
}

export type JetStreamEventStore = EventLog & {
  /** Heads and stored bytes last seen, without waiting on the cluster (metrics). */
  snapshot(): { heads: readonly number[]; bytes: number };
  /** The connection (tests). */
  connection: NatsConnection;
  /**
   * The subscriptions bucket `<prefix>_subs`, provisioned with the streams (one place creates and
   * checks everything on the cluster); the gateway gives it to the subscriptions store.
   */
  subscriptionsBucket: KV;
  /** The layout's list of what Herald made on the cluster (delivery checks and records its own streams there). */
  made: MadeStreams;
};

/**
 * The JetStream engine: events in one stream per partition on a NATS JetStream cluster,
 * idempotency records in a KV bucket (see `appender.ts` for the steps of an append and what a crash
 * between them can cause), reads from the cluster (`reads.ts`), readiness from a probe of every
 * stream (`cluster-monitor.ts`). Any number of nodes share it: nothing of it lives on a node.
 *
 * What differs from the local engine: reads are asynchronous; `onAppend` fires for appends made
 * through this node only; `onRetire` never fires (no retention yet); a batch is not all or nothing;
 * durability is replication (a majority acknowledged it), not fsync.
 * @throws StartupError when the cluster cannot be reached or holds another layout (see `provision`)
 */
export async function openJetStreamEventStore(opts: JetStreamEventStoreOptions): Promise<JetStreamEventStore> {
  const { log, partitions } = opts;
  const names = jetStreamNames(opts.nats.prefix);
  const nc = await connectToCluster(opts.nats, log);
  try {
    const js = nc.jetstream({ timeout: API_TIMEOUT_MS });
    const jsm = await nc.jetstreamManager({ timeout: API_TIMEOUT_MS, checkAPI: false });
    const { idempotency, subscriptions, made } = await provision({
      js,
      jsm,
      names,
      partitions,
      replicas: opts.nats.replicas,
      idempotencyWindowMs: opts.idempotencyWindowMs,
      log,
      recreateMissing: opts.recreateMissing ?? false,
    });
    const probeJsm = await nc.jetstreamManager({ timeout: PROBE_TIMEOUT_MS, checkAPI: false });
    const monitor = createClusterMonitor({ jsm: probeJsm, names, partitions, replicas: opts.nats.replicas, log });
    const listeners = new Set<(partitions: ReadonlySet<number>) => void>();
    const settled = (outcomes: Outcome[]) => {
      const grown = new Set<number>();
      for (const o of outcomes) {
        monitor.appended(o.partition, o.offset);
        if (!o.duplicate) grown.add(o.partition);
      }
      if (grown.size > 0) for (const listener of listeners) listener(grown);
    };
    const appender = createAppender({
      js,
      kv: idempotency,
      names,
      partitions,
      maxPayload: () => nc.info?.max_payload,
      onSettled: settled,
      knownGoneBelow: (p) => monitor.knownGoneBelow(p),
      knownHead: (p) => monitor.knownHead(p),
      wentBack: (p, known, seen) => monitor.wentBack(p, known, seen),
      refused: (stream, code, reason) => monitor.refused(stream, code, reason),
      took: (stream) => monitor.took(stream),
      fenced: () => monitor.fenced(),
    });
    const reads = createReads({ jsm, kv: idempotency, names, monitor, log });
    watchConnection(nc, monitor);
    await monitor.start();

    let closed = false;
    return {
      partitions,
      connection: nc,
      subscriptionsBucket: subscriptions,
      made,
      async append(events: CloudEvent[]): Promise<AppendResult[]> {
        if (events.length === 0) return [];
        const refusal = closed ? 'closing' : monitor.refusal();
        // Fail fast while the probe says the cluster cannot take writes, instead of holding every
        // request for a publish timeout; the probe looks again every second. (A stream out of storage
        // is still tried: its own answer says so, and tells when it takes writes again.)
        if (refusal !== undefined)
          throw new AppError('unavailable', `the JetStream cluster cannot take writes right now (${refusal}); retry later`, {
            // A fence lasts until a restart: not a retry every second (re-probe: 217 of 220 refusals said 1 s).
            retryAfter: monitor.fenced() === undefined ? RETRY_AFTER_SECONDS : STORE_FULL_RETRY_AFTER_SECONDS,
          });
        return appender.append(events);
      },
      read: reads.read,
      lookup: reads.lookup,
      heads: async () => (await monitor.bounds()).heads,
      firstOffsets: async () => (await monitor.bounds()).firstOffsets,
      health: () => (closed ? { writable: false, reason: 'closing' } : monitor.health()),
      snapshot: monitor.snapshot,
      onAppend(listener) {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
      // No retention on this engine yet: nothing is ever retired, so the listener is never called.
      onRetire: () => () => {},
      async close() {
        if (closed) return;
        closed = true;
        monitor.stop();
        listeners.clear();
        await closeConnection(nc);
      },
    };
  } catch (err) {
    await nc.close().catch(() => {});
    throw err;
  }
}

/** A lost connection makes the store unwritable at once (the probe would notice within a second or two). */
function watchConnection(nc: NatsConnection, monitor: ReturnType<typeof createClusterMonitor>): void {
  void (async () => {
    for await (const status of nc.status()) if (status.type === 'disconnect') monitor.down('disconnected from the NATS server');
  })();
}

async function closeConnection(nc: NatsConnection): Promise<void> {
  if (nc.isClosed()) return;
  // Drain (finish what is in flight), bounded: a cluster that is down must not hold the shutdown.
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)));
  await Promise.race([nc.drain().catch(() => {}), bound]);
  clearTimeout(timer);
  if (!nc.isClosed()) await nc.close();
}
