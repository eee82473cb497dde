import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, ApiError, forgetKey, onUnauthorized, saveKey, storedKey } from './api';
import { KeyPrompt } from './components/key-prompt';
import { ErrorNote } from './components/ui';
import { href, useRoute, type Route } from './hooks';
import { DeadLetters } from './views/dead-letters';
import { LiveTail } from './views/live-tail';
import { Overview } from './views/overview';
import { SubscriptionDetail } from './views/subscription-detail';
import { Subscriptions } from './views/subscriptions';

type Access =
  | { kind: 'checking' }
  /** No API keys configured: every call goes without one. */
  | { kind: 'open' }
  | { kind: 'key' }
  | { kind: 'needed'; message?: string }
  | { kind: 'unreachable'; message: string };

const NAV: { label: string; route: Route; active: Route['view'][] }[] = [
  { label: 'Overview', route: { view: 'overview' }, active: ['overview'] },
  { label: 'Subscriptions', route: { view: 'subscriptions' }, active: ['subscriptions', 'subscription'] },
  { label: 'Dead letters', route: { view: 'dead-letters' }, active: ['dead-letters'] },
  { label: 'Live tail', route: { view: 'tail' }, active: ['tail'] },
];

export function App() {
  const route = useRoute();
  const [access, setAccess] = useState<Access>({ kind: 'checking' });

  /** Whether keys are needed: a read route answers 401 only when `HERALD_API_KEYS` is set. */
  const check = useCallback(async () => {
    setAccess({ kind: 'checking' });
    try {
      await api.get('partitions');
      setAccess({ kind: storedKey() ? 'key' : 'open' });
    } catch (err) {
      const e = err as ApiError;
      if (e.status === 401) setAccess({ kind: 'needed', message: storedKey() ? `The gateway refused this key: ${e.message}` : undefined });
      // A key without `read` is still a key: the views say what it may not do.
      else if (e.status === 403) setAccess({ kind: 'key' });
      else setAccess({ kind: 'unreachable', message: e.message });
    }
  }, []);

  useEffect(() => {
    onUnauthorized((message) => setAccess({ kind: 'needed', message: `The gateway answered 401: ${message}` }));
    void check();
  }, [check]);

  return (
    <>
      <header class="top">
        <a class="brand" href={href({ view: 'overview' })}>
          Herald <span>console</span>
        </a>
        <nav>
          {NAV.map((item) => (
            <a key={item.label} href={href(item.route)} class={item.active.includes(route.view) ? 'active' : ''}>
              {item.label}
            </a>
          ))}
        </nav>
        <div class="access" data-testid="access">
          {access.kind === 'open' && <span title="HERALD_API_KEYS is not set">open gateway (no API keys)</span>}
          {access.kind === 'key' && (
            <>
              <span>API key set</span>
              <button
                type="button"
                class="link"
                onClick={() => {
                  forgetKey();
                  void check();
                }}
              >
                forget
              </button>
            </>
          )}
        </div>
      </header>
      <main>
        {access.kind === 'checking' && <p class="dim">Connecting…</p>}
        {access.kind === 'unreachable' && (
          <div class="stack">
            <ErrorNote message={access.message} />
            <button type="button" onClick={() => void check()}>
              Try again
            </button>
          </div>
        )}
        {access.kind === 'needed' && (
          <KeyPrompt
            message={access.message}
            onKey={(key) => {
              saveKey(key);
              void check();
            }}
          />
        )}
        {(access.kind === 'open' || access.kind === 'key') && <View route={route} />}
      </main>
    </>
  );
}

function View(props: { route: Route }) {
  const r = props.route;
  switch (r.view) {
    case 'subscriptions':
      return <Subscriptions />;
    case 'subscription':
      return <SubscriptionDetail key={r.id} id={r.id} />;
    case 'dead-letters':
      return <DeadLetters id={r.id} />;
    case 'tail':
      return <LiveTail />;
    default:
      return <Overview />;
  }
}
