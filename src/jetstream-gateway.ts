import { createApp } from './api/app';
import { checkExposure, createAuthorizer, parseApiKeys } from './api/auth';
import { createEventsRouter } from './api/events-router';
import { createHealthRouter } from './api/health-router';
import { createHttpServer } from './api/http-server';
import { createIngestHandler } from './api/ingest-handler';
import { createMetricsRouter } from './api/metrics-router';
import { createNotImplementedRouter } from './api/not-implemented-router';
import { createOpenApiRouter } from './api/openapi-router';
import type { Config } from './config';
import { openJetStreamEventStore, type JetStreamEventStore } from './jetstream/jetstream-event-store';
import { createLogger, type Logger } from './logger';
import { createMetrics, ingestObserver, type Metrics } from './metrics';
import { HERALD_VERSION } from './version';

/** What `/subscriptions…`, `/deliveries…` and `/validations…` answer on this engine, with a 501. */
export const SUBSCRIPTIONS_NOT_IMPLEMENTED = 'subscriptions are not available on the jetstream engine yet';

/** The prefixes of the subscriptions feature: CRUD and dead letters, delivery callbacks, validation callbacks. */
const SUBSCRIPTION_PREFIXES = ['/subscriptions', '/deliveries', '/validations'] as const;

export interface JetStreamGateway {
  url: string;
  port: number;
  store: JetStreamEventStore;
  log: Logger;
  metrics: Metrics;
  close(): Promise<void>;
}

/**
 * Composition root of a node on the JetStream engine (`HERALD_STORE=jetstream`, preview): ingest,
 * reads, the live tail, health and metrics on a cluster-backed store; no data dir, no SQLite, no
 * delivery. Subscriptions and delivery answer 501 (`not_implemented`) until they are built on
 * JetStream durable consumers.
 */
export async function startJetStreamGateway(
  config: Readonly<Config>,
  opts: { log?: Logger; metrics?: Metrics } = {},
): Promise<JetStreamGateway> {
  if (!config.nats) throw new Error('startJetStreamGateway needs HERALD_STORE=jetstream and its HERALD_NATS_* settings');
  const log = opts.log ?? createLogger(config.logLevel);
  const apiKeys = parseApiKeys(config.apiKeysRaw);
  checkExposure(config.host, apiKeys, config.allowUnauthenticated);
  const authorize = createAuthorizer(apiKeys);
  const metrics = opts.metrics ?? createMetrics();
  const store = await openJetStreamEventStore({
    nats: config.nats,
    partitions: config.partitions,
    idempotencyWindowMs: config.idempotencyWindowMs,
    log,
  });
  metrics.setSources({
    log: () => ({ bytes: store.snapshot().bytes, segments: 0 }),
    heads: () => store.snapshot().heads,
    subscriptions: async () => [],
  });
  const ingest = createIngestHandler({
    store,
    log,
    maxBodyBytes: config.maxBodyBytes,
    maxJsonDepth: config.maxJsonDepth,
    observer: ingestObserver(metrics),
  });
  const app = createApp({
    log,
    authorize,
    routers: [
      createHealthRouter({ store }),
      createMetricsRouter(metrics),
      createEventsRouter(store, ingest),
      createNotImplementedRouter({ prefixes: SUBSCRIPTION_PREFIXES, detail: SUBSCRIPTIONS_NOT_IMPLEMENTED }),
      createOpenApiRouter(),
    ],
  });
  const httpServer = createHttpServer({ log, authorize, ingest, app, ingestRejected: (code) => metrics.ingestRejected.inc({ code }) });
  let listening: { url: string; port: number };
  try {
    listening = await httpServer.listen(config.port, config.host);
  } catch (err) {
    await store.close();
    throw err;
  }
  const { url, port } = listening;
  const { apiKeysRaw: _secrets, recovery: _recovery, ...settings } = config;
  log.info({ url, version: HERALD_VERSION, ...settings, apiKeys: apiKeys.map((k) => k.name) }, 'herald listening');

  let closing: Promise<void> | undefined;
  function close(): Promise<void> {
    closing ??= (async () => {
      await httpServer.close(config.shutdownTimeoutMs);
      await store.close();
      log.info('herald stopped');
    })();
    return closing;
  }
  return { url, port, store, log, metrics, close };
}
