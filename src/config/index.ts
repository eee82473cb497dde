import { isIP } from 'node:net';
import { z } from 'zod';
import { MAX_JSON_DEPTH_CEILING } from '../cloudevents/json-depth';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const RECOVERY_PERMISSIONS = ['skip-corrupt', 'rebuild-events-only', 'recreate-missing'] as const;
export type RecoveryPermission = (typeof RECOVERY_PERMISSIONS)[number];

/**
 * An address to listen on: an IP address (IPv6 bare or in brackets), or a DNS name of letters, digits
 * and hyphens (`999.1.1.1` is neither: it was looked up as a name, and refused as not loopback).
 */
function isHost(value: string): boolean {
  const bare = value.replace(/^\[(.*)\]$/, '$1');
  if (isIP(bare) !== 0) return true;
  if (/^[\d.]+$/.test(value)) return false;
  return /^(?=.{1,253}$)[a-z\d]([a-z\d-]{0,61}[a-z\d])?(\.[a-z\d]([a-z\d-]{0,61}[a-z\d])?)*\.?$/i.test(value);
}

/** `""` counts as unset, so `HERALD_PORT=` does not become port 0. */
const unsetIfEmpty = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);

/** Defaults must sit inside the preprocess so that `""` reaches them as unset. */
const withDefault = <T extends z.ZodType>(schema: T, fallback: z.input<T>) =>
  z.preprocess(unsetIfEmpty, schema.prefault(fallback as never));

/**
 * The range a number or size variable accepts, kept on its schema (`.describe()` keeps metadata) so that the
 * generated configuration table states it: a bound the table left out was found only by starting with a bad value.
 */
export interface ConfigBounds {
  min: number;
  max: number;
  /** As the table says it: `1 to 4096`, `64KiB to 256MiB`. */
  text: string;
}

/** Whole numbers in decimal digits only: `0x1F90`, `1e3` or `8080.0` are refused, not read as some other number. */
const int = (min: number, max: number, fallback: number) =>
  withDefault(
    z.string().trim().regex(/^\d+$/, 'expected a whole number in decimal digits').transform(Number).pipe(z.number().min(min).max(max)),
    String(fallback),
  ).meta({ bounds: { min, max, text: `${min} to ${max}` } satisfies ConfigBounds });

const durationUnits: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Durations are milliseconds, or a number with a unit: `500ms`, `30s`, `15m`, `12h`, `7d`. */
const duration = (fallback: string) =>
  withDefault(
    z
      .string()
      .regex(/^\d+(ms|s|m|h|d)?$/, 'expected milliseconds or a duration such as 30s, 12h, 7d')
      .transform((v) => {
        const match = /^(\d+)(ms|s|m|h|d)?$/.exec(v)!;
        return Number(match[1]) * durationUnits[match[2] ?? 'ms']!;
      })
      // Past 2^53 ms a number is rounded (probe: 99999999999999999999999 was taken as 1e23).
      .pipe(z.number().max(Number.MAX_SAFE_INTEGER, 'must be at most 9007199254740991 ms (about 285,000 years)')),
    fallback,
  );

const sizeUnits: Record<string, number> = { KiB, MiB, GiB };
const MAX_IDEMPOTENCY_WINDOW_MS = 36_500 * 86_400_000;

/** A byte count as an operator would write it, for messages: `65536` → `64KiB`. */
const formatSize = (bytes: number) => {
  for (const unit of ['GiB', 'MiB', 'KiB'] as const) {
    const factor = sizeUnits[unit]!;
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return `${bytes} bytes`;
};

/** Sizes are bytes, or a number with a binary unit: `512KiB`, `64MiB`, `1GiB`. */
const size = (min: number, max: number, fallback: string) =>
  withDefault(
    z
      .string()
      .regex(/^\d+(KiB|MiB|GiB)?$/, 'expected bytes or a size such as 64MiB, 1GiB')
      .transform((v) => {
        const match = /^(\d+)(KiB|MiB|GiB)?$/.exec(v)!;
        return Number(match[1]) * (match[2] ? sizeUnits[match[2]]! : 1);
      })
      .pipe(
        z
          .number()
          .min(min, `must be at least ${formatSize(min)}`)
          .max(max, `must be at most ${formatSize(max)}`),
      ),
    fallback,
  ).meta(
    // 0 to 2^53 - 1 is no bound worth a line (HERALD_MAX_LOG_BYTES, HERALD_MIN_FREE_BYTES).
    min === 0 && max === Number.MAX_SAFE_INTEGER
      ? {}
      : { bounds: { min, max, text: `${formatSize(min)} to ${formatSize(max)}` } satisfies ConfigBounds },
  );

/**
 * `nats://host:port`, `tls://host:port`, `ws(s)://…` or a bare `host:port`, as nats.js takes them. No user info:
 * nats.js drops it (a `nats://<token>@host` never sent its token), and the URLs are logged (security probe).
 */
const NATS_URL = /^((nats|tls|ws|wss):\/\/)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?\/?$/;

/** Stream, consumer and bucket names are built from the prefix: JetStream allows these characters in all of them. */
const NATS_PREFIX = /^[A-Za-z0-9_-]{1,32}$/;

export const STORES = ['local', 'jetstream'] as const;
/** HERALD_BODY_IDLE_TIMEOUT_MS's default (also what an app made without a configuration uses). */
export const DEFAULT_BODY_IDLE_TIMEOUT_MS = 20_000;

export const configSchema = z
  .object({
    HERALD_STORE: withDefault(z.enum(STORES), 'local').describe(
      '`local`: the embedded engine (write-ahead log and SQLite under HERALD_DATA_DIR). `jetstream`: events, subscriptions and delivery state live in a NATS JetStream cluster (HERALD_NATS_*), so any number of Herald nodes share them and any of them may fail. See "Running a cluster".',
    ),
    HERALD_NATS_SERVERS: withDefault(
      z
        .string()
        .transform((v) =>
          v
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean),
        )
        // User info first, with its own message (never the value: it may be a token).
        .refine(
          (servers) => !servers.some((s) => s.includes('@')),
          'a NATS URL must not carry user info (user@ or token@: the client does not send it, and the URLs are logged); authenticate with HERALD_NATS_CREDS',
        )
        .pipe(z.array(z.string().regex(NATS_URL, 'expected comma-separated NATS URLs such as nats://127.0.0.1:4222'))),
      '',
    ).describe(
      'HERALD_STORE=jetstream: comma-separated NATS server URLs (`nats://host:4222,nats://host2:4222`); required with it, without user info (authenticate with HERALD_NATS_CREDS). The client reconnects to any of them and to servers the cluster announces.',
    ),
    HERALD_NATS_REPLICAS: int(1, 5, 3).describe(
      'HERALD_STORE=jetstream: replicas of every stream and bucket Herald creates (an append is acknowledged once a majority of them has it). Fixed when the streams are created; starting with another value is refused.',
    ),
    HERALD_NATS_PREFIX: withDefault(z.string().regex(NATS_PREFIX, 'expected 1 to 32 letters, digits, `_` or `-`'), 'herald').describe(
      'HERALD_STORE=jetstream: prefix of every stream, subject and bucket name (`<prefix>_p0`, `<prefix>.p.0`, `<prefix>_idem`, `<prefix>_meta`, `<prefix>_subs`, `<prefix>_d_…` consumers, `<prefix>_dead`, `<prefix>_acks`…); two deployments on one cluster need two prefixes.',
    ),
    HERALD_NATS_CREDS: z
      .preprocess(unsetIfEmpty, z.string().optional())
      .describe('HERALD_STORE=jetstream: a NATS credentials file (`.creds`: user JWT and NKey seed) to connect with.'),
    HERALD_NATS_TLS_CA: z
      .preprocess(unsetIfEmpty, z.string().optional())
      .describe('HERALD_STORE=jetstream: a PEM file of CA certificates that TLS connections to the NATS servers are verified against.'),
    HERALD_HOST: withDefault(
      z.string().refine(isHost, 'expected an IP address (IPv6 in brackets or not) or a host name such as localhost'),
      '127.0.0.1',
    ).describe('Address to listen on.'),
    HERALD_PORT: int(0, 65535, 8080).describe('TCP port to listen on (0 picks a free port).'),
    // Not trimmed (a path may end in a space), refused: SQLite trims the names of its files while the log does
    // not, and `" d"` put herald.db in `d/` and wal/ in `" d/"` (start-up probe).
    HERALD_DATA_DIR: withDefault(
      z.string().refine((dir) => dir.trim() === dir, 'must not begin or end with white space'),
      './data',
    ).describe(
      'Directory holding the write-ahead log (`wal/`) and the SQLite database (`herald.db`); a path beginning or ending with white space is refused.',
    ),
    HERALD_FSYNC: withDefault(z.enum(['always', 'interval', 'never']), 'always').describe(
      '`always`: answer only after an fsync covering the events (group commit). `interval`: fsync every HERALD_FSYNC_INTERVAL_MS. `never`: leave flushing to the OS.',
    ),
    HERALD_FSYNC_INTERVAL_MS: int(1, 60_000, 50).describe('fsync period for HERALD_FSYNC=interval.'),
    HERALD_PARTITIONS: int(1, 4096, 16).describe('Number of partitions. Fixed when the data dir is created.'),
    HERALD_MAX_BODY_BYTES: size(64 * KiB, 256 * MiB, '1MiB').describe(
      'Largest accepted request body (bytes, or `512KiB`, `1MiB`), on the wire and once decoded (`Content-Encoding`); larger is a 413.',
    ),
    HERALD_INGEST_BUFFER_BYTES: size(64 * KiB, 64 * GiB, '128MiB').describe(
      'Most bytes of `POST /events` bodies held at once, received and not yet answered (bytes, or `128MiB`), counted as they arrive and, once decoded (`Content-Encoding`), at their decoded size; a publish that would pass it is answered 503 `unavailable` with `Retry-After` (at once when its declared length cannot fit). One publish alone is always taken, however large. Memory for ingest is about 3.5 times this at most.',
    ),
    // Below node's 300 s for a whole request, which destroys the connection without an answer.
    HERALD_BODY_IDLE_TIMEOUT_MS: int(100, 120_000, DEFAULT_BODY_IDLE_TIMEOUT_MS).describe(
      'Longest pause (milliseconds) while a request body is received (`POST /events`, and the JSON bodies of the other routes): a request whose body makes no progress this long is answered 408 `request_timeout` (nothing of it done or stored) and its connection closed, so a client that stalled mid-body does not hold ingest buffer or a connection for minutes. A request still unfinished after 300 s in all has its connection closed without an answer.',
    ),
    HERALD_SEGMENT_BYTES: size(64 * KiB, 4 * GiB, '64MiB').describe(
      'Log segment size (bytes, or `64MiB`, `1GiB`) at which a new segment file is started.',
    ),
    // At least a second: 0 would delete every event as soon as it is stored.
    HERALD_RETENTION: duration('7d')
      .pipe(z.number().min(1000, 'must be at least 1s'))
      .describe(
        'How long stored events are kept (`7d`, `12h`, `90m`, `30s`, or milliseconds). Deletion is per whole log segment and goes by the time events were stored, not their `time` attribute: a segment (the active one included, rolled first) is deleted once its newest event is older than this. Deletion does not wait for subscriptions: they move past deleted events and count them as `expired`. At least 1s.',
      ),
    HERALD_MAX_LOG_BYTES: size(0, Number.MAX_SAFE_INTEGER, '0').describe(
      'Largest size of the log (bytes, or `512MiB`, `100GiB`); `0`: no limit. When the log is larger, its oldest segments are deleted the same way as for HERALD_RETENTION.',
    ),
    HERALD_MIN_FREE_BYTES: size(0, Number.MAX_SAFE_INTEGER, '256MiB').describe(
      "Free space to keep on the file system holding the data dir, and on the one holding `wal/` when it is a link to another disk (bytes, or `256MiB`, `1GiB`). When there is less, `POST /events` answers 503 `storage_full` with `Retry-After` and `/readyz` answers 503; nothing stored is touched, and ingest resumes by itself when space returns. A value larger than the whole file system (the default on a disk under 256 MiB) can never be met: a `warn` line at start, the 503's `detail` and `/readyz` say so. `0` turns the check off: a disk then filled to its last byte by the log leaves `index.db` no room to index it, so retention cannot delete (it deletes only indexed segments) and space must be freed by hand.",
    ),
    // 0 would store every resend again, and a value past a double's range is no window at all.
    HERALD_IDEMPOTENCY_WINDOW: duration('7d')
      // At most 100 years: JetStream keeps it as nanoseconds in an int64 (JetStream probe: 107000d stopped the start with "invalid JSON").
      .pipe(z.number().min(1000, 'must be at least 1s').max(MAX_IDEMPOTENCY_WINDOW_MS, 'must be at most 36500d (100 years)'))
      .describe(
        'How long `source`+`id` is remembered for de-duplication (`7d`, `12h`, or milliseconds). At most 36500d. At least 1s. It is a minimum: records past it are removed by a pass every tenth of the window (1 s to 1 min), so for up to that long after (right after a start too) a resend is still answered as a duplicate and `GET /events?source=&id=` still finds the event.',
      ),
    HERALD_LOG_LEVEL: withDefault(z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), 'info').describe(
      'Log level (JSON logs on stdout).',
    ),
    HERALD_PUBLIC_URL: z
      .preprocess(
        unsetIfEmpty,
        z
          .url({ protocol: /^https?$/, error: 'must be an http or https URL, such as https://herald.example.com' })
          // Callback paths are appended to it: a query or fragment would swallow them, credentials would leak to receivers.
          // (zod runs this check on a value the URL check refused too: that one is reported alone.)
          .refine((v) => {
            if (!URL.canParse(v)) return true;
            const u = new URL(v);
            // A bare `?` or `#` parses as an empty search or hash: the characters themselves are checked.
            return !v.includes('?') && !v.includes('#') && u.username === '' && u.password === '';
          }, 'must be a base URL without a query (?…), fragment (#…) or credentials')
          // Its path prefixes the `Location` of a created subscription: one that begins with `//` would make that a
          // network-path reference, which clients resolve against another host (`//x/subscriptions/…` is `http://x/…`).
          .refine(
            (v) => !URL.canParse(v) || !new URL(v).pathname.replace(/\/+$/, '').startsWith('//'),
            'must not have a path beginning with // (the Location of a created subscription would name another host)',
          )
          .optional(),
      )
      .describe(
        'Base URL of the gateway as receivers reach it (`http` or `https`, a path allowed; no query, fragment or credentials); ack callback URLs (`herald-ack-url`) are built from it, and its path prefixes the `Location` of a created subscription.',
      ),
    // Not unset when empty, unlike the others: an empty templated secret must not run the gateway open.
    HERALD_API_KEYS: z
      .string()
      .optional()
      .describe(
        'API keys, `name:secret:scopes` separated by `,` or `;`; scopes from `publish`, `read`, `admin` joined by `+`. Clients send `Authorization: Bearer <secret>`. Names and secrets must be unique, secrets visible ASCII (no white space); a value that is set but holds no key (empty too) is refused: unset it to run without keys.',
      ),
    HERALD_ALLOW_UNAUTHENTICATED: withDefault(z.stringbool(), 'false').describe(
      'Allow running without API keys on a non-loopback address.',
    ),
    HERALD_SINK_ALLOW_PRIVATE: withDefault(z.stringbool(), 'true').describe(
      '`false`: refuse sinks whose host is or resolves to a loopback, private (RFC 1918, fc00::/7, and 100.64.0.0/10, 198.18.0.0/15, 192.0.0.0/24, fec0::/10), link-local (169.254.0.0/16, fe80::/10), unspecified, multicast or broadcast address (also in IPv4-compatible, IPv4-translated, NAT64, 6to4 or Teredo form; the local-use NAT64 prefix 64:ff9b:1::/48 is private): a 400 `sink_not_allowed` at create and PATCH, and a dead letter (`sink_not_allowed`) when a delivery would connect to one (DNS rebinding).',
    ),
    HERALD_MAX_JSON_DEPTH: int(1, MAX_JSON_DEPTH_CEILING, 64).describe(
      'Deepest nesting of arrays and objects accepted in event data (structured, batch, and binary bodies with a JSON content type); deeper is a 400.',
    ),
    HERALD_RECOVERY: withDefault(
      z
        .string()
        .transform((v) =>
          v
            .split(',')
            .map((p) => p.trim())
            .filter(Boolean),
        )
        .pipe(z.array(z.enum(RECOVERY_PERMISSIONS, { error: `expected a comma-separated set of ${RECOVERY_PERMISSIONS.join(', ')}` }))),
      '',
    ).describe(
      'Comma-separated recovery permissions, empty by default. `skip-corrupt`: set unreadable bytes in the middle of the log aside (copied to a side file) and keep the records after them, instead of refusing to start. `rebuild-events-only`: start when `herald.db` is missing, rebuilding events from the log (subscriptions, offsets and dead letters are lost). `recreate-missing` (HERALD_STORE=jetstream): make again, empty, a bucket or delivery stream Herald made before and someone deleted (the subscriptions, idempotency records or dead letters it held are lost); a deleted partition stream is still refused.',
    ),
    HERALD_DELIVERY: withDefault(z.enum(['on', 'off']), 'on').describe(
      '`off`: ingest and serve reads but deliver nothing (for example a backup restored into staging, which must not call real receivers). Local engine only: `off` is refused with `HERALD_STORE=jetstream`, where every node delivers.',
    ),
    HERALD_BACKLOG_NICE: int(0, 19, 10).describe(
      "How much the delivery thread raises its nice value (Linux; at most to 19) while it drains a backlog (reads pages of events older than the newest 32,768) and events are being ingested: on busy cores the thread that answers producers gets the larger share, so a backlog slows its own drain rather than ingest. Back to the gateway's value within about a second after either stops. `0`: never changed.",
    ),
    HERALD_MAX_STREAMS: int(1, 10_000, 64).describe(
      'Most live tails (`GET /events/stream`, `herald events tail`, the console) open at once on this gateway; past it a tail is refused with 503 `unavailable` and `Retry-After`. Each open tail may hold about 2 MiB and the largest event while its reader is waited for.',
    ),
    HERALD_SHUTDOWN_TIMEOUT_MS: int(100, 600_000, 15_000).describe(
      'Longest a graceful shutdown (SIGTERM/SIGINT/SIGHUP) may take. Requests in flight get half of it, at most 10 s, then their connections are closed; open delivery requests get until 1 s before its end; then state is persisted and the process exits.',
    ),
  })
  .superRefine((raw, ctx) => {
    if (raw.HERALD_STORE === 'jetstream' && raw.HERALD_NATS_SERVERS.length === 0)
      ctx.addIssue({ code: 'custom', path: ['HERALD_NATS_SERVERS'], message: 'required with HERALD_STORE=jetstream' });
    // A safety switch ("must not call real receivers") the JetStream engine cannot honour: every node of a cluster pulls
    // and delivers (JetStream probe: such a node made 21,697 deliveries, with no word said). Refused, not warned.
    if (raw.HERALD_STORE === 'jetstream' && raw.HERALD_DELIVERY === 'off')
      ctx.addIssue({
        code: 'custom',
        path: ['HERALD_DELIVERY'],
        message:
          'off is not supported with HERALD_STORE=jetstream: every node of a cluster delivers; pause the subscriptions (POST /subscriptions/{id}/pause) to stop deliveries',
      });
  });

type RawConfig = z.output<typeof configSchema>;

/** HERALD_NATS_*: where the JetStream engine keeps events (present only with HERALD_STORE=jetstream). */
export interface NatsConfig {
  servers: string[];
  replicas: number;
  prefix: string;
  credsFile?: string;
  tlsCaFile?: string;
}

export interface Config {
  /** HERALD_STORE: which engine holds events. */
  store: (typeof STORES)[number];
  nats?: Readonly<NatsConfig>;
  host: string;
  port: number;
  dataDir: string;
  fsync: 'always' | 'interval' | 'never';
  fsyncIntervalMs: number;
  partitions: number;
  maxBodyBytes: number;
  /** HERALD_INGEST_BUFFER_BYTES: publish body bytes held at once. */
  ingestBufferBytes: number;
  /** HERALD_BODY_IDLE_TIMEOUT_MS: longest pause in a request body before a 408. */
  bodyIdleTimeoutMs: number;
  segmentBytes: number;
  /** HERALD_RETENTION: whole segments whose newest event was stored longer ago than this are deleted. */
  retentionMs: number;
  /** HERALD_MAX_LOG_BYTES: above this log size the oldest segments are deleted; `0` = no limit. */
  maxLogBytes: number;
  /** HERALD_MIN_FREE_BYTES: below this free space on the data dir's file system, ingest answers 503 `storage_full`. */
  minFreeBytes: number;
  idempotencyWindowMs: number;
  logLevel: RawConfig['HERALD_LOG_LEVEL'];
  publicUrl?: string;
  apiKeysRaw?: string;
  allowUnauthenticated: boolean;
  sinkAllowPrivate: boolean;
  backlogNice: number;
  maxJsonDepth: number;
  /** HERALD_MAX_STREAMS: live tails open at once. */
  maxStreams: number;
  recovery: ReadonlySet<RecoveryPermission>;
  shutdownTimeoutMs: number;
  deliveryEnabled: boolean;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** `HERALD_*` variables that are not the gateway's own and are expected beside it: the CLI's, the tests' and the bench's. */
const NOT_SETTINGS = /^HERALD_(URL|TIMEOUT|TEST_.*|BENCH.*)$/;

/** Settings only the local engine reads: on the JetStream engine they do nothing (README, "What differs from the local engine"). */
const LOCAL_ENGINE_ONLY = [
  'HERALD_DATA_DIR',
  'HERALD_FSYNC',
  'HERALD_FSYNC_INTERVAL_MS',
  'HERALD_SEGMENT_BYTES',
  'HERALD_RETENTION',
  'HERALD_MAX_LOG_BYTES',
  'HERALD_MIN_FREE_BYTES',
  'HERALD_DELIVERY', // `off` is refused (see the schema); `on` is what every node does anyway
];

/** Heap that ingest may hold per byte of HERALD_INGEST_BUFFER_BYTES (its description: "about 3.5 times"), and what the rest of the gateway takes. */
const INGEST_MEMORY_FACTOR = 3.5;
const HEAP_BASE_BYTES = 64 * 1024 * 1024;

/** As the settings read a value: empty or blank counts as unset. */
const isSet = (value: string | undefined): boolean => value !== undefined && value.trim() !== '';

/**
 * What in the environment is probably a mistake, though not an invalid setting: a `HERALD_*`
 * variable the gateway does not read (a typo, or the CLI's `HERALD_API_KEY` set on the server,
 * which leaves it without keys), a setting of a mode it does not run in (`HERALD_NATS_*` on the
 * local engine, an fsync interval without `HERALD_FSYNC=interval`), and no HERALD_PUBLIC_URL while
 * listening on every interface (the ack and validation URLs receivers are given would then name
 * 0.0.0.0). One sentence each.
 */
export function configWarnings(env: Record<string, string | undefined>, config: Readonly<Config>, heapLimitBytes?: number): string[] {
  const warnings: string[] = [];
  const known = new Set(Object.keys(configSchema.shape));
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('HERALD_') || known.has(name) || NOT_SETTINGS.test(name)) continue;
    warnings.push(
      name === 'HERALD_API_KEY'
        ? "HERALD_API_KEY is the CLI's variable and is ignored here; the gateway reads its keys from HERALD_API_KEYS"
        : `${name} is not a Herald setting and is ignored (herald --help lists them)`,
    );
  }
  // Set for a mode the gateway does not run in (ops probe: NATS servers given, HERALD_STORE forgotten: a single local node, silently).
  const natsSet = Object.keys(env)
    .filter((name) => name.startsWith('HERALD_NATS_') && known.has(name) && isSet(env[name]))
    .sort();
  if (config.store === 'local' && natsSet.length > 0) {
    warnings.push(
      `${natsSet.join(', ')} ${natsSet.length === 1 ? 'is' : 'are'} set, but HERALD_STORE is local: ignored, and events are kept on this machine only; set HERALD_STORE=jetstream to use the cluster`,
    );
  }
  // And the other way round (JetStream probe: HERALD_RETENTION=10s on a JetStream node deleted nothing, without a word):
  // settings of the local engine that the cluster does not read.
  if (config.store === 'jetstream') {
    const localOnly = LOCAL_ENGINE_ONLY.filter((name) => isSet(env[name]));
    if (isSet(env.HERALD_RECOVERY) && [...config.recovery].some((p) => p !== 'recreate-missing')) localOnly.push('HERALD_RECOVERY');
    if (localOnly.length > 0) {
      warnings.push(
        `${localOnly.join(', ')} ${localOnly.length === 1 ? 'is' : 'are'} set, but HERALD_STORE is jetstream: ignored (the local engine's only` +
          `${localOnly.includes('HERALD_RECOVERY') ? '; HERALD_RECOVERY only takes recreate-missing there' : ''})`,
      );
    }
  }
  if (config.fsync !== 'interval' && isSet(env.HERALD_FSYNC_INTERVAL_MS)) {
    warnings.push(`HERALD_FSYNC_INTERVAL_MS is set, but HERALD_FSYNC is ${config.fsync}: it is read only with HERALD_FSYNC=interval`);
  }
  if (config.publicUrl === undefined && (config.host === '0.0.0.0' || config.host === '::')) {
    warnings.push(
      `HERALD_PUBLIC_URL is not set while listening on ${config.host}: the ack and validation callback URLs receivers get name ${config.host}, which they cannot reach; set it to the URL receivers reach Herald at`,
    );
  }
  // Limits probe: under --max-old-space-size=64 with the default buffer, 64 concurrent 1 MB publishes ended in a heap OOM abort.
  const ingestMemory = INGEST_MEMORY_FACTOR * config.ingestBufferBytes + HEAP_BASE_BYTES;
  if (heapLimitBytes !== undefined && heapLimitBytes < ingestMemory) {
    const mib = (bytes: number) => `${Math.round(bytes / MiB)} MiB`;
    warnings.push(
      `the JavaScript heap limit (${mib(heapLimitBytes)}; node's --max-old-space-size sets it) is below what ingest may hold with HERALD_INGEST_BUFFER_BYTES=${mib(config.ingestBufferBytes)} (about ${mib(ingestMemory)}): a burst of large publishes can end the process out of memory; lower HERALD_INGEST_BUFFER_BYTES or raise the limit`,
    );
  }
  return warnings;
}

/**
 * Validates the environment once, at start-up. Pure: takes a plain object.
 * @throws ConfigError naming every bad variable, one per line.
 */
export function loadConfig(env: Record<string, string | undefined>): Readonly<Config> {
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${lines.join('; ')}`);
  }
  const raw = parsed.data;
  return Object.freeze({
    store: raw.HERALD_STORE,
    ...(raw.HERALD_STORE === 'jetstream' ? { nats: natsConfig(raw) } : {}),
    host: raw.HERALD_HOST.replace(/^\[(.*)\]$/, '$1'), // `[::1]` as in a URL means `::1`
    port: raw.HERALD_PORT,
    dataDir: raw.HERALD_DATA_DIR,
    fsync: raw.HERALD_FSYNC,
    fsyncIntervalMs: raw.HERALD_FSYNC_INTERVAL_MS,
    partitions: raw.HERALD_PARTITIONS,
    maxBodyBytes: raw.HERALD_MAX_BODY_BYTES,
    ingestBufferBytes: raw.HERALD_INGEST_BUFFER_BYTES,
    bodyIdleTimeoutMs: raw.HERALD_BODY_IDLE_TIMEOUT_MS,
    segmentBytes: raw.HERALD_SEGMENT_BYTES,
    retentionMs: raw.HERALD_RETENTION,
    maxLogBytes: raw.HERALD_MAX_LOG_BYTES,
    minFreeBytes: raw.HERALD_MIN_FREE_BYTES,
    idempotencyWindowMs: raw.HERALD_IDEMPOTENCY_WINDOW,
    logLevel: raw.HERALD_LOG_LEVEL,
    // As a URL parser reads it (`/a/..` resolved, `\\` as `/`, an empty `:@` dropped): ack URLs are built on it by appending.
    publicUrl: raw.HERALD_PUBLIC_URL === undefined ? undefined : new URL(raw.HERALD_PUBLIC_URL).href.replace(/\/+$/, ''),
    apiKeysRaw: raw.HERALD_API_KEYS,
    allowUnauthenticated: raw.HERALD_ALLOW_UNAUTHENTICATED,
    sinkAllowPrivate: raw.HERALD_SINK_ALLOW_PRIVATE,
    backlogNice: raw.HERALD_BACKLOG_NICE,
    maxJsonDepth: raw.HERALD_MAX_JSON_DEPTH,
    maxStreams: raw.HERALD_MAX_STREAMS,
    recovery: new Set(raw.HERALD_RECOVERY),
    shutdownTimeoutMs: raw.HERALD_SHUTDOWN_TIMEOUT_MS,
    deliveryEnabled: raw.HERALD_DELIVERY === 'on',
  });
}

function natsConfig(raw: RawConfig): Readonly<NatsConfig> {
  return Object.freeze({
    servers: raw.HERALD_NATS_SERVERS,
    replicas: raw.HERALD_NATS_REPLICAS,
    prefix: raw.HERALD_NATS_PREFIX,
    ...(raw.HERALD_NATS_CREDS !== undefined ? { credsFile: raw.HERALD_NATS_CREDS } : {}),
    ...(raw.HERALD_NATS_TLS_CA !== undefined ? { tlsCaFile: raw.HERALD_NATS_TLS_CA } : {}),
  });
}

/** Defaults as an operator would write them, where the parsed value reads badly. */
const DEFAULT_TEXT: Partial<Record<keyof typeof configSchema.shape, string>> = {
  HERALD_MAX_BODY_BYTES: '1MiB',
  HERALD_INGEST_BUFFER_BYTES: '128MiB',
  HERALD_SEGMENT_BYTES: '64MiB',
  HERALD_RETENTION: '7d',
  HERALD_MAX_LOG_BYTES: '0',
  HERALD_MIN_FREE_BYTES: '256MiB',
  HERALD_IDEMPOTENCY_WINDOW: '7d',
  HERALD_PUBLIC_URL: 'http://HOST:PORT',
  HERALD_API_KEYS: '(none: open, loopback only)',
  HERALD_RECOVERY: '(empty)',
  HERALD_NATS_SERVERS: '(none)',
  HERALD_NATS_CREDS: '(none)',
  HERALD_NATS_TLS_CA: '(none)',
};

/** Rows for the README's configuration table, generated from the schema. */
export function configDocs(): { name: string; defaultValue: string; description: string }[] {
  return Object.entries(configSchema.shape).map(([name, schema]) => {
    const parsed = (schema as z.ZodType).safeParse(undefined);
    const fallback = parsed.success && parsed.data !== undefined ? String(parsed.data) : '';
    const bounds = configBounds(name as keyof typeof configSchema.shape);
    return {
      name,
      defaultValue: DEFAULT_TEXT[name as keyof typeof configSchema.shape] ?? fallback,
      description: [(schema as z.ZodType).description ?? '', bounds ? `Range: ${bounds.text}.` : ''].filter(Boolean).join(' '),
    };
  });
}

/** The range a number or size variable accepts (see `ConfigBounds`); none for the others. */
export function configBounds(name: keyof typeof configSchema.shape): ConfigBounds | undefined {
  return (configSchema.shape[name] as z.ZodType).meta()?.bounds as ConfigBounds | undefined;
}

/** The README's configuration table (`npm run docs:config`); a test keeps the README in step. */
export function configTable(): string {
  const rows = configDocs().map((r) => `| \`${r.name}\` | \`${r.defaultValue}\` | ${r.description} |`);
  return ['| Variable | Default | Meaning |', '| --- | --- | --- |', ...rows].join('\n') + '\n';
}
