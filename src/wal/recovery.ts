import type { Logger } from 'pino';
import { StartupError } from '../errors';
import type { Db } from '../store/db';
import type { IdempotencyRepo } from '../store/idempotency-repo';
import type { LogIndexRepo } from '../store/log-index-repo';
import type { MetaRepo } from '../store/meta-repo';
import type { PartitionHeadsRepo } from '../store/partition-heads-repo';
import { formatHoles, holeMap, mergeHoles, parseHoles } from './log-holes';
import { decodeRecordHeader } from './record';
import type { ScanPolicy, SegmentLog } from './segment-log';

export { StartupError };

export interface RecoveryReport {
  scannedBytes: number;
  truncatedBytes: number;
  rebuiltRecords: number;
  rolledBackRecords: number;
  /** Offsets that were acknowledged once and are no longer in the log, per partition (never reused). */
  lostOffsets: number;
  ms: number;
}

export interface RecoveryDeps {
  db: Db;
  log: Logger;
  segments: SegmentLog;
  meta: MetaRepo;
  idempotency: IdempotencyRepo;
  index: LogIndexRepo;
  headsRepo: PartitionHeadsRepo;
  /** Where delivery has been in each partition: heads never go below it. */
  offsetFloors: () => { partition: number; next: number }[];
  /** Per partition, the offset past the newest event retention deleted (herald.db): heads never go below it either. */
  retentionFloors: () => readonly number[];
  /**
   * herald.db's meta, which keeps `log_holes` too: where bytes were set aside is a fact about the log
   * that a rebuilt index.db (damaged, lost, or a restore's: backups leave it out) must not forget, or
   * the hole a set-aside segment end left is taken for a lost segment and the start refused.
   */
  dataDirMeta: MetaRepo;
  partitions: number;
  dataDir: string;
  /** Records stored before this get no idempotency row back (they are past the window). */
  windowStart: number;
  /**
   * The last run synced every record before acknowledging it (fsync=always): the log cannot end
   * short of what SQLite indexed unless a segment was lost or cut, so that is refused.
   */
  logWasSynced: boolean;
  /**
   * Where the last run's log ended, every byte before it synced (`offsets.reserved`, fsync=always):
   * checked as SQLite's indexed end is, and known when index.db was lost with the log's tail.
   */
  syncedEnd?: number;
  policy: ScanPolicy;
}

const REBUILD_BATCH = 10_000;

/**
 * Start-up recovery; the log is the source of truth. Scans from where the
 * SQLite index ends (or the active segment's start, whichever is earlier),
 * cuts a torn tail (or refuses, or sets aside, corruption in the middle: see
 * `SegmentLog.scan`), rebuilds the rows SQLite lacks, and removes rows the log
 * no longer backs (SQLite ahead of the log after a power cut).
 *
 * An offset is never assigned twice: a partition's head never moves back,
 * and is at least past every offset delivery has committed, started or
 * dead-lettered. Offsets whose records were lost become a gap, logged at
 * `error` with the partition and count.
 */
export function recoverLog(deps: RecoveryDeps): RecoveryReport {
  const { db, log, segments, meta, idempotency, index, headsRepo, partitions, dataDir, windowStart } = deps;
  const started = performance.now();
  const indexedThrough = Number(meta.get('log_indexed_through') ?? 0);
  const indexHolesText = meta.get('log_holes');
  const dataDirHolesText = deps.dataDirMeta.get('log_holes');
  const knownHoles = mergeHoles(parseHoles(indexHolesText), parseHoles(dataDirHolesText));
  // Before the scan, which would cut a record left half there as a torn tail.
  const refuseShort = deps.logWasSynced && !deps.policy.skipCorrupt;
  const syncedThrough = Math.max(indexedThrough, deps.syncedEnd ?? 0);
  if (refuseShort && syncedThrough > segments.end()) throw logCutShort(dataDir, segments.end(), syncedThrough);
  const from = Math.min(indexedThrough, segments.activeSegmentBase(), segments.end());
  let batch: { position: number; frame: Buffer }[] = [];
  let rebuiltRecords = 0;
  const heads = headsRepo.load(partitions);
  // Records below them were deleted by retention; their files may outlive that (a crash before the
  // unlink) while an index rebuilt from scratch no longer says so: they are never indexed again.
  const retired = deps.retentionFloors();
  const rebuild = db.transaction((items: { position: number; frame: Buffer }[]) => {
    for (const { position, frame } of items) {
      const h = decodeRecordHeader(frame);
      if (h.partition >= partitions) {
        // Only possible when SQLite (and the partition count it recorded) was lost: the log still knows better.
        throw new StartupError(
          `data dir ${dataDir} holds events of partition ${h.partition}, so it was created with more than HERALD_PARTITIONS=${partitions}; start with the HERALD_PARTITIONS it was created with.`,
        );
      }
      if (h.offset < (retired[h.partition] ?? 0)) continue;
      // A partition's offsets only grow along the log: one at or below its head is a second copy of
      // records (a segment copied in, or renamed) and would be served for the first.
      if (h.offset < heads[h.partition]!) throw offsetTwice(dataDir, position, h.partition, h.offset, heads[h.partition]!);
      if (h.storedAt >= windowStart) idempotency.insert(h);
      index.insert(h.partition, { offset: h.offset, position, length: frame.length });
      heads[h.partition] = Math.max(heads[h.partition]!, h.offset + 1);
    }
  });
  const scan = segments.scan(
    from,
    (position, frame) => {
      if (position < indexedThrough) return;
      batch.push({ position, frame: Buffer.from(frame) });
      rebuiltRecords++;
      if (batch.length >= REBUILD_BATCH) {
        rebuild(batch);
        batch = [];
      }
    },
    { ...deps.policy, knownHoles: holeMap(knownHoles) },
  );
  if (batch.length > 0) rebuild(batch);
  if (refuseShort && syncedThrough > scan.end) throw logCutShort(dataDir, scan.end, syncedThrough);

  const lost = new Map<number, number>();
  const countLost = (partition: number, n: number) => lost.set(partition, (lost.get(partition) ?? 0) + n);
  let rolledBackRecords = 0;
  const holes = mergeHoles(knownHoles, scan.lost);
  const holesText = holes.length === 0 ? undefined : formatHoles(holes);
  db.transaction(() => {
    // Records set aside or missing in the middle of the log: their rows go, their offsets stay used.
    for (const range of scan.lost) {
      for (const { partition, offset } of index.deleteRange(range.from, range.to)) {
        idempotency.deleteAt(partition, offset);
        countLost(partition, 1);
      }
    }
    // SQLite can be ahead of the log only after a power cut with fsync=interval/never: forget what the log lost.
    if (indexedThrough > scan.end) {
      for (const { partition, offset } of index.firstOffsetsPast(scan.end)) {
        const n = Math.max(0, heads[partition]! - offset);
        rolledBackRecords += n;
        countLost(partition, n);
        idempotency.deleteFrom(partition, offset);
      }
      index.deletePast(scan.end);
    }
    // One indexed MAX per partition: a GROUP BY over the whole index took most of a 1 GiB recovery.
    for (let partition = 0; partition < partitions; partition++) {
      const offset = index.maxOffset(partition);
      if (offset !== undefined) heads[partition] = Math.max(heads[partition]!, offset + 1);
    }
    // Deleted on purpose, not lost: an index.db rebuilt from a log retention emptied must not start the partition over.
    // First: delivery's positions below these are not losses either (counted as such, a rebuilt index after
    // retention emptied the log logged every deleted event as an acknowledged event lost).
    deps.retentionFloors().forEach((floor, partition) => {
      if (partition < partitions) heads[partition] = Math.max(heads[partition]!, floor);
    });
    for (const { partition, next } of deps.offsetFloors()) {
      if (partition < partitions && next > heads[partition]!) {
        countLost(partition, next - heads[partition]!);
        heads[partition] = next;
      }
    }
    heads.forEach((head, partition) => headsRepo.set(partition, head));
    meta.set('log_indexed_through', scan.end);
    // Holes left by segments that lost their tail stay: remember them, so later starts neither rescan
    // from them nor report them again.
    if (holesText !== undefined && holesText !== indexHolesText) meta.set('log_holes', holesText);
  })();
  // After the index's (a crash between the two: the next start takes the union again).
  if (holesText !== undefined && holesText !== dataDirHolesText) deps.dataDirMeta.set('log_holes', holesText);
  let lostOffsets = 0;
  for (const [partition, count] of lost) {
    lostOffsets += count;
    log.error(
      { partition, lostOffsets: count, headOffset: heads[partition] },
      'log: acknowledged events of this partition are no longer in the log; their offsets stay a gap and are never reused',
    );
  }
  if (rolledBackRecords > 0 || scan.truncatedBytes > 0 || scan.lost.length > 0) {
    // New appends will reuse the cut positions: the corrected index must be on disk before they do.
    db.pragma('wal_checkpoint(FULL)');
  }
  const report = {
    scannedBytes: scan.scannedBytes,
    truncatedBytes: scan.truncatedBytes,
    rebuiltRecords,
    rolledBackRecords,
    lostOffsets,
    ms: Math.round(performance.now() - started),
  };
  log.info(report, 'log recovered');
  return report;
}

function offsetTwice(dataDir: string, position: number, partition: number, offset: number, head: number): StartupError {
  return new StartupError(
    `the log of ${dataDir} holds, at byte ${position}, an event at partition ${partition}, offset ${offset}, though that partition was already at ` +
      `offset ${head}: a segment holds records the log has already (copied or renamed into wal/); nothing was changed. Remove that segment, or restore the data dir from a backup.`,
  );
}

/** The log ends before bytes the index had (and so acknowledged) under fsync=always: a segment lost or cut, not a power cut. */
function logCutShort(dataDir: string, end: number, indexed: number): StartupError {
  return new StartupError(
    `the log of ${dataDir} ends at byte ${end}, but it held acknowledged events up to byte ${indexed} (its index, or wal/offsets.reserved, says so): ` +
      'under HERALD_FSYNC=always those bytes were synced before their events were acknowledged, so a segment file was lost, cut short or ' +
      'damaged at its end (not a power cut); nothing was changed. ' +
      'Restore the newest segment (or the data dir) from a backup; HERALD_RECOVERY=skip-corrupt goes on without those events.',
  );
}
