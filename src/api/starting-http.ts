import type { Router } from 'express';
import { AppError } from '../errors';
import type { Logger } from '../logger';
import { ingestObserver, type Metrics } from '../metrics';
import { createApp } from './app';
import type { Authorizer } from './auth';
import type { HttpHandlers } from './http-server';
import { createMetricsRouter } from './metrics-router';
import { createOpenApiRouter } from './openapi-router';
import { sendProblem } from './problem';
import { newRouter, requireScope } from './routing';

/** How soon a request refused while the gateway starts may be tried again. */
const STARTING_RETRY_AFTER_SECONDS = 1;

/**
 * What a gateway answers while it starts (the JetStream engine waiting for its cluster): it is alive
 * (`/healthz` 200, so a liveness probe does not restart it in a loop while the cluster elects its
 * leaders), not ready (`/readyz` 503 saying what it waits for), `/metrics` and the contract as
 * always, and every other request a 503 `unavailable` with `Retry-After`, until the engine's own
 * handlers replace these once it has started (its subscriptions loaded).
 */
export function startingHandlers(deps: {
  log: Logger;
  authorize: Authorizer;
  metrics: Metrics;
  /** What the start waits for, as `/readyz` and the 503s say it. */
  waitingFor: () => string;
}): HttpHandlers {
  const { log, authorize, metrics, waitingFor } = deps;
  const { refused } = ingestObserver(metrics);
  // What the cluster last answered is said by /readyz only: a 503 goes to any caller, with a key or not.
  const starting = () =>
    new AppError('unavailable', 'the gateway is starting: it waits for the JetStream cluster; nothing was done, retry', {
      retryAfter: STARTING_RETRY_AFTER_SECONDS,
    });
  const app = createApp({
    log,
    authorize,
    routers: [startingHealthRouter(waitingFor), createMetricsRouter(metrics), createOpenApiRouter(), refuseAll(starting)],
  });
  return {
    authorize,
    ingest: (_req, res) => {
      const started = performance.now();
      refused(sendProblem(res, starting(), log), (performance.now() - started) / 1000);
      return Promise.resolve();
    },
    app,
    ingestRejected: refused,
  };
}

function startingHealthRouter(waitingFor: () => string): Router {
  const router = newRouter();
  router.get('/healthz', requireScope('none'), (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', requireScope('none'), (_req, res) => {
    res.status(503).json({ status: 'unavailable', checks: { log: `starting: ${waitingFor()}` } });
  });
  return router;
}

/**
 * Any other route, known or not, is refused until the gateway has started (a 404 would say it does not
 * exist), but the console's: this engine does not serve it, started or not (a 404).
 */
function refuseAll(starting: () => AppError): Router {
  const router = newRouter();
  router.use((req, _res, next) => {
    if (req.path === '/console' || req.path.startsWith('/console/')) return next();
    throw starting();
  });
  return router;
}
