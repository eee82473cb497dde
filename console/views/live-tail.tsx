import { useEffect, useState } from 'preact/hooks';
import { ApiError, readEventStream } from '../api';
import { Badge, Card, ErrorNote } from '../components/ui';
import { WholeEvent } from '../components/whole-event';
import { clipped, formatCount, formatTime, preview } from '../format';
import type { StoredEvent } from '../types';
import { PublishEvent } from './publish-event';

/** Lines kept on screen; older ones are dropped (the log keeps them). */
const MAX_LINES = 500;
const RECONNECT_MS = 3000;

/** `live` names the filter of the stream that is attached (a new filter is not live until its own stream is). */
type Status = { kind: 'connecting' } | { kind: 'live'; sql: string } | { kind: 'paused' } | { kind: 'error'; message: string };

/**
 * What a line keeps of its event: the attributes shown and a short preview made once, never the data
 * (events may be MiBs each, and 500 of them would fill the tab); opening a line reads the event again.
 */
interface Line {
  partition: number;
  offset: number;
  receivedAt: number;
  id: string;
  type: string;
  source: string;
  preview: string;
}

/** The lines and count of the stream for `sql`: applying a filter starts both afresh. */
interface Tail {
  sql: string;
  lines: Line[];
  received: number;
}

function lineOf(stored: StoredEvent): Line {
  const { event, partition, offset } = stored;
  return {
    partition,
    offset,
    receivedAt: Date.now(),
    id: clipped(event.id),
    type: clipped(event.type),
    source: clipped(event.source),
    preview: preview(event.data ?? event.data_base64, 120),
  };
}

/** `GET /events/stream` with a CloudEvents SQL filter; pause (disconnect) and clear. */
export function LiveTail() {
  const [draft, setDraft] = useState('');
  const [tail, setTail] = useState<Tail>({ sql: '', lines: [], received: 0 });
  const [paused, setPaused] = useState(false);
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [open, setOpen] = useState<string | undefined>();
  const { sql, lines, received } = tail;

  useEffect(() => {
    if (paused) {
      setStatus({ kind: 'paused' });
      return;
    }
    const controller = new AbortController();
    let retry: ReturnType<typeof setTimeout> | undefined;
    // Once another filter is applied, a message of this stream still on its way is not one of its lines.
    const add = (line: Line) =>
      setTail((t) => (t.sql === sql ? { sql, lines: [line, ...t.lines].slice(0, MAX_LINES), received: t.received + 1 } : t));
    const connect = () => {
      setStatus({ kind: 'connecting' });
      readEventStream(
        sql,
        {
          open: () => setStatus({ kind: 'live', sql }),
          message: (message) => add(lineOf(JSON.parse(message.data) as StoredEvent)),
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
          // A refused filter will not get better by itself; a lost connection may, and a refused key once the page
          // (kept behind the key prompt) has been given another.
          if (!(err instanceof ApiError) || err.status === 0 || err.status === 401 || err.status >= 500)
            retry = setTimeout(connect, RECONNECT_MS);
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
    // The caption says the lines match the filter: those of the previous one must go.
    setTail({ sql: draft, lines: [], received: 0 });
    setOpen(undefined);
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
            <button type="button" class="secondary" onClick={() => setTail((t) => ({ ...t, lines: [] }))}>
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
              <li key={key} data-event-id={l.id} class={open === key ? 'selected' : ''}>
                {/* A button, so a keyboard opens it too; a click in the opened event (selecting its text) does not close it. */}
                <button type="button" class="line" aria-expanded={open === key} onClick={() => setOpen(open === key ? undefined : key)}>
                  <span class="dim">{formatTime(l.receivedAt)}</span> <span class="mono dim">{key}</span> <span class="mono">{l.type}</span>{' '}
                  <span class="dim">{l.source}</span> <span class="mono">{l.id}</span> <span class="mono dim">{l.preview}</span>
                </button>
                {open === key && <WholeEvent partition={l.partition} offset={l.offset} />}
              </li>
            );
          })}
        </ul>
      </Card>
      <PublishEvent />
    </div>
  );
}

/** In a live region: a screen reader says when the tail goes live, is paused or is cut off. */
function TailStatus(props: { status: Status }) {
  return (
    <span role="status" data-testid="tail-status">
      <TailBadge status={props.status} />
    </span>
  );
}

function TailBadge(props: { status: Status }) {
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
