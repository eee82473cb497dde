import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { fsyncDirAsync, fsyncPath, writeFileAtomically, writeFileAtomicallyAsync } from '../durable-fs';
import { coerceError } from '../errors';

/**
 * A floor for every partition's head, kept beside the segments and apart from index.db, so that no
 * offset is ever handed out twice:
 * - under fsync=interval/never, offsets are reserved ahead of use: before a group's offsets are
 *   acknowledged, the file says, per partition, an offset no offset handed out has reached (its
 *   ceiling). A power cut can take acknowledged events that were not yet synced, with the log's
 *   tail, before anything indexed them; the next start moves each head up to its ceiling: a gap,
 *   never a reuse. Ceilings are raised a block at a time, half a block ahead of need, so a group
 *   seldom waits for the file;
 * - in every mode, the heads recovery found are written at start and the exact heads at a clean
 *   close, so what only index.db knew (offsets of events lost or set aside, skipped) survives
 *   index.db's own loss. Under fsync=always the file never goes past the offsets handed out: it
 *   leaves no gap, it only keeps heads from going back.
 */
export const RESERVATION_FILE = 'offsets.reserved';
/**
 * Room set aside beside the record for its clean-stop write: that write makes a new file (written, then
 * renamed over the record), which a full disk refuses, and the stop then counts as unclean (re-probe:
 * every stop on a disk still full skipped 4,096 offsets per partition). Made at each start.
 */
export const SPARE_SUFFIX = '.spare';
const SPARE_BYTES = 64 * 1024;
/** How often, at most, a growing synced end is recorded while running (`syncedThrough`). */
const LOG_END_EVERY_MS = 1000;
/** Offsets reserved per partition at a time: the most one unclean stop can skip in a partition. */
export const RESERVATION_BLOCK = 4096;

type FsyncMode = 'always' | 'interval' | 'never';

/** 2^52: a partition taking a million events a second reaches it in 142 years. */
const MAX_CEILING = 2 ** 52;

export interface ReservationRecord {
  /** Written by a clean close: the ceilings are the exact heads. */
  clean: boolean;
  /** The fsync mode the ceilings were handed out under. */
  fsync: FsyncMode;
  ceilings: number[];
  /**
   * Where the log ended, every byte before it synced (fsync=always): the end recovery left, written at
   * start, raised at most once a second while the log grows, and the end of the last committed group,
   * at a clean close. A log found ending short of it
   * lost records it had acknowledged (crash probe: with index.db lost too, a cut newest segment went
   * unnoticed). Absent in records of older versions and of backups.
   */
  logEnd?: number;
}

/** The record in `dir`, or undefined when there is none (a new data dir, or one from before it) or it cannot be read. */
export function readReservation(dir: string, log: Logger): ReservationRecord | undefined {
  const file = path.join(dir, RESERVATION_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as Partial<ReservationRecord>;
    if (
      typeof parsed.clean === 'boolean' &&
      (parsed.fsync === 'always' || parsed.fsync === 'interval' || parsed.fsync === 'never') &&
      Array.isArray(parsed.ceilings) &&
      // Far below 2^53, where offsets would stop being exact: a larger one is damage, not a head.
      parsed.ceilings.every((n) => Number.isSafeInteger(n) && n >= 0 && n <= MAX_CEILING) &&
      (parsed.logEnd === undefined || (Number.isSafeInteger(parsed.logEnd) && parsed.logEnd >= 0))
    ) {
      const record: ReservationRecord = { clean: parsed.clean, fsync: parsed.fsync, ceilings: parsed.ceilings };
      if (parsed.logEnd !== undefined) record.logEnd = parsed.logEnd;
      return record;
    }
  } catch {
    // below
  }
  // Written by rename, so only a damaged disk leaves it unreadable; the heads recovery found are all there is.
  log.error({ file }, 'log: the offset reservation file cannot be read; heads are taken from the log and the index alone');
  return undefined;
}

/**
 * Heads at start: each at least its ceiling. It moves a head only after an unclean stop under
 * fsync=interval/never (the reservation), or when the index that knew a head was lost.
 * @returns the partitions moved, and by how much (the gap)
 */
export function skipReserved(heads: number[], record: ReservationRecord | undefined): { partition: number; from: number; to: number }[] {
  if (!record) return [];
  const moved: { partition: number; from: number; to: number }[] = [];
  record.ceilings.forEach((ceiling, partition) => {
    if (partition < heads.length && ceiling > heads[partition]!) {
      moved.push({ partition, from: heads[partition]!, to: ceiling });
      heads[partition] = ceiling;
    }
  });
  return moved;
}

export interface OffsetReservationOptions {
  dir: string;
  fsync: FsyncMode;
  /** Heads as recovery left them (recorded at once): nothing at or past them has been handed out. */
  heads: readonly number[];
  /** Where recovery left the log, synced (recorded with the heads, see {@link ReservationRecord.logEnd}); undefined: not known synced. */
  logEnd: number | undefined;
  block?: number;
  log: Logger;
}

/**
 * The live reservation: `cover` before a group is acknowledged, `close` with the final heads. One
 * write at a time; raises asked for meanwhile go in the next one.
 */
export function createOffsetReservation(opts: OffsetReservationOptions) {
  const file = path.join(opts.dir, RESERVATION_FILE);
  const block = opts.block ?? RESERVATION_BLOCK;
  /** Ceilings on disk. Starts at the heads: the first group of each partition raises its ceiling first. */
  let durable = opts.heads.slice();
  /** Ceilings to write next. */
  const wanted = opts.heads.slice();
  /** The synced end on disk, and the one to write next (undefined: not known synced at start, never recorded). */
  let durableLogEnd = opts.logEnd;
  let wantedLogEnd = opts.logEnd;
  let logEndAskedAt = performance.now(); // monotonic: a clock stepped back must not stop the synced end being recorded
  let writing: Promise<void> | undefined;
  const spare = `${file}${SPARE_SUFFIX}`;
  keepSpare(spare, opts.heads.length, opts.log);
  try {
    writeFileAtomically(
      file,
      JSON.stringify({ clean: false, fsync: opts.fsync, ceilings: durable, logEnd: opts.logEnd } satisfies ReservationRecord),
    );
  } catch (err) {
    // A full disk must not stop the start (ingest answers storage_full until space returns): the record
    // on disk, if any, is an older floor, and every offset past the heads waits for a write that succeeds.
    opts.log.warn(
      { err: coerceError(err), file },
      'log: could not record the heads at start; written again by the first group (fsync=interval/never) or the clean stop',
    );
  }

  /** Writes `wanted` until the file holds it; the promise settles once what was wanted when it began is durable. */
  function persist(): Promise<void> {
    if (writing) return writing;
    writing = (async () => {
      try {
        while (wanted.some((w, p) => w > durable[p]!) || (wantedLogEnd ?? 0) > (durableLogEnd ?? 0)) {
          const ceilings = wanted.slice();
          const logEnd = wantedLogEnd;
          await writeFileAtomicallyAsync(
            file,
            JSON.stringify({ clean: false, fsync: opts.fsync, ceilings, logEnd } satisfies ReservationRecord),
          );
          durable = ceilings;
          durableLogEnd = logEnd;
        }
      } finally {
        writing = undefined;
      }
    })();
    return writing;
  }

  return {
    /**
     * Raises the ceilings the group's offsets come near. Undefined when they are already durable;
     * otherwise a promise to await before the group is acknowledged (it rejects when the file cannot
     * be written: the group must then fail).
     */
    cover(next: readonly { partition: number; offset: number }[]): Promise<void> | undefined {
      let raise = false;
      let wait = false;
      for (const { partition, offset } of next) {
        if (offset + 1 + block / 2 > wanted[partition]!) {
          wanted[partition] = offset + 1 + block;
          raise = true;
        }
        if (offset + 1 > durable[partition]!) wait = true;
      }
      if (!raise && !wait) return undefined;
      const done = persist();
      if (!wait) {
        // Ahead of need: nobody waits, a failure is retried by the next raise.
        done.catch((err: unknown) => opts.log.warn({ err: coerceError(err) }, 'log: could not raise the offset reservation; retried'));
        return undefined;
      }
      // A write already running re-checks `wanted` when it ends, so this promise covers the raise too.
      return done;
    },
    /**
     * The log is synced up to `end` (fsync=always, a group committed): recorded at most once a second,
     * so that a crash leaves at most the last second's events past the mark (a cut tail found with
     * index.db lost too: re-probe, the events of a killed run were not covered). A failed write is
     * retried by the next call; it fails nothing.
     */
    syncedThrough(end: number): void {
      if (wantedLogEnd === undefined || end <= wantedLogEnd) return;
      const now = performance.now();
      if (now - logEndAskedAt < LOG_END_EVERY_MS) return;
      logEndAskedAt = now;
      wantedLogEnd = end;
      persist().catch((err: unknown) =>
        opts.log.warn({ err: coerceError(err) }, 'log: could not record the synced end of the log; retried'),
      );
    },
    /**
     * A clean close: the ceilings become the exact heads, so the next start leaves no gap and keeps
     * them; `logEnd` is the end of the last committed group.
     */
    async close(heads: readonly number[], logEnd: number): Promise<void> {
      await writing?.catch(() => undefined);
      const text = JSON.stringify({ clean: true, fsync: opts.fsync, ceilings: heads.slice(), logEnd } satisfies ReservationRecord);
      try {
        await writeFileAtomicallyAsync(file, text);
      } catch (err) {
        // A full disk (or no inode left): the spare's blocks take the record, renamed over the old one.
        if (!(await writeIntoSpare(spare, file, text))) throw err;
      }
    },
  };
}

export type OffsetReservation = ReturnType<typeof createOffsetReservation>;

/** Makes the spare when it is missing (a clean stop on a full disk used it); a disk too full for it now only logs. */
function keepSpare(spare: string, partitions: number, log: Logger): void {
  const bytes = Math.max(SPARE_BYTES, partitions * 32 + 1024);
  try {
    if (fs.existsSync(spare) && fs.statSync(spare).size >= bytes) return;
    fs.writeFileSync(spare, Buffer.alloc(bytes), { mode: 0o600 });
    fsyncPath(spare); // its blocks allocated now, not at writeback
  } catch (err) {
    // A half-written spare goes; anything else in its place (refused at start, see refuseNonFiles) is not this one's to remove.
    if (!fs.lstatSync(spare, { throwIfNoEntry: false })?.isDirectory()) fs.rmSync(spare, { force: true });
    log.warn({ err: coerceError(err), file: spare }, 'log: could not set room aside for the clean-stop record');
  }
}

/** Writes `text` into the spare's own blocks (no new block or inode), then renames it over `file`. False: no spare. */
async function writeIntoSpare(spare: string, file: string, text: string): Promise<boolean> {
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(spare, 'r+');
  } catch {
    return false;
  }
  try {
    const bytes = Buffer.from(text);
    if ((await handle.stat()).size < bytes.length) return false;
    await handle.write(bytes, 0, bytes.length, 0);
    await handle.truncate(bytes.length);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.promises.rename(spare, file);
  await fsyncDirAsync(path.dirname(file));
  return true;
}
