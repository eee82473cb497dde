import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { parseRoute, type Route } from './route';

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
