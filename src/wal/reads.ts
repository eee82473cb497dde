import type { Logger } from 'pino';
import { AppError, coerceError } from '../errors';
import type { IdempotencyRepo } from '../store/idempotency-repo';
import type { IndexEntry, LogIndexRepo } from '../store/log-index-repo';
import { isCorruptDatabase } from '../store/index-db';
import { isRetired, type ReadPage, type StoredEvent } from './event-store';
import { idempotencyKey } from './key-filter';
import { cutConsumedFront } from './log-feed';
import { intactRecordPlace, verifyAndDecode } from './record';
import type { LogWindows, Span } from './log-windows';
import type { SegmentReads } from './segment-log';

/** A corrupt record read again is logged at most this often. */
const CORRUPT_LOG_EVERY_MS = 60_000;
/** Corrupt records remembered for that, at most. */
const CORRUPT_LOG_KEYS = 1024;

export interface ReadsOptions {
  segments: SegmentReads;
  index: LogIndexRepo;
  idempotency: Pick<IdempotencyRepo, 'find' | 'oldest' | 'firstOffsetAt'>;
  /** Committed records not in `index` yet (the indexer's tail, or a reader's mirror of it). */
  tail: {
    find(key: string): (IndexEntry & { partition: number; offset: number }) | undefined;
    range(partition: number, offset: number, limit: number): IndexEntry[];
    firstOffset(partition: number): number | undefined;
    firstOffsetAt(partition: number, atMs: number): number | undefined;
  };
  /** Offsets durable in the log, per partition. */
  heads: () => readonly number[];
  /** Oldest offsets still stored, per partition. */
  firstOffsets: () => readonly number[];
  log: Logger;
  /** Decoded records to share between readers of the same offsets (the delivery thread's subscriptions). */
  decoded?: DecodedCache;
  /** Recent stretches of the log read whole, shared by every partition's pages (the delivery thread). */
  windows?: LogWindows;
  /**
   * A read found index.db wrong (rows out of offset order, a row pointing at another event's intact
   * record); the read then throws {@link damagedIndexError}. Called once per finding.
   */
  onIndexDamage?: (detail: string) => void;
  /**
   * What is known wrong with index.db (by these reads or otherwise), if anything: every read then refuses
   * with {@link damagedIndexError} until a restart rebuilds it, since pages from it can be wrong (an event
   * passed over as a gap).
   */
  damage?: () => string | undefined;
  /**
   * A segment file the system cannot reach now (see `unreadable` in segment-log.ts) fails the read with
   * that 503, rather than counting its records corrupt. Both readers set it: the API's (lookups, pages,
   * the live tail) and the delivery thread's, whose worker waits on it (`readNow` in subscription-worker.ts).
   */
  unreachableFails?: boolean;
}

/**
 * What a read answers once index.db is found wrong: unavailable until a restart rebuilds it from the log.
 * Serving pages from it looped (a page's `nextOffset` went back), named an intact event corrupt, and
 * passed over another as if it were a gap: a subscription skipped it for good (storage probe).
 */
export function damagedIndexError(detail: string): AppError {
  return new AppError(
    'unavailable',
    `index.db is damaged (${detail}): reads and ingest wait until the gateway restarts and rebuilds it from the log`,
    {
      retryAfter: 5,
    },
  );
}

/**
 * `repo` with SQLite's own verdict of damage (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) in any of its methods told
 * to `report` and thrown as {@link damagedIndexError}: a page damaged while the gateway ran made every
 * duplicate check and read of it a 500, with `/readyz` ready and no rebuild at the next start (thread probe).
 */
export function reportingCorruption<T extends object>(repo: T, report: (detail: string) => void): T {
  const watched: Record<string, unknown> = {};
  for (const [name, member] of Object.entries(repo)) {
    if (typeof member !== 'function') {
      watched[name] = member;
      continue;
    }
    watched[name] = (...args: unknown[]) => {
      try {
        return (member as (...a: unknown[]) => unknown).apply(repo, args);
      } catch (err) {
        if (!isCorruptDatabase(err)) throw err;
        const detail = `SQLite found it damaged: ${(err as Error).message}`;
        report(detail);
        throw damagedIndexError(detail);
      }
    };
  }
  return watched as T;
}

/** A read covers at most this many bytes, and skips gaps of at most `MAX_READ_GAP` between records. */
const MAX_READ_SPAN = 1024 * 1024;
const MAX_READ_GAP = 8 * 1024;

/** What a read of one or more records gave: their span (none when unreadable), and whether it ran into missing bytes. */
type SpanRead = { span?: Span; short: boolean };

/** A window is read instead of a cluster when at least this many of the page's records lie in it. */
const MIN_WINDOW_RECORDS = 4;

/**
 * Reads of committed events: SQLite for what the indexer has written, the indexer's tail for what
 * it has not (so an event is readable as soon as its 2xx is sent), nothing below the first offsets
 * (retention). Every record is checked against its checksum and its (partition, offset).
 */
export function createReads(opts: ReadsOptions) {
  const { segments, tail, log } = opts;
  const report = (detail: string) => opts.onIndexDamage?.(detail);
  const index = reportingCorruption(opts.index, report);
  const idempotency = reportingCorruption(opts.idempotency, report);

  /** Index entries of `[from, from + limit)`: SQLite first, then the tail (which holds every later offset). */
  function entries(partition: number, from: number, limit: number): IndexEntry[] {
    const tailFirst = tail.firstOffset(partition);
    if (tailFirst !== undefined && from >= tailFirst) return tail.range(partition, from, limit);
    const rows = index.range(partition, from, limit);
    if (rows.length < limit && tailFirst !== undefined) {
      const after = rows.length > 0 ? rows[rows.length - 1]!.offset + 1 : from;
      for (const entry of tail.range(partition, after, limit - rows.length)) rows.push(entry);
    }
    return rows;
  }

  /** Throws {@link damagedIndexError}, telling `onIndexDamage` first. */
  function indexDamaged(detail: string): never {
    opts.onIndexDamage?.(detail);
    throw damagedIndexError(detail);
  }

  /**
   * The rows of a page must rise strictly from `from`, as their primary key orders them: a flipped bit in
   * an offset key leaves a row out of order (read in b-tree order), found here before it is served.
   */
  function checkOrder(partition: number, from: number, list: readonly IndexEntry[]): void {
    let previous = from - 1;
    for (const entry of list) {
      if (entry.offset <= previous)
        indexDamaged(`partition ${partition}: a row for offset ${entry.offset} follows offset ${previous}, out of key order`);
      previous = entry.offset;
    }
  }

  /** When each corrupt record was last logged: a reader asking for it again and again is not a log flood. */
  const corruptLogged = new Map<string, number>();

  /** Why the last record found corrupt was: its bytes failed their check, or could not be read (for a lookup's 500). */
  let lastCorruptWhy = 'checksum mismatch';

  /** Verifies and decodes one record's bytes; undefined (and an error log, once a minute per record) when they are not that record. */
  function decodeAt(partition: number, entry: IndexEntry, frame: Buffer | undefined): StoredEvent | undefined {
    const record = frame && verifyAndDecode(frame, partition, entry.offset, segments.key);
    if (record) return { partition, offset: entry.offset, storedAt: record.storedAt, event: record.event };
    const place = frame && intactRecordPlace(frame, segments.key);
    if (place)
      indexDamaged(
        `its row for partition ${partition}, offset ${entry.offset} points at the intact record of partition ${place.partition}, offset ${place.offset}`,
      );
    lastCorruptWhy = frame ? 'checksum mismatch' : 'its bytes could not be read';
    const key = `${partition}:${entry.offset}`;
    const now = performance.now();
    if (now - (corruptLogged.get(key) ?? -Infinity) >= CORRUPT_LOG_EVERY_MS) {
      if (corruptLogged.size >= CORRUPT_LOG_KEYS) corruptLogged.clear(); // bounded: many records at once log again, rarely
      corruptLogged.set(key, now);
      const where = { partition, offset: entry.offset, ...segments.locate(entry.position), length: entry.length };
      // A read that failed is not a checksum mismatch (syscall probe: an EIO was logged as one).
      if (frame) log.error(where, 'log: corrupt record (checksum or header mismatch); it is not served (logged once a minute per record)');
      else
        log.error(
          { ...where, err: coerceError(lastReadError) },
          'log: record unreadable (its bytes are missing, or reading them failed twice); it is not served (logged once a minute per record)',
        );
    }
    return undefined;
  }

  /** Why the last read that gave no bytes failed (missing bytes, an I/O error twice), for the line that names the record. */
  let lastReadError: unknown;

  function readFrame(entry: IndexEntry): Buffer | undefined {
    try {
      return segments.read(entry.position, entry.length);
    } catch (err) {
      if (opts.unreachableFails && err instanceof AppError) throw err; // the file cannot be reached now: its bytes are not known bad
      lastReadError = err;
      return undefined; // the bytes are gone (a lost range, a bad sector): as corrupt as a bad checksum
    }
  }

  /**
   * One read of the bytes of `list[i]` and of the entries after it that lie close behind it in the
   * same segment: a page's records are interleaved with other partitions'. A gap of a few KiB is
   * cheaper to read than another system call; a wider one (a partition among many busy ones) is not,
   * and reading across it made every page one read of megabytes, most of it other partitions'
   * records, which churned external memory (decoding copies what it keeps, so a span is dropped after).
   */
  function readCluster(list: readonly IndexEntry[], i: number, alone: boolean): SpanRead {
    const first = list[i]!;
    const firstEnd = first.position + first.length;
    const end = alone ? firstEnd : clusterEnd(list, i);
    const buf = readFrame({ offset: first.offset, position: first.position, length: end - first.position });
    if (buf) return { span: { buf, from: first.position, to: end }, short: false };
    if (end === firstEnd) return { short: false };
    // The span runs into missing bytes (a lost range): the one record may still be intact.
    const one = readFrame(first);
    return { span: one && { buf: one, from: first.position, to: firstEnd }, short: true };
  }

  /** Where the cluster starting at `list[i]` ends: its records lie close together in one segment. */
  function clusterEnd(list: readonly IndexEntry[], i: number): number {
    const first = list[i]!;
    let end = first.position + first.length;
    for (let k = i + 1; k < list.length; k++) {
      const next = list[k]!;
      const nextEnd = next.position + next.length;
      if (next.position < end || next.position - end > MAX_READ_GAP || nextEnd - first.position > MAX_READ_SPAN) break;
      if (!segments.sameSegment(first.position, next.position)) break;
      end = nextEnd;
    }
    return end;
  }

  /**
   * A window holding `list[i]`: one already read, or a new one when enough of the page lies in it
   * (records interleaved with other partitions', which a cluster read would fetch one at a time).
   */
  function windowRead(list: readonly IndexEntry[], i: number): SpanRead | undefined {
    const { windows } = opts;
    if (!windows) return undefined;
    const first = list[i]!;
    const held = windows.holding(first.position, first.length);
    if (held) return { span: held, short: false };
    const last = list[list.length - 1]!;
    if (clusterEnd(list, i) >= last.position + last.length) return undefined; // one plain read covers the rest
    const windowEnd = first.position + windows.windowBytes;
    let inside = 1;
    for (let k = i + 1; k < list.length && inside < MIN_WINDOW_RECORDS; k++) {
      if (list[k]!.position + list[k]!.length > windowEnd) break;
      inside++;
    }
    if (inside < MIN_WINDOW_RECORDS) return undefined;
    const loaded = windows.load(first.position, first.length);
    // A failed window (a read error, missing bytes) is not tried again for this page: its records are read one at a time.
    return loaded === 'failed' ? { short: true } : loaded && { span: loaded, short: false };
  }

  function readPage(partition: number, list: IndexEntry[]): ReadPage {
    const { decoded } = opts;
    const events: StoredEvent[] = [];
    let bytes = 0;
    let span: Span | undefined;
    // Once a read of several records ran into missing bytes, the rest of the page is read a record at a
    // time: every later cluster would run into them again.
    let alone = false;
    for (let i = 0; i < list.length; i++) {
      const entry = list[i]!;
      const hit = decoded?.get(partition, entry);
      if (hit) {
        // Counted as a record read from the log: the page holds it as long (the cache may drop it meanwhile).
        events.push(hit);
        bytes += entry.length;
        continue;
      }
      if (!span || entry.position < span.from || entry.position + entry.length > span.to) {
        const windowed: SpanRead | undefined = alone ? undefined : windowRead(list, i);
        alone ||= windowed?.short ?? false;
        const read: SpanRead = windowed?.span ? windowed : readCluster(list, i, alone);
        span = read.span;
        alone ||= read.short;
      }
      const at = entry.position - (span?.from ?? 0);
      const frame = span?.buf.subarray(at, at + entry.length);
      const stored = decodeAt(partition, entry, frame);
      if (!stored) return { events, bytes, corruptOffset: entry.offset };
      decoded?.set(stored, entry);
      events.push(stored);
      bytes += entry.length;
    }
    return { events, bytes };
  }

  function read(partition: number, fromOffset: number, limit: number, maxBytes = Infinity): ReadPage {
    const from = Math.max(fromOffset, opts.firstOffsets()[partition] ?? 0);
    const available = Math.min(limit, (opts.heads()[partition] ?? 0) - from);
    if (available <= 0) return { events: [] };
    const list = entries(partition, from, available);
    checkOrder(partition, from, list);
    return readPage(partition, withinBytes(list, maxBytes));
  }

  function lookup(source: string, id: string): StoredEvent | undefined {
    const inTail = tail.find(idempotencyKey(source, id));
    const found = inTail ?? idempotency.find(source, id);
    if (!found || isRetired(opts.firstOffsets(), found)) return undefined;
    const entry = inTail ?? index.get(found.partition, found.offset);
    if (!entry) return undefined;
    const page = readPage(found.partition, [entry]);
    if (page.corruptOffset !== undefined) {
      throw new AppError(
        'corrupt_record',
        `the stored record of this event (partition ${found.partition}, offset ${found.offset}) is corrupt and is not served`,
        { details: [{ message: `partition ${found.partition}, offset ${found.offset}: ${lastCorruptWhy}` }] },
      );
    }
    const stored = page.events[0];
    // The record at that offset must be this event: were it another's (a log that is not the one the
    // index was built from), answering with it would hand one producer's event to another's query.
    if (stored && (stored.event.attributes.source !== source || stored.event.attributes.id !== id))
      indexDamaged(
        `its record of this source and id names partition ${found.partition}, offset ${found.offset}, which holds another event`,
      );
    return stored;
  }

  /**
   * The idempotency records carry the stored time and are indexed by it: a time index over the window
   * they cover, continued by the tail. Before the oldest record kept, records may have been pruned:
   * undefined lets the caller search the log.
   */
  function offsetAtTime(partition: number, atMs: number): number | undefined {
    const head = opts.heads()[partition] ?? 0;
    const first = opts.firstOffsets()[partition] ?? 0;
    const clamp = (offset: number) => Math.max(first, Math.min(offset, head));
    const oldest = idempotency.oldest(partition);
    const tailFirst = tail.firstOffset(partition);
    if (oldest === undefined) {
      if (tailFirst === undefined) return first >= head ? head : undefined;
      if (tailFirst > first) return undefined; // older records exist, not in the window's index: search the log
      return clamp(tail.firstOffsetAt(partition, atMs) ?? head);
    }
    // Nothing was pruned before the oldest record kept when it is the partition's first.
    if (atMs <= oldest.storedAt) return oldest.offset <= first ? first : undefined;
    const offset = idempotency.firstOffsetAt(partition, atMs);
    if (offset !== undefined) return clamp(offset);
    return clamp(tail.firstOffsetAt(partition, atMs) ?? head);
  }

  /** `fn`, refused while index.db is known damaged. */
  const whileIndexSound =
    <A extends unknown[], R>(fn: (...args: A) => R) =>
    (...args: A): R => {
      const damage = opts.damage?.();
      if (damage !== undefined) throw damagedIndexError(damage);
      return fn(...args);
    };
  return { read: whileIndexSound(read), lookup: whileIndexSound(lookup), offsetAtTime: whileIndexSound(offsetAtTime) };
}

/** The first entries whose records come to at most `maxBytes` stored bytes, the first one in any case. */
function withinBytes(list: IndexEntry[], maxBytes: number): IndexEntry[] {
  if (maxBytes === Infinity) return list;
  let bytes = 0;
  for (let i = 0; i < list.length; i++) {
    bytes += list[i]!.length;
    if (bytes > maxBytes && i > 0) return list.slice(0, i);
  }
  return list;
}

/**
 * The memory `events` decoded records of `storedBytes` in all take: a decoded event is about 1 KiB of
 * heap besides its data, and a delivery's or tail's message (held while the event is) about its size
 * again (a re-probe measured 9x the bytes for small events).
 */
export const decodedCharge = (storedBytes: number, events = 1): number => 2 * storedBytes + 1024 * events;

/**
 * The last records decoded, by partition and offset, bounded by their stored size (or what `charge`
 * makes of it: the memory a decoded event and what hangs on it take): readers of the
 * same offsets (every subscription of the delivery thread, and each retry) get the same decoded
 * event instead of reading and decoding its bytes again, so its message is serialised once per event
 * (`delivery/request.ts`). A hit must sit at the same log position, so a record can never be
 * answered for another one. Oldest first out.
 */
export function createDecodedCache(opts: { maxBytes: number; charge?: (storedBytes: number) => number }) {
  let maxBytes = opts.maxBytes;
  const charge = opts.charge ?? ((length: number) => length);
  const byPartition = new Map<number, Map<number, { stored: StoredEvent; position: number; cost: number }>>();
  const order: { partition: number; offset: number }[] = [];
  let orderAt = 0;
  let bytes = 0;

  function evictOldest(): void {
    const oldest = order[orderAt++]!;
    const map = byPartition.get(oldest.partition);
    const found = map?.get(oldest.offset);
    if (found) {
      bytes -= found.cost;
      map!.delete(oldest.offset);
    }
    // The queue is compacted now and then rather than shifted per eviction.
    orderAt = cutConsumedFront(order, orderAt, 4096);
  }

  return {
    get(partition: number, entry: IndexEntry): StoredEvent | undefined {
      const found = byPartition.get(partition)?.get(entry.offset);
      return found && found.position === entry.position ? found.stored : undefined;
    },
    set(stored: StoredEvent, entry: IndexEntry): void {
      const cost = charge(entry.length);
      if (cost > maxBytes) return;
      let map = byPartition.get(stored.partition);
      if (!map) byPartition.set(stored.partition, (map = new Map()));
      const previous = map.get(stored.offset);
      if (previous) bytes -= previous.cost;
      else order.push({ partition: stored.partition, offset: stored.offset });
      map.set(stored.offset, { stored, position: entry.position, cost });
      bytes += cost;
      while (bytes > maxBytes && orderAt < order.length) evictOldest();
    },
    /** A new bound; 0 keeps nothing (and lets go of everything kept). */
    resize(next: number): void {
      maxBytes = next;
      while (bytes > maxBytes && orderAt < order.length) evictOldest();
      if (bytes === 0) {
        order.length = 0;
        orderAt = 0;
      }
    },
    get bytes(): number {
      return bytes;
    },
  };
}

export type DecodedCache = ReturnType<typeof createDecodedCache>;
