import { useEffect, useState } from 'preact/hooks';
import { ApiError, readEventStream } from '../api';
import { Badge, Card, ErrorNote, JsonBlock } from '../components/ui';
import { formatCount, formatTime, preview } from '../format';
import type { StoredEvent } from '../types';
import { PublishEvent } from './publish-event';

/** Lines kept on screen; older ones are dropped (the log keeps them). */
const MAX_LINES = 500;
const RECONNECT_MS = 3000;

/** `live` names the filter of the stream that is attached (a new filter is not live until its own stream is). */
type Status = { kind: 'connecting' } | { kind: 'live'; sql: string } | { kind: 'paused' } | { kind: 'error'; message: string };

interface Line extends StoredEvent {
  receivedAt: number;
}

/** `GET /events/stream` with a CloudEvents SQL filter; pause (disconnect) and clear. */
export function LiveTail() {
  const [draft, setDraft] = useState('');
  const [sql, setSql] = useState('');
  const [paused, setPaused] = useState(false);
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [lines, setLines] = useState<Line[]>([]);
  const [open, setOpen] = useState<string | undefined>();
  const [received, setReceived] = useState(0);

  useEffect(() => {
    if (paused) {
      setStatus({ kind: 'paused' });
      return;
    }
    const controller = new AbortController();
    let retry: ReturnType<typeof setTimeout> | undefined;
    const connect = () => {
      setStatus({ kind: 'connecting' });
      readEventStream(
        sql,
        {
          open: () => setStatus({ kind: 'live', sql }),
          message: (message) => {
            const parsed = JSON.parse(message.data) as StoredEvent;
            setReceived((n) => n + 1);
            setLines((old) => [{ ...parsed, receivedAt: Date.now() }, ...old].slice(0, MAX_LINES));
          },
        },
        controller.signal,
      ).then(
        () => {
          // The gateway ended the stream (restart, or this reader fell behind): connect again.
          setStatus({ kind: 'error', message: 'the stream ended; reconnecting…' });
          retry = setTimeout(connect, RECONNECT_MS);
        },
        (err: unknown) => {
          if ((err as Error).name === 'AbortError') return;
          setStatus({ kind: 'error', message: (err as Error).message });
          // A refused filter or key will not get better by itself; a lost connection may.
          if (!(err instanceof ApiError) || err.status === 0 || err.status >= 500) retry = setTimeout(connect, RECONNECT_MS);
        },
      );
    };
    connect();
    return () => {
      controller.abort();
      clearTimeout(retry);
    };
  }, [sql, paused]);

  const apply = (e: Event) => {
    e.preventDefault();
    setSql(draft);
  };

  return (
    <div class="stack">
      <Card
        title="Live tail"
        actions={
          <>
            <TailStatus status={status} />
            <button type="button" class="secondary" onClick={() => setPaused(!paused)}>
              {paused ? 'Resume' : 'Pause'}
            </button>
            <button type="button" class="secondary" onClick={() => setLines([])}>
              Clear
            </button>
          </>
        }
      >
        <form class="row" onSubmit={apply}>
          <label class="grow">
            CloudEvents SQL filter (empty: every event)
            <input
              class="mono"
              name="sql"
              value={draft}
              placeholder="type LIKE 'com.example.%' AND source = '/shop/orders'"
              onInput={(e) => setDraft(e.currentTarget.value)}
            />
          </label>
          <button type="submit">Apply</button>
        </form>
        <ErrorNote message={status.kind === 'error' ? status.message : undefined} />
        <p class="dim small">
          Events stored from the moment the tail (re)connects{sql ? ` and matching ${sql}` : ''}; {formatCount(received)} received, newest
          first
          {paused ? '. Paused: events stored meanwhile are not shown.' : '.'}
        </p>
        <ul class="tail" data-testid="tail" data-live-sql={status.kind === 'live' ? status.sql : undefined}>
          {lines.map((l) => {
            const key = `${l.partition}:${l.offset}`;
            return (
              <li
                key={key}
                data-event-id={l.event.id}
                onClick={() => setOpen(open === key ? undefined : key)}
                class={open === key ? 'selected' : ''}
              >
                <span class="dim">{formatTime(l.receivedAt)}</span> <span class="mono dim">{key}</span>{' '}
                <span class="mono">{l.event.type}</span> <span class="dim">{l.event.source}</span> <span class="mono">{l.event.id}</span>{' '}
                <span class="mono dim">{preview(l.event.data ?? l.event.data_base64, 120)}</span>
                {open === key && <JsonBlock value={l.event} />}
              </li>
            );
          })}
        </ul>
      </Card>
      <PublishEvent />
    </div>
  );
}

function TailStatus(props: { status: Status }) {
  switch (props.status.kind) {
    case 'live':
      return <Badge tone="ok">live</Badge>;
    case 'paused':
      return <Badge tone="warn">paused</Badge>;
    case 'connecting':
      return <Badge tone="muted">connecting</Badge>;
    default:
      return <Badge tone="bad">disconnected</Badge>;
  }
}
