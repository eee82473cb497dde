import { useCallback, useEffect, useRef, useState } from 'preact/hooks';

export interface Polled<T> {
  data?: T;
  error?: string;
  /** Load again now (after an action), without waiting for the next tick. */
  reload: () => void;
}

/**
 * Calls `load` now and every `intervalMs` after the previous call settled (never two at once), while
 * the component is mounted and `deps` are unchanged. An error keeps the last data and says why.
 */
export function usePoll<T>(load: () => Promise<T>, intervalMs: number, deps: unknown[]): Polled<T> {
  const [state, setState] = useState<{ data?: T; error?: string }>({});
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const data = await loadRef.current();
        if (!stopped) setState({ data });
      } catch (err) {
        if (!stopped) setState((s) => ({ data: s.data, error: (err as Error).message }));
      }
      if (!stopped) timer = setTimeout(run, intervalMs);
    };
    void run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [...deps, tick, intervalMs]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

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
  if (view === 'subscriptions') return id ? { view: 'subscription', id } : { view: 'subscriptions' };
  if (view === 'dead-letters') return id ? { view: 'dead-letters', id } : { view: 'dead-letters' };
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

/** The view named by `location.hash` (hash routing: the gateway serves one page, at `/console`). */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseRoute(location.hash));
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  return route;
}
