import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { Option, type Command } from 'commander';
import { encodeHeaderValue } from '../cloudevents/headers';
import { isJsonMediaType, mediaType } from '../cloudevents/event';
import { unwrap } from '../client';
import { allowEmpty, contextOf, parseNonNegativeInt } from './context';
import { UsageError } from './errors';
import { shown, type CliStreams } from './output';
import { acknowledged, publishBatchFile, MAX_BATCH_EVENTS } from './publish-batch';

interface PublishOptions {
  source?: string;
  type?: string;
  id?: string;
  subject?: string;
  partitionKey?: string;
  time?: string;
  data?: string;
  dataFile?: string;
  dataStdin?: boolean;
  contentType?: string;
  batch?: string;
  batchSize: number;
  maxRequestBytes: number;
}

const SINGLE_EVENT_OPTIONS = [
  'source',
  'type',
  'id',
  'subject',
  'partitionKey',
  'time',
  'data',
  'dataFile',
  'dataStdin',
  'contentType',
] as const;

export function registerPublish(program: Command, streams: CliStreams): void {
  program
    .command('publish')
    .summary('publish one event, or a file of events (--batch)')
    .description(
      'Publishes one event in binary mode: the data is sent byte for byte as the request body, its type in ' +
        'Content-Type (default application/json, and then it must be JSON; for text use --content-type text/plain). ' +
        'Without --id the event gets a random UUID.\n\n' +
        'With --batch FILE.jsonl, publishes one event per line (blank lines skipped) in requests of up to 1,000 events ' +
        '(and --max-request-bytes), after checking every line. --batch - reads standard input (so does a pipe such as ' +
        '/dev/stdin or <(…)): it is read once and held in memory until checked. Re-running after a failure is safe: ' +
        'events already stored (same source and id) are answered as duplicates and not stored again.',
    )
    .option('--source <uri>', 'the event source (required for one event)')
    .option('--type <type>', 'the event type (required for one event)')
    .option('--id <id>', 'the event id (default: a random UUID)')
    .option('--subject <subject>', 'the subject attribute')
    .option('--partition-key <key>', 'the partitionkey extension: events with one key are stored and delivered in order')
    .option('--time <rfc3339>', 'the time attribute')
    .addOption(allowEmpty(new Option('--data <json>', 'the data, as given').conflicts(['dataFile', 'dataStdin'])))
    .addOption(new Option('--data-file <file>', 'read the data (bytes) from a file').conflicts(['dataStdin']))
    .option('--data-stdin', 'read the data (bytes) from standard input')
    .option(
      '--content-type <type>',
      'the data content type (default: application/json when there is data; not application/cloudevents…: use --batch)',
    )
    .option('--batch <file.jsonl>', 'publish every event of a JSON Lines file (one structured CloudEvent per line; - for standard input)')
    .option('--batch-size <n>', `events per request, at most ${MAX_BATCH_EVENTS}`, parseNonNegativeInt, MAX_BATCH_EVENTS)
    .option(
      '--max-request-bytes <n>',
      "bytes per request at most (the gateway's HERALD_MAX_BODY_BYTES; an event larger than this goes alone)",
      parseNonNegativeInt,
      1024 * 1024,
    )
    .addHelpText(
      'after',
      `
Examples:
  herald publish --source /shop/orders --type com.example.order.created --id order-1001 \\
    --partition-key customer-42 --data '{"orderId":1001,"total":99.5}'
  herald publish --source /docs --type com.example.note --data 'hello' --content-type text/plain
  herald publish --source /img --type com.example.image --data-file cat.png --content-type image/png
  herald publish --batch events.jsonl
  generate-events | herald publish --batch -`,
    )
    .action(async (options: PublishOptions, command: Command) => {
      const ctx = contextOf(command, streams);
      if (options.batch !== undefined) {
        const given = SINGLE_EVENT_OPTIONS.filter((name) => options[name] !== undefined);
        if (given.length > 0) throw new UsageError(`--batch takes its events from the file; drop --${kebab(given[0]!)}`);
        if (options.batchSize < 1 || options.batchSize > MAX_BATCH_EVENTS) {
          throw new UsageError(`--batch-size must be between 1 and ${MAX_BATCH_EVENTS}`);
        }
        await publishBatchFile(ctx, options.batch, { batchSize: options.batchSize, maxRequestBytes: options.maxRequestBytes });
        return;
      }
      if (!options.source) throw new UsageError('missing --source (or --batch FILE)');
      if (!options.type) throw new UsageError('missing --type');
      const data = await readData(options);
      const id = options.id ?? randomUUID();
      const header: Record<string, string> = {
        'ce-specversion': '1.0',
        'ce-id': encodeHeaderValue(id),
        'ce-source': encodeHeaderValue(options.source),
        'ce-type': encodeHeaderValue(options.type),
      };
      if (options.subject !== undefined) header['ce-subject'] = encodeHeaderValue(options.subject);
      if (options.time !== undefined) header['ce-time'] = encodeHeaderValue(options.time);
      if (options.partitionKey !== undefined) header['ce-partitionkey'] = encodeHeaderValue(options.partitionKey);
      const answer = unwrap(
        await ctx.client.POST(
          '/events',
          data?.bytes.length === 0
            ? emptyDataRequest(options, id, data.contentType)
            : {
                params: { header },
                // Binary mode: the bytes go as they are; the typed body is JSON for openapi-fetch's sake only.
                body: data?.bytes as unknown as Record<string, never> | undefined,
                bodySerializer: (body: unknown) => body,
                headers: data ? { 'content-type': data.contentType } : {},
              },
        ),
      );
      const results = acknowledged(answer, 1);
      if (ctx.out.json) return ctx.out.document(answer);
      for (const r of results) {
        const where = `partition ${shown(r.partition)}, offset ${shown(r.offset)}`;
        ctx.out.line(
          r.duplicate
            ? `${ctx.out.style('yellow', 'duplicate')}: ${shown(r.id)} (source ${shown(r.source)}) was already stored at ${where}`
            : `${ctx.out.style('green', 'stored')} ${shown(r.id)} (source ${shown(r.source)}) at ${where}`,
        );
      }
    });
}

/**
 * Empty data goes in structured mode, as `data_base64: ""`: in binary mode an empty body is no data
 * (HTTP binding §3.1.1), so the event would be stored without any.
 */
function emptyDataRequest(options: PublishOptions, id: string, contentType: string) {
  const event: Record<string, string> = { specversion: '1.0', id, source: options.source!, type: options.type! };
  if (options.subject !== undefined) event.subject = options.subject;
  if (options.time !== undefined) event.time = options.time;
  if (options.partitionKey !== undefined) event.partitionkey = options.partitionKey;
  const body = JSON.stringify({ ...event, datacontenttype: contentType, data_base64: '' });
  return {
    body: body as unknown as Record<string, never>,
    bodySerializer: (b: unknown) => b,
    headers: { 'content-type': 'application/cloudevents+json' },
  };
}

const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** The data bytes and their content type, from --data, --data-file or --data-stdin; none without them. */
async function readData(options: PublishOptions): Promise<{ bytes: Buffer; contentType: string } | undefined> {
  let bytes: Buffer;
  let from: string;
  if (options.data !== undefined) {
    bytes = Buffer.from(options.data, 'utf8');
    from = '--data';
  } else if (options.dataFile !== undefined) {
    try {
      bytes = await fs.promises.readFile(options.dataFile);
    } catch (err) {
      throw new UsageError(`cannot read --data-file ${options.dataFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    from = '--data-file';
  } else if (options.dataStdin) {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    bytes = Buffer.concat(chunks);
    from = '--data-stdin';
  } else {
    if (options.contentType !== undefined) throw new UsageError('--content-type needs data (--data, --data-file or --data-stdin)');
    return undefined;
  }
  const contentType = options.contentType ?? 'application/json';
  // A header value cannot hold control characters (or more than U+00FF): it could never be sent.
  if (!/^[\x20-\x7e\xa0-\xff]*$/.test(contentType))
    throw new UsageError('--content-type must be printable (a media type such as text/plain)');
  // The gateway reads such a body as a structured event or a batch, whatever --source, --type and --id say.
  if (mediaType(contentType)!.startsWith('application/cloudevents')) {
    throw new UsageError(
      `--content-type ${contentType} is a CloudEvents format, but publish sends one event in binary mode (its data ` +
        'as the body); for structured events or a batch, write them one per line and use publish --batch FILE.jsonl',
    );
  }
  if (isJsonMediaType(contentType)) {
    try {
      JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      throw new UsageError(
        `${from} is not JSON (${(err as Error).message}), but its content type is ${contentType}; ` +
          'for other data give its type, e.g. --content-type text/plain',
      );
    }
  }
  return { bytes, contentType };
}
