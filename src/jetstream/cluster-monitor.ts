import type { JetStreamManager, StreamInfo } from 'nats';
import type { Logger } from 'pino';
import type { StoreHealth } from '../wal/event-store';
import type { JetStreamNames } from './names';
import { clusterUnavailable, isStoreFailure, natsReason } from './nats-errors';
import { throttledLine } from '../logger';

/** How often the cluster's ability to take writes is checked (for `/readyz` and ingest's fast 503). */
const PROBE_INTERVAL_MS = 1000;

/** Heads and first offsets of every partition, as the stream leaders report them. */
export interface Bounds {
  heads: number[];
  firstOffsets: number[];
}

/**
 * A replica the leader has not heard from for this long is not counted current, whatever the leader
 * says: NATS's raft keeps a lost follower "current" for 10 s (its lost-quorum interval), while a
 * live follower without the leader for 4 s (its shortest election timeout) starts an election.
 * Heartbeats come every second, so a healthy replica is seen well within it.
 */
const SILENT_REPLICA_NS = 4e9;

/**
 * How long a stream's refusal of a write for want of storage keeps the node unready without another one (a write
 * it takes ends it at once). Ingest still tries such a stream (its own `503 storage_full` says so): readiness that
 * stayed down until a write succeeded would keep a load balancer from ever sending one once space is freed.
 */
const STORE_FULL_HOLD_MS = 30_000;

/**
 * Whether a stream can take writes now: it has a leader, and the leader with the replicas it
 * reports current (and heard from lately, see {@link SILENT_REPLICA_NS}) make a majority of the
 * configured replicas. (A leader that lost its followers keeps the title for about 10 s before it
 * steps down; counting current replicas sees it first.)
 * A stream of one server outside a cluster has no `cluster` block: it can write when it answers.
 * `maxSilenceNs`: how recently a replica must have been heard from (shorter just after a disconnect, see the monitor).
 */
export function streamWritable(info: StreamInfo, maxSilenceNs = SILENT_REPLICA_NS): string | undefined {
  const cluster = info.cluster;
  if (!cluster) return undefined;
  if (!cluster.leader) return `stream ${info.config.name} has no leader`;
  const current = 1 + (cluster.replicas ?? []).filter((r) => r.current && !r.offline && !(r.active > maxSilenceNs)).length;
  const needed = Math.floor(info.config.num_replicas / 2) + 1;
  return current >= needed
    ? undefined
    : `stream ${info.config.name} has ${current} current of ${info.config.num_replicas} replicas (needs ${needed})`;
}

/**
 * A stream an operator cut to fewer replicas than HERALD_NATS_REPLICAS while nodes run (`nats stream
 * edit --replicas 1`): an append would be acknowledged with fewer copies than configured, so writes
 * are refused until it has them again. (A start refuses such a stream; a running node checks here.)
 */
export function underReplicated(info: StreamInfo, replicas: number): string | undefined {
  if (info.config.num_replicas >= replicas) return undefined;
  return (
    `stream ${info.config.name} has ${info.config.num_replicas} replicas, but HERALD_NATS_REPLICAS=${replicas}: ` +
    `appends would be acknowledged with fewer copies; give it its replicas again (nats stream edit ${info.config.name} --replicas ${replicas})`
  );
}

/** An offset range from a stream's state: offset = sequence − 1; an empty stream's first offset is its head. */
export function boundsOf(info: StreamInfo): { head: number; first: number } {
  const head = info.state.last_seq;
  const first = info.state.messages === 0 ? head : Math.max(0, info.state.first_seq - 1);
  return { head, first: Math.min(first, head) };
}

export interface ClusterMonitor {
  health(): StoreHealth;
  /** Fresh bounds of every partition from the stream leaders, never below what this node has appended. */
  bounds(): Promise<Bounds>;
  /** Fresh bounds of one partition. */
  boundsOf(partition: number): Promise<{ head: number; first: number }>;
  /** The last heads and stored bytes seen (for metrics: never waits on the cluster). */
  snapshot(): { heads: readonly number[]; bytes: number };
  /**
   * The highest first offset of the partition seen so far (never waits on the cluster). Streams lose
   * events from the front only (purges, limits an operator set), so every offset below it is gone.
   */
  knownGoneBelow(partition: number): number;
  /** Records an append acknowledged to this node: heads never go below it. */
  appended(partition: number, offset: number): void;
  /** The highest sequence known to exist in the partition's stream (its head): a new message must be stored above it. */
  knownHead(partition: number): number;
  /**
   * The partition's stream answered a sequence at or below one known to exist before: it was deleted
   * or replaced behind Herald. Writes are refused from now until a restart (see {@link createClusterMonitor}).
   */
  wentBack(partition: number, known: number, seen: number): void;
  /**
   * A write to `stream` was refused (`reason`: the server's): for want of storage (`storage_full`) the node is
   * unready naming it until a write to it is taken (or {@link STORE_FULL_HOLD_MS} without another refusal); a
   * failed store write on a server (an I/O error, a full disk) refuses writes until a restart, as `wentBack`.
   */
  refused(stream: string, code: string, reason: string): void;
  /** A write to `stream` was taken: a storage refusal of it is over. */
  took(stream: string): void;
  /** Why ingest is refused at once (a probe or a fence), without asking the cluster; undefined when it may try. */
  refusal(): string | undefined;
  /** Why writes are refused until a restart (`wentBack`, or a failed store write), or undefined. */
  fenced(): string | undefined;
  /** Marks the cluster unwritable at once (a lost connection); the next probe decides again. */
  down(reason: string): void;
  /** Starts probing; resolves once the first probe has answered (ready or not). */
  start(): Promise<void>;
  stop(): void;
}

/**
 * Checks every second that each partition stream and the idempotency bucket's stream has its
 * configured replicas, a leader and a quorum of current replicas; `/readyz` and ingest read the outcome. The same stream infos
 * refresh the heads the metrics show.
 *
 * A stream's sequence only grows (a purge keeps it): the appender reports a new message stored at or
 * below a sequence known before (`wentBack`: the stream was deleted and made again, or replaced,
 * behind Herald), and the node then refuses writes until it is restarted (an `error` log and
 * `/readyz` say why). Stream infos are not used for that: while servers are down, one may answer
 * with a replica's older state.
 */
export function createClusterMonitor(deps: {
  jsm: JetStreamManager;
  names: JetStreamNames;
  partitions: number;
  /** HERALD_NATS_REPLICAS: a stream cut below it takes no writes (see `underReplicated`). */
  replicas: number;
  log: Logger;
}): ClusterMonitor {
  const { jsm, names, partitions, log } = deps;
  let state: StoreHealth = { writable: false, reason: 'the JetStream cluster has not been checked yet' };
  const heads = new Array<number>(partitions).fill(0);
  const firsts = new Array<number>(partitions).fill(0);
  let bytes = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  /** Why writes stay refused until a restart: the first stream whose sequence went back, or whose server failed to store. */
  let fenceReason: string | undefined;
  /** Streams that refused a write for want of storage: the server's reason, and when. */
  const full = new Map<string, { reason: string; at: number }>();
  const fullLines = new Map<string, ReturnType<typeof throttledLine>>();
  /** When the connection was last lost (epoch ms). */
  let downAt = 0;
  /**
   * A replica counts only if heard from since the connection was lost: the servers that went down with
   * it (a server SIGKILLed) were last heard from before that, while the survivor the node reconnects to
   * may still call them current, and readiness read "ready" for ~3 s after two of three servers died
   * (a probe). Healthy replicas are heard from every second, so this delays readiness by about that.
   */
  const maxSilenceNs = () => Math.min(SILENT_REPLICA_NS, (Date.now() - downAt) * 1e6);

  const setState = (proposed: StoreHealth) => {
    const next: StoreHealth = fenceReason ? { writable: false, reason: fenceReason } : proposed;
    if (next.writable !== state.writable) {
      if (next.writable) log.info('the JetStream cluster takes writes again');
      else log.warn({ reason: next.reason }, 'the JetStream cluster cannot take writes');
    }
    state = next;
  };

  const fence = (reason: string, fields: Record<string, unknown>) => {
    if (fenceReason) return;
    fenceReason = reason;
    log.error(fields, fenceReason);
    setState({ writable: false, reason: fenceReason });
  };
  const wentBack = (partition: number, known: number, seen: number) =>
    fence(
      `partition stream ${names.stream(partition)} went back from sequence ${known} to ${seen} (deleted or replaced behind Herald); ` +
        'writes are refused so that no offset is given to two events: restore the stream, then restart this node',
      { partition, known, seen },
    );

  const refused = (stream: string, code: string, reason: string) => {
    if (code === 'storage_full') {
      // Once a minute per stream (re-probe: 132 lines in 40 s while a stream's room freed and filled by turns).
      const lines = fullLines.get(stream) ?? fullLines.set(stream, throttledLine(60_000)).get(stream)!;
      lines((suppressed) => log.warn({ stream, reason, suppressed }, 'a stream refuses writes for want of storage'));
      full.set(stream, { reason, at: Date.now() });
    } else if (isStoreFailure(reason)) {
      // After the Raft commit on a leader (its followers stored the message): later messages would get
      // sequences its followers hold for others, acknowledged at offsets other replicas give to other events.
      fence(
        `a server of stream ${stream} failed to store a write (${reason}); its replicas may differ now, so writes are refused ` +
          'so that no offset is given to two events: mend that server (its disk, then restart it so that it catches up from the others), then restart this node',
        { stream, reason },
      );
    }
  };
  /** The first stream still refusing writes for want of storage, as a reason for `/readyz`. */
  const fullReason = (): string | undefined => {
    const now = Date.now();
    for (const [stream, f] of full) {
      if (now - f.at > STORE_FULL_HOLD_MS) full.delete(stream);
      else return `stream ${stream} refuses writes for want of storage (${f.reason}); raise its limit or free space on its servers`;
    }
    return undefined;
  };

  const note = (partition: number, info: StreamInfo) => {
    const b = boundsOf(info);
    heads[partition] = Math.max(heads[partition]!, b.head);
    firsts[partition] = Math.max(firsts[partition]!, b.first);
  };

  async function probe(): Promise<void> {
    const streams = [...Array.from({ length: partitions }, (_, p) => names.stream(p)), names.idempotencyStream];
    const infos = await Promise.allSettled(streams.map((s) => jsm.streams.info(s)));
    let reason: string | undefined;
    let total = 0;
    infos.forEach((result, i) => {
      if (result.status === 'rejected') {
        reason ??= `stream ${streams[i]}: ${natsReason(result.reason)}`;
        return;
      }
      reason ??= underReplicated(result.value, deps.replicas) ?? streamWritable(result.value, maxSilenceNs());
      if (i < partitions) {
        note(i, result.value);
        total += result.value.state.bytes;
      }
    });
    if (!reason) bytes = total;
    setState(reason ? { writable: false, reason } : { writable: true });
  }

  const loop = (): Promise<void> => {
    if (stopped) return Promise.resolve();
    return probe()
      .catch((err: unknown) => setState({ writable: false, reason: natsReason(err) }))
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, PROBE_INTERVAL_MS).unref();
      });
  };

  async function boundsOfPartition(partition: number): Promise<{ head: number; first: number }> {
    let info: StreamInfo;
    try {
      info = await jsm.streams.info(names.stream(partition));
    } catch (err) {
      throw clusterUnavailable(err, 'read partition bounds');
    }
    note(partition, info);
    const b = boundsOf(info);
    return { head: heads[partition]!, first: Math.min(b.first, heads[partition]!) };
  }

  return {
    health: () => {
      if (!state.writable) return state;
      const reason = fullReason();
      return reason ? { writable: false, reason } : state;
    },
    refusal: () => (state.writable ? undefined : (state.reason ?? 'not writable')),
    fenced: () => fenceReason,
    refused,
    took: (stream) => void full.delete(stream),
    boundsOf: boundsOfPartition,
    async bounds() {
      const all = await Promise.all(Array.from({ length: partitions }, (_, p) => boundsOfPartition(p)));
      return { heads: all.map((b) => b.head), firstOffsets: all.map((b) => b.first) };
    },
    snapshot: () => ({ heads: heads.slice(), bytes }),
    knownGoneBelow: (partition) => firsts[partition] ?? 0,
    appended(partition, offset) {
      heads[partition] = Math.max(heads[partition]!, offset + 1);
    },
    knownHead: (partition) => heads[partition] ?? 0,
    wentBack,
    down(reason) {
      downAt = Date.now();
      setState({ writable: false, reason });
    },
    start() {
      stopped = false;
      return loop();
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
  };
}
