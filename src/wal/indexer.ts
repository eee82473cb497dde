import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { AppError, coerceError } from '../errors';
import type { IndexEntry } from '../store/log-index-repo';
import type { StoreHealth } from './event-store';
import {
  NUMBERS_PER_ROW,
  joinColumns,
  type FromIndexer,
  type IndexColumns,
  type IndexerWorkerData,
  type ToIndexer,
} from './indexer-protocol';
import type { PendingEntry } from './sequencer';
import { cutConsumedFront, firstAtOrAfter } from './log-feed';
import { THREAD_LIMITS } from '../thread-limits';

/** A committed record the index worker has not confirmed yet. */
export interface TailEntry extends IndexEntry {
  key: string;
  partition: number;
  storedAt: number;
}

export interface IndexerOptions {
  dbFile: string;
  partitions: number;
  log: Logger;
  /** The tail waits for the worker past this many records or key bytes (ingest backpressure). */
  maxTailEntries?: number;
  maxTailKeyBytes?: number;
  /** Log position every record before which is already indexed (where recovery left the index). */
  indexedThrough: number;
  /** Told when retention's rows are about to go: the new first offsets (null: none indexed there). */
  onRetired: (through: number, firstOffsets: (number | null)[]) => void;
  /** Told when the worker has written every record before `through` (the tail lets them go). */
  onIndexed?: (through: number) => void;
  /** Told when the worker dies of SQLite's verdict that index.db is damaged (its writes cannot succeed until a rebuild). */
  onDamage?: (detail: string) => void;
}

/** A key filter's bits as the worker built them (`keyFilterFrom` makes the filter). */
export interface BuiltKeyFilter {
  words: Uint32Array;
  log2Bits: number;
  hashes: number;
  /** Idempotency keys the worker's scan read into it. */
  count: number;
}

interface TailGroup {
  end: number;
  entries: TailEntry[];
  columns: IndexColumns;
}

/** What a written group's slot holds until the queue is compacted (nothing of it is kept). */
const RELEASED: TailGroup = { end: 0, entries: [], columns: { sources: [], ids: [], numbers: new Float64Array(0) } };

const DEFAULT_MAX_TAIL_ENTRIES = 65_536;
/** Consumed queue slots tolerated before a compaction is considered. */
const COMPACT_AFTER = 256;
const DEFAULT_MAX_TAIL_KEY_BYTES = 32 * 1024 * 1024;
/** Longest ingest waits for room in a full tail before it is answered 503 (nothing stored, no offset used). */
export const ROOM_WAIT_MS = 5000;
/** Worker deaths in a row, without a write confirmed between them, after which the log is reported not ready. */
const FAILURES_UNREADY = 2;
const MAX_RESTART_DELAY_MS = 5000;
/** Past the first two deaths in a row, one is logged this far apart (their count says how many). */
const EXIT_LOG_INTERVAL_MS = 60_000;
/** Backoff before the n-th restart in a row: at once, then 100 ms doubling to 5 s. */
const restartDelayMs = (failures: number) => (failures <= 1 ? 0 : Math.min(MAX_RESTART_DELAY_MS, 100 * 2 ** (failures - 2)));
const CLOSE_TIMEOUT_MS = 10_000;
/** A worker asked to stop that is still running this much later is terminated. */
const KILL_AFTER_STOP_MS = 2000;
/**
 * Committed groups wait this long to go to the worker together. At a few thousand requests a second
 * groups hold a few events each, and a message, a wake-up and a SQLite transaction per group were
 * most of the worker's CPU (measured: 10 ms cut it from 19 % to 11 % of a core at 3,500 req/s).
 * Nothing waits for them meanwhile: the tail answers reads and duplicate checks.
 */
const SEND_DELAY_MS = 10;
/** ...unless this many records wait already (a large batch goes at once). */
const SEND_AT_RECORDS = 4096;

/**
 * The built worker: ts-jest runs `src/` but a worker thread needs JavaScript, so tests use the one
 * `npm run build` (jest's global setup) compiled from the same source.
 */
function workerFile(): string {
  return __filename.endsWith('.ts')
    ? path.resolve(__dirname, '..', '..', 'dist', 'wal', 'indexer-worker.js')
    : path.join(__dirname, 'indexer-worker.js');
}

/**
 * The index behind the log. Committed groups go to a worker thread that writes their SQLite rows;
 * until it confirms them they stay here, in the tail, which answers the duplicate check and reads
 * (read-your-writes whatever the worker's lag). The tail is bounded: past the bound, `room()` makes
 * ingest wait for the worker instead of skipping a check. A worker that dies is restarted and sent
 * the whole tail again (its writes are idempotent).
 */
export function createIndexer(opts: IndexerOptions) {
  const maxEntries = opts.maxTailEntries ?? DEFAULT_MAX_TAIL_ENTRIES;
  const maxKeyBytes = opts.maxTailKeyBytes ?? DEFAULT_MAX_TAIL_KEY_BYTES;
  const groups: TailGroup[] = [];
  let groupsAt = 0;
  const byKey = new Map<string, TailEntry>();
  const byPartition: TailEntry[][] = Array.from({ length: opts.partitions }, () => []);
  const partitionAt = new Array<number>(opts.partitions).fill(0);
  let entries = 0;
  let keyBytes = 0;
  let waiters: (() => void)[] = [];
  const drainedWaiters: (() => void)[] = [];
  let closing: Promise<void> | undefined;
  let stopping = false;
  let confirmed = opts.indexedThrough;
  let pruneTicket = 0;
  const pruneWaiters = new Map<number, (count: number) => void>();
  let retireWaiter: (() => void) | undefined;
  let keyFilterTicket = 0;
  let keyFilterWaiter: { ticket: number; resolve: (built: BuiltKeyFilter | undefined) => void } | undefined;
  /** Groups committed but not sent to the worker yet (the newest of the tail). */
  let held: TailGroup[] = [];
  let heldRecords = 0;
  let heldTimer: NodeJS.Timeout | undefined;
  /** Worker deaths since the last confirmed write, and what the last one said. */
  let failures = 0;
  let lastFailure: string | undefined;
  /** What the dying worker said (whole), and when a death was last logged. */
  let lastError: string | undefined;
  let exitLoggedAt = 0;
  /** Set (and notified) to stop the worker at once; shared by every worker this indexer starts. */
  const stopFlag = new Int32Array(new SharedArrayBuffer(4));
  let worker = start(0);

  function start(startDelayMs: number): Worker {
    const data: IndexerWorkerData = {
      dbFile: opts.dbFile,
      partitions: opts.partitions,
      startDelayMs,
      stop: stopFlag.buffer as SharedArrayBuffer,
    };
    const w = new Worker(workerFile(), { workerData: data, resourceLimits: THREAD_LIMITS.indexer });
    w.unref(); // close() waits for it; a store never closed must not keep the process alive
    w.on('message', (m: FromIndexer) => onMessage(m));
    w.on('error', (err) => {
      lastFailure = err.message;
      lastError = err.stack ?? err.message;
    });
    w.on('exit', (code) => {
      if (stopping || w !== worker) return;
      failures++;
      const delayMs = restartDelayMs(failures);
      // The first two, then one a minute with the count (disk probe: three lines every 5 s while the disk stayed full).
      if (failures <= 2 || performance.now() - exitLoggedAt >= EXIT_LOG_INTERVAL_MS) {
        exitLoggedAt = performance.now();
        opts.log.error(
          { code, unindexed: entries, failures, restartInMs: delayMs, error: lastError },
          'indexer: worker exited; restarting it and sending the unindexed tail again',
        );
      }
      lastError = undefined;
      worker = start(delayMs);
      retireWaiter?.(); // its answer died with the worker: retention asks again at its next round
      retireWaiter = undefined;
      settleKeyFilter(undefined); // so did a key filter build: the sequencer asks again later
      // And prunes: nothing counted as pruned, the next round prunes again (a worker that keeps dying leaked one a round).
      for (const resolve of pruneWaiters.values()) resolve(0);
      pruneWaiters.clear();
      dropHeld(); // they are in the tail, sent again below with the rest of it
      for (let i = groupsAt; i < groups.length; i++) hold(groups[i]!);
      sendHeld();
    });
    return w;
  }

  /** Every message goes after the groups held before it (the worker handles them in order). */
  function send(message: ToIndexer): void {
    sendHeld();
    worker.postMessage(message);
  }

  function hold(group: TailGroup): void {
    held.push(group);
    heldRecords += group.entries.length;
    if (heldRecords >= SEND_AT_RECORDS) sendHeld();
    else heldTimer ??= setTimeout(sendHeld, SEND_DELAY_MS); // not unref'd: a wait for `drained()` ends
  }

  function sendHeld(): void {
    if (held.length === 0) return;
    const sending = held;
    dropHeld();
    worker.postMessage({
      type: 'index',
      end: sending[sending.length - 1]!.end,
      columns: joinColumns(sending.map((g) => g.columns)),
    } satisfies ToIndexer);
  }

  function dropHeld(): void {
    if (heldTimer) clearTimeout(heldTimer);
    heldTimer = undefined;
    held = [];
    heldRecords = 0;
  }

  function onMessage(m: FromIndexer): void {
    switch (m.type) {
      case 'indexed':
        failures = 0;
        lastFailure = undefined;
        confirm(m.through);
        break;
      case 'retired':
        opts.onRetired(m.through, m.firstOffsets);
        retireWaiter?.();
        retireWaiter = undefined;
        break;
      case 'pruned':
        pruneWaiters.get(m.ticket)?.(m.count);
        pruneWaiters.delete(m.ticket);
        break;
      case 'key-filter':
        if (keyFilterWaiter?.ticket === m.ticket) {
          settleKeyFilter({ words: new Uint32Array(m.words), log2Bits: m.log2Bits, hashes: m.hashes, count: m.count });
        }
        break;
      case 'key-filter-failed':
        opts.log.error({ error: m.message }, 'indexer: the key filter build failed');
        if (keyFilterWaiter?.ticket === m.ticket) settleKeyFilter(undefined);
        break;
      case 'error':
        lastFailure = m.message.split('\n', 1)[0];
        lastError = m.message; // logged with its exit
        if (m.corrupt) opts.onDamage?.(`SQLite found it damaged while indexing: ${lastFailure}`);
        break;
      case 'closed':
        break;
    }
  }

  /** Answers the outstanding key filter request, if any (undefined: abandoned). */
  function settleKeyFilter(built: BuiltKeyFilter | undefined): void {
    const waiter = keyFilterWaiter;
    keyFilterWaiter = undefined;
    waiter?.resolve(built);
  }

  /** Drops the tail's groups the worker has written (every record before `through`). */
  function confirm(through: number): void {
    confirmed = Math.max(confirmed, through);
    opts.onIndexed?.(through);
    while (groupsAt < groups.length && groups[groupsAt]!.end <= through) {
      for (const entry of groups[groupsAt]!.entries) {
        if (byKey.get(entry.key) === entry) byKey.delete(entry.key);
        partitionAt[entry.partition]!++;
        entries--;
        keyBytes -= entry.key.length;
      }
      // Let go of the written group now: its columns hold every event's source and id, and a large
      // group (batches) kept until the queue is compacted kept hundreds of thousands of them alive.
      groups[groupsAt] = RELEASED;
      groupsAt++;
    }
    compact();
    if (entries === 0 && drainedWaiters.length > 0) for (const resolve of drainedWaiters.splice(0)) resolve();
    if (waiters.length > 0 && hasRoom()) {
      const ready = waiters;
      waiters = [];
      for (const resolve of ready) resolve();
    }
  }

  /**
   * Queues are arrays read from an index; the consumed front is cut off once it is most of the array
   * (amortised: each entry is moved at most once per halving), so written entries do not outlive
   * their group by long.
   */
  function compact(): void {
    groupsAt = cutConsumedFront(groups, groupsAt, COMPACT_AFTER);
    for (let p = 0; p < opts.partitions; p++) partitionAt[p] = cutConsumedFront(byPartition[p]!, partitionAt[p]!, COMPACT_AFTER);
  }

  /** Why the index is behind, for a 503 and `/readyz`. */
  function behind(): string {
    const failing = failures > 0 ? `; its writer failed ${failures} time(s) in a row (${lastFailure ?? `exit`})` : '';
    return `${entries} events wait in memory to be written to index.db${failing}`;
  }
  function hasRoom(): boolean {
    return entries < maxEntries && keyBytes < maxKeyBytes;
  }

  /** First tail entry of a partition at or after `offset`, as an index into its list. */
  const seek = (partition: number, offset: number): number => firstAtOrAfter(byPartition[partition]!, partitionAt[partition]!, offset);

  return {
    /**
     * Resolves when the tail has room for more (immediately, unless the worker is behind by the bound).
     * @throws AppError `unavailable` after {@link ROOM_WAIT_MS} without room (index.db locked or unwritable)
     */
    room(): Promise<void> | undefined {
      if (hasRoom()) return undefined;
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== ready);
          reject(new AppError('unavailable', `the index is behind: ${behind()}; nothing was stored, retry later`, { retryAfter: 1 }));
        }, ROOM_WAIT_MS);
        const ready = () => {
          clearTimeout(timer);
          resolve();
        };
        waiters.push(ready);
      });
    },
    /**
     * Not writable while the tail is full (ingest waits, then is refused); not ready, but writable, while it
     * holds events and the worker keeps failing. An empty tail is never behind: a worker that died idle has nothing to write.
     */
    health(): StoreHealth | undefined {
      if (!hasRoom()) return { writable: false, reason: `the index is behind: ${behind()}` };
      // Ingest still answers (into the tail's room): writable, as herald_log_writable says (it said 0 meanwhile: thread probe).
      if (failures >= FAILURES_UNREADY && entries > 0) return { writable: true, unready: `the index is behind: ${behind()}` };
      return undefined;
    },
    /** Takes one committed group: it is in the tail (readable) at once and goes to the worker within {@link SEND_DELAY_MS}. */
    add(end: number, committed: readonly PendingEntry[], positions: readonly number[]): void {
      const n = committed.length;
      const numbers = new Float64Array(n * NUMBERS_PER_ROW);
      const sources = new Array<string>(n);
      const ids = new Array<string>(n);
      const added = new Array<TailEntry>(n);
      for (let i = 0; i < n; i++) {
        const e = committed[i]!;
        const entry: TailEntry = {
          key: e.key,
          partition: e.partition,
          offset: e.offset,
          position: positions[i]!,
          length: e.frame.length,
          storedAt: e.storedAt,
        };
        added[i] = entry;
        sources[i] = e.source;
        ids[i] = e.id;
        numbers.set([e.partition, e.offset, e.storedAt, entry.position, entry.length], i * NUMBERS_PER_ROW);
        byKey.set(entry.key, entry);
        byPartition[entry.partition]!.push(entry);
        keyBytes += entry.key.length;
      }
      entries += n;
      const group: TailGroup = { end, entries: added, columns: { sources, ids, numbers } };
      groups.push(group);
      hold(group);
    },
    find(key: string): TailEntry | undefined {
      return byKey.get(key);
    },
    /** The partition's tail entries from `offset` on, up to `limit`. */
    range(partition: number, offset: number, limit: number): TailEntry[] {
      const from = seek(partition, offset);
      return byPartition[partition]!.slice(from, from + limit);
    },
    /** The partition's oldest offset still only in the tail. */
    firstOffset(partition: number): number | undefined {
      return byPartition[partition]![partitionAt[partition]!]?.offset;
    },
    /** The partition's first tail offset stored at or after `atMs` (tail entries are in stored order). */
    firstOffsetAt(partition: number, atMs: number): number | undefined {
      const list = byPartition[partition]!;
      for (let i = partitionAt[partition]!; i < list.length; i++) if (list[i]!.storedAt >= atMs) return list[i]!.offset;
      return undefined;
    },
    /** Records written to the log but not yet to SQLite. */
    lag: () => entries,
    /** The tail's groups, in log order (a reader in another thread starts from them). */
    unindexedGroups(): { end: number; entries: readonly TailEntry[] }[] {
      return groups.slice(groupsAt);
    },
    /** Resolves once every committed record so far is in SQLite. */
    drained(): Promise<void> {
      return entries === 0 ? Promise.resolve() : new Promise<void>((resolve) => drainedWaiters.push(resolve));
    },
    /** Every record before `through` must already be indexed (retention checks `indexedThrough`). */
    retire(through: number): Promise<void> {
      return new Promise<void>((resolve) => {
        retireWaiter = resolve;
        send({ type: 'retire', through });
      });
    },
    /** Where the worker has indexed to: every record before it is in SQLite. */
    indexedThrough: () => confirmed,
    prune(cutoff: number): Promise<number> {
      const ticket = ++pruneTicket;
      return new Promise<number>((resolve) => {
        pruneWaiters.set(ticket, resolve);
        send({ type: 'prune', cutoff, ticket });
      });
    },
    /**
     * Has the worker build a key filter over every idempotency key in SQLite (its scan starts after
     * the groups sent so far are written). Resolves undefined when the build is abandoned: the worker
     * died (it is restarted), the build failed, a newer request replaced it, or the indexer closes.
     */
    buildKeyFilter(log2Bits: number, hashes: number): Promise<BuiltKeyFilter | undefined> {
      settleKeyFilter(undefined);
      if (stopping) return Promise.resolve(undefined);
      const ticket = ++keyFilterTicket;
      return new Promise<BuiltKeyFilter | undefined>((resolve) => {
        keyFilterWaiter = { ticket, resolve };
        send({ type: 'build-key-filter', ticket, log2Bits, hashes });
      });
    },
    /**
     * Waits for the worker to write the whole tail, then stops it; at `deadline` (epoch ms), or after
     * {@link CLOSE_TIMEOUT_MS} at most, it is stopped anyway and recovery indexes the rest at the next start.
     */
    close(deadline = Number.POSITIVE_INFINITY): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        stopping = true;
        settleKeyFilter(undefined);
        const w = worker;
        const byDeadline = deadline - Date.now() < CLOSE_TIMEOUT_MS;
        // At the deadline the worker is asked to stop: it does between SQLite calls (each waits 100 ms
        // at most for a lock). Only one that still runs later is terminated, at the risk that it is
        // inside SQLite then (which aborts the process).
        const stopTimer = setTimeout(
          () => {
            const fields = { unindexed: entries };
            if (byDeadline) opts.log.warn(fields, 'indexer: stopped at the shutdown deadline; recovery indexes the rest at the next start');
            else opts.log.error(fields, 'indexer: the worker did not finish in time; recovery indexes the rest at the next start');
            Atomics.store(stopFlag, 0, 1);
            Atomics.notify(stopFlag, 0);
            killTimer = setTimeout(() => void w.terminate().then(() => resolve()), KILL_AFTER_STOP_MS);
          },
          Math.max(0, Math.min(CLOSE_TIMEOUT_MS, deadline - Date.now())),
        );
        let killTimer: NodeJS.Timeout | undefined;
        w.once('exit', () => {
          clearTimeout(stopTimer);
          clearTimeout(killTimer);
          resolve();
        });
        send({ type: 'close' });
      });
      return closing;
    },
  };
}

export type Indexer = ReturnType<typeof createIndexer>;

/** Logs (never throws): a failing listener must not undo a committed group. */
export function safely(log: Logger, what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    log.error({ err: coerceError(err) }, what);
  }
}
