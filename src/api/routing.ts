import { Router, type Express, type Request, type RequestHandler, type Response } from 'express';
import { AppError } from '../errors';
import { decodeBody, decoderOf, readBody } from './read-body';
import { charsetOf } from '../cloudevents/event';
import { DEFAULT_BODY_IDLE_TIMEOUT_MS } from '../config';
import type { Authorizer, RouteScope } from './auth';

/**
 * A router that matches paths exactly as written: case-sensitive and strict about a trailing
 * slash, so `/SUBSCRIPTIONS` or `/subscriptions/` is no route at all (404) rather than an alias
 * that an authorisation rule might see differently.
 */
export function newRouter(): Router {
  return Router({ caseSensitive: true, strict: true });
}

/** Ids in paths (subscriptions, delivery attempts) are at most this long; a longer one names nothing. */
const MAX_ID_LENGTH = 128;

/** The 404 an overlong path id earned, held until the route's `requireScope` has checked the key. */
const overlongIds = new WeakMap<object, AppError>();

/**
 * Answers a request whose `:name` parameter is longer than any id with a short 404 that does not
 * echo it: a 10,000-character id came back twice in the not-found problem, 20 KB (a probe).
 * `what` names what the id is of, `form` the form such ids take. Express runs `router.param`
 * callbacks before the route's handlers, so the 404 is only noted here and answered by
 * `requireScope` once the key is checked: without a key it is a 401, as on every other route
 * (API probe: `GET /subscriptions/<200 characters>` without a key was a 404).
 */
export function refuseOverlongIds(router: Router, name: string, what: string, form: string): void {
  router.param(name, (req, _res, next, id: string) => {
    if (id.length > MAX_ID_LENGTH)
      overlongIds.set(req, new AppError('not_found', `no ${what} has an id of ${id.length} characters (${form})`));
    next();
  });
}

const AUTHORIZER = 'heraldAuthorizer';

/** The name (never the secret) of the API key each answered request used, for the access log. */
export const keyNames = new WeakMap<object, string>();

/** Gives the app the authoriser its routes' `requireScope` checks use. */
export function setAuthorizer(app: Express, authorize: Authorizer): void {
  app.locals[AUTHORIZER] = authorize;
}

/**
 * Middleware that fits any route: its params type is left open so that express still infers the
 * route's own (`/subscriptions/:id` → `{ id: string }`) for the handlers after it.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- see above: any route's params, body and query
export type AnyRouteHandler = RequestHandler<any, any, any, any>;

/** A `requireScope` middleware; `scope` says what it checks (read by the route-listing tests). */
export type ScopeCheck = AnyRouteHandler & { readonly scope: RouteScope };

/**
 * The first handler of every route: checks the API key against the scope the route declares,
 * so the check runs on the route that actually matched and nowhere else. `none` checks nothing
 * (health, the contract, docs, delivery callbacks) but still says so where the route is mounted.
 */
export function requireScope(scope: RouteScope): ScopeCheck {
  const check: AnyRouteHandler = (req, _res, next) => {
    if (scope !== 'none') {
      const authorize = req.app.locals[AUTHORIZER] as Authorizer | undefined;
      // Fail closed: a scoped route in an app without an authoriser is a wiring bug, not an open door.
      if (!authorize) throw new Error(`no authoriser is set on the app, so ${req.method} ${req.path} cannot be checked`);
      const key = authorize(scope, req.headers.authorization, req.rawHeaders);
      if (key) keyNames.set(req.res ?? _res, key.name);
    }
    const overlong = overlongIds.get(req);
    if (overlong) throw overlong;
    next();
  };
  return Object.assign(check, { scope });
}

const JSON_TYPES = ['application/json', 'application/*+json'];
export const JSON_LIMIT_BYTES = 1024 * 1024;
const JSON_LIMIT_NAME = 'the 1 MiB this endpoint accepts';

const BODY_IDLE_MS = 'heraldBodyIdleMs';

/** Gives the app the longest pause in a JSON request body before its 408 (HERALD_BODY_IDLE_TIMEOUT_MS). */
export function setBodyIdleTimeout(app: Express, ms: number): void {
  app.locals[BODY_IDLE_MS] = ms;
}

/** Whether a request has a body: a `Transfer-Encoding`, or a `Content-Length` above 0. */
export function hasBody(req: Pick<Request, 'headers'>): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && length !== '' && Number(length) !== 0;
}

/**
 * Body parsing for the operations whose request body is JSON (placed after `requireScope`, so an
 * unauthorised body is never read): a body of another media type, or one without `Content-Type`,
 * is a 415; malformed JSON a 400; over 1 MiB (on the wire or once decoded) a 413; a charset other
 * than UTF-8 a 415; a body that makes no progress for HERALD_BODY_IDLE_TIMEOUT_MS a 408, as on
 * `POST /events` (a stalled callback body was held until node's 300 s request timeout). A request
 * without a body passes with `req.body` undefined. Routes that ignore their body leave this out.
 */
export const jsonBody: AnyRouteHandler = jsonBodyUpTo(JSON_LIMIT_BYTES, JSON_LIMIT_NAME);

/**
 * {@link jsonBody} with another limit: `limitBytes`, named `limitName` in the 413 ("the request body is
 * larger than <limitName>").
 */
export function jsonBodyUpTo(limitBytes: number, limitName: string): AnyRouteHandler {
  return async (req, res, next) => readJsonBody(req, res, next, limitBytes, limitName);
}

async function readJsonBody(req: Request, res: Response, next: () => void, limitBytes: number, limitName: string): Promise<void> {
  if (!hasBody(req)) return next();
  if (!req.is(JSON_TYPES)) {
    const sent = req.headers['content-type'];
    throw new AppError(
      'unsupported_media_type',
      sent ? `a body of type "${sent}" is not accepted here; send application/json` : 'the body has no Content-Type; send application/json',
      {
        details: [{ attribute: 'content-type', message: 'expected application/json (or application/*+json)' }],
      },
    );
  }
  // JSON exchanged between systems is UTF-8 (RFC 8259 §8.1); body-parser would decode UTF-16 too.
  const charset = charsetOf(req.headers['content-type']);
  if (charset !== undefined && charset !== 'utf-8') {
    req.resume();
    throw new AppError('unsupported_media_type', `a JSON body in charset "${charset}" is not accepted; send UTF-8`, {
      details: [{ attribute: 'content-type', message: 'the charset must be utf-8 (or absent)' }],
    });
  }
  // A declared length past the limit is refused before a byte is read: body-parser would read it all
  // first, and a client that declares 1 MiB and stalls would hold the request unanswered.
  if (Number(req.headers['content-length']) > limitBytes) {
    req.resume();
    throw new AppError('payload_too_large', `the request body is larger than ${limitName}`);
  }
  const decoder = decoderOf(req.headers['content-encoding']); // a coding it cannot undo: refused before the body is asked for
  const idleMs = (req.app.locals[BODY_IDLE_MS] as number | undefined) ?? DEFAULT_BODY_IDLE_TIMEOUT_MS;
  const raw = await readBody(req, res, { limit: limitBytes, idleMs, limitName });
  const decoded = decoder ? await decodeBody(raw, decoder, limitBytes, limitName) : raw;
  req.body = parseJsonObject(decoded);
  next();
}

/**
 * A JSON body's value: an object or an array (the routes' schemas say which they take); an empty
 * body is `{}`, as body-parser had it (white space alone is not JSON: a 400, as it was). Other JSON
 * (`null`, `3`) is valid but the wrong shape.
 */
function parseJsonObject(body: Buffer): unknown {
  // Decoding strips a byte-order mark, and replaces bytes that are not UTF-8 (the schemas see them).
  const text = new TextDecoder().decode(body);
  if (text === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AppError('invalid_request', 'the body is not valid JSON', { details: [{ message: (err as Error).message }] });
  }
  if (typeof value !== 'object' || value === null)
    throw new AppError('invalid_request', 'the body must be a JSON object', { details: [{ message: 'expected a JSON object' }] });
  return value;
}

/**
 * The request target as the routes must see it. A `#fragment` (never meaningful to a server) is
 * cut off; the absolute form (`http://host/path?q`, which HTTP/1.1 servers must accept) becomes
 * the origin form (`/path?q`); `OPTIONS *` stays `*`. Anything else (`*` with another method, an
 * authority, a relative path, another scheme) is a 400.
 */
export function normalizeRequestTarget(method: string | undefined, target: string | undefined): string {
  let out = target ?? '/';
  const hash = out.indexOf('#');
  if (hash !== -1) out = out.slice(0, hash);
  if (out.startsWith('/')) return out;
  if (out === '*' && method === 'OPTIONS') return out;
  const absolute = /^https?:\/\/[^/?]*/i.exec(out);
  if (absolute) {
    const rest = out.slice(absolute[0].length);
    return rest.startsWith('/') ? rest : `/${rest}`;
  }
  throw new AppError('invalid_request', 'the request target must be a path such as /events, or an absolute http(s) URL', {
    details: [{ attribute: 'request-target', message: 'expected origin-form (/path?query) or absolute-form (http://host/path?query)' }],
  });
}
