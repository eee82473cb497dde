import path from 'node:path';
import type { Logger } from 'pino';
import { eventId, eventSource, type CloudEvent } from '../cloudevents/event';
import { partitionOf } from '../cloudevents/partition';
import { AppError, coerceError } from '../errors';
import type { Db } from '../store/db';
import { createIdempotencyRepo } from '../store/idempotency-repo';
import { createLogIndexRepo } from '../store/log-index-repo';
import { createMetaRepo } from '../store/meta-repo';
import { createPartitionHeadsRepo } from '../store/partition-heads-repo';
import type { AppendResult, EventStore, StoredEvent } from './event-store';
import { createKeyFilter, idempotencyKey, type KeyFilter } from './key-filter';
import { decodeRecord, encodeRecord } from './record';
import { StartupError, recoverLog, type RecoveryReport } from './recovery';
import { openSegmentLog } from './segment-log';

export { StartupError, type RecoveryReport };

export interface LocalEventStoreOptions {
  dataDir: string;
  db: Db;
  log: Logger;
  partitions: number;
  fsync: 'always' | 'interval' | 'never';
  fsyncIntervalMs: number;
  segmentBytes: number;
  idempotencyWindowMs: number;
  clock?: () => number;
}



interface PendingEntry {
  source: string;
  id: string;
  key: string;
  partition: number;
  offset: number;
  storedAt: number;
  frame: Buffer;
}

interface Group {
  entries: PendingEntry[];
  bytes: number;
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const PRUNE_BATCH = 5_000;
const KEY_FILTER_PAGE = 5_000;
const MAX_READ_SPAN = 4 * 1024 * 1024;
const RETRY_AFTER_SECONDS = 1;

/**
 * The local backend: a write-ahead log of segment files under `<dataDir>/wal`
 * with group commit, and SQLite rows derived from it (idempotency, index,
 * partition heads) that recovery rebuilds from the log.
 */
export function openLocalEventStore(opts: LocalEventStoreOptions): EventStore & { recovery: RecoveryReport; pruneIdempotency(): number } {
  const clock = opts.clock ?? Date.now;
  const { db, log } = opts;
  const meta = createMetaRepo(db);
  const idempotency = createIdempotencyRepo(db);
  const index = createLogIndexRepo(db);
  const headsRepo = createPartitionHeadsRepo(db);

  const recorded = meta.get('partitions');
  if (recorded !== undefined && Number(recorded) !== opts.partitions) {
    throw new StartupError(
      `data dir ${opts.dataDir} was created with ${recorded} partitions; HERALD_PARTITIONS=${opts.partitions} would re-route keys. Start with HERALD_PARTITIONS=${recorded}.`,
    );
  }

  const segments = openSegmentLog({
    dir: path.join(opts.dataDir, 'wal'),
    segmentBytes: opts.segmentBytes,
    durable: opts.fsync !== 'never',
    warn: (msg, fields) => log.warn(fields ?? {}, msg),
  });

  const recovery = recoverLog({ db, log, segments, meta, idempotency, index, headsRepo, partitions: opts.partitions, dataDir: opts.dataDir, windowStart: clock() - opts.idempotencyWindowMs });
  // Recorded only once recovery has checked the log against it, so a refused start does not record a wrong count.
  if (recorded === undefined) meta.set('partitions', opts.partitions);
  const committedHeads = headsRepo.load(opts.partitions);
  let heads = committedHeads.slice();

  // Keys of entries written by groups not yet committed; a second send waits for the first.
  const pendingKeys = new Map<string, { entry: PendingEntry; group: Group }>();
  let current = newGroup();
  let flushing = false;
  let closed = false;
  let writable = true;
  let failureReason: string | undefined;
  let dirty = false;
  /** fsync=interval: the last timed sync failed, so every commit syncs until one succeeds. */
  let syncFailed = false;
  const listeners = new Set<(partitions: ReadonlySet<number>) => void>();

  const insertRows = db.transaction((entries: PendingEntry[], positions: number[], end: number) => {
    const touched = new Map<number, number>();
    entries.forEach((e, i) => {
      idempotency.insert(e);
      index.insert(e.partition, { offset: e.offset, position: positions[i]!, length: e.frame.length });
      touched.set(e.partition, e.offset + 1);
    });
    for (const [partition, head] of touched) headsRepo.set(partition, head);
    meta.set('log_indexed_through', end);
  });

  /** Removes the rows of a group whose fsync failed; if that fails too, start-up recovery removes them. */
  function undoRows(entries: PendingEntry[], before: number): void {
    try {
      db.transaction(() => {
        const firstOffsets = new Map<number, number>();
        for (const e of entries) if (!firstOffsets.has(e.partition)) firstOffsets.set(e.partition, e.offset);
        for (const [partition, offset] of firstOffsets) {
          idempotency.deleteFrom(partition, offset);
          headsRepo.set(partition, offset);
        }
        index.deletePast(before);
        meta.set('log_indexed_through', before);
      })();
    } catch (err) {
      log.error({ err: coerceError(err) }, 'could not undo the rows of a failed group; recovery will at the next start');
    }
  }

  const syncTimer =
    opts.fsync === 'interval'
      ? setInterval(() => {
          if (!dirty || closed) return;
          dirty = false;
          segments.sync().then(
            () => {
              syncFailed = false;
            },
            (err) => {
              // Sticky until a sync succeeds: acknowledging writes the disk cannot make durable would be a lie.
              syncFailed = true;
              markUnwritable(err);
            },
          );
        }, opts.fsyncIntervalMs)
      : undefined;
  syncTimer?.unref();

  function newGroup(): Group {
    let resolve!: () => void;
    let reject!: (err: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    done.catch(() => undefined); // every waiter handles it; this keeps an unobserved group quiet
    return { entries: [], bytes: 0, done, resolve, reject };
  }

  async function append(events: CloudEvent[]): Promise<AppendResult[]> {
    if (closed) throw new AppError('unavailable', 'the gateway is shutting down', { retryAfter: RETRY_AFTER_SECONDS });
    const results: AppendResult[] = [];
    const waitFor = new Set<Group>();
    const storedAt = clock();
    const added: PendingEntry[] = [];
    const inRequest = new Map<string, PendingEntry>();
    for (const event of events) {
      const source = eventSource(event);
      const id = eventId(event);
      const key = idempotencyKey(source, id);
      const earlier = inRequest.get(key) ?? pendingKeys.get(key)?.entry;
      if (earlier) {
        const pending = pendingKeys.get(key);
        if (pending) waitFor.add(pending.group);
        results.push({ id, source, partition: earlier.partition, offset: earlier.offset, duplicate: true });
        continue;
      }
      // A Bloom filter miss means never seen: skip SQLite. A hit (or no filter yet) asks SQLite.
      const found = keyFilter && !keyFilter.mightContain(key) ? undefined : idempotency.find(source, id);
      if (found) {
        results.push({ id, source, partition: found.partition, offset: found.offset, duplicate: true });
        continue;
      }
      const partition = partitionOf(event, opts.partitions);
      const offset = heads[partition]!++;
      const frame = encodeRecord({ partition, offset, storedAt, event });
      const entry: PendingEntry = { source, id, key, partition, offset, storedAt, frame };
      keyFilter?.add(key);
      nextKeyFilter?.add(key);
      // Past its capacity the filter's false positives climb: rebuild it (in the background) at twice the size.
      if (keyFilter && keyFilter.count > keyFilter.capacity) buildKeyFilter();
      added.push(entry);
      inRequest.set(key, entry);
      results.push({ id, source, partition, offset, duplicate: false });
    }
    if (added.length > 0) {
      const group = current;
      for (const entry of added) {
        group.entries.push(entry);
        group.bytes += entry.frame.length;
        pendingKeys.set(entry.key, { entry, group });
      }
      waitFor.add(group);
      if (!flushing) setImmediate(flush);
    }
    for (const group of waitFor) await group.done;
    return results;
  }

  async function flush(): Promise<void> {
    if (flushing) return;
    flushing = true;
    try {
      while (current.entries.length > 0) {
        const group = current;
        current = newGroup();
        await commit(group);
      }
    } finally {
      flushing = false;
    }
  }

  async function commit(group: Group): Promise<void> {
    const before = segments.end();
    try {
      const first = await segments.append(group.entries.map((e) => e.frame), group.bytes);
      const positions: number[] = [];
      let at = first;
      for (const e of group.entries) {
        positions.push(at);
        at += e.frame.length;
      }
      const mustSync = opts.fsync === 'always' || syncFailed;
      if (!mustSync) dirty = true;
      // The group's SQLite rows are written while its fsync runs instead of after it. Until the sync
      // returns they are invisible to delivery and partition reads (committedHeads moves after it), a
      // second send of a key waits on the group (pendingKeys), and a failed sync undoes them.
      const synced = mustSync ? segments.sync() : undefined;
      try {
        insertRows(group.entries, positions, at);
      } catch (err) {
        await synced?.catch(() => undefined);
        throw err;
      }
      if (synced) {
        try {
          await synced;
        } catch (err) {
          undoRows(group.entries, before);
          throw err;
        }
        syncFailed = false;
      }
      for (const e of group.entries) {
        pendingKeys.delete(e.key);
        committedHeads[e.partition] = e.offset + 1;
      }
      if (!writable) {
        writable = true;
        failureReason = undefined;
        log.info('log is writable again');
      }
      group.resolve();
    } catch (err) {
      failGroups(group, before, err);
      return;
    }
    notify(group.entries); // outside the try: the group is committed, a listener's failure must not undo it
  }

  /** Undoes a failed group and every group queued behind it (their offsets follow its offsets). */
  function failGroups(group: Group, before: number, err: unknown): void {
    markUnwritable(err);
    try {
      segments.truncate(before);
    } catch (truncateErr) {
      log.error({ err: coerceError(truncateErr) }, 'log: could not undo a failed append; restart to recover');
    }
    const queued = current;
    current = newGroup();
    pendingKeys.clear();
    heads = committedHeads.slice();
    const error = new AppError('unavailable', 'the event log cannot be written right now; nothing from this request was stored', {
      cause: err,
      retryAfter: RETRY_AFTER_SECONDS,
    });
    group.reject(error);
    queued.reject(error);
  }

  function markUnwritable(err: unknown): void {
    const e = coerceError(err);
    writable = false;
    failureReason = `log write failed: ${(e as NodeJS.ErrnoException).code ?? e.message}`;
    log.error({ err: e }, 'log write failed');
  }

  function notify(entries: PendingEntry[]): void {
    if (listeners.size === 0) return;
    const partitions = new Set(entries.map((e) => e.partition));
    for (const listener of listeners) {
      try {
        listener(partitions);
      } catch (err) {
        log.error({ err: coerceError(err) }, 'append listener failed');
      }
    }
  }

  function toStored(partition: number, entry: { offset: number; position: number; length: number }): StoredEvent {
    const record = decodeRecord(segments.read(entry.position, entry.length));
    return { partition, offset: entry.offset, storedAt: record.storedAt, event: record.event };
  }

  let keyFilter: KeyFilter | undefined;
  let nextKeyFilter: KeyFilter | undefined;

  /**
   * (Re)builds the key filter from the idempotency table in pages between
   * other work, so start-up does not wait for it; until it is ready every
   * lookup goes to SQLite. Sized for twice the keys there are now.
   */
  function buildKeyFilter(): void {
    if (nextKeyFilter || closed) return;
    // COUNT(*) scans the table, so only the first build pays it; a rebuild knows the filter's count.
    const keys = keyFilter ? keyFilter.count : idempotency.count();
    const wanted = Math.max(1, keys * 2 * 9.6);
    const next = createKeyFilter(Math.min(30, Math.max(24, Math.ceil(Math.log2(wanted)))));
    nextKeyFilter = next;
    // Keys of groups not yet committed may sort before where the scan starts reading: add them now.
    for (const key of pendingKeys.keys()) next.add(key);
    let after: { source: string; id: string } | undefined;
    const step = () => {
      if (closed || nextKeyFilter !== next) return;
      const rows = idempotency.keys(after, KEY_FILTER_PAGE);
      for (const row of rows) next.add(idempotencyKey(row.source, row.id));
      if (rows.length === KEY_FILTER_PAGE) {
        after = rows[rows.length - 1];
        setImmediate(step);
      } else {
        keyFilter = next;
        nextKeyFilter = undefined;
      }
    };
    setImmediate(step);
  }
  buildKeyFilter();

  const pruneTimer = setInterval(() => pruneIdempotency(), Math.min(60_000, Math.max(1000, opts.idempotencyWindowMs / 10)));
  pruneTimer.unref();

  function pruneIdempotency(): number {
    // Pruned keys stay in the filter as false positives; a filter past its capacity is rebuilt from the table.
    if (keyFilter && keyFilter.count > keyFilter.capacity) buildKeyFilter();
    let total = 0;
    const cutoff = clock() - opts.idempotencyWindowMs;
    for (;;) {
      const n = idempotency.prune(cutoff, PRUNE_BATCH);
      total += n;
      if (n < PRUNE_BATCH) return total;
    }
  }

  return {
    partitions: opts.partitions,
    recovery,
    pruneIdempotency,
    append,
    read(partition, fromOffset, limit) {
      // Only durable events: a group's index rows exist while its fsync is still running.
      const available = Math.min(limit, (committedHeads[partition] ?? 0) - fromOffset);
      if (available <= 0) return [];
      const entries = index.range(partition, fromOffset, available);
      const first = entries[0];
      const last = entries[entries.length - 1];
      if (!first || !last || entries.length === 1) return entries.map((entry) => toStored(partition, entry));
      const span = last.position + last.length - first.position;
      // A page's records are interleaved with other partitions' but close together: one read of the span
      // beats a read per record (decodeRecord copies what it keeps, so the span buffer is dropped after).
      if (span > MAX_READ_SPAN || !segments.sameSegment(first.position, last.position)) return entries.map((entry) => toStored(partition, entry));
      const buf = segments.read(first.position, span);
      return entries.map((entry) => {
        const at = entry.position - first.position;
        const record = decodeRecord(buf.subarray(at, at + entry.length));
        return { partition, offset: entry.offset, storedAt: record.storedAt, event: record.event };
      });
    },
    lookup(source, id) {
      const found = idempotency.find(source, id);
      // Durable events only, as for read(): the rows of a group whose fsync runs are already there.
      if (!found || found.offset >= (committedHeads[found.partition] ?? 0)) return undefined;
      const entry = index.get(found.partition, found.offset);
      return entry ? toStored(found.partition, entry) : undefined;
    },
    heads: () => committedHeads,
    health: () => (writable && !closed ? { writable: true } : { writable: false, reason: closed ? 'closed' : failureReason }),
    onAppend(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(pruneTimer);
      if (syncTimer) clearInterval(syncTimer);
      while (flushing || current.entries.length > 0) {
        await flush();
        await new Promise((r) => setImmediate(r));
      }
      segments.close();
    },
  };
}
