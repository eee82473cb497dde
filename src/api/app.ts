import express, { type ErrorRequestHandler, type Router } from 'express';
import type { Logger } from 'pino';
import { AppError } from '../errors';
import type { Authorizer } from './auth';
import { sendProblem, undecodablePath } from './problem';
import { setAuthorizer, setBodyIdleTimeout } from './routing';
import { allowedMethodsOf } from './allowed-methods';

export interface AppDeps {
  log: Logger;
  /** Checks the scope each route declares with `requireScope`. */
  authorize: Authorizer;
  routers: Router[];
  /** HERALD_BODY_IDLE_TIMEOUT_MS, for JSON request bodies (default 20 s). */
  bodyIdleMs?: number;
}

/**
 * The express app for every route (`POST /events` is also served by a fast path in front of it).
 * Routing is case-sensitive and strict; each route checks its own scope and parses its own body.
 * An unknown route is a 404 whatever the key. Errors become problem+json here and only here.
 */
export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  ignoreConditionsWithoutValidators(app);
  app.set('query parser', 'simple');
  app.set('case sensitive routing', true);
  app.set('strict routing', true);
  setAuthorizer(app, deps.authorize);
  if (deps.bodyIdleMs !== undefined) setBodyIdleTimeout(app, deps.bodyIdleMs);
  const allowedAt = allowedMethodsOf(app);
  // Before the routers, whatever the key: OPTIONS on a route's path is 200 and `Allow`, OPTIONS included
  // (express's own answer lists the methods of the one router that has the path, without OPTIONS), and
  // another method than the path's is a 405 with `Allow` (after them, `DELETE …/dead-letters/redeliver`
  // reached `…/:deadLetterId`, which `Allow` does not list: it is the concrete route's path).
  app.use((req, res, next) => {
    const allowed = allowedAt(req.path);
    if (allowed.length === 0 || (req.method !== 'OPTIONS' && allowed.includes(req.method))) return next();
    // As the routers answer any method when they cannot decode its parameters, not 200 or 405 (API probe).
    if (!segmentsDecode(req.path)) return next(undecodablePath(req.path));
    if (req.method !== 'OPTIONS') return next(methodNotAllowed(req.path, req.method, allowed));
    res.status(200).set('allow', allowed.join(', '));
    // Herald is the delivery target of the producers' webhooks: a CloudEvents webhook sender asks it for consent
    // with `WebHook-Request-Origin` before it sends (http-webhook §4), and the answer must carry
    // `WebHook-Allowed-Origin` and `WebHook-Allowed-Rate` to consent (§4.2). Herald takes events from any origin
    // (each POST still needs its key) at no rate limit of its own.
    const origin = req.path === '/events' ? req.headers['webhook-request-origin'] : undefined;
    if (typeof origin === 'string' && origin !== '') {
      res.set('webhook-allowed-origin', /^[\x21-\x7e]+$/.test(origin) ? origin : '*').set('webhook-allowed-rate', '*');
    }
    res.set('content-length', '0').end();
  });
  for (const router of deps.routers) app.use(router);
  // The path is cut: it is echoed in the answer, and a long one made a 20 KB 404 (a re-probe).
  app.use((req, _res, next) => next(new AppError('not_found', `no route for ${req.method} ${clipped(req.path)}`)));
  const onError: ErrorRequestHandler = (err, req, res, _next) =>
    sendProblem(res, err instanceof URIError ? undecodablePath(req.path) : err, deps.log);
  app.use(onError);
  return app;
}

/**
 * The API's answers carry no validators (no `ETag`, no `Last-Modified`), so conditional request headers
 * are ignored there; only answers that set a validator (the contract, the docs page and script) can be a
 * `304`. express's `req.fresh` took `If-None-Match: *` as a match whatever the answer, so any `GET` of the
 * API (`/events`, `/subscriptions`, `/healthz`…) with it was a `304` with no body, which the contract
 * does not list.
 */
function ignoreConditionsWithoutValidators(app: express.Express): void {
  const fresh = Object.getOwnPropertyDescriptor(express.request, 'fresh')?.get;
  if (!fresh) throw new Error("express's request has no `fresh` getter to wrap");
  Object.defineProperty(app.request, 'fresh', {
    configurable: true,
    enumerable: true,
    get(this: express.Request): boolean {
      if (!(fresh.call(this) as boolean)) return false; // most requests: no conditional header
      const res = this.res;
      return res !== undefined && (res.get('etag') !== undefined || res.get('last-modified') !== undefined);
    },
  });
}

const methodNotAllowed = (path: string, method: string, allowed: string[]) =>
  new AppError('method_not_allowed', `${clipped(path)} does not take ${method}; it takes ${allowed.join(', ')}`, {
    headers: { allow: allowed.join(', ') },
  });

/** Whether every segment of `path` is valid percent-encoding (what express's routers decode parameters with). */
function segmentsDecode(path: string): boolean {
  try {
    for (const segment of path.split('/')) decodeURIComponent(segment);
    return true;
  } catch {
    return false;
  }
}

const SHOWN_PATH_CHARS = 200;
const clipped = (path: string) =>
  path.length <= SHOWN_PATH_CHARS ? path : `${path.slice(0, SHOWN_PATH_CHARS)}… (${path.length} characters)`;
