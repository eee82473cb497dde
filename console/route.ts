/** The console's hash routes (hash routing: the gateway serves one page, at `/console`). */

export type Route =
  | { view: 'overview' }
  | { view: 'subscriptions' }
  | { view: 'subscription'; id: string }
  | { view: 'dead-letters'; id?: string }
  | { view: 'tail' };

export function parseRoute(hash: string): Route {
  const [view, id] = hash
    .replace(/^#\/?/, '')
    .split('/')
    .map((part) => {
      try {
        return decodeURIComponent(part);
      } catch {
        return part;
      }
    });
  // `.` and `..` are no ids: in a request path they are dot segments (console probe: `#/subscriptions/..` read `GET /`).
  const named = id !== undefined && id !== '' && id !== '.' && id !== '..';
  if (view === 'subscriptions') return named ? { view: 'subscription', id } : { view: 'subscriptions' };
  if (view === 'dead-letters') return named ? { view: 'dead-letters', id } : { view: 'dead-letters' };
  if (view === 'tail') return { view: 'tail' };
  return { view: 'overview' };
}

export function href(route: Route): string {
  switch (route.view) {
    case 'subscription':
      return `#/subscriptions/${encodeURIComponent(route.id)}`;
    case 'dead-letters':
      return route.id ? `#/dead-letters/${encodeURIComponent(route.id)}` : '#/dead-letters';
    default:
      return `#/${route.view}`;
  }
}
