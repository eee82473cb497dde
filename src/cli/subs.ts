import { InvalidArgumentError, Option, type Command } from 'commander';
import { unwrap, type components } from '../client';
import { collect, contextOf, parseIntBetween, parsePathId, type Context } from './context';
import { UsageError } from './errors';
import { clip, printable, shown, type CliStreams } from './output';
import { addSubscriptionOptions, deliveryOf, filtersOf, type SubscriptionOptions } from './subscription-input';

type Subscription = components['schemas']['Subscription'];
type Fields = components['schemas']['SubscriptionFields'] & { secret?: string };

/** `herald subs …`: the subscription resource, one subcommand per operation of the contract. */
export function registerSubs(program: Command, streams: CliStreams): void {
  const subs = program.command('subs').summary('webhook subscriptions: list, create, change, pause, seek, attempts');
  /** An action on one subscription: `(id, options, ctx)`. */
  const onId =
    <O>(run: (id: string, options: O, ctx: Context) => Promise<void>) =>
    (id: string, options: O, command: Command) =>
      run(id, options, contextOf(command, streams));

  subs
    .command('list')
    .summary('every subscription (or a page of them), oldest first, with its lag')
    .option('--limit <n>', 'a page of at most this many (1 to 1000); every one without it or --after', parseIntBetween(1, 1000))
    .option('--after <cursor>', 'the page after this cursor (printed under the previous page)')
    .action(async (options: { limit?: number; after?: string }, command: Command) => {
      const { client, out } = contextOf(command, streams);
      const query = {
        ...(options.limit !== undefined && { limit: options.limit }),
        ...(options.after !== undefined && { after: options.after }),
      };
      const list = unwrap(await client.GET('/subscriptions', { params: { query } }));
      if (out.json) return out.document(list);
      out.table(
        ['ID', 'STATE', 'SINK', 'FILTERS', 'LAG', 'IN FLIGHT', 'DEAD LETTERS'],
        list.subscriptions.map((s) => [
          s.id,
          stateOf(s),
          clip(s.sink, 50),
          clip(s.filters.length === 0 ? '(all events)' : JSON.stringify(s.filters), 40),
          // No stats ('-'): delivery of it is not started on that node (the gateway logs why).
          s.stats && sum(s.stats.partitions.map((p) => p.lag)),
          s.stats && sum(s.stats.partitions.map((p) => p.inFlight)),
          s.stats?.deadLetters,
        ]),
        '(no subscriptions)',
      );
      if (typeof list.nextAfter === 'string') out.note(`next page: --after ${shown(list.nextAfter)}`);
    });

  subs
    .command('get')
    .summary('a subscription with its per-partition delivery statistics')
    .argument('<id>', 'subscription id', parsePathId)
    .action(
      onId(async (id, _options, ctx) => {
        const sub = unwrap(await ctx.client.GET('/subscriptions/{id}', { params: { path: { id } } }));
        if (ctx.out.json) return ctx.out.document(sub);
        printSubscription(ctx, sub);
        ctx.out.line();
        ctx.out.table(
          ['PARTITION', 'COMMITTED', 'HEAD', 'LAG', 'IN FLIGHT', 'OLDEST PENDING MS', 'EXPIRED'],
          busy(sub).map((p) => [p.partition, p.committedOffset, p.headOffset, p.lag, p.inFlight, p.oldestPendingAgeMs, p.expired]),
          '(no partition holds events yet)',
        );
      }),
    );

  addSubscriptionOptions(subs.command('create').summary('create a subscription (prints its signing secret, shown only now)'), {
    update: false,
  })
    .addOption(
      new Option('--start-at <where>', 'latest: events stored from now on; earliest: every event in the log')
        .choices(['latest', 'earliest'])
        .default('latest'),
    )
    .addOption(
      new Option('--validation <mode>', 'cloudevents: ask the sink for consent first (OPTIONS handshake)').choices(['none', 'cloudevents']),
    )
    .addHelpText(
      'after',
      '\nExample:\n  herald subs create --sink http://127.0.0.1:9000/hooks/orders --filter-type com.example.order. \\\n    --ack-mode manual --max-attempts 8 --start-at earliest',
    )
    .action(
      async (options: SubscriptionOptions & { startAt: 'latest' | 'earliest'; validation?: 'none' | 'cloudevents' }, command: Command) => {
        const ctx = contextOf(command, streams);
        if (!options.sink) throw new UsageError('missing --sink <url>');
        const delivery = deliveryOf(options);
        const created = unwrap(
          await ctx.client.POST('/subscriptions', {
            body: {
              sink: options.sink,
              filters: filtersOf(options) ?? [],
              startAt: options.startAt,
              ...(delivery ? { delivery } : {}),
              ...(options.validation ? { validation: options.validation } : {}),
            },
          }),
        );
        if (typeof created?.id !== 'string' || typeof created.secret !== 'string')
          throw new TypeError('a created subscription without its id and secret');
        if (ctx.out.json) return ctx.out.document(created);
        ctx.out.note(`created subscription ${shown(created.id)}; its secret is shown only now (and by rotate-secret)`);
        printSubscription(ctx, created);
      },
    );

  addSubscriptionOptions(
    subs
      .command('update')
      .summary("change a subscription's sink, filters or delivery options")
      .argument('<id>', 'subscription id', parsePathId),
    {
      update: true,
    },
  )
    .addHelpText(
      'after',
      '\nOptions not given are kept. --header adds or replaces one header and keeps the others (their values, never\n' +
        'shown, stay as stored); --header "name:" removes one. Headers in --delivery JSON replace the whole set (the API).\n' +
        'A --sink on another origin (scheme, host, port) needs every stored header given again with its value\n' +
        '(or --delivery \'{"headers":{}}\' to drop them): stored values are sent only where they were given for.\n' +
        '\nExamples:\n  herald subs update $SUB --max-in-flight 4 --header "x-tenant: acme"\n  herald subs update $SUB --header "x-tenant:"',
    )
    .action(
      onId(async (id, options: SubscriptionOptions, ctx) => {
        const filters = filtersOf(options);
        // The API replaces the stored headers with those sent: read their names, to keep them.
        let storedHeaders: string[] | undefined;
        if (options.header) {
          const current = unwrap(await ctx.client.GET('/subscriptions/{id}', { params: { path: { id } } }));
          storedHeaders = Object.keys(current.delivery.headers ?? {});
          for (const [name, value] of options.header) {
            if (value === '' && !storedHeaders.includes(name.toLowerCase()))
              ctx.out.warn(`subscription ${id} has no header ${printable(name)}: nothing to remove`);
          }
        }
        const delivery = deliveryOf(options, storedHeaders);
        const body = {
          ...(options.sink ? { sink: options.sink } : {}),
          ...(filters ? { filters } : {}),
          ...(delivery ? { delivery } : {}),
        };
        if (Object.keys(body).length === 0) throw new UsageError('nothing to change: give --sink, filters or delivery options');
        const updated = unwrap(await ctx.client.PATCH('/subscriptions/{id}', { params: { path: { id } }, body }));
        if (ctx.out.json) return ctx.out.document(updated);
        printSubscription(ctx, updated);
      }),
    );

  subs
    .command('delete')
    .summary('delete a subscription (delivery stops at once)')
    .argument('<id>', 'subscription id', parsePathId)
    .action(
      onId(async (id, _options, ctx) => {
        unwrap(await ctx.client.DELETE('/subscriptions/{id}', { params: { path: { id } } }));
        // The API answers 204 without a body: --json still prints one document.
        if (ctx.out.json) return ctx.out.document({ id, deleted: true });
        ctx.out.line(`deleted subscription ${id}`);
      }),
    );

  for (const [name, summary] of [
    ['pause', 'stop starting deliveries (the backlog waits on disk)'],
    ['resume', 'resume delivery where it stopped'],
  ] as const) {
    subs
      .command(name)
      .summary(summary)
      .argument('<id>', 'subscription id', parsePathId)
      .action(
        onId(async (id, _options, ctx) => {
          const path = name === 'pause' ? '/subscriptions/{id}/pause' : '/subscriptions/{id}/resume';
          const sub = unwrap(await ctx.client.POST(path, { params: { path: { id } } }));
          if (ctx.out.json) return ctx.out.document(sub);
          ctx.out.line(`subscription ${shown(sub.id)} is ${shown(stateOf(sub))}`);
        }),
      );
  }

  subs
    .command('rotate-secret')
    .summary('replace the signing secret (the old one keeps signing during the overlap)')
    .argument('<id>', 'subscription id', parsePathId)
    .option(
      '--overlap-seconds <s>',
      'how long the old secret keeps signing too (default 86400; 0 stops it at once; at most 604800)',
      parseIntBetween(0, 7 * 86_400),
    )
    .action(
      onId(async (id, options: { overlapSeconds?: number }, ctx) => {
        const rotated = unwrap(
          await ctx.client.POST('/subscriptions/{id}/rotate-secret', {
            params: { path: { id } },
            ...(options.overlapSeconds === undefined ? {} : { body: { overlapSeconds: options.overlapSeconds } }),
          }),
        );
        if (ctx.out.json) return ctx.out.document(rotated);
        ctx.out.fields([
          ['id', rotated.id],
          ['secret', rotated.secret],
          ['old secret signs until', rotated.previousSecretExpiresAt ?? '(stopped)'],
        ]);
      }),
    );

  subs
    .command('seek')
    .summary('restart delivery elsewhere in the log (seeking back redelivers)')
    .argument('<id>', 'subscription id', parsePathId)
    .addOption(new Option('--to <where>', 'earliest or latest, in every partition').choices(['earliest', 'latest']))
    .option('--time <rfc3339>', 'each partition from its first event stored at or after this time')
    .option('--offset <partition=offset>', 'one partition from this offset (repeatable)', collect(parseOffset))
    .addHelpText(
      'after',
      '\nExamples:\n  herald subs seek $SUB --time 2026-12-01T10:00:00Z\n  herald subs seek $SUB --offset 3=120 --offset 7=0',
    )
    .action(
      onId(async (id, options: { to?: 'earliest' | 'latest'; time?: string; offset?: [string, number][] }, ctx) => {
        const given = [options.to, options.time, options.offset].filter((o) => o !== undefined).length;
        if (given !== 1) throw new UsageError('give exactly one of --to, --time or --offset');
        const body =
          options.to !== undefined
            ? { to: options.to }
            : options.time !== undefined
              ? { time: options.time }
              : { offsets: Object.fromEntries(options.offset!) };
        const sub = unwrap(await ctx.client.POST('/subscriptions/{id}/seek', { params: { path: { id } }, body }));
        if (ctx.out.json) return ctx.out.document(sub);
        const stats = sub.stats;
        // null: the figures could not be read right then (the seek is made all the same).
        if (!stats) return ctx.out.line(`subscription ${shown(sub.id)} moved; see herald subs get for where each partition stands`);
        ctx.out.line(`subscription ${shown(sub.id)} moved; delivery continues at each partition's committed offset:`);
        ctx.out.table(
          ['PARTITION', 'COMMITTED', 'HEAD', 'LAG'],
          busy({ stats }).map((p) => [p.partition, p.committedOffset, p.headOffset, p.lag]),
          '(no partition holds events yet)',
        );
      }),
    );

  subs
    .command('attempts')
    .summary('the most recent delivery attempts, newest first')
    .argument('<id>', 'subscription id', parsePathId)
    .option('--limit <n>', 'attempts at most (up to 1000)', parseIntBetween(1, 1000), 20)
    .option('--before <cursor>', 'older than this cursor (printed under the previous page)')
    .action(
      onId(async (id, options: { limit: number; before?: string }, ctx) => {
        const page = unwrap(
          await ctx.client.GET('/subscriptions/{id}/attempts', {
            params: { path: { id }, query: { limit: options.limit, ...(options.before === undefined ? {} : { before: options.before }) } },
          }),
        );
        if (ctx.out.json) return ctx.out.document(page);
        ctx.out.table(
          ['STARTED', 'EVENT', 'ATTEMPT', 'STATUS', 'OUTCOME', 'MS', 'DELIVERY ID', 'ERROR'],
          page.attempts.map((a) => [
            a.startedAt,
            `${a.partition}:${a.offset}`,
            a.attempt,
            a.status,
            a.outcome,
            a.durationMs,
            a.deliveryId,
            clip(a.error, 40),
          ]),
          '(no attempts)',
        );
        if (page.next !== null) ctx.out.note(`older attempts: --before ${shown(page.next)}`);
      }),
    );
}

function parseOffset(value: string): [string, number] {
  const match = /^([0-9]+)=([0-9]+)$/.exec(value);
  if (!match) throw new InvalidArgumentError('expected partition=offset, e.g. 3=120');
  return [String(Number(match[1])), Number(match[2])];
}

/** The partitions worth a row: those that ever held an event (the others read all zeros). */
const busy = (sub: Pick<Subscription, 'stats'>) => sub.stats.partitions.filter((p) => p.headOffset > 0 || p.inFlight > 0);

const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0);

const stateOf = (s: { state: string; stateReason: string | null }): string => (s.stateReason ? `${s.state} (${s.stateReason})` : s.state);

/** The subscription's settings as `key: value` lines (the secret when the answer carries one). */
function printSubscription(ctx: Context, sub: Fields | Subscription): void {
  const d = sub.delivery;
  ctx.out.fields([
    ['id', sub.id],
    ['sink', sub.sink],
    ['state', stateOf(sub), sub.state === 'active' ? 'green' : 'yellow'],
    ['filters', sub.filters.length === 0 ? '(all events)' : JSON.stringify(sub.filters)],
    // The ack deadline too: the README's tour sets it (`--delivery '{"ackDeadlineMs": 60000}'`), and `subs get` showed no trace of it.
    [
      'delivery',
      `${d.format}, ordering ${d.ordering}, ack ${d.ackMode} (deadline ${d.ackDeadlineMs} ms), max in flight ${d.maxInFlight}, timeout ${d.timeoutMs} ms`,
    ],
    ['retry', `${d.retry.maxAttempts} attempts, ${d.retry.initialDelayMs} ms × ${d.retry.multiplier} up to ${d.retry.maxDelayMs} ms`],
    ['rate limit', d.rateLimit ? `${d.rateLimit.perSecond}/s` : undefined],
    ['sink allows', sub.allowedRate ? `${sub.allowedRate.perSecond}/s (WebHook-Allowed-Rate; the lower rate applies)` : undefined],
    ['headers', d.headers ? Object.keys(d.headers).join(', ') : undefined],
    ['validation', sub.validation],
    ['created', sub.createdAt],
    ['dead letters', sub.stats?.deadLetters],
    ['old secret signs until', sub.previousSecretExpiresAt],
    ['secret', 'secret' in sub ? sub.secret : undefined],
  ]);
}
