import express, { type ErrorRequestHandler, type Router } from 'express';
import type { Logger } from 'pino';
import { AppError } from '../errors';
import { sendProblem } from './problem';

export interface AppDeps {
  log: Logger;
  routers: Router[];
}

/** The express app for every route but the ingest hot path. Errors become problem+json here and only here. */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.use(express.json({ limit: '1mb', type: ['application/json', 'application/*+json'] }));
  for (const router of deps.routers) app.use(router);
  app.use((req, _res, next) => next(new AppError('not_found', `no route for ${req.method} ${req.path}`)));
  const onError: ErrorRequestHandler = (err, _req, res, _next) => sendProblem(res, err, deps.log);
  app.use(onError);
  return app;
}
