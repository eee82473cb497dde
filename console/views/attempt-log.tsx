import { useState } from 'preact/hooks';
import { api } from '../api';
import { Badge, Card, ErrorNote, StatusCode } from '../components/ui';
import { formatAge, formatTime } from '../format';
import { usePoll } from '../hooks';
import type { Attempt, AttemptPage } from '../types';

const PAGE = 25;
const OUTCOME_TONE: Record<string, 'ok' | 'warn' | 'bad' | 'info' | 'muted'> = {
  delivered: 'ok',
  awaiting_ack: 'info',
  retry: 'warn',
  timeout: 'warn',
  gone: 'bad',
  dead_lettered: 'bad',
  stale: 'muted',
};

/** `GET /subscriptions/{id}/attempts`: the newest page refreshes itself; older pages load on demand. */
export function AttemptLog(props: { subscriptionId: string }) {
  const base = `subscriptions/${encodeURIComponent(props.subscriptionId)}/attempts?limit=${PAGE}`;
  const newest = usePoll(() => api.get<AttemptPage>(base), 2000, [base]);
  const [older, setOlder] = useState<{ attempts: Attempt[]; next: string | null } | undefined>();
  const [error, setError] = useState<string | undefined>();
  const next = older ? older.next : (newest.data?.next ?? null);
  const more = async () => {
    if (!next) return;
    try {
      const page = await api.get<AttemptPage>(`${base}&before=${encodeURIComponent(next)}`);
      setOlder({ attempts: [...(older?.attempts ?? []), ...page.attempts], next: page.next });
    } catch (err) {
      setError((err as Error).message);
    }
  };
  // Older pages were read once; drop any of their rows the refreshed newest page now holds.
  const seen = new Set((newest.data?.attempts ?? []).map((a) => a.deliveryId));
  const rows = [...(newest.data?.attempts ?? []), ...(older?.attempts ?? []).filter((a) => !seen.has(a.deliveryId))];
  return (
    <Card title="Attempt log" actions={<span class="dim">newest first</span>}>
      <ErrorNote message={error ?? newest.error} />
      {newest.data && rows.length === 0 && <p class="dim">No delivery attempts yet.</p>}
      {rows.length > 0 && (
        <table class="table" data-testid="attempts">
          <thead>
            <tr>
              <th>started</th>
              <th class="num">partition:offset</th>
              <th class="num">attempt</th>
              <th>status</th>
              <th>outcome</th>
              <th class="num">took</th>
              <th class="grow">error</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((a) => (
              <tr key={a.deliveryId} data-outcome={a.outcome}>
                <td class="small">{formatTime(a.startedAt)}</td>
                <td class="num mono">
                  {a.partition}:{a.offset}
                </td>
                <td class="num">{a.attempt}</td>
                <td>
                  <StatusCode status={a.status} />
                </td>
                <td>
                  <Badge tone={OUTCOME_TONE[a.outcome] ?? 'muted'}>{a.outcome.replace('_', ' ')}</Badge>
                </td>
                <td class="num small">{formatAge(a.durationMs)}</td>
                <td class="grow error-text" title={a.error ?? ''}>
                  {a.error ?? ''}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {next && (
        <button type="button" class="secondary" onClick={() => void more()}>
          Older attempts
        </button>
      )}
    </Card>
  );
}
