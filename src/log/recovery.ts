import type { Logger } from 'pino';
import type { Db } from '../store/db';
import type { IdempotencyRepo } from '../store/idempotency-repo';
import type { LogIndexRepo } from '../store/log-index-repo';
import type { MetaRepo } from '../store/meta-repo';
import type { PartitionHeadsRepo } from '../store/partition-heads-repo';
import { decodeRecordHeader } from './record';
import type { SegmentLog } from './segment-log';

export class StartupError extends Error {
  override name = 'StartupError';
}

export interface RecoveryReport {
  scannedBytes: number;
  truncatedBytes: number;
  rebuiltRecords: number;
  rolledBackRecords: number;
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
  partitions: number;
  dataDir: string;
  /** Records stored before this get no idempotency row back (they are past the window). */
  windowStart: number;
}

const REBUILD_BATCH = 10_000;

/**
 * Start-up recovery; the log is the source of truth. Scans from where the
 * SQLite index ends (or the active segment's start, whichever is earlier),
 * cuts a torn or corrupt tail, rebuilds the rows SQLite lacks, and removes
 * rows the log no longer backs (SQLite ahead of the log after a power cut).
 */
export function recoverLog(deps: RecoveryDeps): RecoveryReport {
const { db, log, segments, meta, idempotency, index, headsRepo, partitions, dataDir, windowStart } = deps;
  const started = Date.now();
  const indexedThrough = Number(meta.get('log_indexed_through') ?? 0);
  const from = Math.min(indexedThrough, segments.activeSegmentBase(), segments.end());
  let batch: { position: number; frame: Buffer }[] = [];
  let rebuiltRecords = 0;
  const rebuiltHeads = headsRepo.load(partitions);
  const rebuild = db.transaction((items: { position: number; frame: Buffer }[]) => {
    for (const { position, frame } of items) {
      const h = decodeRecordHeader(frame);
      if (h.partition >= partitions) {
        // Only possible when SQLite (and the partition count it recorded) was lost: the log still knows better.
        throw new StartupError(
          `data dir ${dataDir} holds events of partition ${h.partition}, so it was created with more than HERALD_PARTITIONS=${partitions}; start with the HERALD_PARTITIONS it was created with.`,
        );
      }
      if (h.storedAt >= windowStart) idempotency.insert(h);
      index.insert(h.partition, { offset: h.offset, position, length: frame.length });
      rebuiltHeads[h.partition] = Math.max(rebuiltHeads[h.partition]!, h.offset + 1);
    }
    rebuiltHeads.forEach((head, partition) => headsRepo.set(partition, head));
  });
  const scan = segments.scan(from, (position, frame) => {
    if (position < indexedThrough) return;
    batch.push({ position, frame: Buffer.from(frame) });
    rebuiltRecords++;
    if (batch.length >= REBUILD_BATCH) {
      rebuild(batch);
      batch = [];
    }
  });
  if (batch.length > 0) rebuild(batch);

  // SQLite can be ahead of the log only after a power cut with fsync=interval/never: forget what the log lost.
  let rolledBackRecords = 0;
  if (indexedThrough > scan.end) {
    db.transaction(() => {
      const headsBefore = headsRepo.load(partitions);
      for (const { partition, offset } of index.firstOffsetsPast(scan.end)) {
        const head = headsBefore[partition] ?? 0;
        rolledBackRecords += Math.max(0, head - offset);
        idempotency.deleteFrom(partition, offset);
        headsRepo.set(partition, offset);
      }
      index.deletePast(scan.end);
    })();
  }
  meta.set('log_indexed_through', scan.end);
  if (rolledBackRecords > 0 || scan.truncatedBytes > 0) {
    // New appends will reuse the cut positions: the corrected index must be on disk before they do.
    db.pragma('wal_checkpoint(FULL)');
  }
  const report = { scannedBytes: scan.scannedBytes, truncatedBytes: scan.truncatedBytes, rebuiltRecords, rolledBackRecords, ms: Date.now() - started };
  log.info(report, 'log recovered');
  return report;
}

