import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import { eventId, eventSource, type CloudEvent } from '../cloudevents/event';
import { partitionOf } from '../cloudevents/partition';
import { AppError, coerceError } from '../errors';
import type { RecoveryPermission } from '../config';
import type { Db } from '../store/db';
import { createIdempotencyRepo } from '../store/idempotency-repo';
import { createLogIndexRepo, type IndexEntry } from '../store/log-index-repo';
import { createMetaRepo } from '../store/meta-repo';
import { createPartitionHeadsRepo } from '../store/partition-heads-repo';
import { createDeliveryStateRepo } from '../store/delivery-state-repo';
import { IDENTITY_FILE, readIdentity, writeIdentity, type DataDirIdentity } from '../store/data-dir';
import type { AppendResult, EventStore, ReadPage, StoredEvent } from './event-store';
import { createKeyFilter, idempotencyKey, type KeyFilter } from './key-filter';
import { encodeRecord, verifyAndDecode } from './record';
import { StartupError, recoverLog, type RecoveryReport } from './recovery';
import { openSegmentLog } from './segment-log';

export { StartupError, type RecoveryReport };
export { CorruptLogError } from './segment-log';

export interface LocalEventStoreOptions {
  dataDir: string;
  db: Db;
  log: Logger;
  partitions: number;
  fsync: 'always' | 'interval' | 'never';
  fsyncIntervalMs: number;
  segmentBytes: number;
  idempotencyWindowMs: number;
  /** `HERALD_RECOVERY`: what start-up may do beyond cutting a torn tail. */
  recovery?: ReadonlySet<RecoveryPermission>;
  clock?: () => number;
  /** Told of each committed group: its event count and how long its fsync took (undefined when none ran). */
  onGroupCommitted?: (events: number, fsyncMs: number | undefined) => void;
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
export function openLocalEventStore(
  opts: LocalEventStoreOptions,
): EventStore & { recovery: RecoveryReport; pruneIdempotency(): number; logStats(): { bytes: number; segments: number } } {
  const clock = opts.clock ?? Date.now;
  const { db, log } = opts;
  const meta = createMetaRepo(db);
  const idempotency = createIdempotencyRepo(db);
  const index = createLogIndexRepo(db);
  const headsRepo = createPartitionHeadsRepo(db);
  const deliveryState = createDeliveryStateRepo(db);

  const permissions = opts.recovery ?? new Set<RecoveryPermission>();
  const identity = readIdentity(opts.dataDir);
  const recorded = identity?.partitions ?? (meta.get('partitions') === undefined ? undefined : Number(meta.get('partitions')));
  if (recorded !== undefined && recorded !== opts.partitions) {
    throw new StartupError(
      `data dir ${opts.dataDir} was created with ${recorded} partitions; HERALD_PARTITIONS=${opts.partitions} would re-route keys. Start with HERALD_PARTITIONS=${recorded}.`,
    );
  }

  const segments = openSegmentLog({
    dir: path.join(opts.dataDir, 'wal'),
    segmentBytes: opts.segmentBytes,
    durable: opts.fsync !== 'never',
    warn: (msg, fields) => log.warn(fields ?? {}, msg),
    error: (msg, fields) => log.error(fields ?? {}, msg),
  });
  const lostDatabase = checkDatabaseBelongs(identity, segments.hasRecords());

  const recovery = recoverLog({
    db,
    log,
    segments,
    meta,
    idempotency,
    index,
    headsRepo,
    offsetFloors: deliveryState.offsetFloors,
    partitions: opts.partitions,
    dataDir: opts.dataDir,
    windowStart: clock() - opts.idempotencyWindowMs,
    policy: { skipCorrupt: permissions.has('skip-corrupt') },
  });
  // Recorded only once recovery has checked the log against it, so a refused start records nothing.
  // The database learns the id before herald.json is written: a crash between the two leaves a
  // database that still belongs (the id is kept and the file written at the next start).
  const id = identity?.id ?? meta.get('data_dir_id') ?? randomUUID();
  meta.set('partitions', opts.partitions);
  meta.set('data_dir_id', id);
  if (!identity) writeIdentity(opts.dataDir, { id, partitions: opts.partitions });
  if (lostDatabase) {
    log.error(
      { dataDir: opts.dataDir, rebuiltRecords: recovery.rebuiltRecords },
      "herald.db was missing or not this data dir's: events were rebuilt from the log (HERALD_RECOVERY=rebuild-events-only); subscriptions, their offsets and dead letters were not recoverable and are gone",
    );
  }

  /**
   * `herald.db` holds what the log cannot rebuild (subscriptions, their offsets, dead letters). A
   * database that is missing (no id) or another data dir's (another id) must not start quietly
   * empty. Returns whether the operator allowed starting without it.
   */
  function checkDatabaseBelongs(known: DataDirIdentity | undefined, hasLog: boolean): boolean {
    const dbId = meta.get('data_dir_id');
    const lost = known !== undefined ? dbId !== known.id : meta.get('partitions') === undefined && hasLog;
    if (!lost) return false;
    if (known && dbId !== undefined) {
      throw new StartupError(
        `${path.join(opts.dataDir, 'herald.db')} belongs to another data dir (its id is not the one in ${IDENTITY_FILE}); restore this data dir's herald.db.`,
      );
    }
    if (permissions.has('rebuild-events-only')) return true;
    throw new StartupError(
      `${path.join(opts.dataDir, 'herald.db')} is missing or empty, but this data dir has a log: subscriptions, their offsets and dead letters live only in herald.db. ` +
        'Restore it from a backup, or start with HERALD_RECOVERY=rebuild-events-only to rebuild events from the log and start with no subscriptions.',
    );
  }

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

  /**
   * Answers duplicates and frames the new events of one request. An offset is
   * taken only once its record is built, so a record that cannot be encoded
   * leaves the head where it was; the caller undoes earlier events of the
   * request if a later one fails.
   */
  function prepare(events: CloudEvent[], results: AppendResult[], added: PendingEntry[], waitFor: Set<Group>): void {
    const storedAt = clock();
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
      const offset = heads[partition]!;
      let frame: Buffer;
      try {
        frame = encodeRecord({ partition, offset, storedAt, event }, segments.key);
      } catch (err) {
        throw new AppError('invalid_event', 'the event cannot be stored', {
          cause: err,
          details: [
            {
              index: events.length > 1 ? events.indexOf(event) : undefined,
              message: `the event cannot be encoded: ${coerceError(err).message}`,
            },
          ],
        });
      }
      heads[partition] = offset + 1;
      const entry: PendingEntry = { source, id, key, partition, offset, storedAt, frame };
      added.push(entry);
      inRequest.set(key, entry);
      results.push({ id, source, partition, offset, duplicate: false });
    }
    for (const entry of added) {
      keyFilter?.add(entry.key);
      nextKeyFilter?.add(entry.key);
    }
    // Past its capacity the filter's false positives climb: rebuild it (in the background) at twice the size.
    if (keyFilter && keyFilter.count > keyFilter.capacity) buildKeyFilter();
  }

  async function append(events: CloudEvent[]): Promise<AppendResult[]> {
    if (closed) throw new AppError('unavailable', 'the gateway is shutting down', { retryAfter: RETRY_AFTER_SECONDS });
    const results: AppendResult[] = [];
    const waitFor = new Set<Group>();
    const added: PendingEntry[] = [];
    try {
      prepare(events, results, added, waitFor);
    } catch (err) {
      // Nothing of this request joined a group yet: give its offsets back so none is burnt.
      for (let i = added.length - 1; i >= 0; i--) heads[added[i]!.partition] = added[i]!.offset;
      throw err;
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
      const first = await segments.append(
        group.entries.map((e) => e.frame),
        group.bytes,
      );
      const positions: number[] = [];
      let at = first;
      for (const e of group.entries) {
        positions.push(at);
        at += e.frame.length;
      }
      const mustSync = opts.fsync === 'always' || syncFailed;
      let fsyncMs: number | undefined;
      if (!mustSync) dirty = true;
      // The group's SQLite rows are written while its fsync runs instead of after it. Until the sync
      // returns they are invisible to delivery and partition reads (committedHeads moves after it), a
      // second send of a key waits on the group (pendingKeys), and a failed sync undoes them.
      const syncStarted = performance.now();
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
          fsyncMs = performance.now() - syncStarted;
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
      opts.onGroupCommitted?.(group.entries.length, fsyncMs);
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

  /** Verifies and decodes one record's bytes; undefined (and an error log) when they are not that record. */
  function decodeAt(partition: number, entry: IndexEntry, frame: Buffer | undefined): StoredEvent | undefined {
    const record = frame && verifyAndDecode(frame, partition, entry.offset, segments.key);
    if (record) return { partition, offset: entry.offset, storedAt: record.storedAt, event: record.event };
    log.error(
      { partition, offset: entry.offset, ...segments.locate(entry.position), length: entry.length },
      'log: corrupt record (checksum or header mismatch); it is not served',
    );
    return undefined;
  }

  function readFrame(entry: IndexEntry): Buffer | undefined {
    try {
      return segments.read(entry.position, entry.length);
    } catch {
      return undefined; // the bytes are gone (a lost range): as corrupt as a bad checksum
    }
  }

  function readPage(partition: number, entries: IndexEntry[]): ReadPage {
    const events: StoredEvent[] = [];
    const first = entries[0];
    const last = entries[entries.length - 1];
    const span = first && last ? last.position + last.length - first.position : 0;
    // A page's records are interleaved with other partitions' but close together: one read of the span
    // beats a read per record (decoding copies what it keeps, so the span buffer is dropped after).
    const spanBuf =
      first && last && entries.length > 1 && span <= MAX_READ_SPAN && span > 0 && segments.sameSegment(first.position, last.position)
        ? readFrame({ offset: first.offset, position: first.position, length: span })
        : undefined;
    for (const entry of entries) {
      const at = entry.position - (first?.position ?? 0);
      const frame = spanBuf ? spanBuf.subarray(at, at + entry.length) : readFrame(entry);
      const stored = decodeAt(partition, entry, frame);
      if (!stored) return { events, corruptOffset: entry.offset };
      events.push(stored);
    }
    return { events };
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
      if (available <= 0) return { events: [] };
      const head = committedHeads[partition] ?? 0;
      // After a gap, rows of a group whose fsync still runs may follow in the same range: never serve those.
      return readPage(
        partition,
        index.range(partition, fromOffset, available).filter((e) => e.offset < head),
      );
    },
    offsetAtTime(partition, atMs) {
      // The idempotency records carry the stored time and are indexed by it: a time index over the
      // window they cover. Before the oldest one kept, records may have been pruned: the log decides.
      const oldest = idempotency.oldest(partition);
      const head = committedHeads[partition] ?? 0;
      if (oldest === undefined) return undefined;
      // Nothing was pruned before the oldest record kept when it is the partition's first (offset 0).
      if (atMs <= oldest.storedAt) return oldest.offset === 0 ? 0 : undefined;
      const offset = idempotency.firstOffsetAt(partition, atMs);
      return offset === undefined ? head : Math.min(offset, head);
    },
    lookup(source, id) {
      const found = idempotency.find(source, id);
      // Durable events only, as for read(): the rows of a group whose fsync runs are already there.
      if (!found || found.offset >= (committedHeads[found.partition] ?? 0)) return undefined;
      const entry = index.get(found.partition, found.offset);
      if (!entry) return undefined;
      const page = readPage(found.partition, [entry]);
      if (page.corruptOffset !== undefined) {
        throw new AppError(
          'corrupt_record',
          `the stored record of this event (partition ${found.partition}, offset ${found.offset}) is corrupt and is not served`,
          {
            details: [{ message: `partition ${found.partition}, offset ${found.offset}: checksum mismatch` }],
          },
        );
      }
      return page.events[0];
    },
    heads: () => committedHeads,
    /** Bytes and segment files of the log on disk. */
    logStats: () => ({ bytes: segments.sizeBytes(), segments: segments.segmentFiles().length }),
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
