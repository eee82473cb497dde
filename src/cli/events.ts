import { Option, type Command } from 'commander';
import { HeraldApiError, unwrap, type components } from '../client';
import { allowEmpty, contextOf, parseIntBetween, parseNonNegativeInt, type Context } from './context';
import { ReportedError } from './errors';
import { printable, printableLines, shorten, shown, type CliStreams, type Output } from './output';
import { untilSignal } from './signals';
import { SseTooLargeError, createSseParser } from './sse';

type CloudEvent = components['schemas']['CloudEvent'];
type StoredEvent = components['schemas']['StoredEvent'];

export function registerEvents(program: Command, streams: CliStreams): void {
  const events = program.command('events').summary('read stored events: one, a partition page, or the live tail');

  events
    .command('get')
    .summary('an event by source and id')
    .argument('<source>', "the event's source")
    .argument('<id>', "the event's id")
    .addHelpText('after', '\nExample:\n  herald events get /shop/orders order-1001')
    .action(async (source: string, id: string, _options: object, command: Command) => {
      const ctx = contextOf(command, streams);
      const stored = unwrap(await ctx.client.GET('/events', { params: { query: { source, id } } }));
      if (ctx.out.json) return ctx.out.document(stored);
      ctx.out.fields([
        ['partition', stored.partition],
        ['offset', stored.offset],
      ]);
      // JSON escapes the C0 controls of its strings; its newlines are the layout.
      ctx.out.line(printableLines(JSON.stringify(stored.event, null, 2)));
    });

  events
    .command('read')
    .summary('a page of a partition, in offset order')
    .requiredOption('--partition <p>', 'the partition', parseNonNegativeInt)
    .option('--from <offset>', 'the first offset', parseNonNegativeInt, 0)
    .option('--limit <n>', 'events at most (1 to 1000)', parseIntBetween(1, 1000), 100)
    .addHelpText('after', '\nExample:\n  herald events read --partition 5 --from 0 --limit 100')
    .action(async (options: { partition: number; from: number; limit: number }, command: Command) => {
      const ctx = contextOf(command, streams);
      const page = unwrap(
        await ctx.client.GET('/partitions/{partition}/events', {
          params: { path: { partition: options.partition }, query: { from: options.from, limit: options.limit } },
        }),
      );
      if (ctx.out.json) return ctx.out.document(page);
      ctx.out.table(
        ['OFFSET', 'TIME', 'TYPE', 'SOURCE', 'ID'],
        page.events.map((e) => [e.offset, e.event.time, e.event.type, e.event.source, e.event.id]),
        `(no events in partition ${options.partition} from offset ${options.from})`,
      );
      if (page.corruptOffset !== undefined) ctx.out.warn(`offset ${shown(page.corruptOffset)} is corrupt and was skipped`);
      if (page.firstOffset > options.from) ctx.out.note(`offsets below ${shown(page.firstOffset)} were deleted by retention`);
      // Past a corrupt record or deleted offsets a page can be empty and still go on: nextOffset says where.
      if (page.nextOffset > options.from) ctx.out.note(`next page: --from ${shown(page.nextOffset)}`);
    });

  events
    .command('tail')
    .summary('print events as they are stored (Ctrl-C to stop)')
    .addOption(allowEmpty(new Option('--sql <expr>', 'only events matching this CloudEvents SQL expression (empty: every event)')))
    .addHelpText('after', `\nExample:\n  herald events tail --sql "type LIKE 'com.example.order.%'"`)
    .action(async (options: { sql?: string }, command: Command) => {
      // As the console's live tail: an empty (or blank) filter is no filter.
      await tail(contextOf(command, streams), options.sql?.trim() ? options.sql : undefined);
    });
}

/** The first wait before reconnecting a lost tail; it doubles up to {@link RECONNECT_MAX_MS}. */
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 5_000;
/** The gateway sends a comment every 15 s: this long without a byte, the connection is taken for dead. */
const SILENCE_MS = 45_000;

/**
 * `events tail`: reads `GET /events/stream` (Server-Sent Events) until Ctrl-C / SIGTERM (exit 0).
 * One line per event; with `--json`, each message's data (`{"partition","offset","event"}`) as
 * one compact JSON line. A lost stream (the gateway closed it, restarted, or went silent past
 * {@link SILENCE_MS}) is reconnected with backoff, with a warning on stderr that events stored while
 * it was lost are not shown: the stream starts from "now" each time. A refusal (4xx) ends it (exit 1).
 */
async function tail(ctx: Context, sql: string | undefined): Promise<void> {
  const stopped = new AbortController();
  const signals = untilSignal(() => stopped.abort());
  let lostAt: string | undefined;
  let everConnected = false;
  let delay = RECONNECT_MIN_MS;
  /** When the stream last gave a byte: events after it may not have been shown. */
  let heardAt = new Date();
  const connected = () => {
    everConnected = true;
    if (lostAt !== undefined) ctx.out.warn(`reconnected; events stored since ${lostAt} are not shown (herald events read)`);
    else if (!ctx.out.json) ctx.out.note(`tailing events stored at ${ctx.url}${sql ? ` matching ${sql}` : ''} (Ctrl-C to stop)`);
    lostAt = undefined;
  };
  const heard = () => (heardAt = new Date());
  try {
    for (;;) {
      let reason: string;
      const began = Date.now();
      try {
        await followStream(ctx, sql, stopped.signal, connected, heard);
        reason = 'the gateway closed it';
      } catch (err) {
        if (stopped.signal.aborted) return; // Ctrl-C / SIGTERM: a normal end
        // Before the first connection any failure ends the tail (a wrong URL or key is told at once).
        if (!everConnected || !isTransient(err)) throw err;
        reason = err instanceof Error ? err.message : String(err);
      }
      if (lostAt === undefined) {
        lostAt = heardAt.toISOString();
        ctx.out.warn(`the stream from ${ctx.url} was lost (${reason}); reconnecting`);
      }
      // A connection that lasted resets the backoff; one closed at once (a gateway refusing in its own way) does not.
      if (Date.now() - began >= RECONNECT_MAX_MS) delay = RECONNECT_MIN_MS;
      if (!(await sleep(delay, stopped.signal))) return;
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
    }
  } finally {
    signals.dispose();
  }
}

/** A stream message's data: a stored event, or a refusal of the stream (not a reason to reconnect). */
function parseStored(data: string): StoredEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new ReportedError('herald: the gateway sent a stream message that is not JSON');
  }
  const stored = parsed as Partial<StoredEvent> | null;
  if (typeof stored !== 'object' || stored === null || typeof stored.event !== 'object' || stored.event === null) {
    throw new ReportedError('herald: the gateway sent a stream message that is not a stored event');
  }
  return stored as StoredEvent;
}

/** A failure worth reconnecting after: no answer, a cut stream, or the gateway's 5xx (a refusal, 4xx, is not). */
function isTransient(err: unknown): boolean {
  if (err instanceof HeraldApiError) return err.status >= 500 || err.status === 408 || err.status === 429;
  return !(err instanceof ReportedError);
}

/** Resolves after `ms`, `false` at once when `signal` aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** One connection of the tail: prints its events until it ends (resolves) or fails (rejects). */
async function followStream(
  ctx: Context,
  sql: string | undefined,
  stopped: AbortSignal,
  connected: () => void,
  heard: () => void,
): Promise<void> {
  const connection = new AbortController();
  const silent = () => connection.abort(new Error(`nothing for ${SILENCE_MS / 1000} s`));
  let watchdog = setTimeout(silent, SILENCE_MS);
  const onStop = () => connection.abort(stopped.reason);
  stopped.addEventListener('abort', onStop, { once: true });
  // The abort reaches the connection from here, by strong references: fetch follows a request's signal only
  // through a WeakRef, so once a garbage collection ran (about 10 s idle) Ctrl-C and the watchdog reached
  // nothing and the tail ran on (CLI probe).
  const aborted = new Promise<never>((_, reject) => {
    const fail = () => reject(connection.signal.reason as Error);
    if (connection.signal.aborted) fail();
    else connection.signal.addEventListener('abort', fail, { once: true });
  });
  aborted.catch(() => undefined);
  try {
    const result = await Promise.race([
      ctx.streamClient.GET('/events/stream', {
        params: { query: sql === undefined ? {} : { sql } },
        parseAs: 'stream',
        signal: connection.signal,
      }),
      aborted,
    ]);
    const body = unwrap(result);
    if (!body) throw new ReportedError('herald: the gateway sent no stream');
    connected();
    const decoder = new TextDecoder();
    const parser = createSseParser((message) => {
      if (message.event !== 'cloudevent') return;
      const stored = parseStored(message.data);
      if (ctx.out.json) ctx.out.jsonLine(stored);
      else ctx.out.line(eventLine(ctx.out, stored.partition, stored.offset, stored.event));
    });
    const reader = (body as ReadableStream<Uint8Array>).getReader();
    const cancel = () => void reader.cancel(connection.signal.reason).catch(() => undefined);
    connection.signal.addEventListener('abort', cancel, { once: true });
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), aborted]);
      if (done) break;
      heard();
      clearTimeout(watchdog);
      watchdog = setTimeout(silent, SILENCE_MS);
      parser.push(decoder.decode(value, { stream: true }));
    }
  } catch (err) {
    if (err instanceof SseTooLargeError) throw new ReportedError(`herald: the gateway at ${ctx.url} sent ${err.message}`);
    // An abort by the watchdog surfaces as the reason it was given.
    if (connection.signal.aborted && !stopped.aborted) throw connection.signal.reason;
    throw err;
  } finally {
    clearTimeout(watchdog);
    stopped.removeEventListener('abort', onStop);
  }
}

/** `time  partition:offset  type  source  id`: one event, as `events tail` and `listen` print it. */
export function eventLine(out: Output, partition: number | string, offset: number | string, event: Partial<CloudEvent>): string {
  return [
    out.style('dim', new Date().toISOString()),
    out.style('cyan', printable(`${partition}:${offset}`).padEnd(8)),
    shown(event.type ?? '-'),
    shown(event.source ?? '-'),
    shorten(shown(event.id ?? '-'), 80),
  ].join('  ');
}
