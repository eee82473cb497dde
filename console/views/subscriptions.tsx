import { useState } from 'preact/hooks';
import { api } from '../api';
import { Card, ErrorNote, SecretField, StateBadge } from '../components/ui';
import { formatAge, formatCount, formatTime, totals } from '../format';
import { usePoll } from '../hooks';
import { href } from '../route';
import type { Subscription, SubscriptionPage } from '../types';

const POLL_MS = 2000;
/** Subscriptions a page: a poll reads (and the page draws) this many, however many there are. */
const PAGE = 100;

/**
 * Subscriptions a page at a time, oldest first, with state, total lag, in-flight and oldest pending
 * age; the create form. `cursors` holds the `after` of each page gone through, to go back.
 */
export function Subscriptions() {
  const [cursors, setCursors] = useState<string[]>([]);
  const after = cursors.at(-1);
  const list = usePoll(
    async () => ({
      after,
      page: await api.get<SubscriptionPage>(
        `subscriptions?limit=${PAGE}${after === undefined ? '' : `&after=${encodeURIComponent(after)}`}`,
      ),
    }),
    POLL_MS,
    [after],
  );
  // The page read for this cursor only: until the next page is read, the last one is not shown under its number (CI saw it).
  const shown = list.data !== undefined && list.data.after === after ? list.data.page : undefined;
  const [created, setCreated] = useState<Subscription | undefined>();
  const subscriptions = shown?.subscriptions ?? [];
  const next = shown?.nextAfter ?? null;
  return (
    <div class="stack">
      <Card
        title="Subscriptions"
        actions={
          <span class="pager">
            <span class="dim" data-testid="subscriptions-range">
              {/* A page number, not a range: subscriptions deleted on earlier pages would make a range wrong. */}
              {shown && (cursors.length === 0 && next === null ? `${subscriptions.length} in all` : `page ${cursors.length + 1}`)}
            </span>
            {cursors.length > 0 && (
              <button type="button" class="secondary" onClick={() => setCursors((c) => c.slice(0, -1))}>
                ← previous
              </button>
            )}
            {next !== null && (
              <button type="button" class="secondary" data-testid="subscriptions-next" onClick={() => setCursors((c) => [...c, next])}>
                next →
              </button>
            )}
          </span>
        }
      >
        <ErrorNote message={list.error} />
        {shown && subscriptions.length === 0 && cursors.length === 0 && <p class="dim">No subscriptions yet: create one below.</p>}
        {shown && subscriptions.length === 0 && cursors.length > 0 && (
          <p class="dim">No subscriptions on this page any more (deleted meanwhile): go to the previous page.</p>
        )}
        {subscriptions.length > 0 && (
          <table class="table clickable" data-testid="subscriptions">
            <thead>
              <tr>
                <th>sink</th>
                <th>state</th>
                <th class="num">lag</th>
                <th class="num">in flight</th>
                <th class="num">oldest pending</th>
                <th class="num">dead letters</th>
                <th>created</th>
              </tr>
            </thead>
            <tbody>
              {subscriptions.map((s) => {
                const t = totals(s.stats);
                return (
                  <tr key={s.id} data-subscription={s.id} onClick={() => (location.hash = href({ view: 'subscription', id: s.id }))}>
                    <td>
                      <a href={href({ view: 'subscription', id: s.id })} class="mono">
                        {s.sink}
                      </a>
                      <div class="dim small mono">{s.id}</div>
                    </td>
                    <td>
                      <StateBadge state={s.state} reason={s.stateReason} />
                    </td>
                    {s.stats ? (
                      <>
                        <td class="num" data-testid="lag">
                          {formatCount(t.lag)}
                        </td>
                        <td class="num">{formatCount(t.inFlight)}</td>
                        <td class="num">{formatAge(t.oldestPendingAgeMs)}</td>
                        <td class="num">
                          {s.stats.deadLetters ? (
                            <a href={href({ view: 'dead-letters', id: s.id })}>{formatCount(s.stats.deadLetters)}</a>
                          ) : (
                            0
                          )}
                        </td>
                      </>
                    ) : (
                      // No stats: its delivery is not started on this node (the gateway logs why, and retries).
                      <td class="num dim" colSpan={4} data-testid="lag" title="delivery not started on this node">
                        not started
                      </td>
                    )}
                    <td class="small">{formatTime(s.createdAt)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        )}
      </Card>
      {created?.secret && (
        <SecretField
          label={`Subscription created (${created.sink}). Its signing secret:`}
          secret={created.secret}
          onDone={() => setCreated(undefined)}
        />
      )}
      <CreateSubscription
        onCreated={(s) => {
          setCreated(s);
          list.reload();
        }}
      />
    </div>
  );
}

const FILTER_EXAMPLE = '[{"prefix": {"type": "com.example."}}]';

function CreateSubscription(props: { onCreated: (s: Subscription) => void }) {
  const [sink, setSink] = useState('');
  const [filters, setFilters] = useState('[]');
  const [ordering, setOrdering] = useState('partition');
  const [format, setFormat] = useState('binary');
  const [startAt, setStartAt] = useState('latest');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    let parsed: unknown;
    try {
      parsed = JSON.parse(filters.trim() || '[]');
    } catch (err) {
      setError(`filters: not valid JSON (${(err as Error).message})`);
      return;
    }
    if (!Array.isArray(parsed)) {
      setError(`filters: expected a JSON array of filter objects, e.g. ${FILTER_EXAMPLE}`);
      return;
    }
    setBusy(true);
    try {
      const created = await api.post<Subscription>('subscriptions', {
        sink: sink.trim(),
        filters: parsed,
        delivery: { ordering, format },
        startAt,
      });
      props.onCreated(created);
      setSink('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card title="New subscription">
      <form class="form" onSubmit={submit} data-testid="create-subscription">
        <label class="wide">
          sink URL
          <input
            name="sink"
            type="url"
            value={sink}
            required
            placeholder="http://127.0.0.1:9000/hooks/orders"
            onInput={(e) => setSink(e.currentTarget.value)}
          />
        </label>
        <label class="wide">
          filters (JSON array, all must match; empty matches every event)
          <textarea
            name="filters"
            rows={3}
            class="mono"
            value={filters}
            placeholder={FILTER_EXAMPLE}
            onInput={(e) => setFilters(e.currentTarget.value)}
          />
        </label>
        <label>
          ordering
          <select name="ordering" value={ordering} onChange={(e) => setOrdering(e.currentTarget.value)}>
            <option value="partition">partition (in order)</option>
            <option value="none">none (any order)</option>
          </select>
        </label>
        <label>
          format
          <select name="format" value={format} onChange={(e) => setFormat(e.currentTarget.value)}>
            <option value="binary">binary (ce-* headers)</option>
            <option value="structured">structured (JSON)</option>
          </select>
        </label>
        <label>
          start at
          <select name="startAt" value={startAt} onChange={(e) => setStartAt(e.currentTarget.value)}>
            <option value="latest">latest (from now on)</option>
            <option value="earliest">earliest (every stored event)</option>
          </select>
        </label>
        <div class="form-actions">
          <button type="submit" disabled={busy}>
            Create subscription
          </button>
        </div>
      </form>
      <ErrorNote message={error} onDismiss={() => setError(undefined)} />
    </Card>
  );
}
