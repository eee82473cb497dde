import type { Command } from 'commander';
import { unwrap, type HeraldClient } from '../client';
import { contextOf, isDeadLetterId, parseDeadLetterId, parseIntBetween, parseNonNegativeInt, parsePathId } from './context';
import { ReportedError, UsageError } from './errors';
import { clip, shown, type CliStreams } from './output';

/** `herald dead-letters …`: events a subscription gave up on. */
export function registerDeadLetters(program: Command, streams: CliStreams): void {
  const deadLetters = program.command('dead-letters').summary("a subscription's dead letters: list, redeliver, delete");

  deadLetters
    .command('list')
    .summary('dead letters, oldest first')
    .argument('<subscription>', 'subscription id', parsePathId)
    .option('--limit <n>', 'dead letters at most (1 to 1000)', parseIntBetween(1, 1000), 100)
    .option('--after <id>', 'only dead letters after this id (printed under a full page)', parseNonNegativeInt)
    .action(async (id: string, options: { limit: number; after?: number }, command: Command) => {
      const { client, out } = contextOf(command, streams);
      const page = unwrap(
        await client.GET('/subscriptions/{id}/dead-letters', {
          params: { path: { id }, query: { limit: options.limit, ...(options.after === undefined ? {} : { after: options.after }) } },
        }),
      );
      if (out.json) return out.document(page);
      out.table(
        ['ID', 'EVENT', 'EVENT ID', 'TYPE', 'ATTEMPTS', 'STATUS', 'REASON', 'DEAD AT', 'LAST ERROR'],
        page.deadLetters.map((d) => [
          d.id,
          `${d.partition}:${d.offset}`,
          clip(d.event?.id, 40),
          d.event?.type,
          d.attempts,
          d.lastStatus,
          d.reason,
          d.deadAt,
          clip(d.lastError, 40),
        ]),
        '(no dead letters)',
      );
      if (page.nextAfter !== null) out.note(`next page: --after ${shown(page.nextAfter)}`);
    });

  deadLetters
    .command('redeliver')
    .summary('deliver dead letters again (these ids, or --all)')
    .argument('<subscription>', 'subscription id', parsePathId)
    .argument('[ids...]', 'dead letter ids')
    .option('--all', 'every dead letter of the subscription')
    .addHelpText(
      'after',
      '\nIds the subscription has no dead letter of are named, and the command exits 1 (the others are redelivered).\n' +
        '\nExamples:\n  herald dead-letters redeliver $SUB 3 4\n  herald dead-letters redeliver $SUB --all',
    )
    .action(async (id: string, ids: string[], options: { all?: boolean }, command: Command) => {
      const { client, out } = contextOf(command, streams);
      if (options.all && ids.length > 0) throw new UsageError('give dead letter ids or --all, not both');
      if (!options.all && ids.length === 0) throw new UsageError('give the dead letter ids to redeliver, or --all');
      for (const deadLetterId of ids)
        if (!isDeadLetterId(deadLetterId)) throw new UsageError(`${JSON.stringify(deadLetterId)} is not a dead letter id (digits)`);
      // The gateway skips ids it does not have and answers only a count: they are looked up first, to be named.
      const { found, missing } = options.all ? { found: undefined, missing: [] } : await findDeadLetters(client, id, ids);
      // Under --all, how many there are, for the same check of what was redelivered (probe: exit 0 while none was).
      const listed = options.all
        ? unwrap(await client.GET('/subscriptions/{id}', { params: { path: { id } } })).stats.deadLetters
        : found!.length;
      const missingText = missing.join(missing.length === 2 ? ' or ' : ', ');
      if (found?.length === 0) throw new ReportedError(`herald: subscription ${id} has no dead letter ${missingText}: nothing redelivered`);
      // Without a body the gateway redelivers them all.
      const result = unwrap(
        await client.POST('/subscriptions/{id}/dead-letters/redeliver', {
          params: { path: { id } },
          ...(found ? { body: { ids: found } } : {}),
        }),
      );
      if (out.json) out.document(result);
      else out.line(`redelivering ${shown(result.redelivering)} dead letter${result.redelivering === 1 ? '' : 's'} of subscription ${id}`);
      const problems: string[] = [];
      if (missing.length > 0) problems.push(`herald: subscription ${id} has no dead letter ${missingText}: not redelivered`);
      if (result.redelivering < listed) {
        const skipped = listed - result.redelivering;
        problems.push(
          `herald: ${skipped} of the ${listed} dead letters found ${skipped === 1 ? 'was' : 'were'} not redelivered ` +
            '(an event retention has deleted, a redelivery already queued, or a dead letter redelivered or deleted meanwhile: see herald dead-letters list)',
        );
      }
      if (problems.length > 0) throw new ReportedError(problems.join('\n'));
    });

  deadLetters
    .command('delete')
    .summary('discard a dead letter')
    .argument('<subscription>', 'subscription id', parsePathId)
    .argument('<id>', 'dead letter id', parseDeadLetterId)
    .action(async (subscription: string, deadLetterId: string, _options: object, command: Command) => {
      const { client, out } = contextOf(command, streams);
      unwrap(
        await client.DELETE('/subscriptions/{id}/dead-letters/{deadLetterId}', { params: { path: { id: subscription, deadLetterId } } }),
      );
      if (out.json) return out.document({ subscription, id: deadLetterId, deleted: true });
      out.line(`deleted dead letter ${deadLetterId} of subscription ${subscription}`);
    });
}

/** Dead letters read per request while looking ids up: the API's largest page. */
const LOOKUP_PAGE = 1000;

/**
 * Which of `ids` (digits) are dead letters of the subscription, each named once in the order given.
 * They are read from its list in keyset pages, each starting at the smallest id not yet settled, so
 * ids close together cost one request and the number of requests is at most the number of ids.
 * An id written otherwise than the gateway writes ids (`0`, `007`) names none.
 */
async function findDeadLetters(client: HeraldClient, subscription: string, ids: string[]): Promise<{ found: string[]; missing: string[] }> {
  const wanted = [...new Set(ids)];
  const asGatewayWrites = (id: string) => /^[1-9][0-9]{0,14}$/.test(id);
  const pending = wanted
    .filter(asGatewayWrites)
    .map(Number)
    .sort((a, b) => a - b);
  const present = new Set<number>();
  let next = 0;
  while (next < pending.length) {
    const page = unwrap(
      await client.GET('/subscriptions/{id}/dead-letters', {
        params: { path: { id: subscription }, query: { after: pending[next]! - 1, limit: LOOKUP_PAGE } },
      }),
    );
    if (!Array.isArray(page.deadLetters)) throw new TypeError('a page of dead letters without its list');
    for (const letter of page.deadLetters) present.add(Number(letter.id));
    // Every id up to the page's last is settled (all of them when it is the last page: no `nextAfter`; a
    // page of large events ends before `limit`); the page holds ids from pending[next] on, so each round
    // settles at least that one.
    const last = page.deadLetters[page.deadLetters.length - 1];
    const settled = page.nextAfter === null || !last ? Infinity : Number(last.id);
    // One that does not (a page not past what it was asked for) would be asked for again and again (CLI probe: 4,150 requests in 6 s).
    if (!(settled >= pending[next]!))
      throw new TypeError(
        `the page of dead letters after ${pending[next]! - 1} ends at ${shown(JSON.stringify(last?.id) ?? 'nothing')}, not past it`,
      );
    while (next < pending.length && pending[next]! <= settled) next++;
  }
  const isPresent = (id: string) => asGatewayWrites(id) && present.has(Number(id));
  return { found: wanted.filter(isPresent), missing: wanted.filter((id) => !isPresent(id)) };
}
