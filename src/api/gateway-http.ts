import type { Router } from 'express';
import type { Config } from '../config';
import type { Logger } from '../logger';
import { ingestObserver, type Metrics } from '../metrics';
import type { SubscriptionsService } from '../subscriptions/service';
import { HERALD_VERSION } from '../version';
import type { EventLog } from '../wal/event-store';
import { createApp } from './app';
import { SHORT_SECRET, type ApiKey, type Authorizer } from './auth';
import type { DeliveryCallbacks } from '../delivery/dispatcher';
import { createDeliveriesRouter } from './deliveries-router';
import { createEventsRouter } from './events-router';
import type { HttpHandlers } from './http-server';
import { createIngestHandler } from './ingest-handler';
import { createMetricsRouter } from './metrics-router';
import { createOpenApiRouter } from './openapi-router';
import { createSubscriptionsRouter } from './subscriptions-router';
import { createValidationsRouter } from './validations-router';

/**
 * What a gateway on either engine answers with: the ingest fast path, then the API's routers in
 * one order. `health` (what readiness checks) and `extra` (served after the rest) are the engine's own.
 */
export function gatewayHandlers(deps: {
  config: Readonly<Config>;
  log: Logger;
  metrics: Metrics;
  authorize: Authorizer;
  store: EventLog;
  subscriptions: SubscriptionsService;
  deliveries: DeliveryCallbacks;
  health: Router;
  extra?: Router[];
}): HttpHandlers {
  const { config, log, metrics, authorize, store } = deps;
  const observer = ingestObserver(metrics);
  const ingest = createIngestHandler({
    store,
    log,
    maxBodyBytes: config.maxBodyBytes,
    bodyIdleMs: config.bodyIdleTimeoutMs,
    bufferBytes: config.ingestBufferBytes,
    maxJsonDepth: config.maxJsonDepth,
    observer,
  });
  const app = createApp({
    log,
    authorize,
    bodyIdleMs: config.bodyIdleTimeoutMs,
    routers: [
      deps.health,
      createMetricsRouter(metrics),
      createEventsRouter(store, ingest, { maxStreams: config.maxStreams }),
      createSubscriptionsRouter(deps.subscriptions, { basePath: basePathOf(config.publicUrl) }),
      createDeliveriesRouter(deps.deliveries),
      createValidationsRouter(deps.subscriptions),
      createOpenApiRouter(),
      ...(deps.extra ?? []),
    ],
  });
  return { authorize, ingest, app, ingestRejected: observer.refused };
}

/** The path HERALD_PUBLIC_URL puts the API under (a proxy's prefix), without its trailing slash; '' for none. */
export function basePathOf(publicUrl: string | undefined): string {
  return publicUrl === undefined ? '' : new URL(publicUrl).pathname.replace(/\/+$/, '');
}

/** The start-up line: the whole configuration but the key secrets (only their names), so an operator sees what ran. */
export function logListening(log: Logger, config: Readonly<Config>, url: string, apiKeys: readonly ApiKey[]): void {
  const { apiKeysRaw: _secrets, recovery, ...settings } = config;
  log.info({ url, version: HERALD_VERSION, ...settings, recovery: [...recovery], apiKeys: apiKeys.map((k) => k.name) }, 'herald listening');
  const short = apiKeys.filter((k) => k.short).map((k) => k.name);
  if (short.length > 0)
    log.warn(
      { apiKeys: short },
      `API key secrets shorter than ${SHORT_SECRET} characters (${short.join(', ')}): failed keys are not throttled, so a short secret can be guessed; use ${SHORT_SECRET} or more random characters (openssl rand -hex 16)`,
    );
}
