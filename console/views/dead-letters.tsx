import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api';
import { Badge, Card, ConfirmButton, ErrorNote, StatusCode } from '../components/ui';
import { WholeEvent } from '../components/whole-event';
import { clipped, formatCount, formatTime } from '../format';
import { usePoll } from '../hooks';
import { href } from '../route';
import type { DeadLetter, DeadLetterPage, Subscription, SubscriptionPage } from '../types';

const PAGE = 100;
/** The API's largest page: the list is re-read from its start when it changed. */
const MAX_SHOWN = 1000;
/**
 * How often the choice of subscription (and each one's dead-letter count) is read again, besides after an
 * action: its page of 1,000 subscriptions names every partition of each (2.3 MB on the default 16
 * partitions), which a read every 5 s made the heaviest thing the view did (probe: 460 KB/s, the
 * dead-letter list itself under 10 KB/s). The chosen subscription's list and count are read every 2 s.
 */
const CHOICE_MS = 30_000;
/**
 * How long a new choice of subscription waits before it is shown: arrow keys on the closed choice change it at each
 * press, and each change read that subscription's dead letters (a page of whole events) and added a history entry.
 */
const SETTLE_MS = 500;

/** What a row keeps of its dead letter: never the event (up to ~1 MiB each), which opening the row reads. */
type Row = Omit<DeadLetter, 'event'> & { event: { id: string; type: string } | null };

/** The rows read with `limit`, and the subscription's dead-letter count read just before them. */
interface Listed {
  rows: Row[];
  nextAfter: string | null;
  limit: number;
  count: number | undefined;
}

const rowOf = ({ event, ...d }: DeadLetter): Row => ({ ...d, event: event && { id: clipped(event.id), type: clipped(event.type) } });

/**
 * Whether the list may have changed since `known`. Dead letters are only added (with ever larger ids)
 * and removed, never changed: an unchanged count and no id after the last row mean the same rows. Past
 * a full page, only removals change the rows shown, and the count shows them (unless as many arrive
 * meanwhile: then at its next change).
 */
async function changed(base: string, known: Listed, count: number | undefined): Promise<boolean> {
  if (count === undefined || count !== known.count) return true;
  const last = known.rows.at(-1)?.id;
  if (known.nextAfter !== null || last === undefined) return false;
  return (await api.get<DeadLetterPage>(`${base}?after=${last}&limit=1`)).deadLetters.length > 0;
}

/** Per subscription: dead letters with reason and last error; open one, redeliver selected or all, delete. */
export function DeadLetters(props: { id?: string }) {
  // The choice lists the first MAX_SHOWN subscriptions; a later one is reached from its own page (its id in the address).
  const subs = usePoll(() => api.get<SubscriptionPage>(`subscriptions?limit=${MAX_SHOWN}`), CHOICE_MS, []);
  const list = subs.data?.subscriptions ?? [];
  // Without one in the address, the first subscription that has dead letters (else the first).
  const chosen = props.id ?? (list.find((s) => (s.stats?.deadLetters ?? 0) > 0) ?? list[0])?.id;
  const unlisted = chosen !== undefined && subs.data !== undefined && !list.some((s) => s.id === chosen);
  // The choice being made (arrow keys pass through subscriptions), shown once it has stayed SETTLE_MS.
  const [choosing, setChoosing] = useState<string | undefined>();
  const settle = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  useEffect(() => () => clearTimeout(settle.current), []);
  const choose = (id: string) => {
    setChoosing(id);
    clearTimeout(settle.current);
    settle.current = setTimeout(() => {
      setChoosing(undefined);
      location.hash = href({ view: 'dead-letters', id });
    }, SETTLE_MS);
  };
  return (
    <div class="stack">
      <Card
        title="Dead letters"
        actions={
          <label class="inline">
            subscription{' '}
            <select data-testid="dead-letter-subscription" value={choosing ?? chosen ?? ''} onChange={(e) => choose(e.currentTarget.value)}>
              {unlisted && <option value={chosen}>{chosen}</option>}
              {list.map((s) => (
                <option key={s.id} value={s.id}>
                  {s.sink} ({formatCount(s.stats?.deadLetters ?? 0)})
                </option>
              ))}
            </select>
          </label>
        }
      >
        <ErrorNote message={subs.error} />
        {subs.data && list.length === 0 && <p class="dim">No subscriptions, so no dead letters.</p>}
        {chosen && <DeadLetterList key={chosen} subscriptionId={chosen} onChanged={subs.reload} />}
      </Card>
    </div>
  );
}

/**
 * A poll reads the dead-letter count and at most one dead letter (see `changed`); the list, whose page
 * holds whole events (the API has no lighter one), is re-read only when it changed, from the start, up
 * to as many rows as have been shown.
 */
function DeadLetterList(props: { subscriptionId: string; onChanged: () => void }) {
  const subscription = `subscriptions/${encodeURIComponent(props.subscriptionId)}`;
  const base = `${subscription}/dead-letters`;
  const [limit, setLimit] = useState(PAGE);
  const known = useRef<Listed | undefined>(undefined);
  const page = usePoll(
    async (): Promise<Listed> => {
      // The count first: a change while the list is read then shows as a changed count at the next poll.
      const count = (await api.get<Subscription>(subscription)).stats?.deadLetters;
      const last = known.current;
      if (last && last.limit === limit && !(await changed(base, last, count))) return last;
      // Pages of large events end before `limit` (8 MiB of JSON): read on from each page's `nextAfter`.
      const rows: Row[] = [];
      let after: string | null = null;
      for (;;) {
        const read: DeadLetterPage = await api.get<DeadLetterPage>(`${base}?limit=${limit - rows.length}${after ? `&after=${after}` : ''}`);
        rows.push(...read.deadLetters.map(rowOf));
        after = read.nextAfter;
        if (after === null || rows.length >= limit || read.deadLetters.length === 0) break;
      }
      return (known.current = { rows, nextAfter: after, limit, count });
    },
    2000,
    [base, limit],
  );
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [open, setOpen] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [message, setMessage] = useState<string | undefined>();
  const rows = page.data?.rows ?? [];

  // Forget selections of dead letters that are gone (redelivered or deleted).
  useEffect(() => {
    const present = new Set(rows.map((d) => d.id));
    setSelected((s) => (Array.from(s).every((id) => present.has(id)) ? s : new Set(Array.from(s).filter((id) => present.has(id)))));
  }, [page.data]);

  // While an action is answered its buttons are off: a double click on "Redeliver all" queued every dead letter twice,
  // so the receiver got each event twice (each is removed from the list only when its redelivery starts).
  const [busy, setBusy] = useState(false);
  const act = async (action: () => Promise<string | void>) => {
    setError(undefined);
    setMessage(undefined);
    setBusy(true);
    try {
      const said = await action();
      if (said) setMessage(said);
      known.current = undefined; // read the list again, whatever the count says
      page.reload();
      props.onChanged(); // and the counts in the choice of subscription
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const redeliver = (ids?: string[]) =>
    act(async () => {
      const { redelivering } = await api.post<{ redelivering: number }>(`${base}/redeliver`, ids ? { ids } : {});
      setSelected(new Set());
      return `${formatCount(redelivering)} dead letter${redelivering === 1 ? '' : 's'} queued for redelivery.`;
    });
  const toggle = (id: string) =>
    setSelected((s) => {
      const next = new Set(s);
      if (!next.delete(id)) next.add(id);
      return next;
    });
  const allSelected = rows.length > 0 && rows.every((d) => selected.has(d.id));
  const opened = rows.find((d) => d.id === open);

  return (
    <>
      <div class="toolbar">
        <button type="button" disabled={busy || selected.size === 0} onClick={() => void redeliver([...selected])}>
          Redeliver selected{selected.size ? ` (${selected.size})` : ''}
        </button>
        <button type="button" class="secondary" disabled={busy || rows.length === 0} onClick={() => void redeliver()}>
          Redeliver all
        </button>
        <a href={href({ view: 'subscription', id: props.subscriptionId })}>subscription details</a>
        {message && (
          <span class="dim" role="status">
            {message}
          </span>
        )}
      </div>
      <ErrorNote message={error ?? page.error} onDismiss={error ? () => setError(undefined) : undefined} />
      {page.data && rows.length === 0 && (
        <p class="dim" data-testid="no-dead-letters">
          No dead letters.
        </p>
      )}
      {rows.length > 0 && (
        <table class="table clickable" data-testid="dead-letters">
          <thead>
            <tr>
              <th>
                <input
                  type="checkbox"
                  aria-label="select all"
                  checked={allSelected}
                  onChange={() => setSelected(allSelected ? new Set() : new Set(rows.map((d) => d.id)))}
                />
              </th>
              <th class="num">id</th>
              <th class="num">partition:offset</th>
              <th>event</th>
              <th>reason</th>
              <th>last status</th>
              <th class="grow">last error</th>
              <th class="num">attempts</th>
              <th>dead since</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {rows.map((d) => (
              <tr
                key={d.id}
                data-dead-letter={d.id}
                data-event-id={d.event?.id}
                class={open === d.id ? 'selected' : ''}
                onClick={() => setOpen(open === d.id ? undefined : d.id)}
              >
                <td onClick={(e) => e.stopPropagation()}>
                  <input
                    type="checkbox"
                    aria-label={`select dead letter ${d.id}`}
                    checked={selected.has(d.id)}
                    onChange={() => toggle(d.id)}
                  />
                </td>
                <td class="num">
                  {/* The row opens on a click; this button opens it from the keyboard (and says whether it is open). */}
                  <button
                    type="button"
                    class="link"
                    aria-expanded={open === d.id}
                    aria-controls="dead-letter-detail"
                    aria-label={`open dead letter ${d.id}`}
                    onClick={(e) => {
                      e.stopPropagation();
                      setOpen(open === d.id ? undefined : d.id);
                    }}
                  >
                    {d.id}
                  </button>
                </td>
                <td class="num mono">
                  {d.partition}:{d.offset}
                </td>
                <td class="event-cell">
                  {d.event ? (
                    <>
                      <div class="mono one-line" title={d.event.id}>
                        {d.event.id}
                      </div>
                      <div class="dim small one-line" title={d.event.type}>
                        {d.event.type}
                      </div>
                    </>
                  ) : (
                    <span class="dim">(not readable)</span>
                  )}
                </td>
                <td>
                  <Badge tone="bad">{d.reason.replace(/_/g, ' ')}</Badge>
                </td>
                <td>
                  <StatusCode status={d.lastStatus} />
                </td>
                <td class="grow error-text" title={d.lastError ?? ''}>
                  {d.lastError ?? ''}
                </td>
                <td class="num">{d.attempts}</td>
                <td class="small">{formatTime(d.deadAt)}</td>
                <td onClick={(e) => e.stopPropagation()}>
                  <ConfirmButton
                    label="Delete"
                    name={`delete dead letter ${d.id}`}
                    question="Discard it?"
                    confirmLabel="Discard"
                    disabled={busy}
                    onConfirm={() => void act(() => api.del(`${base}/${d.id}`))}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {page.data?.nextAfter &&
        (limit < MAX_SHOWN ? (
          <button type="button" class="secondary" onClick={() => setLimit((n) => Math.min(n + PAGE, MAX_SHOWN))}>
            Show more
          </button>
        ) : (
          <p class="dim">Showing the oldest {formatCount(MAX_SHOWN)}; redeliver or discard them to see the rest.</p>
        ))}
      {opened && <DeadLetterDetail deadLetter={opened} />}
    </>
  );
}

function DeadLetterDetail(props: { deadLetter: Row }) {
  const d = props.deadLetter;
  return (
    <div class="subpanel" id="dead-letter-detail" data-testid="dead-letter-detail">
      <h3>
        Dead letter {d.id}: partition {d.partition}, offset {d.offset}
      </h3>
      <dl class="facts">
        <dt>reason</dt>
        <dd>{d.reason}</dd>
        <dt>attempts</dt>
        <dd>{d.attempts}</dd>
        <dt>last status</dt>
        <dd>{d.lastStatus ?? 'no answer'}</dd>
        <dt>last error</dt>
        <dd>
          <pre class="json">{d.lastError ?? '—'}</pre>
        </dd>
        <dt>event</dt>
        <dd>
          {d.event ? (
            <WholeEvent partition={d.partition} offset={d.offset} />
          ) : (
            <span class="dim">The log no longer holds it, or its record is corrupt.</span>
          )}
        </dd>
      </dl>
    </div>
  );
}
