import { useState } from 'preact/hooks';
import { api } from '../api';
import { Badge, Card, ConfirmButton, ErrorNote, SecretField, Stat, StateBadge } from '../components/ui';
import { formatAge, formatCount, formatTime, totals } from '../format';
import { usePoll } from '../hooks';
import { href } from '../route';
import type { PartitionDeliveryStats, Subscription } from '../types';
import { AttemptLog } from './attempt-log';

const POLL_MS = 1500;

/** One subscription: lag per partition, in-flight, the attempt log, and what can be done to it. */
export function SubscriptionDetail(props: { id: string }) {
  const sub = usePoll(() => api.get<Subscription>(`subscriptions/${encodeURIComponent(props.id)}`), POLL_MS, [props.id]);
  const [error, setError] = useState<string | undefined>();
  const [secret, setSecret] = useState<Subscription | undefined>();
  const [busy, setBusy] = useState(false);

  const act = async (action: () => Promise<unknown>) => {
    setError(undefined);
    setBusy(true);
    try {
      await action();
      sub.reload();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const path = `subscriptions/${encodeURIComponent(props.id)}`;
  const s = sub.data;
  if (!s) {
    return (
      <Card title="Subscription">
        <p>
          <a href={href({ view: 'subscriptions' })}>← all subscriptions</a>
        </p>
        {sub.error ? <ErrorNote message={sub.error} /> : <p class="dim">Loading…</p>}
      </Card>
    );
  }
  const t = totals(s.stats);
  return (
    <div class="stack">
      <Card
        title={
          <span>
            <a href={href({ view: 'subscriptions' })} class="back" title="all subscriptions" aria-label="all subscriptions">
              ←
            </a>{' '}
            <span class="mono">{s.sink}</span>
          </span>
        }
        actions={
          <>
            {s.state === 'active' || s.state === 'validating' ? (
              <button type="button" disabled={busy} onClick={() => void act(() => api.post(`${path}/pause`))}>
                Pause
              </button>
            ) : (
              <button type="button" disabled={busy} onClick={() => void act(() => api.post(`${path}/resume`))}>
                Resume
              </button>
            )}
            <button
              type="button"
              disabled={busy}
              onClick={() => void act(async () => setSecret(await api.post<Subscription>(`${path}/rotate-secret`)))}
            >
              Rotate secret
            </button>
            <ConfirmButton
              label="Delete…"
              question="Delete this subscription, its delivery state and dead letters?"
              confirmLabel="Delete"
              disabled={busy}
              onConfirm={() =>
                void act(async () => {
                  await api.del(path);
                  location.hash = href({ view: 'subscriptions' });
                })
              }
            />
          </>
        }
      >
        <div class="meta">
          <StateBadge state={s.state} reason={s.stateReason} />
          <span class="mono dim">{s.id}</span>
          <span class="dim">created {formatTime(s.createdAt)}</span>
          {s.previousSecretExpiresAt && <span class="dim">previous secret signs until {formatTime(s.previousSecretExpiresAt)}</span>}
        </div>
        <ErrorNote message={error ?? sub.error} onDismiss={error ? () => setError(undefined) : undefined} />
        {secret?.secret && (
          <SecretField
            label={`New signing secret${secret.previousSecretExpiresAt ? ` (the old one also signs until ${formatTime(secret.previousSecretExpiresAt)})` : ''}:`}
            secret={secret.secret}
            onDone={() => setSecret(undefined)}
          />
        )}
        <div class="stats">
          <Stat
            label="total lag"
            value={formatCount(t.lag)}
            testId="total-lag"
            hint="head offset − committed offset, summed over partitions"
          />
          <Stat label="in flight" value={formatCount(t.inFlight)} testId="in-flight" />
          <Stat label="oldest pending" value={formatAge(t.oldestPendingAgeMs)} />
          <Stat
            label="dead letters"
            testId="dead-letter-count"
            value={s.stats?.deadLetters ? <a href={href({ view: 'dead-letters', id: s.id })}>{formatCount(s.stats.deadLetters)}</a> : '0'}
          />
          <Stat
            label="in-flight limit"
            value={`${s.stats?.currentMaxInFlight ?? '—'} / ${s.delivery.maxInFlight}`}
            hint="adaptive concurrency"
          />
          {s.stats?.throttled && <Stat label="rate limit" value={<Badge tone="warn">throttled</Badge>} />}
        </div>
      </Card>

      <div class="columns">
        <Card title="Lag per partition">
          <LagBars partitions={s.stats?.partitions ?? []} />
        </Card>
        <Card title="Delivery">
          <dl class="facts">
            <dt>format</dt>
            <dd>{s.delivery.format}</dd>
            <dt>ordering</dt>
            <dd>{s.delivery.ordering}</dd>
            <dt>ack mode</dt>
            <dd>{s.delivery.ackMode}</dd>
            <dt>ack deadline</dt>
            <dd title="how long a callback may take after a 202">{formatAge(s.delivery.ackDeadlineMs)}</dd>
            <dt>pauses after</dt>
            <dd title="every attempt failing this long pauses it (stateReason: failing)">
              {s.delivery.disableAfterFailingMs ? `${formatAge(s.delivery.disableAfterFailingMs)} of failures` : 'never (0)'}
            </dd>
            <dt>retries</dt>
            <dd>up to {s.delivery.retry.maxAttempts} attempts</dd>
            <dt>timeout</dt>
            <dd>{formatAge(s.delivery.timeoutMs)}</dd>
            {s.delivery.rateLimit && (
              <>
                <dt>rate limit</dt>
                <dd>{s.delivery.rateLimit.perSecond} /s</dd>
              </>
            )}
            {s.allowedRate && (
              <>
                <dt>sink allows</dt>
                <dd>{s.allowedRate.perSecond} /s (the lower rate applies)</dd>
              </>
            )}
            {s.delivery.headers && (
              <>
                <dt>headers</dt>
                {/* Values are never returned (each is "***"): the names say what is sent. */}
                <dd class="mono" data-testid="delivery-headers">
                  {Object.keys(s.delivery.headers).join(', ')}
                </dd>
              </>
            )}
            <dt>filters</dt>
            <dd>
              {s.filters.length === 0 ? (
                <span class="dim">none (every event)</span>
              ) : (
                <code class="filters">{JSON.stringify(s.filters)}</code>
              )}
            </dd>
          </dl>
          <Seek path={path} lag={t.lag} paused={s.state === 'paused'} onDone={sub.reload} />
        </Card>
      </div>

      <AttemptLog subscriptionId={s.id} />
    </div>
  );
}

function LagBars(props: { partitions: PartitionDeliveryStats[] }) {
  const widest = Math.max(1, ...props.partitions.map((p) => p.lag));
  return (
    <div class="lagbars" data-testid="lag-bars">
      {props.partitions.map((p) => (
        <div
          class="lagbar"
          key={p.partition}
          title={`committed ${p.committedOffset}, head ${p.headOffset}${p.expired ? `, ${p.expired} expired` : ''}`}
        >
          <span class="lagbar-label">p{p.partition}</span>
          <div class="bar">
            <div class={`bar-fill ${p.lag > 0 ? 'bar-lag' : ''}`} style={{ width: `${(p.lag / widest) * 100}%` }} />
          </div>
          <span class="lagbar-value num">{formatCount(p.lag)}</span>
          <span class="lagbar-extra dim">{p.inFlight ? `${p.inFlight} in flight` : ''}</span>
        </div>
      ))}
    </div>
  );
}

/**
 * `POST …/seek` with `to: earliest | latest` (redeliver everything stored, or skip the backlog). Both
 * are asked again, as delete is: one click on the default (earliest) sent every stored event to the
 * receiver again, and skipping a backlog cannot be undone.
 */
function Seek(props: { path: string; lag: number; paused: boolean; onDone: () => void }) {
  const [to, setTo] = useState('earliest');
  const [message, setMessage] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  const seek = async () => {
    setError(undefined);
    setMessage(undefined);
    try {
      await api.post(`${props.path}/seek`, { to });
      // A paused subscription stays paused at its new position.
      const when = props.paused ? ' once it is resumed' : '';
      setMessage(to === 'earliest' ? `Every stored event will be delivered again${when}.` : 'The backlog is skipped.');
      props.onDone();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <div class="row seek">
      <label>
        seek
        <select value={to} onChange={(e) => setTo(e.currentTarget.value)}>
          <option value="earliest">to the earliest stored event</option>
          <option value="latest">to the head (skip the backlog)</option>
        </select>
      </label>
      <ConfirmButton
        label="Seek…"
        question={
          to === 'earliest'
            ? 'Deliver every stored event (that its filters match) again?'
            : `Skip the backlog (${formatCount(props.lag)} not delivered yet)?`
        }
        confirmLabel="Seek"
        onConfirm={() => void seek()}
      />
      {message && (
        <span class="dim" role="status" data-testid="seek-result">
          {message}
        </span>
      )}
      <ErrorNote message={error} />
    </div>
  );
}
