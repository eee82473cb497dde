import fs from 'node:fs';
import path from 'node:path';
import express, { type Router } from 'express';
import { AppError } from '../errors';
import { newRouter, requireScope } from './routing';

/** `dist/console` at the repository root (`npm run build` writes it): two levels up from both `src/api` and `dist/api`. */
export const CONSOLE_DIR = path.resolve(__dirname, '..', '..', 'dist', 'console');

const PAGE_ROUTE = '/console';
const ASSETS_PREFIX = '/console/assets';

/**
 * The page and its assets load only from the gateway itself: no inline script or style, no other
 * origin, no framing. The API is same-origin (`connect-src 'self'`); the key goes in a header.
 */
export const CONSOLE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

function notBuilt(dir: string, cause: unknown): AppError {
  return new AppError('not_found', `the console is not built (no ${path.join(dir, 'index.html')}): run npm run build`, { cause });
}

/**
 * `GET /console`, the web console (a Preact page built from `console/` by `npm run build` into
 * `dist/console/`), and `GET /console/assets/{file}`, its script and style sheet, served by
 * `express.static` from `dist/console/assets/`. Files are read when asked for, so a build made
 * while the gateway runs is served without a restart; when they are missing (only `tsc` was run)
 * the page is a 404 problem that says to run `npm run build`. The page calls the public API with
 * the visitor's own API key, so these routes need none.
 */
export function createConsoleRouter(opts: { dir?: string } = {}): Router {
  const dir = opts.dir ?? CONSOLE_DIR;
  const router = newRouter();
  const open = requireScope('none');

  router.get(PAGE_ROUTE, open, async (_req, res) => {
    let html: string;
    try {
      html = await fs.promises.readFile(path.join(dir, 'index.html'), 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw notBuilt(dir, err);
      throw err;
    }
    res.set(CONSOLE_SECURITY_HEADERS).set('cache-control', 'no-cache').type('html').send(html);
  });

  // `/console/` (a typed or bookmarked slash) goes to the page rather than a 404: the API's routes are
  // strict, and the page's own address has no slash. 308 keeps the method; the query string follows; no body.
  router.get(`${PAGE_ROUTE}/`, open, (req, res) => {
    const query = req.originalUrl.indexOf('?');
    res
      .status(308)
      .location(PAGE_ROUTE + (query === -1 ? '' : req.originalUrl.slice(query)))
      .end();
  });

  // Names are not content-hashed: `no-cache` with validators (ETag, Last-Modified) picks up a rebuild at once.
  const serveAsset = express.static(path.join(dir, 'assets'), {
    index: false,
    redirect: false,
    fallthrough: true,
    cacheControl: false,
    // Whole files only: a `Range` is ignored (a 206, or a 416 that became a 400, are not in the contract).
    acceptRanges: false,
    setHeaders: (res) => {
      for (const [name, value] of Object.entries(CONSOLE_SECURITY_HEADERS)) res.setHeader(name, value);
      res.setHeader('cache-control', 'no-cache');
    },
  });
  // One segment only (`:file` cannot hold a `/`); `..` and dotfiles fall through to the 404 below.
  router.get(`${ASSETS_PREFIX}/:file`, open, (req, res, next) => {
    const original = req.url;
    req.url = original.slice(ASSETS_PREFIX.length);
    // Preconditions other than the cache validators are ignored: `send` answered a failed one with an
    // error the problem handler turned into a 400 (`detail: Precondition Failed`), which no answer lists.
    delete req.headers['if-match'];
    delete req.headers['if-unmodified-since'];
    delete req.headers['if-range'];
    serveAsset(req, res, (err?: unknown) => {
      req.url = original;
      next(err ?? new AppError('not_found', `the console has no asset named "${req.params.file}"`));
    });
  });
  return router;
}
