import type { Command } from 'commander';
import { unwrap, type components } from '../client';
import { contextOf, parseIntBetween, parseNonNegativeInt, type Context } from './context';
import { ReportedError } from './errors';
import { clip, printable, type CliStreams, type Output } from './output';
import { untilSignal } from './signals';
import { createSseParser } from './sse';

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
      ctx.out.line(printable(JSON.stringify(stored.event, null, 2)));
    });

  events
    .command('read')
    .summary('a page of a partition, in offset order')
    .requiredOption('--partition <p>', 'the partition', parseNonNegativeInt)
    .option('--from <offset>', 'the first offset', parseNonNegativeInt, 0)
    .option('--limit <n>', 'events at most (up to 1000)', parseIntBetween(0, 1000), 100)
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
      if (page.corruptOffset !== undefined) ctx.out.warn(`offset ${page.corruptOffset} is corrupt and was skipped`);
      if (page.firstOffset > options.from) ctx.out.note(`offsets below ${page.firstOffset} were deleted by retention`);
      if (page.events.length > 0) ctx.out.note(`next page: --from ${page.nextOffset}`);
    });

  events
    .command('tail')
    .summary('print events as they are stored (Ctrl-C to stop)')
    .option('--sql <expr>', 'only events matching this CloudEvents SQL expression')
    .addHelpText('after', `\nExample:\n  herald events tail --sql "type LIKE 'com.example.order.%'"`)
    .action(async (options: { sql?: string }, command: Command) => {
      await tail(contextOf(command, streams), options.sql);
    });
}

/**
 * `events tail`: reads `GET /events/stream` (Server-Sent Events) until Ctrl-C / SIGTERM (exit 0).
 * One line per event; with `--json`, each message's data (`{"partition","offset","event"}`) as
 * one compact JSON line. The gateway closing the stream is a failure (exit 1).
 */
async function tail(ctx: Context, sql: string | undefined): Promise<void> {
  const stopped = new AbortController();
  const signals = untilSignal(() => stopped.abort());
  try {
    const result = await ctx.streamClient.GET('/events/stream', {
      params: { query: sql === undefined ? {} : { sql } },
      parseAs: 'stream',
      signal: stopped.signal,
    });
    const body = unwrap(result);
    if (!body) throw new ReportedError('herald: the gateway sent no stream');
    if (!ctx.out.json) ctx.out.note(`tailing events stored at ${ctx.url}${sql ? ` matching ${sql}` : ''} (Ctrl-C to stop)`);
    const decoder = new TextDecoder();
    const parser = createSseParser((message) => {
      if (message.event !== 'cloudevent') return;
      const stored = JSON.parse(message.data) as StoredEvent;
      if (ctx.out.json) ctx.out.jsonLine(stored);
      else ctx.out.line(eventLine(ctx.out, stored.partition, stored.offset, stored.event));
    });
    for await (const chunk of body) parser.push(decoder.decode(chunk as Uint8Array, { stream: true }));
    throw new ReportedError(`herald: the gateway at ${ctx.url} closed the stream`);
  } catch (err) {
    if (stopped.signal.aborted) return; // Ctrl-C / SIGTERM: a normal end
    throw err;
  } finally {
    signals.dispose();
  }
}

/** `time  partition:offset  type  source  id`: one event, as `events tail` and `listen` print it. */
export function eventLine(out: Output, partition: number | string, offset: number | string, event: Partial<CloudEvent>): string {
  return [
    out.style('dim', new Date().toISOString()),
    out.style('cyan', `${partition}:${offset}`.padEnd(8)),
    printable(event.type ?? '-'),
    printable(event.source ?? '-'),
    printable(clip(event.id, 80) ?? '-'),
  ].join('  ');
}
