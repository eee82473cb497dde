import type { Command } from 'commander';
import { unwrap } from '../client';
import { contextOf, parseIntBetween, parseNonNegativeInt } from './context';
import { UsageError } from './errors';
import { clip, type CliStreams } from './output';

/** `herald dead-letters …`: events a subscription gave up on. */
export function registerDeadLetters(program: Command, streams: CliStreams): void {
  const deadLetters = program.command('dead-letters').summary("a subscription's dead letters: list, redeliver, delete");

  deadLetters
    .command('list')
    .summary('dead letters, oldest first')
    .argument('<subscription>', 'subscription id')
    .option('--limit <n>', 'dead letters at most (up to 1000)', parseIntBetween(0, 1000), 100)
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
      if (page.nextAfter !== null) out.note(`next page: --after ${page.nextAfter}`);
    });

  deadLetters
    .command('redeliver')
    .summary('deliver dead letters again (these ids, or --all)')
    .argument('<subscription>', 'subscription id')
    .argument('[ids...]', 'dead letter ids')
    .option('--all', 'every dead letter of the subscription')
    .addHelpText('after', '\nExamples:\n  herald dead-letters redeliver $SUB 3 4\n  herald dead-letters redeliver $SUB --all')
    .action(async (id: string, ids: string[], options: { all?: boolean }, command: Command) => {
      const { client, out } = contextOf(command, streams);
      if (options.all && ids.length > 0) throw new UsageError('give dead letter ids or --all, not both');
      if (!options.all && ids.length === 0) throw new UsageError('give the dead letter ids to redeliver, or --all');
      for (const deadLetterId of ids)
        if (!/^[0-9]+$/.test(deadLetterId)) throw new UsageError(`${JSON.stringify(deadLetterId)} is not a dead letter id (digits)`);
      // Without a body the gateway redelivers them all.
      const result = unwrap(
        await client.POST('/subscriptions/{id}/dead-letters/redeliver', {
          params: { path: { id } },
          ...(options.all ? {} : { body: { ids } }),
        }),
      );
      if (out.json) return out.document(result);
      out.line(`redelivering ${result.redelivering} dead letter${result.redelivering === 1 ? '' : 's'} of subscription ${id}`);
    });

  deadLetters
    .command('delete')
    .summary('discard a dead letter')
    .argument('<subscription>', 'subscription id')
    .argument('<id>', 'dead letter id')
    .action(async (subscription: string, deadLetterId: string, _options: object, command: Command) => {
      const { client, out } = contextOf(command, streams);
      unwrap(
        await client.DELETE('/subscriptions/{id}/dead-letters/{deadLetterId}', { params: { path: { id: subscription, deadLetterId } } }),
      );
      if (out.json) return out.document({ subscription, id: deadLetterId, deleted: true });
      out.line(`deleted dead letter ${deadLetterId} of subscription ${subscription}`);
    });
}
