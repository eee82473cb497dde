import { useCallback, useEffect, useState } from 'preact/hooks';
import { api, ApiError, forgetKey, keyOnlyInMemory, onUnauthorized, saveKey, storedKey } from './api';
import { KeyPrompt } from './components/key-prompt';
import { ErrorNote } from './components/ui';
import { useRoute } from './hooks';
import { href, type Route } from './route';
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

/** What the key prompt says after a 401: the gateway's refusal, or why the stored key could not even be sent. */
function refusal(e: ApiError, prefix: string): string {
  return e.code === 'unsendable_key' ? e.message : `${prefix}: ${e.message}`;
}

export function App() {
  const route = useRoute();
  const [access, setAccess] = useState<Access>({ kind: 'checking' });
  const allowed = access.kind === 'open' || access.kind === 'key';
  // Once shown, the view stays mounted (hidden) while a key is asked for again: a 401 in the middle of typing
  // (a key revoked, a gateway restarted with other keys) no longer throws away what was typed in its forms.
  const [shown, setShown] = useState(false);
  if (allowed && !shown) setShown(true);

  /** Whether keys are needed: a read route answers 401 only when `HERALD_API_KEYS` is set. */
  const check = useCallback(async () => {
    setAccess({ kind: 'checking' });
    try {
      await api.get('partitions');
      setAccess({ kind: storedKey() ? 'key' : 'open' });
    } catch (err) {
      const e = err as ApiError;
      if (e.status === 401) setAccess({ kind: 'needed', message: storedKey() ? refusal(e, 'The gateway refused this key') : undefined });
      // A key without `read` is still a key: the views say what it may not do.
      else if (e.status === 403) setAccess({ kind: 'key' });
      else setAccess({ kind: 'unreachable', message: e.message });
    }
  }, []);

  useEffect(() => {
    onUnauthorized((e) => setAccess({ kind: 'needed', message: refusal(e, 'The gateway answered 401') }));
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
            <a
              key={item.label}
              href={href(item.route)}
              class={item.active.includes(route.view) ? 'active' : ''}
              aria-current={item.active.includes(route.view) ? 'page' : undefined}
            >
              {item.label}
            </a>
          ))}
        </nav>
        <div class="access" data-testid="access">
          {access.kind === 'open' && <span title="HERALD_API_KEYS is not set">open gateway (no API keys)</span>}
          {access.kind === 'key' && (
            <>
              <span>API key set</span>
              <ForgetKey class="link" label="forget" name="forget the API key" onForgot={check} />
            </>
          )}
        </div>
      </header>
      <main>
        {access.kind === 'checking' && <p class="dim">Connecting…</p>}
        {access.kind === 'unreachable' && (
          <div class="stack">
            <ErrorNote message={access.message} />
            <div class="row">
              <button type="button" onClick={() => void check()}>
                Try again
              </button>
              {/* The stored key may be what fails (a proxy refusing its header): a way out without closing the tab. */}
              {storedKey() && <ForgetKey class="secondary" label="Forget the API key" onForgot={check} />}
            </div>
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
        {access.kind === 'key' && keyOnlyInMemory() && (
          <p class="note note-warn" role="status" data-testid="key-in-memory">
            This browser blocks session storage: the API key is kept only until you reload this page.
          </p>
        )}
        {shown && (
          <div hidden={!allowed} data-testid="view">
            <View route={route} />
          </div>
        )}
      </main>
    </>
  );
}

/** Drops the stored key and checks access again (which asks for a key when one is needed). */
function ForgetKey(props: { class: string; label: string; name?: string; onForgot: () => Promise<void> }) {
  return (
    <button
      type="button"
      class={props.class}
      aria-label={props.name}
      onClick={() => {
        forgetKey();
        void props.onForgot();
      }}
    >
      {props.label}
    </button>
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
