import { useMemo, useRef, useState } from 'preact/hooks';
import { api, readiness } from '../api';
import { Badge, Card, ErrorNote, JsonBlock, Stat } from '../components/ui';
import { clipped, formatCount, formatRate, preview } from '../format';
import { usePoll } from '../hooks';
import type { PartitionInfo, StoredEvent } from '../types';

const POLL_MS = 2000;
/** The ingest rate is the growth of the summed head offsets over this window of successive reads. */
const RATE_WINDOW_MS = 10_000;
/**
 * Partitions drawn at once. With 4,096 partitions the whole table, redrawn at every poll, was 61,570 DOM nodes and
 * 2.37 s of work per 10 s (a probe); past a page the table pages on, and can list only the partitions holding events.
 */
const PARTITION_PAGE = 64;

interface Sample {
  at: number;
  heads: number;
}

/** Partitions (first and head offsets), events stored, the ingest rate, readiness; looking events up. */
export function Overview() {
  const partitions = usePoll(() => api.get<{ partitions: PartitionInfo[] }>('partitions'), POLL_MS, []);
  const ready = usePoll(readiness, POLL_MS * 2, []);
  // A failed poll makes the last answer stale: readiness is what the gateway says now, not what it said.
  const readyNow = ready.error ? undefined : ready.data;
  const samples = useRef<Sample[]>([]);
  const [open, setOpen] = useState<number | null>(null);
  const [pageStart, setPageStart] = useState(0);
  const [onlyHolding, setOnlyHolding] = useState(false);

  const list = partitions.data?.partitions ?? [];
  const stored = list.reduce((n, p) => n + (p.headOffset - p.firstOffset), 0);
  const rate = useMemo(() => {
    if (!partitions.data) return undefined;
    const now = performance.now();
    const heads = partitions.data.partitions.reduce((n, p) => n + p.headOffset, 0);
    const kept = [...samples.current, { at: now, heads }].filter((s) => now - s.at <= RATE_WINDOW_MS + POLL_MS);
    samples.current = kept;
    const first = kept[0]!;
    const seconds = (now - first.at) / 1000;
    return seconds >= 1 ? Math.max(0, heads - first.heads) / seconds : undefined;
  }, [partitions.data]);
  const openPartition = list.find((p) => p.partition === open);
  const widest = list.reduce((w, p) => Math.max(w, p.headOffset - p.firstOffset), 1);
  const paged = list.length > PARTITION_PAGE;
  const pool = paged && onlyHolding ? list.filter((p) => p.headOffset > p.firstOffset) : list;
  // A page past the end (fewer partitions holding events now) shows the last one.
  const start = Math.min(pageStart, Math.max(0, Math.ceil(pool.length / PARTITION_PAGE) - 1) * PARTITION_PAGE);
  const rows = pool.slice(start, start + PARTITION_PAGE);
  const range = `${pool.length > PARTITION_PAGE ? `${formatCount(start + 1)}–${formatCount(start + rows.length)} of ` : ''}${
    onlyHolding ? `${formatCount(pool.length)} of ` : ''
  }${formatCount(list.length)}${onlyHolding ? ' holding events' : ''}`;

  return (
    <div class="stack">
      <Card title="Gateway">
        <ErrorNote message={partitions.error} />
        <div class="stats">
          <Stat
            label="events stored"
            value={partitions.data ? formatCount(stored) : '…'}
            testId="events-stored"
            hint="head − first offset, summed over the partitions: offsets skipped after an unclean stop under HERALD_FSYNC=interval or never count too"
          />
          <Stat label="ingest rate" value={formatRate(rate)} hint="growth of the partitions' head offsets between successive reads" />
          <Stat label="partitions" value={partitions.data ? list.length : '…'} />
          <Stat
            label="readiness"
            testId="readiness"
            value={
              readyNow ? (
                <Badge tone={readyNow.status === 'ready' ? 'ok' : 'bad'}>{readyNow.status}</Badge>
              ) : ready.error ? (
                <Badge tone="bad" title={ready.error}>
                  unreachable
                </Badge>
              ) : (
                <Badge tone="muted">…</Badge>
              )
            }
          />
        </div>
        {readyNow && (
          <div class="checks">
            {Object.entries(readyNow.checks).map(([name, value]) => (
              <span key={name} class="check">
                {name}: <Badge tone={value === 'ok' ? 'ok' : value === 'off' ? 'muted' : 'bad'}>{value}</Badge>
              </span>
            ))}
          </div>
        )}
      </Card>

      <Card
        title="Partitions"
        actions={
          paged && (
            <span class="pager">
              <label class="inline">
                <input
                  type="checkbox"
                  name="only-holding"
                  checked={onlyHolding}
                  onChange={(e) => {
                    setOnlyHolding(e.currentTarget.checked);
                    setPageStart(0);
                  }}
                />{' '}
                only those holding events
              </label>
              <span class="dim" data-testid="partitions-range">
                {range}
              </span>
              {start > 0 && (
                <button type="button" class="secondary" onClick={() => setPageStart(Math.max(0, start - PARTITION_PAGE))}>
                  ← previous
                </button>
              )}
              {start + PARTITION_PAGE < pool.length && (
                <button type="button" class="secondary" data-testid="partitions-next" onClick={() => setPageStart(start + PARTITION_PAGE)}>
                  next →
                </button>
              )}
            </span>
          )
        }
      >
        <table class="table" data-testid="partitions">
          <thead>
            <tr>
              <th class="num">partition</th>
              <th class="num">first offset</th>
              <th class="num">head offset</th>
              <th class="num">stored</th>
              <th class="grow" />
              <th />
            </tr>
          </thead>
          <tbody>
            {rows.map((p) => (
              <tr key={p.partition} data-partition={p.partition}>
                <td class="num">{p.partition}</td>
                <td class="num">{formatCount(p.firstOffset)}</td>
                <td class="num">{formatCount(p.headOffset)}</td>
                <td class="num">{formatCount(p.headOffset - p.firstOffset)}</td>
                <td class="grow">
                  <div class="bar">
                    <div class="bar-fill" style={{ width: `${((p.headOffset - p.firstOffset) / widest) * 100}%` }} />
                  </div>
                </td>
                <td>
                  <button
                    type="button"
                    class="link"
                    disabled={p.headOffset === p.firstOffset}
                    onClick={() => setOpen(open === p.partition ? null : p.partition)}
                  >
                    {open === p.partition ? 'hide' : 'latest events'}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {openPartition && <LatestEvents key={openPartition.partition} partition={openPartition} />}
      </Card>

      <FindEvent />
    </div>
  );
}

/**
 * The last ten events of one partition (`GET /partitions/{p}/events`); a click opens one. Rows are keyed
 * by partition and offset, so an opened row stays on its event while newer ones push it down.
 */
function LatestEvents(props: { partition: PartitionInfo }) {
  const { partition, firstOffset, headOffset } = props.partition;
  const from = Math.max(firstOffset, headOffset - 10);
  const read = useMemo(() => new Map<number, StoredEvent>(), [partition]);
  const page = usePoll(() => latestEvents(partition, from, headOffset, read), POLL_MS * 2, [partition, from, headOffset]);
  const [open, setOpen] = useState<string | undefined>();
  return (
    <div class="subpanel">
      <h3>Partition {partition}: latest events</h3>
      <ErrorNote message={page.error} />
      <ul class="events" data-testid="latest-events">
        {[...(page.data?.events ?? [])].reverse().map((e) => {
          const key = `${e.partition}:${e.offset}`;
          return (
            <li key={key} data-event-id={clipped(e.event.id)} class={open === key ? 'selected' : ''}>
              {/* A button, so a keyboard opens it too; a click in the opened event (selecting its text) does not close it. */}
              <button type="button" class="line" aria-expanded={open === key} onClick={() => setOpen(open === key ? undefined : key)}>
                <span class="mono dim">{e.offset}</span> <span class="mono">{clipped(e.event.type)}</span>{' '}
                <span class="dim">{clipped(e.event.source)}</span> <span class="mono">{clipped(e.event.id)}</span>{' '}
                <span class="dim mono">{preview(e.event.data ?? e.event.data_base64, 80)}</span>
              </button>
              {open === key && <JsonBlock value={e.event} />}
            </li>
          );
        })}
      </ul>
    </div>
  );
}

/**
 * The newest events of `[from, head)`, up to ten. Those already `read` are kept and only offsets past
 * them are asked for: a poll that read all ten each time moved 45 MB in 20 s for events of 900 KB (a
 * probe). A page ends early at 8 MiB or at a corrupt record (`nextOffset` is past it).
 */
async function latestEvents(
  partition: number,
  from: number,
  head: number,
  read: Map<number, StoredEvent>,
): Promise<{ events: StoredEvent[] }> {
  for (const offset of read.keys()) if (offset < from) read.delete(offset);
  let next = from;
  for (const offset of read.keys()) next = Math.max(next, offset + 1);
  while (next < head) {
    const page = await api.get<{ events: StoredEvent[]; nextOffset: number }>(
      `partitions/${partition}/events?from=${next}&limit=${Math.min(10, head - next)}`,
    );
    for (const e of page.events) read.set(e.offset, e);
    if (page.nextOffset <= next) break;
    next = page.nextOffset;
  }
  return { events: [...read.values()].sort((a, b) => a.offset - b.offset).slice(-10) };
}

/** `GET /events?source=&id=`. */
function FindEvent() {
  const [source, setSource] = useState('');
  const [id, setId] = useState('');
  const [found, setFound] = useState<StoredEvent | undefined>();
  const [error, setError] = useState<string | undefined>();
  const find = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    setFound(undefined);
    try {
      setFound(await api.get<StoredEvent>(`events?${new URLSearchParams({ source, id })}`));
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <Card title="Find an event">
      <form class="row" onSubmit={find}>
        <label>
          source
          <input value={source} placeholder="/shop/orders" required onInput={(e) => setSource(e.currentTarget.value)} />
        </label>
        <label>
          id
          <input value={id} placeholder="order-1001" required onInput={(e) => setId(e.currentTarget.value)} />
        </label>
        <button type="submit">Find</button>
      </form>
      <ErrorNote message={error} />
      {found && (
        <div class="subpanel">
          <div class="dim">
            partition {found.partition}, offset {found.offset}
          </div>
          <JsonBlock value={found.event} />
        </div>
      )}
    </Card>
  );
}
