import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createApp } from './api/app';
import { checkExposure, createAuthorizer, parseApiKeys } from './api/auth';
import { sendProblem } from './api/problem';
import { createEventsRouter } from './api/events-router';
import { createHealthRouter } from './api/health-router';
import { createDeliveriesRouter } from './api/deliveries-router';
import { createIngestHandler } from './api/ingest-handler';
import { createOpenApiRouter } from './api/openapi-router';
import { createConsoleRouter } from './api/console-router';
import { createMetricsRouter } from './api/metrics-router';
import { keyNames, normalizeRequestTarget } from './api/routing';
import { createMetrics, type Metrics } from './metrics';
import { HERALD_VERSION } from './version';
import { createSubscriptionsRouter } from './api/subscriptions-router';
import type { Config } from './config';
import { createDeliveryThread, type DeliveryThread } from './delivery/delivery-thread';
import { createHttpSender } from './delivery/http-sender';
import type { EventStore } from './wal/event-store';
import { openLocalEventStore, type LocalEventStoreOptions } from './wal/local-event-store';
import { createLogger, type Logger } from './logger';
import { startCheckpointer } from './store/checkpointer';
import { checkpoint, openDatabase, type Db } from './store/db';
import { lockDataDir, unusable } from './store/data-dir';
import { StartupError } from './errors';
import { createSubscriptionsService, type SubscriptionsService } from './subscriptions/service';
import { createSinkPolicy } from './subscriptions/sink-policy';
import { createHandshakes } from './subscriptions/handshake';
import { createValidationsRouter } from './api/validations-router';

export interface Gateway {
  url: string;
  port: number;
  store: EventStore;
  db: Db;
  /** Delivery, run by its own thread: this is the main thread's side of it (the port, callbacks). */
  dispatcher: DeliveryThread;
  subscriptions: SubscriptionsService;
  log: Logger;
  metrics: Metrics;
  close(): Promise<void>;
}

const CHECKPOINT_INTERVAL_MS = 1000;
const SHUTDOWN_GRACE_MS = 10_000;

function pathOf(url: string | undefined): string {
  const raw = url ?? '/';
  const q = raw.indexOf('?');
  return q === -1 ? raw : raw.slice(0, q);
}

/** The access log: one `debug` line per answered request, with the API key's name (never the secret). */
function logAnswered(log: Logger) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = performance.now();
    res.once('finish', () => {
      const ms = Math.round((performance.now() - started) * 10) / 10;
      // Delivery ids and handshake tokens are credentials: the access log never carries them.
      const path = pathOf(req.url).replace(/^\/(deliveries|validations)\/[^/]+/, '/$1/***');
      log.debug({ method: req.method, path, status: res.statusCode, ms, key: keyNames.get(res) }, 'http request');
    });
  };
}

/**
 * Takes the data dir's lock, then opens SQLite and the log. Anything the OS refuses (a read-only
 * or missing dir, a file where the dir should be) is a one-line StartupError, not a stack trace.
 */
function openStorage(config: Readonly<Config>, log: Logger, onGroupCommitted: LocalEventStoreOptions['onGroupCommitted']) {
  try {
    fs.mkdirSync(config.dataDir, { recursive: true });
    fs.accessSync(config.dataDir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    throw unusable(config.dataDir, err);
  }
  const lock = lockDataDir(config.dataDir);
  const dbFile = path.join(config.dataDir, 'herald.db');
  let db: Db | undefined;
  try {
    db = openDatabase(dbFile);
    const store = openLocalEventStore({
      dataDir: config.dataDir,
      db,
      log,
      partitions: config.partitions,
      fsync: config.fsync,
      fsyncIntervalMs: config.fsyncIntervalMs,
      segmentBytes: config.segmentBytes,
      idempotencyWindowMs: config.idempotencyWindowMs,
      retentionMs: config.retentionMs,
      maxLogBytes: config.maxLogBytes,
      minFreeBytes: config.minFreeBytes,
      recovery: config.recovery,
      onGroupCommitted,
    });
    return { db, store, lock, dbFile };
  } catch (err) {
    if (db?.open) db.close();
    lock.release();
    if (err instanceof StartupError) throw err;
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && /^(E[A-Z]+|SQLITE_(CANTOPEN|READONLY|IOERR|FULL|PERM|NOTADB|CORRUPT)\w*)$/.test(code))
      throw unusable(config.dataDir, err);
    throw err;
  }
}

/** Options of {@link startGateway} beside the configuration (tests and the entry point). */
export interface GatewayOptions {
  log?: Logger;
  metrics?: Metrics;
  /**
   * Tests only: milliseconds added to the time delivery and subscriptions see (retries, leases,
   * auto-disable), at index 0 of a view of a `SharedArrayBuffer` so the delivery thread sees every
   * change at once; the log and HTTP keep the real time.
   */
  clockSkew?: Float64Array;
  /** Tests only: the (first) delivery thread throws after this many answered attempts. */
  deliveryCrashAfterAnswers?: number;
  /** How often the delivery thread may die and be restarted (default 3 times within 60 s) before `onFatal`. */
  deliveryRestarts?: { max: number; windowMs: number };
  /**
   * The delivery thread died too often to go on restarting it. Default: log and exit the process
   * non-zero (70) so a supervisor restarts the gateway; nothing acknowledged is lost either way.
   */
  onFatal?: (err: Error) => void;
}

/** Composition root: opens storage, wires the modules and listens. */
export async function startGateway(config: Readonly<Config>, opts: GatewayOptions = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger(config.logLevel);
  const apiKeys = parseApiKeys(config.apiKeysRaw);
  checkExposure(config.host, apiKeys, config.allowUnauthenticated);
  const authorize = createAuthorizer(apiKeys);
  const metrics = opts.metrics ?? createMetrics();
  const { db, store, lock, dbFile } = openStorage(config, log, (events, fsyncMs) => {
    metrics.walGroupEvents.observe(events);
    if (fsyncMs !== undefined) metrics.walFsync.observe(fsyncMs / 1000);
  });
  let publicUrl = config.publicUrl ?? '';
  const skew = opts.clockSkew;
  const clock = skew ? () => Date.now() + (skew[0] ?? 0) : Date.now;
  // The main thread's sender only probes sinks (validation handshakes); the delivery thread has its own.
  const sender = createHttpSender({ allowPrivate: config.sinkAllowPrivate });
  const handshakes = createHandshakes({
    probe: sender.probe,
    publicUrl: () => publicUrl,
    clock: Date.now,
    log,
    enabled: config.deliveryEnabled,
  });
  const dispatcher = createDeliveryThread({
    dbFile,
    db,
    store,
    feed: store.feed,
    log,
    enabled: config.deliveryEnabled,
    sinkAllowPrivate: config.sinkAllowPrivate,
    clockSkew: skew,
    crashAfterAnswers: opts.deliveryCrashAfterAnswers,
    maxRestarts: opts.deliveryRestarts?.max,
    restartWindowMs: opts.deliveryRestarts?.windowMs,
    onFatal:
      opts.onFatal ??
      ((err) => {
        log.fatal({ err }, 'exiting: delivery cannot run');
        process.exit(70);
      }),
    observer: {
      outcome: (subscription, outcome) => metrics.delivery.outcome(subscription, outcome),
      answered: (subscription, ms) => metrics.delivery.answered(subscription, ms / 1000),
      succeeded: (subscription, ms) => metrics.delivery.succeeded(subscription, ms / 1000),
    },
  });
  const subscriptions = createSubscriptionsService({
    db,
    store,
    delivery: dispatcher,
    log,
    sinkPolicy: createSinkPolicy({ allowPrivate: config.sinkAllowPrivate }),
    handshakes,
    clock,
    hooks: {
      filterError: (subscription) => metrics.filterErrors.inc({ subscription }),
      deleted: (id) => metrics.forgetSubscription(id),
      autoDisabled: (subscription) => metrics.autoDisabled.inc({ subscription }),
    },
  });
  metrics.setSources({
    log: () => store.logStats(),
    heads: () => store.heads(),
    subscriptions: () => subscriptions.metricsSnapshot(),
  });

  const ingest = createIngestHandler({
    store,
    log,
    maxBodyBytes: config.maxBodyBytes,
    maxJsonDepth: config.maxJsonDepth,
    observer: {
      stored: (mode, n) => n > 0 && metrics.eventsIngested.inc({ mode }, n),
      duplicates: (n) => metrics.eventsDuplicate.inc(n),
      rejected: (code) => metrics.ingestRejected.inc({ code }),
      answered: (seconds) => metrics.ingestDuration.observe(seconds),
    },
  });
  const app = createApp({
    log,
    authorize,
    routers: [
      createHealthRouter({ store, db, deliveryEnabled: config.deliveryEnabled }),
      createMetricsRouter(metrics),
      createEventsRouter(store, ingest),
      createSubscriptionsRouter(subscriptions),
      createDeliveriesRouter(dispatcher),
      createValidationsRouter(subscriptions),
      createOpenApiRouter(),
      createConsoleRouter(),
    ],
  });
  // Responses not yet answered; at shutdown they get `Connection: close` so keep-alive clients let go.
  const unanswered = new Set<http.ServerResponse>();
  const logWhenAnswered = log.isLevelEnabled('debug') ? logAnswered(log) : undefined;
  const server = http.createServer((req, res) => {
    unanswered.add(res);
    res.once('close', () => unanswered.delete(res));
    logWhenAnswered?.(req, res);
    try {
      // Routes see the origin form only: no `#fragment`, no `http://host` prefix (else a 400).
      req.url = normalizeRequestTarget(req.method, req.url);
      // The ingest hot path skips express (whose `POST /events` route runs the same handler): exact path, case-sensitive.
      if (req.method === 'POST' && pathOf(req.url) === '/events') {
        const key = authorize('publish', req.headers.authorization);
        if (key) keyNames.set(res, key.name);
        void ingest(req, res);
        return;
      }
    } catch (err) {
      req.resume();
      const code = sendProblem(res, err, log);
      // A publish refused before the ingest handler (no key, wrong scope) is still a rejected POST /events.
      if (req.method === 'POST' && pathOf(req.url) === '/events') metrics.ingestRejected.inc({ code });
      return;
    }
    if (req.url === '*') {
      res.writeHead(204, { allow: 'GET, HEAD, POST, PATCH, DELETE, OPTIONS' }).end(); // OPTIONS *
      return;
    }
    app(req, res);
  });
  server.keepAliveTimeout = 65_000;
  // Read every header (the 16 KiB header size limit still bounds them): node drops those past 2,000
  // by default, and a repeated `ce-id` there would go unseen.
  server.maxHeadersCount = 0;

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    handshakes.close();
    await sender.close(Date.now());
    await store.close();
    db.close();
    lock.release();
    const e = err as NodeJS.ErrnoException;
    if (
      e.code === 'EADDRINUSE' ||
      e.code === 'EACCES' ||
      e.code === 'EADDRNOTAVAIL' ||
      e.code === 'ENOTFOUND' ||
      e.code === 'EAFNOSUPPORT'
    ) {
      throw new StartupError(`cannot listen on ${config.host} port ${config.port}: ${e.code} (HERALD_HOST, HERALD_PORT)`);
    }
    throw err;
  }
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  publicUrl ||= url;
  dispatcher.start(publicUrl);
  subscriptions.startAll();

  const checkpointer = startCheckpointer(dbFile, CHECKPOINT_INTERVAL_MS);
  // The whole configuration but the key secrets (only their names), so an operator sees what ran.
  const { apiKeysRaw: _secrets, recovery, ...settings } = config;
  log.info({ url, version: HERALD_VERSION, ...settings, recovery: [...recovery], apiKeys: apiKeys.map((k) => k.name) }, 'herald listening');

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing ??= (async () => {
      // One deadline for the whole shutdown (HERALD_SHUTDOWN_TIMEOUT_MS): requests get most of it, then
      // open connections are destroyed; delivery's open requests are destroyed by its own share of it.
      const deadline = Date.now() + config.shutdownTimeoutMs;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Otherwise a request in flight now leaves its connection open until the grace period ends.
      for (const res of unanswered) if (!res.headersSent) res.setHeader('connection', 'close');
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), Math.min(SHUTDOWN_GRACE_MS, config.shutdownTimeoutMs / 2));
      force.unref();
      await closed;
      clearTimeout(force);
      // Every step runs even if one fails (a failing disk at shutdown), so SQLite is always closed cleanly;
      // the first failure is rethrown so the process exits non-zero.
      const failures: unknown[] = [];
      const step = async (what: string, fn: () => unknown) => {
        try {
          await fn();
        } catch (err) {
          failures.push(err);
          log.error({ err }, `shutdown: ${what} failed`);
        }
      };
      handshakes.close();
      // The delivery thread stops pulling, lets open requests finish within its share of the deadline,
      // writes everything it holds and exits; only then does the log close under it.
      await step('writing delivery state', () => dispatcher.close({ deadline: deadline - 1000 }));
      await step('closing the handshake sender', () => sender.close(Date.now()));
      await step('flushing the log', () => store.close());
      await step('stopping the checkpointer', () => checkpointer.stop());
      await step('checkpointing SQLite', () => checkpoint(db));
      db.close();
      lock.release();
      if (failures.length > 0) throw failures[0];
      log.info('herald stopped');
    })();
    return closing;
  }

  return { url, port, store, db, dispatcher, subscriptions, log, metrics, close };
}
