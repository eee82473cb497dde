import type { Router } from 'express';
import type { Metrics } from '../metrics';
import { newRouter, requireScope } from './routing';

/** `GET /metrics`: Prometheus text exposition (scope `read` when API keys are configured). */
export function createMetricsRouter(metrics: Pick<Metrics, 'exposition' | 'contentType'>): Router {
  const router = newRouter();
  router.get('/metrics', requireScope('read'), async (_req, res) => {
    const text = await metrics.exposition();
    res.type(metrics.contentType).send(text);
  });
  return router;
}
