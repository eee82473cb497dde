import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { coerceError } from '../errors';

/**
 * Offsets reserved ahead of use under fsync=interval/never, so that no offset is ever handed out
 * twice, not even when a power cut takes acknowledged events that were not yet synced, with the
 * log's tail, before anything indexed them. Before a group's offsets are acknowledged, a file beside
 * the segments says, per partition, an offset no offset handed out has reached (its ceiling). A
 * start after an unclean stop moves each head up to its ceiling: a gap, never a reuse. (Under
 * fsync=always an event is synced before its answer: the log itself is the record.)
 *
 * Ceilings are raised a block at a time, half a block ahead of need, so a group rarely waits for
 * the file: the write runs beside the group's own write and sync. A clean close writes the exact
 * heads, so a clean restart leaves no gap.
 */
export const RESERVATION_FILE = 'offsets.reserved';
/** Offsets reserved per partition at a time: the most one unclean stop can skip in a partition. */
export const RESERVATION_BLOCK = 4096;

type FsyncMode = 'always' | 'interval' | 'never';

export interface ReservationRecord {
  /** Written by a clean close: the ceilings are the exact heads. */
  clean: boolean;
  /** The fsync mode the ceilings were handed out under. */
  fsync: FsyncMode;
  ceilings: number[];
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
      parsed.ceilings.every((n) => Number.isSafeInteger(n) && n >= 0)
    ) {
      return { clean: parsed.clean, fsync: parsed.fsync, ceilings: parsed.ceilings };
    }
  } catch {
    // below
  }
  // Written by rename, so only a damaged disk leaves it unreadable; the heads recovery found are all there is.
  log.error({ file }, 'log: the offset reservation file cannot be read; heads are taken from the log and the index alone');
  return undefined;
}

/**
 * Heads after an unclean stop under fsync=interval/never: each at least its ceiling, since events
 * acknowledged before the stop may not have been synced and may have gone with the log's tail,
 * leaving no trace. Under fsync=always every acknowledged event was synced before its answer, so a
 * torn tail is an unacknowledged write (cut, its offsets free): the heads recovery found stand.
 * @returns the partitions moved, and by how much (the gap)
 */
export function skipReserved(heads: number[], record: ReservationRecord | undefined): { partition: number; from: number; to: number }[] {
  if (!record || record.clean || record.fsync === 'always') return [];
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
  /** Heads as recovery left them: nothing at or past them has been handed out. */
  heads: readonly number[];
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
  let writing: Promise<void> | undefined;

  async function write(record: ReservationRecord): Promise<void> {
    const tmp = `${file}.tmp`;
    const handle = await fs.promises.open(tmp, 'w');
    try {
      await handle.writeFile(JSON.stringify(record));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.promises.rename(tmp, file);
    const dir = await fs.promises.open(opts.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /** Writes `wanted` until the file holds it; the promise settles once what was wanted when it began is durable. */
  function persist(): Promise<void> {
    if (writing) return writing;
    writing = (async () => {
      try {
        while (wanted.some((w, p) => w > durable[p]!)) {
          const ceilings = wanted.slice();
          await write({ clean: false, fsync: opts.fsync, ceilings });
          durable = ceilings;
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
    /** A clean close: the ceilings become the exact heads, so the next start leaves no gap. */
    async close(heads: readonly number[]): Promise<void> {
      await writing?.catch(() => undefined);
      await write({ clean: true, fsync: opts.fsync, ceilings: heads.slice() });
    },
  };
}

export type OffsetReservation = ReturnType<typeof createOffsetReservation>;
