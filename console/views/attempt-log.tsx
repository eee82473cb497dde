import { useState } from 'preact/hooks';
import { api } from '../api';
import { Badge, Card, ErrorNote, StatusCode } from '../components/ui';
import { formatAge, formatCount, formatTime } from '../format';
import { usePoll } from '../hooks';
import type { AttemptPage } from '../types';

const PAGE = 25;
/** The API's largest page (and the number of attempts it keeps per subscription). */
const MAX_SHOWN = 1000;
const OUTCOME_TONE: Record<string, 'ok' | 'warn' | 'bad' | 'info' | 'muted'> = {
  delivered: 'ok',
  awaiting_ack: 'info',
  retry: 'warn',
  timeout: 'warn',
  gone: 'bad',
  dead_lettered: 'bad',
  stale: 'muted',
};

/**
 * `GET /subscriptions/{id}/attempts`, newest first. Each refresh re-reads one page from the newest, as long
 * as the rows shown ("Older attempts" makes it longer): the list stays continuous while new attempts
 * arrive, where a separately held older page would leave a hole between the two.
 */
export function AttemptLog(props: { subscriptionId: string }) {
  const base = `subscriptions/${encodeURIComponent(props.subscriptionId)}/attempts`;
  const [limit, setLimit] = useState(PAGE);
  const page = usePoll(() => api.get<AttemptPage>(`${base}?limit=${limit}`), 2000, [base, limit]);
  const rows = page.data?.attempts ?? [];
  return (
    <Card title="Attempt log" actions={<span class="dim">newest first</span>}>
      <ErrorNote message={page.error} />
      {page.data && rows.length === 0 && <p class="dim">No delivery attempts yet.</p>}
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
      {page.data?.next &&
        (limit < MAX_SHOWN ? (
          <button type="button" class="secondary" onClick={() => setLimit((n) => Math.min(n + PAGE, MAX_SHOWN))}>
            Older attempts
          </button>
        ) : (
          <p class="dim">Showing the newest {formatCount(MAX_SHOWN)} attempts.</p>
        ))}
    </Card>
  );
}
