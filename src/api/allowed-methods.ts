import type { Express } from 'express';

/** What express 5's router keeps of a route, and of a router mounted with `use()`. */
interface Layer {
  route?: { path: unknown; methods: Record<string, boolean>; stack?: { handle?: unknown }[] };
  handle?: { stack?: Layer[] };
  rawPath?: unknown;
}

/** One route of an express 5 app or router, as {@link mountedRoutes} finds it. */
export interface MountedRoute {
  /** Its full express path (`/subscriptions/:id`), or undefined when it or a router above it is not mounted on a plain string path. */
  path: string | undefined;
  /** The method keys express keeps, lower case (`_all` for `router.all`). */
  methods: string[];
  /** Its first handler (the routes' scope check, see routing.ts). */
  firstHandler: unknown;
}

/**
 * Every route an express 5 app (`app.router.stack`) or router registers, routers mounted with
 * `use()` included. The gateway reads it for `Allow`; the contract tests compare it with the
 * OpenAPI document (and refuse the shapes they cannot translate, which this leaves to them).
 */
export function mountedRoutes(stack: readonly Layer[], prefix: string | undefined = ''): MountedRoute[] {
  const out: MountedRoute[] = [];
  for (const layer of stack) {
    if (layer.route) {
      const path = prefix !== undefined && typeof layer.route.path === 'string' ? prefix + layer.route.path : undefined;
      out.push({ path, methods: Object.keys(layer.route.methods), firstHandler: layer.route.stack?.[0]?.handle });
    } else if (layer.handle?.stack) {
      const mount =
        prefix !== undefined && typeof layer.rawPath === 'string' ? prefix + (layer.rawPath === '/' ? '' : layer.rawPath) : undefined;
      out.push(...mountedRoutes(layer.handle.stack, mount));
    }
  }
  return out;
}

interface RoutePattern {
  pattern: RegExp;
  methods: string[];
  /** Which segments are literal (`1`) rather than parameters (`0`), for precedence: `/a/b` before `/a/:x`. */
  literals: string;
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** `/subscriptions/:id/seek` → a regexp matching exactly such paths (case-sensitive, strict, as the routers match). */
function compile(path: string): RegExp {
  const segments = path.split('/').map((segment) => (segment.startsWith(':') ? '[^/]+' : escape(segment)));
  return new RegExp(`^${segments.join('/')}$`);
}

function patternsOf(app: Express): RoutePattern[] {
  const stack = (app as unknown as { router: { stack: Layer[] } }).router.stack;
  return mountedRoutes(stack).flatMap(({ path, methods }) =>
    path === undefined
      ? []
      : [
          {
            pattern: compile(path),
            methods: methods.filter((m) => m !== '_all').map((m) => m.toUpperCase()),
            literals: path
              .split('/')
              .map((segment) => (segment.startsWith(':') ? '0' : '1'))
              .join(''),
          },
        ],
  );
}

/** The routes with the path, only the most concrete of them (OpenAPI: a concrete path is matched before a templated one). */
function mostConcrete(routes: RoutePattern[], path: string): RoutePattern[] {
  const matching = routes.filter((route) => route.pattern.test(path));
  const best = matching.reduce((top, route) => (route.literals > top ? route.literals : top), '');
  return matching.filter((route) => route.literals === best);
}

/**
 * The methods the app's routes take at a path (`GET` with its `HEAD`, and `OPTIONS`, which every
 * route's path answers), or none when no route has the path: a request whose path is a route but
 * whose method is not is a 405 with `Allow`, not a 404 (RFC 9110 §15.5.6). Where a concrete route
 * and a templated one both have the path, the concrete one's methods alone (`DELETE` on
 * `…/dead-letters/:deadLetterId` does not make `…/dead-letters/redeliver` take `DELETE`). Read from
 * the app's routers on first use, once they are all mounted.
 */
export function allowedMethodsOf(app: Express): (path: string) => string[] {
  let routes: RoutePattern[] | undefined;
  return (path) => {
    routes ??= patternsOf(app);
    const methods = new Set<string>();
    for (const route of mostConcrete(routes, path)) for (const m of route.methods) methods.add(m);
    if (methods.size === 0) return [];
    if (methods.has('GET')) methods.add('HEAD');
    methods.add('OPTIONS');
    return [...methods].sort();
  };
}
