import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { throttledLine } from '../logger';
import type { Logger } from 'pino';
import type { CloudEvent } from '../cloudevents/event';
import { AppError, coerceError } from '../errors';
import type { RecoveryPermission } from '../config';
import { durably, type Db } from '../store/db';
import { createIdempotencyRepo } from '../store/idempotency-repo';
import { createLogIndexRepo } from '../store/log-index-repo';
import { createMetaRepo, type MetaRepo } from '../store/meta-repo';
import { createPartitionHeadsRepo } from '../store/partition-heads-repo';
import { createDeliveryStateRepo } from '../store/delivery-state-repo';
import { createRetentionFloors, type RetentionFloors } from '../store/retention-floors';
import { createSkippedOffsetsRepo, type SkippedOffsetsRepo } from '../store/skipped-offsets-repo';
import {
  hasLegacyIndexTables,
  INDEX_DB_FILE,
  isCorruptDatabase,
  moveIndexTables,
  openCheckedIndexDatabase,
  openIndexDatabase,
} from '../store/index-db';
import { IDENTITY_FILE, metaWithoutWriting, readIdentity, writeIdentity, type DataDirIdentity } from '../store/data-dir';
import type { AppendResult, EventStore } from './event-store';
import { createGroupCommit, type CommittedGroup } from './group-commit';
import { createIndexRows } from './index-rows';
import { createIndexer, safely } from './indexer';
import { createDecodedCache, createReads, decodedCharge, reportingCorruption } from './reads';
import { StartupError, recoverLog, type RecoveryReport } from './recovery';
import { createRetention } from './retention';
import { SEGMENT_FILE, openSegmentLog, readFrameKey, type SegmentLog } from './segment-log';
import { createSequencer } from './sequencer';
import { damagedIndexMarker, markIndexDamaged, startIndexIntegrityCheck } from '../store/index-check';
import type { FrameKey } from './record';
import { createOffsetReservation, readReservation, skipReserved } from './offset-reservation';
import { POSITION_FIELDS, type GroupPositions, type LogFeed, type LogFeedListener } from './log-feed';

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
  /** `HERALD_RETENTION` (default 7 days). */
  retentionMs?: number;
  /** `HERALD_MAX_LOG_BYTES` (0, the default: no limit). */
  maxLogBytes?: number;
  /** `HERALD_MIN_FREE_BYTES` (default 0 here: tests opt in; the gateway passes the setting). */
  minFreeBytes?: number;
  /** Test hook: the free bytes retention sees. */
  freeBytes?: () => number;
  /** Test hook: how long an unwritable log waits before its first probe write (default 5 s). */
  writeProbeFirstMs?: number;
  /** The indexer's tail bound (records); ingest waits past it. */
  maxUnindexed?: number;
  /** `HERALD_RECOVERY`: what start-up may do beyond cutting a torn tail. */
  recovery?: ReadonlySet<RecoveryPermission>;
  clock?: () => number;
  /** Told of each committed group: its event count and how long its fsync took (undefined when none ran). */
  onGroupCommitted?: (events: number, fsyncMs: number | undefined) => void;
}

const DAY_MS = 86_400_000;
/** Decoded events kept for the main thread's readers, by the memory they hold. */
const READ_CACHE_BYTES = 16 * 1024 * 1024;

export type LocalEventStore = EventStore & {
  recovery: RecoveryReport;
  pruneIdempotency(): Promise<number>;
  logStats(): { bytes: number; segments: number; unindexed: number };
  /** Runs a retention round now (tests). */
  runRetention(): Promise<void>;
  /** Resolves once the indexer has written every event acknowledged so far to SQLite (tests, benchmarks). */
  indexed(): Promise<void>;
  /** The duplicate check's key filter (built by the indexer's worker): whether one is in use, and when (tests). */
  keyFilter: { ready(): boolean; built(): Promise<boolean> };
  /** For a reader of the log in another thread (the delivery thread). */
  feed: LogFeed;
};

/**
 * The local backend (RocketMQ's shape): a write-ahead log of segment files under `<dataDir>/wal`
 * written by group commit, the only thing on the ack path; SQLite rows derived from it by an indexer
 * thread behind it (read-your-writes through its tail); retention deleting whole segments.
 */
export function openLocalEventStore(opts: LocalEventStoreOptions): LocalEventStore {
  const identity = readIdentity(opts.dataDir);
  refuseForeignFiles(opts, identity);
  const indexDb = openOwnIndex(opts, identity);
  try {
    return composeStore(opts, indexDb, identity);
  } catch (err) {
    indexDb.close();
    throw err;
  }
}

/**
 * `index.db`, or, when SQLite finds it damaged (a truncated file, garbage in a page), a new one: it
 * is derived from the log, so it is set aside (`index.db.corrupt-<ms>`, with its -wal) and rebuilt
 * from the log by recovery, as a missing one is. What it alone knew (offsets of a lost log tail) is
 * still known to herald.db's delivery floors and the offset reservation.
 */
function openUndamagedIndex(file: string, log: Logger): Db {
  const marker = damagedIndexMarker(file);
  let damage: string;
  try {
    // Left by the last run's integrity check (see `watchIndexIntegrity`).
    if (fs.existsSync(marker)) damage = fs.readFileSync(marker, 'utf8');
    else return openCheckedIndexDatabase(file);
  } catch (err) {
    if (!isCorruptDatabase(err)) throw err;
    damage = coerceError(err).message;
  }
  const aside = `${file}.corrupt-${Date.now()}`;
  for (const suffix of ['', '-wal', '-shm']) {
    if (fs.existsSync(file + suffix)) fs.renameSync(file + suffix, aside + suffix);
  }
  log.error(
    { file, setAside: aside, err: damage },
    'index.db is damaged: it is set aside and rebuilt from the log (events, idempotency records and heads)',
  );
  const db = openIndexDatabase(file);
  fs.rmSync(marker, { force: true });
  return db;
}

/**
 * Checks index.db fully in the background once the store is open. Found damaged, ingest stops (its
 * duplicate check may miss events stored: a resend would be stored twice) with a 503 and /readyz
 * unready, a marker makes the next start set the file aside and rebuild it, and an `error` line
 * says to restart.
 */
function watchIndexIntegrity(
  indexDb: Db,
  log: Logger,
): { damage(): string | undefined; report(detail: string): void; stop(): Promise<void> } {
  let found: string | undefined;
  const report = (detail: string) => {
    if (found !== undefined) return;
    found = detail;
    markIndexDamaged(indexDb.name, detail, log);
    log.error(
      { file: indexDb.name, damage: detail },
      'index.db is damaged: ingest and reads stop; restart the gateway to rebuild it from the log',
    );
  };
  // No event indexed and no idempotency record (a new data dir): nothing for the check to find, and no
  // thread started for it (about 0.4 s of CPU). Page damage is the start's quick_check's to find.
  if (holdsNoRows(indexDb)) return { damage: () => found, report, stop: async () => undefined };
  const check = startIndexIntegrityCheck(indexDb.name, report);
  return { damage: () => found, report, stop: () => check.stop() };
}

/** Whether index.db has no event and no idempotency record; false when it cannot be read (the check then runs). */
function holdsNoRows(indexDb: Db): boolean {
  try {
    const sql = 'SELECT NOT EXISTS (SELECT 1 FROM log_index) AND NOT EXISTS (SELECT 1 FROM idempotency)';
    return indexDb.prepare(sql).pluck().get() === 1;
  } catch {
    return false;
  }
}

/**
 * The records of which data dir these files are, compared before anything is changed (index.db would be
 * rebuilt for herald.db's id): herald.json's id, herald.db's id and the log it recorded, wal/'s log (from its
 * key), index.db's id. A disagreement is refused naming the file the others outvote, so that following the
 * message restores the file that is wrong. Probes: a damaged herald.json was blamed on the sound herald.db
 * (whose restore would lose what it stored since), and a refusal told to remove the herald.json that matched
 * the log. The log is what the data dir is; herald.json travels with it.
 */
function refuseForeignFiles(opts: LocalEventStoreOptions, identity: DataDirIdentity | undefined): void {
  const meta = createMetaRepo(opts.db);
  const inDatabase = meta.get('data_dir_id');
  const recordedLog = meta.get('log_id');
  const walLog = walLogId(opts);
  const logKnown = recordedLog !== undefined && walLog !== undefined;
  const logDisagrees = logKnown && recordedLog !== walLog;
  const idsDisagree = identity !== undefined && inDatabase !== undefined && identity.id !== inDatabase;
  if (!logDisagrees && !idsDisagree) return;
  const inIndex = () => metaWithoutWriting(path.join(opts.dataDir, INDEX_DB_FILE), 'data_dir_id');
  const database = path.join(opts.dataDir, 'herald.db');
  const json = path.join(opts.dataDir, IDENTITY_FILE);
  if (logDisagrees) {
    // herald.db or wal/ is another data dir's: herald.json (or, without it, index.db) says which. When it is
    // wal/ (or only its frame.key), opening the log says so more precisely, and index.db agrees with herald.db.
    const index = identity === undefined ? inIndex() : undefined;
    const witness = identity !== undefined ? IDENTITY_FILE : index !== undefined ? 'index.db' : undefined;
    if ((identity !== undefined && idsDisagree) || (identity === undefined && index !== undefined && index !== inDatabase)) {
      throw new StartupError(
        `${database} belongs to another data dir: it recorded another log than the one in ${walDir(opts)}, and ${witness} names another data dir than it does; nothing was changed. ` +
          "Restore this data dir's herald.db from a backup.",
      );
    }
    return;
  }
  // The ids disagree; herald.db and the log agree (or the log cannot tell).
  const agreeing = logKnown ? `${database} and ${walDir(opts)}` : inIndex() === inDatabase ? `${database} and index.db` : undefined;
  if (agreeing) {
    throw new StartupError(
      `${json} names another data dir (id ${identity!.id}) than ${agreeing}, which agree (id ${inDatabase}): ${IDENTITY_FILE} is likely damaged or copied from another data dir; nothing was changed. ` +
        `Restore ${IDENTITY_FILE} from a backup, or remove it to have it written again from herald.db.`,
    );
  }
  throw new StartupError(
    `${database} belongs to another data dir (its id ${inDatabase} is not ${identity!.id}, the one in ${IDENTITY_FILE}); nothing was changed. ` +
      `Restore this data dir's herald.db from a backup (or, if ${IDENTITY_FILE} is the damaged one, remove it to have it written again from herald.db).`,
  );
}

/** The id of wal/'s log, from its key; undefined when it has none readable yet (a new log, or one whose key a start makes). */
function walLogId(opts: LocalEventStoreOptions): string | undefined {
  try {
    return logIdOf(readFrameKey(walDir(opts)));
  } catch {
    return undefined; // what is wrong with it is said where the log is opened
  }
}

const foreignLog = (opts: LocalEventStoreOptions) =>
  new StartupError(
    `${walDir(opts)} is not this data dir's log (${path.join(opts.dataDir, 'herald.db')} recorded another one; a wal/ copied or linked from another data dir?); nothing was changed. ` +
      "Restore this data dir's wal/ (or the whole data dir) from a backup.",
  );

/**
 * `index.db`, with the tables a data dir from before it kept in herald.db moved over. One written
 * for another data dir (an operator's copy) is derived from another log: it is thrown away and
 * rebuilt, never trusted (its duplicate answers would drop new events).
 */
function openOwnIndex(opts: LocalEventStoreOptions, identity: DataDirIdentity | undefined): Db {
  const file = path.join(opts.dataDir, INDEX_DB_FILE);
  // Said before the scan, which on a large log takes a while before the gateway listens. A data dir
  // from before index.db has none yet: its tables move over from herald.db below, without a scan.
  if (identity !== undefined && !fs.existsSync(file) && !hasLegacyIndexTables(opts.db))
    opts.log.warn({ file }, 'index.db is missing: it is rebuilt from the log before the gateway listens (a full scan)');
  let indexDb = openUndamagedIndex(file, opts.log);
  const known = identity?.id ?? createMetaRepo(opts.db).get('data_dir_id');
  const indexedFor = createMetaRepo(indexDb).get('data_dir_id');
  if (known !== undefined && indexedFor !== undefined && indexedFor !== known) {
    indexDb.close();
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(file + suffix, { force: true });
    opts.log.warn({ file }, 'index.db belonged to another data dir: it is rebuilt from the log');
    indexDb = openIndexDatabase(file);
  }
  try {
    moveIndexTables(opts.db, file);
  } catch (err) {
    indexDb.close();
    throw err;
  }
  return indexDb;
}

function composeStore(opts: LocalEventStoreOptions, indexDb: Db, identity: DataDirIdentity | undefined): LocalEventStore {
  const clock = opts.clock ?? Date.now;
  const { log } = opts;
  const { segments, recovery, heads, skipped } = openLog(opts, indexDb, identity, clock);
  const index = createLogIndexRepo(indexDb);
  const idempotency = createIdempotencyRepo(indexDb);
  const firstOffsets = heads.map((head, p) => index.minOffset(p) ?? head);
  skipped.prune(firstOffsets);
  const retentionFloors = createRetentionFloors(createMetaRepo(opts.db));
  const appendListeners = new Set<(partitions: ReadonlySet<number>) => void>();
  const retireListeners = new Set<(firstOffsets: readonly number[]) => void>();
  let feedListener: LogFeedListener | undefined;
  /** Just past the last committed group (recovery left only committed bytes). */
  let committedEnd = segments.end();

  const indexer = createIndexer({
    dbFile: indexDb.name,
    partitions: opts.partitions,
    log,
    maxTailEntries: opts.maxUnindexed,
    indexedThrough: segments.end(),
    onRetired: (through, found) => retired(through, found),
    onIndexed: (through) => feedListener && safely(log, 'log feed listener failed', () => feedListener?.indexed(through)),
    onDamage: (detail) => integrity.report(detail),
  });
  const sequencer = createSequencer({
    partitions: opts.partitions,
    heads,
    key: segments.key,
    clock,
    idempotency: reportingCorruption(idempotency, (detail) => integrity.report(detail)),
    tail: indexer,
    firstOffsets: () => firstOffsets,
    buildKeyFilter: (log2Bits, hashes) => indexer.buildKeyFilter(log2Bits, hashes),
    log,
  });
  const reservation = createOffsetReservation({
    dir: walDir(opts),
    fsync: opts.fsync,
    heads,
    logEnd: syncedEnd(segments, opts.fsync, log),
    log,
  });
  const integrity = watchIndexIntegrity(indexDb, log);
  const walPlace = watchPlace(walDir(opts));
  const groups = createGroupCommit({
    segments,
    log,
    fsync: opts.fsync,
    fsyncIntervalMs: opts.fsyncIntervalMs,
    probeFirstMs: opts.writeProbeFirstMs,
    onCommitted: committed,
    onFailed: () => sequencer.failed(),
    // Under fsync=always every acknowledged event is synced before its answer: no reservation ahead.
    ...(opts.fsync === 'always' ? {} : { reservation }),
  });
  const retention = createRetention({
    dataDir: opts.dataDir,
    segments,
    groups,
    indexer,
    log,
    clock,
    retentionMs: opts.retentionMs ?? 7 * DAY_MS,
    maxLogBytes: opts.maxLogBytes ?? 0,
    minFreeBytes: opts.minFreeBytes ?? 0,
    freeBytes: opts.freeBytes,
    beforeRetire: (through) => feedListener?.retiring(through, plannedFirstOffsets(through)) ?? Promise.resolve(),
  });
  const reads = createReads({
    segments,
    index,
    idempotency,
    tail: indexer,
    heads: sequencer.heads,
    firstOffsets: () => firstOffsets,
    log,
    unreachableFails: true,
    // Live tails (and replays) reading the same fresh events get one decoded copy, not one each. Charged
    // at what it holds in memory (see `decodedCharge`).
    decoded: createDecodedCache({ maxBytes: READ_CACHE_BYTES, charge: (length) => decodedCharge(length) }),
    onIndexDamage: integrity.report,
    damage: integrity.damage,
  });
  sequencer.start();

  const pruneTimer = setInterval(() => void pruneIdempotency(), Math.min(60_000, Math.max(1000, opts.idempotencyWindowMs / 10)));
  pruneTimer.unref();

  function committed(group: CommittedGroup): void {
    sequencer.committed(group.entries);
    indexer.add(group.end, group.entries, group.positions);
    committedEnd = group.end;
    // Synced before it was committed (fsync=always): the mark a start checks the log against moves up.
    if (opts.fsync === 'always') reservation.syncedThrough(committedEnd);
    if (feedListener) {
      const positions = groupPositions(group);
      safely(log, 'log feed listener failed', () => feedListener?.committed(positions));
    }
    retention.committed(group.positions[0]!, group.entries[group.entries.length - 1]!.storedAt);
    opts.onGroupCommitted?.(group.entries.length, group.fsyncMs);
    if (appendListeners.size > 0) {
      const grown = new Set(group.entries.map((e) => e.partition));
      for (const listener of appendListeners) safely(log, 'append listener failed', () => listener(grown));
    }
  }

  function groupPositions(group: CommittedGroup): GroupPositions {
    const numbers = new Float64Array(group.entries.length * POSITION_FIELDS);
    group.entries.forEach((e, i) =>
      numbers.set([e.partition, e.offset, group.positions[i]!, e.frame.length, e.storedAt], i * POSITION_FIELDS),
    );
    return { end: group.end, segmentBase: segments.baseOf(group.positions[0]!), numbers };
  }

  /** The first offsets once everything before `through` is deleted (as `retired` will find them). */
  function plannedFirstOffsets(through: number): number[] {
    const heads = sequencer.heads();
    return firstOffsets.map((current, p) =>
      Math.max(current, index.firstOffsetAtOrPast(p, through) ?? indexer.firstOffset(p) ?? heads[p]!),
    );
  }

  const feed: LogFeed = {
    indexDamaged: integrity.report,
    snapshot() {
      return {
        walDir: path.join(opts.dataDir, 'wal'),
        indexDbFile: indexDb.name,
        partitions: opts.partitions,
        heads: [...sequencer.heads()],
        firstOffsets: [...firstOffsets],
        segmentBases: segments.list().map((s) => s.base),
        frameKey: { ...segments.key },
        committedEnd,
        tail: indexer.unindexedGroups().map((g) => {
          const numbers = new Float64Array(g.entries.length * POSITION_FIELDS);
          g.entries.forEach((e, i) => numbers.set([e.partition, e.offset, e.position, e.length, e.storedAt], i * POSITION_FIELDS));
          return { end: g.end, segmentBase: segments.baseOf(g.entries[0]!.position), numbers };
        }),
      };
    },
    listen(listener) {
      feedListener = listener;
      return () => {
        if (feedListener === listener) feedListener = undefined;
      };
    },
  };

  /** Retention moved `log_start` to `through`: first offsets move, then the files go. */
  function retired(through: number, found: (number | null)[]): void {
    const heads = sequencer.heads();
    found.forEach((offset, p) => {
      const first = offset ?? indexer.firstOffset(p) ?? heads[p]!;
      firstOffsets[p] = Math.max(firstOffsets[p]!, first);
    });
    if (keepFloors(through)) {
      const dropped = segments.dropBefore(through, { background: true });
      log.info({ segments: dropped.segments, freedBytes: dropped.bytes, firstOffsets }, 'retention deleted the oldest log segments');
    }
    for (const listener of retireListeners) safely(log, 'retention listener failed', () => listener(firstOffsets));
  }

  const floorsLine = throttledLine(60_000, clock);
  /**
   * Records the first offsets as retention's floors, and `through` as where the log starts, in herald.db
   * before any file goes. When it cannot, the files stay until a later round (or the next start) has
   * recorded them: offsets are never reused, and a start can tell deleted segments from lost ones.
   */
  function keepFloors(through: number): boolean {
    try {
      recordRetention(opts.db, retentionFloors, firstOffsets, through);
      return true;
    } catch (err) {
      // Once a minute: a round under HERALD_MAX_LOG_BYTES runs at every ingest check (syscall probe: 35 lines in 4 s).
      floorsLine((suppressed) =>
        log.error({ err, suppressed }, 'retention could not record its offsets in herald.db; the deleted segments stay on disk for now'),
      );
      return false;
    }
  }

  async function append(events: CloudEvent[]): Promise<AppendResult[]> {
    if (groups.closed) throw new AppError('unavailable', 'the gateway is shutting down', { retryAfter: 1 });
    if (integrity.damage()) throw new AppError('unavailable', DAMAGED_INDEX, { retryAfter: 5 });
    retention.assertRoom();
    // Backpressure: when the indexer is behind by its bound, wait rather than grow the tail or skip a check.
    const room = indexer.room();
    if (room) {
      await room;
      if (groups.closed) throw new AppError('unavailable', 'the gateway is shutting down', { retryAfter: 1 });
    }
    const { results, added, waitFor } = sequencer.prepare(events);
    if (added.length > 0) {
      const done = groups.enqueue(added);
      sequencer.track(added, done);
      waitFor.add(done);
    }
    for (const done of waitFor) await done;
    return results;
  }

  function pruneIdempotency(): Promise<number> {
    return indexer.prune(clock() - opts.idempotencyWindowMs);
  }

  return {
    partitions: opts.partitions,
    recovery,
    pruneIdempotency,
    append,
    read: reads.read,
    lookup: reads.lookup,
    offsetAtTime: reads.offsetAtTime,
    heads: sequencer.heads,
    firstOffsets: () => firstOffsets,
    logStats: () => ({ bytes: segments.sizeBytes(), segments: segments.list().length, unindexed: indexer.lag() }),
    // A round already running (started by a commit) is waited for, then a fresh one runs; it resolves
    // once the retired files are gone too (they are deleted off the ingest loop).
    runRetention: async () => {
      await retention.run();
      await retention.run();
      await segments.unlinked();
    },
    indexed: () => indexer.drained(),
    keyFilter: { ready: sequencer.hasKeyFilter, built: sequencer.keyFilterReady },
    feed,
    health: () => {
      if (integrity.damage()) return { writable: false, reason: DAMAGED_INDEX };
      const log = retention.health() ?? groups.health();
      if (!log.writable) return log;
      const health = indexer.health() ?? log;
      const moved = walPlace.moved();
      return moved && health.writable ? { ...health, unready: moved } : health;
    },
    onAppend(listener) {
      appendListeners.add(listener);
      return () => appendListeners.delete(listener);
    },
    onRetire(listener) {
      retireListeners.add(listener);
      return () => retireListeners.delete(listener);
    },
    async close(closeOpts: { deadline?: number } = {}) {
      if (groups.closed) return;
      clearInterval(pruneTimer);
      // Not awaited: a check inside SQLite ends only when it returns (seconds on a large index).
      void integrity.stop().catch(() => undefined);
      retention.stop();
      sequencer.stop();
      await groups.close();
      // Only when everything acknowledged is synced: otherwise the next start treats the stop as unclean.
      // Under fsync=always every acknowledged event was synced, so the log alone gives the next start its heads.
      const skips = opts.fsync === 'always' ? '' : '; the next start skips reserved offsets';
      if (groups.closedClean) {
        await reservation
          .close(sequencer.heads(), committedEnd)
          .catch((err: unknown) => log.error({ err: coerceError(err) }, `log: could not record the clean stop${skips}`));
      } else if (skips) {
        log.warn(`log: stopping unclean (a failed write not cut from the log, or events not known synced)${skips}`);
      }
      await indexer.close(closeOpts.deadline);
      segments.close();
      indexDb.close();
    },
  };
}

/**
 * Start-up: checks the data dir's identity and partition count, opens the segment log, finishes a
 * retention a crash interrupted, and recovers (cuts a torn tail, indexes what the indexer had not).
 */
function openLog(
  opts: LocalEventStoreOptions,
  indexDb: Db,
  identity: DataDirIdentity | undefined,
  clock: () => number,
): { segments: SegmentLog; recovery: RecoveryReport; heads: number[]; skipped: SkippedOffsetsRepo } {
  const { db, log } = opts;
  const meta = createMetaRepo(db);
  const indexMeta = createMetaRepo(indexDb);
  const permissions = opts.recovery ?? new Set<RecoveryPermission>();
  const inDatabase = meta.get('partitions') === undefined ? undefined : Number(meta.get('partitions'));
  // Two records of one fact that disagree: one is damaged, and neither can be taken for the right one.
  if (identity !== undefined && inDatabase !== undefined && identity.partitions !== inDatabase) {
    throw new StartupError(
      `${path.join(opts.dataDir, IDENTITY_FILE)} says ${identity.partitions} partitions and ${path.join(opts.dataDir, 'herald.db')} says ${inDatabase}: ` +
        'one of them is damaged; nothing was changed. Find which (the count the data dir was created with), then restore that file from a backup; ' +
        `a damaged ${IDENTITY_FILE} may also be removed to have it written again from herald.db (never when herald.db is the damaged one).`,
    );
  }
  const recorded = identity?.partitions ?? inDatabase;
  if (recorded !== undefined && recorded !== opts.partitions) {
    throw new StartupError(
      `data dir ${opts.dataDir} was created with ${recorded} partitions; HERALD_PARTITIONS=${opts.partitions} would re-route keys. Start with HERALD_PARTITIONS=${recorded}.`,
    );
  }
  // herald.db used before, and no log: the log was lost (a wal/ deleted, a restore cut short). A new
  // one would hand out the acknowledged offsets again.
  if (meta.get('partitions') !== undefined && !hasSegments(walDir(opts))) {
    throw new StartupError(
      `${walDir(opts)} holds no log, but ${path.join(opts.dataDir, 'herald.db')} shows this data dir stored events: a new log would give their offsets to new events. ` +
        'Restore wal/ (or the whole data dir) from a backup; to start over instead, move the data dir aside.',
    );
  }
  const segments = openSegmentLog({
    dir: walDir(opts),
    segmentBytes: opts.segmentBytes,
    durable: opts.fsync !== 'never',
    warn: (msg, fields) => log.warn(fields ?? {}, msg),
    error: (msg, fields) => log.error(fields ?? {}, msg),
  });
  // herald.db against herald.json first: a database from elsewhere is named as such, not its log blamed.
  const lostDatabase = checkDatabaseBelongs(opts, meta, identity, segments.hasRecords(), permissions);
  const logId = checkLogBelongs(opts, meta, segments.key, segments.keyMade);
  const retentionFloors = createRetentionFloors(meta);
  // index.db indexed this log before: it kept retention's record under older versions, so herald.db's is whole after this start.
  const indexKnew = indexMeta.get('log_indexed_through') !== undefined;
  const newDir = meta.get('partitions') === undefined && !segments.hasRecords();
  const logStart = checkLogStart(opts, segments, retentionFloors, Number(indexMeta.get('log_start') ?? 0), permissions, lostDatabase);
  if (logStart > 0) {
    // A retention the process did not finish: its rows go, its floors are kept (see `retired`), then its files go.
    const firsts = createIndexRows(indexDb, opts.partitions).retire(logStart);
    const heads = createPartitionHeadsRepo(indexDb).load(opts.partitions);
    recordRetention(
      db,
      retentionFloors,
      firsts.map((first, p) => first ?? heads[p]!),
      logStart,
    );
    segments.dropBefore(logStart);
  }
  // The record of the last run: the fsync mode it acknowledged under, and its ceilings (applied below).
  const reservation = readReservation(walDir(opts), log);
  const recovery = recoverLog({
    db: indexDb,
    log,
    segments,
    meta: indexMeta,
    idempotency: createIdempotencyRepo(indexDb),
    index: createLogIndexRepo(indexDb),
    headsRepo: createPartitionHeadsRepo(indexDb),
    offsetFloors: createDeliveryStateRepo(db).offsetFloors,
    retentionFloors: retentionFloors.load,
    dataDirMeta: meta,
    partitions: opts.partitions,
    dataDir: opts.dataDir,
    windowStart: clock() - opts.idempotencyWindowMs,
    policy: { skipCorrupt: permissions.has('skip-corrupt') },
    logWasSynced: reservation?.fsync === 'always',
    syncedEnd: reservation?.fsync === 'always' ? reservation.logEnd : undefined,
  });
  // Recorded only once recovery has checked the log against it, so a refused start records nothing.
  // The database learns the id before herald.json is written: a crash between the two leaves a
  // database that still belongs (the id is kept and the file written at the next start).
  const id = identity?.id ?? meta.get('data_dir_id') ?? randomUUID();
  // On disk before herald.json names the id: a power cut must not leave a herald.json whose database lost it.
  durably(db, () =>
    db.transaction(() => {
      meta.set('partitions', opts.partitions);
      meta.set('data_dir_id', id);
      meta.set('log_id', logId);
    })(),
  );
  if (newDir || indexKnew) retentionFloors.markWhole();
  indexMeta.set('data_dir_id', id);
  if (!identity) writeIdentity(opts.dataDir, { id, partitions: opts.partitions });
  if (lostDatabase) {
    log.error(
      { dataDir: opts.dataDir, rebuiltRecords: recovery.rebuiltRecords },
      "herald.db was missing or not this data dir's: events were rebuilt from the log (HERALD_RECOVERY=rebuild-events-only); subscriptions, their offsets and dead letters were not recoverable and are gone",
    );
  }
  const headsRepo = createPartitionHeadsRepo(indexDb);
  const heads = headsRepo.load(opts.partitions);
  const skipped = createSkippedOffsetsRepo(db);
  for (const gap of skipReserved(heads, reservation)) {
    // Recorded before the head moves (a crash between finds the same gap again): delivery passes over it quietly.
    // Not when index.db was lost: the heads rebuilt from the log's end may then lie below acknowledged events
    // an earlier start found lost, which delivery still names (re-probe: they became "skipped" with the gap).
    if (indexKnew) skipped.record(gap);
    headsRepo.set(gap.partition, gap.to);
    log.error(
      { partition: gap.partition, fromOffset: gap.from, toOffset: gap.to - 1, count: gap.to - gap.from },
      'log: offsets that may have been handed out before this start (an unclean stop under fsync=interval/never, or a lost index.db) are skipped, never reused',
    );
  }
  return { segments, recovery, heads, skipped };
}

/**
 * The log's end, once synced, to record as synced (fsync=always): it may hold bytes an earlier run
 * under interval/never left unsynced, which a power cut would take, and the next start would then
 * refuse the log as cut short. Undefined (nothing recorded, nothing checked) when the sync fails, and
 * under interval/never, whose end is not known synced (only an `always` run's record is checked).
 */
function syncedEnd(segments: SegmentLog, fsync: LocalEventStoreOptions['fsync'], log: Logger): number | undefined {
  if (fsync !== 'always') return undefined;
  try {
    segments.syncNow();
    return segments.end();
  } catch (err) {
    log.warn({ err: coerceError(err) }, 'log: could not sync the log at start; the next start cannot check that it kept its end');
    return undefined;
  }
}

/**
 * Where the log must start: the furthest retention recorded deleting up to (herald.db, which also
 * knows it when index.db is lost, and index.db). An oldest segment that starts later than that was
 * not deleted by retention: lost (a file removed, a restore missing it). Refused unless skip-corrupt,
 * which goes on from it as if retention had deleted up to there (an `error` line names the bytes).
 * No check is possible with a new herald.db (`lostDatabase`: rebuild-events-only) and no index.db to
 * say. A herald.db whose record is not whole (older versions kept it in index.db alone) with no
 * index.db cannot tell retention from loss either: refused, saying so (skip-corrupt could hand out
 * the deleted offsets again).
 */
function checkLogStart(
  opts: LocalEventStoreOptions,
  segments: SegmentLog,
  floors: RetentionFloors,
  indexLogStart: number,
  permissions: ReadonlySet<RecoveryPermission>,
  lostDatabase: boolean,
): number {
  const recorded = floors.logStart();
  const known = Math.max(indexLogStart, recorded ?? 0);
  const neverRetained = !lostDatabase && floors.load().length === 0;
  const checkable = recorded !== undefined || indexLogStart > 0 || neverRetained;
  const oldest = segments.list()[0]!;
  // Unchecked, the log is taken as it is: where it starts is recorded (see `recordRetention`), so later starts check.
  if (!checkable) return Math.max(known, oldest.base);
  if (oldest.base <= known) return known;
  const missing = { from: known, to: oldest.base };
  if (!lostDatabase && !floors.whole() && recorded === undefined && indexLogStart === 0) {
    throw new StartupError(
      `the log starts at ${oldest.file}, log byte ${missing.to}, and herald.db has no record of retention before it: the older ` +
        'version that made this data dir kept that record in index.db alone, which is missing, so Herald cannot tell events ' +
        'retention deleted from a lost segment, nor which offsets they had (HERALD_RECOVERY does not help: the deleted offsets could ' +
        'be handed out again). Put index.db back (from a backup ' +
        'of the data dir), start once with it so that herald.db records it, and remove it again if needed.',
    );
  }
  if (!permissions.has('skip-corrupt')) {
    throw new StartupError(
      `the log's oldest ${missing.to - missing.from} bytes are missing: it starts at ${oldest.file}, log byte ${missing.to}, but ` +
        `retention deleted only up to byte ${missing.from} (herald.db): a segment file was lost, and with it acknowledged events; nothing was changed. ` +
        'Restore the missing segments (or the data dir) from a backup, or start with HERALD_RECOVERY=skip-corrupt to go on without them.',
    );
  }
  opts.log.error(
    { ...missing, segment: oldest.file },
    'log: the oldest segments are missing (not deleted by retention); their events are gone (HERALD_RECOVERY=skip-corrupt)',
  );
  return oldest.base;
}

/** Retention's record in herald.db, synced before its files go (a power cut must not keep the deletion and lose the record). */
function recordRetention(db: Db, floors: RetentionFloors, firstOffsets: readonly number[], through: number): void {
  const write = db.transaction(() => {
    floors.raise(firstOffsets);
    floors.raiseLogStart(through);
  });
  if (db.inTransaction) return write();
  // IMMEDIATE: the floors are read, then written. A deferred transaction that read before the delivery
  // thread's commit cannot take the write lock after it (SQLITE_BUSY at once, no busy wait): about once a
  // second under delivery, the files stayed for a later round and an error line blamed a lock (a probe).
  durably(db, () => write.immediate());
}

/**
 * Whether `dir` is still the directory it was at start (same device and inode, through a link too).
 * Moved away, removed or linked elsewhere, appends still reach the open segment (ingest goes on: put
 * back, nothing is missing), but reads of the log answer 503: `/readyz` says so (ops probe: it said ok).
 */
function watchPlace(dir: string): { moved(): string | undefined } {
  const at = fs.statSync(dir);
  return {
    moved() {
      try {
        const now = fs.statSync(dir);
        if (now.dev === at.dev && now.ino === at.ino) return undefined;
      } catch {
        // gone, or its link points nowhere: said below
      }
      return `${dir} is not the directory the gateway opened (moved, removed or linked elsewhere): reading events fails until it is back`;
    },
  };
}

const DAMAGED_INDEX = 'index.db is damaged: nothing is stored until the gateway restarts and rebuilds it from the log';

const walDir = (opts: Pick<LocalEventStoreOptions, 'dataDir'>) => path.join(opts.dataDir, 'wal');

/** Whether `dir` holds a log segment file (it may be empty: retention can leave just the active one). */
function hasSegments(dir: string): boolean {
  try {
    return fs.readdirSync(dir).some((name) => SEGMENT_FILE.test(name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * The log's id (derived from its secret key, which it cannot be told from): `herald.db` records it,
 * so a `wal/` copied in from another data dir, or a symlink to another's, is refused rather than
 * taken as this one's (its offsets would be served for this data dir's events). Returns the id.
 */
function checkLogBelongs(opts: LocalEventStoreOptions, meta: MetaRepo, key: FrameKey, keyMade: boolean): string {
  const id = logIdOf(key);
  const recorded = meta.get('log_id');
  // A log of version-1 records alone gets its key at a start (see `openSegmentLog`): its id is new then.
  if (recorded !== undefined && recorded !== id && !keyMade) throw foreignLog(opts);
  return id;
}

const logIdOf = (key: FrameKey): string => createHash('sha256').update(`herald log ${key.version}:${key.seed}`).digest('hex').slice(0, 32);

/**
 * `herald.db` holds what the log cannot rebuild (subscriptions, their offsets, dead letters). A
 * database that is missing (no id) or another data dir's (another id) must not start quietly
 * empty. Returns whether the operator allowed starting without it.
 */
function checkDatabaseBelongs(
  opts: LocalEventStoreOptions,
  meta: MetaRepo,
  known: DataDirIdentity | undefined,
  hasLog: boolean,
  permissions: ReadonlySet<RecoveryPermission>,
): boolean {
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
    `${path.join(opts.dataDir, 'herald.db')} is missing or empty (or holds no data dir id: its first writes were lost), but this data dir has a log: subscriptions, their offsets and dead letters live only in herald.db. ` +
      'Restore it from a backup, or start with HERALD_RECOVERY=rebuild-events-only to rebuild events from the log and start with no subscriptions.',
  );
}
