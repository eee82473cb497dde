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
import { createSubscriptionsRouter } from './api/subscriptions-router';
import type { Config } from './config';
import { createDispatcher, type Dispatcher } from './delivery/dispatcher';
import { createHttpSender } from './delivery/http-sender';
import type { EventStore } from './log/event-store';
import { openLocalEventStore } from './log/local-event-store';
import { createLogger, type Logger } from './logger';
import { startCheckpointer } from './store/checkpointer';
import { checkpoint, openDatabase, type Db } from './store/db';
import { createSubscriptionsService, type SubscriptionsService } from './subscriptions/service';

export interface Gateway {
  url: string;
  port: number;
  store: EventStore;
  db: Db;
  dispatcher: Dispatcher;
  subscriptions: SubscriptionsService;
  log: Logger;
  close(): Promise<void>;
}

const CHECKPOINT_INTERVAL_MS = 1000;
const SHUTDOWN_GRACE_MS = 10_000;

function pathOf(url: string | undefined): string {
  const raw = url ?? '/';
  const q = raw.indexOf('?');
  return q === -1 ? raw : raw.slice(0, q);
}

/** Composition root: opens storage, wires the modules and listens. */
export async function startGateway(config: Readonly<Config>, opts: { log?: Logger } = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger(config.logLevel);
  const apiKeys = parseApiKeys(config.apiKeysRaw);
  checkExposure(config.host, apiKeys, config.allowUnauthenticated);
  const authorize = createAuthorizer(apiKeys);
  fs.mkdirSync(config.dataDir, { recursive: true });
  const dbFile = path.join(config.dataDir, 'herald.db');
  const db = openDatabase(dbFile);
  let store: EventStore;
  try {
    store = openLocalEventStore({
      dataDir: config.dataDir,
      db,
      log,
      partitions: config.partitions,
      fsync: config.fsync,
      fsyncIntervalMs: config.fsyncIntervalMs,
      segmentBytes: config.segmentBytes,
      idempotencyWindowMs: config.idempotencyWindowMs,
    });
  } catch (err) {
    db.close();
    throw err;
  }

  let publicUrl = config.publicUrl ?? '';
  const dispatcher = createDispatcher({ store, db, log, sender: createHttpSender(), ackUrlBase: () => publicUrl });
  const subscriptions = createSubscriptionsService({ db, store, dispatcher });

  const app = createApp({
    log,
    routers: [
      createHealthRouter({ store, db }),
      createEventsRouter(store),
      createSubscriptionsRouter(subscriptions),
      createDeliveriesRouter(dispatcher),
      createOpenApiRouter(),
    ],
  });
  const ingest = createIngestHandler({ store, log, maxBodyBytes: config.maxBodyBytes });
  // Responses not yet answered; at shutdown they get `Connection: close` so keep-alive clients let go.
  const unanswered = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    unanswered.add(res);
    res.once('close', () => unanswered.delete(res));
    const path = pathOf(req.url);
    try {
      authorize(req.method ?? 'GET', path, req.headers.authorization);
    } catch (err) {
      req.resume();
      sendProblem(res, err, log);
      return;
    }
    if (req.method === 'POST' && path === '/events') void ingest(req, res);
    else app(req, res);
  });
  server.keepAliveTimeout = 65_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  publicUrl ||= url;
  subscriptions.startAll();

  const checkpointer = startCheckpointer(dbFile, CHECKPOINT_INTERVAL_MS);
  log.info({ url, dataDir: config.dataDir, fsync: config.fsync, partitions: config.partitions, apiKeys: apiKeys.map((k) => k.name) }, 'herald listening');

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing ??= (async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Otherwise a request in flight now leaves its connection open until the grace period ends.
      for (const res of unanswered) if (!res.headersSent) res.setHeader('connection', 'close');
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
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
      await step('writing delivery state', () => dispatcher.close());
      await step('flushing the log', () => store.close());
      await step('stopping the checkpointer', () => checkpointer.stop());
      await step('checkpointing SQLite', () => checkpoint(db));
      db.close();
      if (failures.length > 0) throw failures[0];
      log.info('herald stopped');
    })();
    return closing;
  }

  return { url, port, store, db, dispatcher, subscriptions, log, close };
}
