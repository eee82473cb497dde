import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createApp } from './api/app';
import { createEventsRouter } from './api/events-router';
import { createHealthRouter } from './api/health-router';
import { createDeliveriesRouter } from './api/deliveries-router';
import { createIngestHandler } from './api/ingest-handler';
import { createSubscriptionsRouter } from './api/subscriptions-router';
import type { Config } from './config';
import { createDispatcher, type Dispatcher } from './delivery/dispatcher';
import { createHttpSender } from './delivery/http-sender';
import type { EventStore } from './log/event-store';
import { openLocalEventStore } from './log/local-event-store';
import { createLogger, type Logger } from './logger';
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

/** Composition root: opens storage, wires the modules and listens. */
export async function startGateway(config: Readonly<Config>, opts: { log?: Logger } = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger(config.logLevel);
  fs.mkdirSync(config.dataDir, { recursive: true });
  const db = openDatabase(path.join(config.dataDir, 'herald.db'));
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
    ],
  });
  const ingest = createIngestHandler({ store, log, maxBodyBytes: config.maxBodyBytes });
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && (req.url === '/events' || req.url?.startsWith('/events?'))) {
      void ingest(req, res);
    } else {
      app(req, res);
    }
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

  const checkpointTimer = setInterval(() => {
    try {
      checkpoint(db);
    } catch (err) {
      log.warn({ err }, 'sqlite checkpoint failed');
    }
  }, CHECKPOINT_INTERVAL_MS);
  checkpointTimer.unref();
  log.info({ url, dataDir: config.dataDir, fsync: config.fsync, partitions: config.partitions }, 'herald listening');

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing ??= (async () => {
      clearInterval(checkpointTimer);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
      force.unref();
      await closed;
      clearTimeout(force);
      await dispatcher.close();
      await store.close();
      checkpoint(db);
      db.close();
      log.info('herald stopped');
    })();
    return closing;
  }

  return { url, port, store, db, dispatcher, subscriptions, log, close };
}
