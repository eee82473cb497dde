/**
 * index-design (storage engine: "choose the structures by measurement"): the indexer's two derived
 * indexes — the position index (partition, offset) → (position, length) and the idempotency index
 * source+id → (partition, offset) — in five candidate layouts, each written from scratch to a
 * fresh SQLite file in this process (better-sqlite3, the pragmas of `src/store/db.ts`), no gateway.
 *
 *   rows-per-event                  today's: a log_index row and an idempotency row (text key, indexes on
 *                                   stored_at and on (partition, offset)) per event
 *   rows-per-event-no-offset-index  the same without idempotency_by_offset
 *   rows-per-event-cache-32MiB  rows-per-event with a 32 MiB page cache (what the indexer thread runs)
 *   group-rows                      position index as one row per (group, partition): (partition, first_offset) →
 *                                   blob of 12-byte entries (position u64, length u32) of consecutive offsets;
 *                                   idempotency one row per event (text key) with the stored_at index
 *   hash-idempotency                position index as group-rows; idempotency as (key_hash, partition, offset)
 *                                   integer keys (53-bit hash of source NUL id, a hit is verified against the
 *                                   record) and a sparse time index, one (partition, first_offset, stored_at)
 *                                   row per (group, partition)
 *   consume-queue-files             position index as fixed-width files `<partition>.idx` (12 bytes per offset at
 *                                   offset × 12, one write per group and partition, no fsync, like RocketMQ's
 *                                   ConsumeQueue); idempotency as hash-idempotency
 *
 * Workload: N events (1,000,000; 100,000 with --quick; BENCH_INDEX_EVENTS=N overrides) in committed
 * groups of 50 over 16 partitions, source `/bench/producer-<k>`, a random UUID-like 36-character id,
 * position and length of a log record of 200–2,000 bytes. Groups are written in transactions of
 * about 4,096 events as the indexer does (with partition_heads and the log_indexed_through mark),
 * with a PASSIVE checkpoint every second (TRUNCATE past 32 MiB of WAL) run in-line between
 * transactions. Measured per design: events/s and process CPU (user + system, process.cpuUsage) per
 * 1,000 events over the writing (rows generated outside the timed part; checkpoints inside, and a
 * final TRUNCATE one, so every design pays once for copying all its pages into the file), the
 * SQLite file and WAL sizes at the end (and after a final TRUNCATE checkpoint, and the .idx files),
 * then 20,000 random point lookups each of an existing offset, an existing source+id and a missing
 * source+id (and a missing offset), warm page cache, p50/p99 in µs. The hash design's record
 * verification is not timed (a hit costs one more record read in a real lookup); it is done after
 * the timer against the generated workload, and any hash candidate that verification rejects is
 * counted. Each design's writing stops after 120 s and its lookups after 30 s (reported if hit).
 *
 * Checked per design: 1,000 events spread over the log are found by both lookups with the right
 * answer, every timed lookup answered right, and missing keys and offsets are not found.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { addCheck, baseReport, newDir, removeDir, type CaseReport, type Ctx } from '../lib/common';
import { round } from '../lib/stats';

const PARTITIONS = 16;
const GROUP_EVENTS = 50;
const TRANSACTION_EVENTS = 4096;
const LOOKUPS = 20_000;
const SAMPLE = 1_000;
const WRITE_CAP_MS = 120_000;
const LOOKUP_CAP_MS = 30_000;
const CHECKPOINT_MS = 1000;
const MAX_WAL_BYTES = 32 * 2 ** 20;
/** Bytes per position entry, in group blobs and .idx files: position u64 (two u32) and length u32. */
const ENTRY = 12;
const PRODUCERS = 32;

interface IndexRow {
  source: string;
  id: string;
  partition: number;
  offset: number;
  storedAt: number;
  position: number;
  length: number;
}

interface Position {
  position: number;
  length: number;
}

interface Design {
  name: string;
  write(groups: IndexRow[][], end: number): void;
  /** The position entry of (partition, offset), if indexed. */
  findOffset(partition: number, offset: number): Position | undefined;
  /** Where source+id may be stored: one answer for exact keys, the hash's candidates (unverified) otherwise. */
  findKey(source: string, id: string): { partition: number; offset: number }[];
  /** SQLite rows written so far (inserts and upserts). */
  rows(): number;
  /** Bytes of index files outside SQLite. */
  fileBytes(): number;
  db: Database.Database;
  close(): void;
}

// ---------------------------------------------------------------------------------------------
// Workload: deterministic from the event's sequence number, so lookups regenerate keys cheaply.

/** murmur3's 32-bit finalizer: a bijection, so distinct inputs give distinct outputs. */
function fmix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

const hex8 = (x: number) => x.toString(16).padStart(8, '0');

/** The event's source and UUID-like id (unique per seq: the first 32 bits are a bijection of it). */
function keyOf(seq: number): { source: string; id: string } {
  const h = hex8(fmix32(seq * 4 + 1)) + hex8(fmix32(seq * 4 + 2)) + hex8(fmix32(seq * 4 + 3));
  const tail = hex8(fmix32(seq ^ 0x6a09e667));
  return {
    source: `/bench/producer-${fmix32(seq * 4) % PRODUCERS}`,
    id: `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${h.slice(16, 20)}-${h.slice(20, 24)}${tail}`,
  };
}

class Workload {
  readonly partitionOf: Uint8Array;
  readonly offsetOf: Int32Array;
  readonly positionOf: Float64Array;
  readonly lengthOf: Uint32Array;
  /** Per partition, the seq of each offset. */
  readonly seqAt: Int32Array[];
  readonly heads: number[];
  readonly groups: number;
  readonly t0 = Date.UTC(2026, 0, 1);

  constructor(readonly n: number) {
    this.partitionOf = new Uint8Array(n);
    this.offsetOf = new Int32Array(n);
    this.positionOf = new Float64Array(n);
    this.lengthOf = new Uint32Array(n);
    this.heads = new Array<number>(PARTITIONS).fill(0);
    let position = 0;
    for (let seq = 0; seq < n; seq++) {
      const p = fmix32(seq ^ 0x5bd1e995) % PARTITIONS;
      this.partitionOf[seq] = p;
      this.offsetOf[seq] = this.heads[p]!++;
      const length = 200 + (fmix32(seq + 0x1234567) % 1800);
      this.positionOf[seq] = position;
      this.lengthOf[seq] = length;
      position += length;
    }
    this.seqAt = this.heads.map((h) => new Int32Array(h));
    for (let seq = 0; seq < n; seq++) this.seqAt[this.partitionOf[seq]!]![this.offsetOf[seq]!] = seq;
    this.groups = Math.ceil(n / GROUP_EVENTS);
  }

  /** Group `g` as the indexer receives it: one row per event, stored_at the group's commit time. */
  group(g: number): IndexRow[] {
    const rows: IndexRow[] = [];
    const storedAt = this.t0 + g * 2;
    for (let seq = g * GROUP_EVENTS; seq < Math.min(this.n, (g + 1) * GROUP_EVENTS); seq++) {
      const { source, id } = keyOf(seq);
      rows.push({
        source,
        id,
        partition: this.partitionOf[seq]!,
        offset: this.offsetOf[seq]!,
        storedAt,
        position: this.positionOf[seq]!,
        length: this.lengthOf[seq]!,
      });
    }
    return rows;
  }

  /** The log position just past group `g`. */
  endOf(g: number): number {
    const last = Math.min(this.n, (g + 1) * GROUP_EVENTS) - 1;
    return this.positionOf[last]! + this.lengthOf[last]!;
  }
}

// ---------------------------------------------------------------------------------------------
// Designs.

/** A 64-bit hash of source NUL id cut to a signed 53-bit integer: FNV-1a (low 32 bits), a murmur-style multiply-xorshift (high 21). */
function keyHash(source: string, id: string): number {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  const step = (c: number) => {
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  };
  for (let i = 0; i < source.length; i++) step(source.charCodeAt(i));
  step(0);
  for (let i = 0; i < id.length; i++) step(id.charCodeAt(i));
  const hi = fmix32(b) >>> 11;
  return (hi >= 0x100000 ? hi - 0x200000 : hi) * 4294967296 + fmix32(a);
}

function open(file: string): Database.Database {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.pragma('wal_autocheckpoint = 0');
  db.pragma('journal_size_limit = 67108864');
  db.exec(`
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE partition_heads (partition INTEGER PRIMARY KEY, head_offset INTEGER NOT NULL);`);
  return db;
}

/** What every design writes per transaction besides its indexes (as `index-rows.ts` does). */
function marks(db: Database.Database) {
  const head = db.prepare<[number, number]>(
    `INSERT INTO partition_heads (partition, head_offset) VALUES (?, ?)
     ON CONFLICT (partition) DO UPDATE SET head_offset = excluded.head_offset`,
  );
  const meta = db.prepare<[string, string]>(
    'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
  );
  return (touched: Map<number, number>, end: number): number => {
    for (const [partition, next] of touched) head.run(partition, next);
    meta.run('log_indexed_through', String(end));
    return touched.size + 1;
  };
}

/** A group's rows by partition: each run holds consecutive offsets. */
function byPartition(rows: IndexRow[]): IndexRow[][] {
  const runs: IndexRow[][] = [];
  const at = new Array<IndexRow[] | undefined>(PARTITIONS);
  for (const row of rows) {
    let run = at[row.partition];
    if (!run) {
      run = [];
      at[row.partition] = run;
      runs.push(run);
    }
    run.push(row);
  }
  return runs;
}

function packEntries(run: IndexRow[]): Buffer {
  const buf = Buffer.allocUnsafe(run.length * ENTRY);
  for (let i = 0; i < run.length; i++) {
    const { position, length } = run[i]!;
    buf.writeUInt32LE(position % 4294967296, i * ENTRY);
    buf.writeUInt32LE(Math.floor(position / 4294967296), i * ENTRY + 4);
    buf.writeUInt32LE(length, i * ENTRY + 8);
  }
  return buf;
}

function unpackEntry(buf: Buffer, at: number): Position {
  return { position: buf.readUInt32LE(at + 4) * 4294967296 + buf.readUInt32LE(at), length: buf.readUInt32LE(at + 8) };
}

const IDEMPOTENCY_TEXT = `
  CREATE TABLE idempotency (
    source TEXT NOT NULL, id TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, stored_at INTEGER NOT NULL,
    PRIMARY KEY (source, id)
  ) WITHOUT ROWID;
  CREATE INDEX idempotency_by_stored_at ON idempotency (stored_at);`;

const IDEMPOTENCY_HASH = `
  CREATE TABLE idempotency_hash (
    key_hash INTEGER NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    PRIMARY KEY (key_hash, partition, "offset")
  ) WITHOUT ROWID;
  CREATE TABLE idempotency_time (
    partition INTEGER NOT NULL, first_offset INTEGER NOT NULL, stored_at INTEGER NOT NULL,
    PRIMARY KEY (partition, first_offset)
  ) WITHOUT ROWID;`;

const GROUP_ROWS = `
  CREATE TABLE log_index_groups (
    partition INTEGER NOT NULL, first_offset INTEGER NOT NULL, entries BLOB NOT NULL,
    PRIMARY KEY (partition, first_offset)
  ) WITHOUT ROWID;`;

/** Idempotency as one text-keyed row per event (today's table). */
function textIdempotency(db: Database.Database) {
  const insert = db.prepare<[string, string, number, number, number]>(
    'INSERT OR IGNORE INTO idempotency (source, id, partition, "offset", stored_at) VALUES (?, ?, ?, ?, ?)',
  );
  const find = db.prepare<[string, string], { partition: number; offset: number }>(
    'SELECT partition, "offset" AS offset FROM idempotency WHERE source = ? AND id = ?',
  );
  return {
    insert: (row: IndexRow) => insert.run(row.source, row.id, row.partition, row.offset, row.storedAt),
    find: (source: string, id: string) => {
      const hit = find.get(source, id);
      return hit ? [hit] : [];
    },
  };
}

/** Idempotency as integer-keyed hash rows plus one time row per (group, partition). */
function hashIdempotency(db: Database.Database) {
  const insert = db.prepare<[number, number, number]>(
    'INSERT OR IGNORE INTO idempotency_hash (key_hash, partition, "offset") VALUES (?, ?, ?)',
  );
  const time = db.prepare<[number, number, number]>(
    'INSERT OR REPLACE INTO idempotency_time (partition, first_offset, stored_at) VALUES (?, ?, ?)',
  );
  const find = db.prepare<[number], { partition: number; offset: number }>(
    'SELECT partition, "offset" AS offset FROM idempotency_hash WHERE key_hash = ?',
  );
  return {
    /** One group's rows by partition; returns SQLite rows written. */
    insertRun(run: IndexRow[]): number {
      for (const row of run) insert.run(keyHash(row.source, row.id), row.partition, row.offset);
      const first = run[0]!;
      time.run(first.partition, first.offset, first.storedAt);
      return run.length + 1;
    },
    find: (source: string, id: string) => find.all(keyHash(source, id)),
  };
}

/** Position index as one row per (group, partition) with a blob of consecutive entries. */
function groupPositions(db: Database.Database) {
  const insert = db.prepare<[number, number, Buffer]>(
    'INSERT OR REPLACE INTO log_index_groups (partition, first_offset, entries) VALUES (?, ?, ?)',
  );
  const find = db.prepare<[number, number], { first: number; entries: Buffer }>(
    'SELECT first_offset AS first, entries FROM log_index_groups WHERE partition = ? AND first_offset <= ? ORDER BY first_offset DESC LIMIT 1',
  );
  return {
    insertRun(run: IndexRow[]): void {
      insert.run(run[0]!.partition, run[0]!.offset, packEntries(run));
    },
    find(partition: number, offset: number): Position | undefined {
      const row = find.get(partition, offset);
      if (!row) return undefined;
      const at = (offset - row.first) * ENTRY;
      return at + ENTRY <= row.entries.length ? unpackEntry(row.entries, at) : undefined;
    },
  };
}

function rowsPerEvent(file: string, offsetIndex: boolean, cacheMiB?: number): Design {
  const db = open(file);
  // The indexer thread's own connection sets a larger page cache (src/wal/indexer-worker.ts).
  if (cacheMiB !== undefined) db.pragma(`cache_size = -${cacheMiB * 1024}`);
  db.exec(`${IDEMPOTENCY_TEXT}
    ${offsetIndex ? 'CREATE INDEX idempotency_by_offset ON idempotency (partition, "offset");' : ''}
    CREATE TABLE log_index (
      partition INTEGER NOT NULL, "offset" INTEGER NOT NULL, position INTEGER NOT NULL, length INTEGER NOT NULL,
      PRIMARY KEY (partition, "offset")
    ) WITHOUT ROWID;`);
  const idem = textIdempotency(db);
  const insert = db.prepare<[number, number, number, number]>(
    'INSERT OR REPLACE INTO log_index (partition, "offset", position, length) VALUES (?, ?, ?, ?)',
  );
  const find = db.prepare<[number, number], Position>('SELECT position, length FROM log_index WHERE partition = ? AND "offset" = ?');
  const mark = marks(db);
  let rows = 0;
  const write = db.transaction((groups: IndexRow[][], end: number) => {
    const touched = new Map<number, number>();
    for (const group of groups) {
      for (const row of group) {
        idem.insert(row);
        insert.run(row.partition, row.offset, row.position, row.length);
        touched.set(row.partition, row.offset + 1);
      }
      rows += group.length * 2;
    }
    rows += mark(touched, end);
  });
  return {
    name:
      cacheMiB !== undefined ? `rows-per-event-cache-${cacheMiB}MiB` : offsetIndex ? 'rows-per-event' : 'rows-per-event-no-offset-index',
    db,
    write: (groups, end) => write(groups, end),
    findOffset: (partition, offset) => find.get(partition, offset),
    findKey: idem.find,
    rows: () => rows,
    fileBytes: () => 0,
    close: () => db.close(),
  };
}

function groupRows(file: string): Design {
  const db = open(file);
  db.exec(`${IDEMPOTENCY_TEXT}${GROUP_ROWS}`);
  const idem = textIdempotency(db);
  const positions = groupPositions(db);
  const mark = marks(db);
  let rows = 0;
  const write = db.transaction((groups: IndexRow[][], end: number) => {
    const touched = new Map<number, number>();
    for (const group of groups) {
      for (const row of group) idem.insert(row);
      rows += group.length;
      for (const run of byPartition(group)) {
        positions.insertRun(run);
        rows++;
        touched.set(run[0]!.partition, run[run.length - 1]!.offset + 1);
      }
    }
    rows += mark(touched, end);
  });
  return {
    name: 'group-rows',
    db,
    write: (groups, end) => write(groups, end),
    findOffset: positions.find,
    findKey: idem.find,
    rows: () => rows,
    fileBytes: () => 0,
    close: () => db.close(),
  };
}

function hashDesign(file: string): Design {
  const db = open(file);
  db.exec(`${IDEMPOTENCY_HASH}${GROUP_ROWS}`);
  const idem = hashIdempotency(db);
  const positions = groupPositions(db);
  const mark = marks(db);
  let rows = 0;
  const write = db.transaction((groups: IndexRow[][], end: number) => {
    const touched = new Map<number, number>();
    for (const group of groups) {
      for (const run of byPartition(group)) {
        rows += idem.insertRun(run);
        positions.insertRun(run);
        rows++;
        touched.set(run[0]!.partition, run[run.length - 1]!.offset + 1);
      }
    }
    rows += mark(touched, end);
  });
  return {
    name: 'hash-idempotency',
    db,
    write: (groups, end) => write(groups, end),
    findOffset: positions.find,
    findKey: idem.find,
    rows: () => rows,
    fileBytes: () => 0,
    close: () => db.close(),
  };
}

function consumeQueueFiles(file: string, dir: string): Design {
  const db = open(file);
  db.exec(IDEMPOTENCY_HASH);
  const idem = hashIdempotency(db);
  const mark = marks(db);
  const fds = Array.from({ length: PARTITIONS }, (_, p) => fs.openSync(path.join(dir, `${p}.idx`), 'w+'));
  const entry = Buffer.alloc(ENTRY);
  let rows = 0;
  let bytes = 0;
  const sqlite = db.transaction((runs: IndexRow[][], end: number) => {
    const touched = new Map<number, number>();
    for (const run of runs) {
      rows += idem.insertRun(run);
      touched.set(run[0]!.partition, run[run.length - 1]!.offset + 1);
    }
    rows += mark(touched, end);
  });
  return {
    name: 'consume-queue-files',
    db,
    write(groups, end) {
      const runs: IndexRow[][] = [];
      for (const group of groups) {
        // One write per group and partition, at offset × ENTRY: the file grows with the partition's offsets.
        for (const run of byPartition(group)) {
          const buf = packEntries(run);
          fs.writeSync(fds[run[0]!.partition]!, buf, 0, buf.length, run[0]!.offset * ENTRY);
          bytes += buf.length;
          runs.push(run);
        }
      }
      sqlite(runs, end);
    },
    findOffset(partition, offset) {
      const n = fs.readSync(fds[partition]!, entry, 0, ENTRY, offset * ENTRY);
      if (n < ENTRY) return undefined;
      const found = unpackEntry(entry, 0);
      return found.length === 0 ? undefined : found;
    },
    findKey: idem.find,
    rows: () => rows,
    fileBytes: () => bytes,
    close() {
      for (const fd of fds) fs.closeSync(fd);
      db.close();
    },
  };
}

const DESIGNS: { name: string; make: (file: string, dir: string) => Design }[] = [
  { name: 'rows-per-event', make: (file) => rowsPerEvent(file, true) },
  { name: 'rows-per-event-no-offset-index', make: (file) => rowsPerEvent(file, false) },
  // What the indexer runs: rows-per-event with its connection's 32 MiB page cache.
  { name: 'rows-per-event-cache-32MiB', make: (file) => rowsPerEvent(file, true, 32) },
  { name: 'group-rows', make: (file) => groupRows(file) },
  { name: 'hash-idempotency', make: (file) => hashDesign(file) },
  { name: 'consume-queue-files', make: (file, dir) => consumeQueueFiles(file, dir) },
];

// ---------------------------------------------------------------------------------------------
// Measurement.

function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (() => void) | undefined;
  return typeof gc === 'function' ? gc : () => undefined;
}

/** Nearest-rank percentiles of µs samples. */
function percentiles(samples: Float64Array): { count: number; p50: number | null; p99: number | null; max: number | null } {
  const n = samples.length;
  if (n === 0) return { count: 0, p50: null, p99: null, max: null };
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number) => round(sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]!, 1);
  return { count: n, p50: at(0.5), p99: at(0.99), max: round(sorted[n - 1]!, 1) };
}

/** Times `count` calls of `fn(i)` (each alone), stopping at the cap; returns µs per call. */
function timeEach(count: number, fn: (i: number) => void): { samples: Float64Array; capped: boolean } {
  const samples = new Float64Array(count);
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    fn(i);
    const t1 = performance.now();
    samples[i] = (t1 - t0) * 1000;
    if (t1 - start > LOOKUP_CAP_MS) return { samples: samples.subarray(0, i + 1), capped: true };
  }
  return { samples, capped: false };
}

/** Mulberry32: a seeded PRNG, so every design looks up the same events. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** This process's bytes read and written through syscalls so far (page cache included); undefined off Linux. */
function ioCounters(): { read: number; written: number } | undefined {
  try {
    const text = fs.readFileSync('/proc/self/io', 'utf8');
    return { read: Number(/rchar: (\d+)/.exec(text)?.[1]), written: Number(/wchar: (\d+)/.exec(text)?.[1]) };
  } catch {
    return undefined;
  }
}

const fileSize = (file: string) => {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
};

interface DesignResult {
  design: string;
  events: number;
  writeCapped: boolean;
  writeSeconds: number;
  eventsPerSec: number;
  cpuMsPer1kEvents: number;
  cpuUserMsPer1kEvents: number;
  cpuSystemMsPer1kEvents: number;
  /** Bytes read and written by the writing's syscalls (/proc/self/io rchar, wchar): SQLite pages missing from its cache, WAL, checkpoints, .idx files. */
  syscallReadBytesPerEvent: number | null;
  syscallWrittenBytesPerEvent: number | null;
  checkpoints: number;
  checkpointCpuMsPer1kEvents: number;
  sqliteRowsPerEvent: number;
  dbBytes: number;
  walBytes: number;
  dbBytesAfterCheckpoint: number;
  indexFileBytes: number;
  bytesPerEvent: number;
  lookupsUs: Record<string, { count: number; p50: number | null; p99: number | null; max: number | null; capped: boolean }>;
  hashCandidatesRejected: number;
  lookupErrors: number;
}

function measure(ctx: Ctx, report: CaseReport, w: Workload, spec: (typeof DESIGNS)[number], gc: () => void): DesignResult {
  const dir = newDir(ctx, `index-${spec.name}`);
  const file = path.join(dir, 'herald.db');
  const design = spec.make(file, dir);
  try {
    // Writing: transactions of whole groups, at least TRANSACTION_EVENTS events each.
    gc();
    const started = performance.now();
    let lastCheckpoint = started;
    const spent = { wall: 0, user: 0, system: 0, read: 0, written: 0 };
    /** Runs `fn` and adds its wall time, process CPU and bytes read and written by syscalls to `spent`. */
    const metered = (fn: () => void) => {
      const io0 = ioCounters();
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      fn();
      spent.wall += performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      spent.user += cpu.user / 1000;
      spent.system += cpu.system / 1000;
      const io = ioCounters();
      if (io && io0) {
        spent.read += io.read - io0.read;
        spent.written += io.written - io0.written;
      }
      return (cpu.user + cpu.system) / 1000;
    };
    let checkpointCpu = 0;
    let checkpoints = 0;
    let written = 0;
    let capped = false;
    for (let g = 0; g < w.groups;) {
      const groups: IndexRow[][] = [];
      let count = 0;
      while (g < w.groups && count < TRANSACTION_EVENTS) {
        const rows = w.group(g++);
        groups.push(rows);
        count += rows.length;
      }
      const end = w.endOf(g - 1);
      metered(() => design.write(groups, end));
      if (performance.now() - lastCheckpoint >= CHECKPOINT_MS) {
        checkpointCpu += metered(() =>
          design.db.pragma(fileSize(`${file}-wal`) > MAX_WAL_BYTES ? 'wal_checkpoint(TRUNCATE)' : 'wal_checkpoint(PASSIVE)'),
        );
        checkpoints++;
        lastCheckpoint = performance.now();
      }
      written += count;
      if (performance.now() - started > WRITE_CAP_MS && g < w.groups) {
        capped = true;
        break;
      }
    }
    const dbBytes = fileSize(file);
    const walBytes = fileSize(`${file}-wal`);
    // The last checkpoint is counted too: every design pays once for copying all its pages into the file,
    // whether or not the 1-second timer happened to fire just before the end.
    checkpointCpu += metered(() => design.db.pragma('wal_checkpoint(TRUNCATE)'));
    checkpoints++;
    const dbBytesAfterCheckpoint = fileSize(file);
    const indexFileBytes = design.fileBytes();
    const per1k = (ms: number) => round((ms / written) * 1000, 2);
    ctx.log(
      `index-design: ${spec.name}: ${written} events in ${round(spent.wall / 1000, 2)} s, ${per1k(spent.user + spent.system)} ms CPU per 1,000 events${capped ? ' (time cap hit)' : ''}`,
    );

    // Lookups: the same random events and missing keys for every design.
    const random = rng(0x5eed);
    const pick = Int32Array.from({ length: LOOKUPS }, () => Math.floor(random() * written));
    const keys = Array.from(pick, (seq) => keyOf(seq));
    const missing = Array.from({ length: LOOKUPS }, (_, i) => keyOf(w.n + 1 + i));
    const heads = new Array<number>(PARTITIONS).fill(0);
    for (let seq = 0; seq < written; seq++) heads[w.partitionOf[seq]!] = w.offsetOf[seq]! + 1;
    /** A hash candidate verified against its record: the event stored at (partition, offset) has this source+id. */
    const verify = (c: { partition: number; offset: number }, source: string, id: string) => {
      const seq = w.seqAt[c.partition]?.[c.offset];
      if (seq === undefined || seq >= written) return false;
      const k = keyOf(seq);
      return k.source === source && k.id === id;
    };
    let errors = 0;
    let rejected = 0;
    const positionsFound: (Position | undefined)[] = new Array(LOOKUPS);
    const keysFound: { partition: number; offset: number }[][] = new Array(LOOKUPS);
    gc();
    const lookups: DesignResult['lookupsUs'] = {};
    const timed = (name: string, fn: (i: number) => void) => {
      const t = timeEach(LOOKUPS, fn);
      lookups[name] = { ...percentiles(t.samples), capped: t.capped };
      return t.samples.length;
    };
    let n = timed('offset', (i) => {
      const seq = pick[i]!;
      positionsFound[i] = design.findOffset(w.partitionOf[seq]!, w.offsetOf[seq]!);
    });
    for (let i = 0; i < n; i++) {
      const seq = pick[i]!;
      if (positionsFound[i]?.position !== w.positionOf[seq] || positionsFound[i]?.length !== w.lengthOf[seq]) errors++;
    }
    n = timed('key', (i) => {
      keysFound[i] = design.findKey(keys[i]!.source, keys[i]!.id);
    });
    // Verification (not timed): a candidate is the event when the record at (partition, offset) has this source+id.
    for (let i = 0; i < n; i++) {
      const verified = keysFound[i]!.filter((c) => verify(c, keys[i]!.source, keys[i]!.id));
      rejected += keysFound[i]!.length - verified.length;
      if (verified.length !== 1 || verified[0]!.offset !== w.offsetOf[pick[i]!]) errors++;
    }
    n = timed('missingKey', (i) => {
      keysFound[i] = design.findKey(missing[i]!.source, missing[i]!.id);
    });
    for (let i = 0; i < n; i++) {
      const verified = keysFound[i]!.filter((c) => verify(c, missing[i]!.source, missing[i]!.id));
      rejected += keysFound[i]!.length - verified.length;
      if (verified.length > 0) errors++;
    }
    n = timed('missingOffset', (i) => {
      positionsFound[i] = design.findOffset(i % PARTITIONS, heads[i % PARTITIONS]! + Math.floor(i / PARTITIONS));
    });
    for (let i = 0; i < n; i++) if (positionsFound[i] !== undefined) errors++;

    // Correctness on a spread sample (first and last event included).
    const sample = Array.from({ length: Math.min(SAMPLE, written) }, (_, i) =>
      SAMPLE >= written ? i : Math.floor((i * (written - 1)) / (SAMPLE - 1)),
    );
    const badOffset = sample.filter((seq) => {
      const found = design.findOffset(w.partitionOf[seq]!, w.offsetOf[seq]!);
      return found?.position !== w.positionOf[seq] || found?.length !== w.lengthOf[seq];
    });
    const badKey = sample.filter((seq) => {
      const { source, id } = keyOf(seq);
      const verified = design.findKey(source, id).filter((c) => verify(c, source, id));
      return verified.length !== 1 || verified[0]!.partition !== w.partitionOf[seq] || verified[0]!.offset !== w.offsetOf[seq];
    });
    const missingFound = missing
      .slice(0, SAMPLE)
      .filter((k) => design.findKey(k.source, k.id).some((c) => verify(c, k.source, k.id))).length;
    addCheck(report, {
      name: `${spec.name}: ${sample.length} sampled events found by offset and by source+id`,
      ok: badOffset.length === 0 && badKey.length === 0 && sample.length > 0,
      detail: badOffset.length + badKey.length > 0 ? { badOffset: badOffset.slice(0, 5), badKey: badKey.slice(0, 5) } : undefined,
    });
    addCheck(report, {
      name: `${spec.name}: every timed lookup answered right`,
      ok: errors === 0,
      detail: errors > 0 ? { errors } : undefined,
    });
    addCheck(report, {
      name: `${spec.name}: missing source+id and offsets past the heads are not found`,
      ok: missingFound === 0 && design.findOffset(0, heads[0]!) === undefined,
      detail: missingFound > 0 ? { missingFound } : undefined,
    });

    const footprint = dbBytesAfterCheckpoint + indexFileBytes;
    return {
      design: spec.name,
      events: written,
      writeCapped: capped,
      writeSeconds: round(spent.wall / 1000, 3),
      eventsPerSec: Math.round(written / (spent.wall / 1000)),
      cpuMsPer1kEvents: per1k(spent.user + spent.system),
      cpuUserMsPer1kEvents: per1k(spent.user),
      cpuSystemMsPer1kEvents: per1k(spent.system),
      syscallReadBytesPerEvent: ioCounters() ? Math.round(spent.read / written) : null,
      syscallWrittenBytesPerEvent: ioCounters() ? Math.round(spent.written / written) : null,
      checkpoints,
      checkpointCpuMsPer1kEvents: per1k(checkpointCpu),
      sqliteRowsPerEvent: round(design.rows() / written, 3),
      dbBytes,
      walBytes,
      dbBytesAfterCheckpoint,
      indexFileBytes,
      bytesPerEvent: round(footprint / written, 1),
      lookupsUs: lookups,
      hashCandidatesRejected: rejected,
      lookupErrors: errors,
    };
  } finally {
    design.close();
    removeDir(dir);
  }
}

function table(results: DesignResult[]): string[] {
  const mib = (b: number) => round(b / 2 ** 20, 1).toFixed(1);
  const kib = (b: number | null) => (b === null ? '-' : (b / 1024).toFixed(1));
  const pp = (l: DesignResult['lookupsUs'][string] | undefined) => `${l?.p50 ?? '-'}/${l?.p99 ?? '-'}${l?.capped ? '*' : ''}`;
  const head = [
    'design'.padEnd(31),
    'events/s'.padStart(9),
    'CPU ms/1k ev'.padStart(13),
    'rows/ev'.padStart(8),
    'KiB/ev w/r'.padStart(11),
    'db+wal MiB'.padStart(15),
    'idx MiB'.padStart(8),
    'B/ev'.padStart(6),
    'offset µs p50/p99'.padStart(18),
    'key hit µs'.padStart(12),
    'key miss µs'.padStart(12),
  ].join(' ');
  const lines = results.map((r) =>
    [
      `${r.design}${r.writeCapped ? '*' : ''}`.padEnd(31),
      String(r.eventsPerSec).padStart(9),
      r.cpuMsPer1kEvents.toFixed(1).padStart(13),
      r.sqliteRowsPerEvent.toFixed(2).padStart(8),
      `${kib(r.syscallWrittenBytesPerEvent)}/${kib(r.syscallReadBytesPerEvent)}`.padStart(11),
      `${mib(r.dbBytes)}+${mib(r.walBytes)}`.padStart(15),
      (r.indexFileBytes > 0 ? mib(r.indexFileBytes) : '-').padStart(8),
      r.bytesPerEvent.toFixed(0).padStart(6),
      pp(r.lookupsUs.offset).padStart(18),
      pp(r.lookupsUs.key).padStart(12),
      pp(r.lookupsUs.missingKey).padStart(12),
    ].join(' '),
  );
  return [head, ...lines];
}

export async function run(ctx: Ctx): Promise<CaseReport> {
  const report = baseReport('index-design', ctx);
  const override = Number(process.env.BENCH_INDEX_EVENTS);
  const n = Number.isInteger(override) && override >= SAMPLE ? override : ctx.quick ? 100_000 : 1_000_000;
  const gc = collector();
  ctx.log(`index-design: ${n} events, groups of ${GROUP_EVENTS} over ${PARTITIONS} partitions, ${DESIGNS.length} designs`);
  const w = new Workload(n);
  const results: DesignResult[] = [];
  for (const spec of DESIGNS) {
    ctx.log(`index-design: ${spec.name}: writing`);
    results.push(measure(ctx, report, w, spec, gc));
    await new Promise((resolve) => setImmediate(resolve));
  }
  const lines = table(results);
  const title = `index-design: ${n} events (groups of ${GROUP_EVENTS}, ${PARTITIONS} partitions, transactions of ~${TRANSACTION_EVENTS}); lookups ${LOOKUPS} each, warm cache`;
  report.results = {
    events: n,
    groupEvents: GROUP_EVENTS,
    partitions: PARTITIONS,
    transactionEvents: TRANSACTION_EVENTS,
    designs: results,
  };
  report.table = [title, ...lines];
  const today = results[0]!.cpuMsPer1kEvents;
  for (const r of results) report.ratios[`${r.design}_cpu_ms_per_1k`] = r.cpuMsPer1kEvents;
  report.ratios.best_cpu_vs_rows_per_event = round(Math.min(...results.map((r) => r.cpuMsPer1kEvents)) / today, 3);
  report.notes = [
    'CPU: process.cpuUsage (all threads, user + system) over the write calls, the in-line checkpoints and a final TRUNCATE checkpoint; row generation excluded',
    'db+wal: SQLite file and WAL at the end of writing; B/ev: SQLite file after a final TRUNCATE checkpoint plus .idx files, per event',
    'hash designs: lookups time the hash and the SQLite query only; verifying a candidate against its record (one more position lookup and record read) is not timed, it is checked afterwards against the generated events',
    'rows/ev: SQLite rows inserted or upserted per event, partition_heads and meta included',
    'KiB/ev w/r: bytes written and read by syscalls per event while writing (/proc/self/io wchar, rchar): WAL frames, checkpoint copies, .idx writes; reads are pages SQLite did not have in its own cache (default cache_size, as in production), mostly served by the page cache',
    `* after a design: its writing hit the ${WRITE_CAP_MS / 1000} s cap; after a lookup figure: the ${LOOKUP_CAP_MS / 1000} s cap`,
  ];
  // Printed again next to the suite's summary, so the comparison is not lost in the progress lines.
  for (const line of report.table as string[]) ctx.log(line);
  ctx.defer(() => process.stderr.write(`\n${title}\n${lines.join('\n')}\n`));
  return report;
}
