import type { Express } from 'express';

/** What express 5's router keeps of a route, and of a router mounted with `use()`. */
interface Layer {
  route?: { path: unknown; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
  rawPath?: unknown;
}

interface RoutePattern {
  pattern: RegExp;
  methods: string[];
}

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** `/subscriptions/:id/seek` → a regexp matching exactly such paths (case-sensitive, strict, as the routers match). */
function compile(path: string): RegExp {
  const segments = path.split('/').map((segment) => (segment.startsWith(':') ? '[^/]+' : escape(segment)));
  return new RegExp(`^${segments.join('/')}$`);
}

function collect(stack: Layer[], prefix: string, out: RoutePattern[]): void {
  for (const layer of stack) {
    if (layer.route && typeof layer.route.path === 'string') {
      const methods = Object.keys(layer.route.methods).filter((m) => m !== '_all');
      out.push({ pattern: compile(prefix + layer.route.path), methods: methods.map((m) => m.toUpperCase()) });
    } else if (layer.handle?.stack && typeof layer.rawPath === 'string') {
      collect(layer.handle.stack, prefix + (layer.rawPath === '/' ? '' : layer.rawPath), out);
    }
  }
}

/**
 * The methods the app's routes take at a path (`GET` with its `HEAD`, and `OPTIONS`, which every
 * route's path answers), or none when no route has the path: a request whose path is a route but
 * whose method is not is a 405 with `Allow`, not a 404 (RFC 9110 §15.5.6). Read from the app's
 * routers on first use, once they are all mounted.
 */
export function allowedMethodsOf(app: Express): (path: string) => string[] {
  let routes: RoutePattern[] | undefined;
  return (path) => {
    if (!routes) collect((app as unknown as { router: { stack: Layer[] } }).router.stack, '', (routes = []));
    const methods = new Set<string>();
    for (const route of routes) if (route.pattern.test(path)) for (const m of route.methods) methods.add(m);
    if (methods.size === 0) return [];
    if (methods.has('GET')) methods.add('HEAD');
    methods.add('OPTIONS');
    return [...methods].sort();
  };
}
