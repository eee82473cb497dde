import { InvalidArgumentError, Option, type Command } from 'commander';
import type { components } from '../client';
import { collect, parseIntBetween, parseJsonOption } from './context';
import { UsageError } from './errors';

type Filter = components['schemas']['Filter'];
type DeliveryOptionsInput = components['schemas']['DeliveryOptionsInput'];

/** A header value the API shows for every stored one, and takes back as "keep the stored value". */
const MASKED = '***';

/** Options shared by `subs create` and `subs update` (all optional; `--sink` is checked by create). */
export interface SubscriptionOptions {
  sink?: string;
  filterType?: string[];
  filterSource?: string[];
  sql?: string[];
  filter?: unknown[];
  clearFilters?: boolean;
  format?: 'binary' | 'structured';
  ordering?: 'partition' | 'none';
  ackMode?: 'auto' | 'manual';
  maxInFlight?: number;
  timeoutMs?: number;
  maxAttempts?: number;
  rateLimit?: number;
  header?: [string, string][];
  delivery?: unknown;
}

function parseHeader(value: string): [string, string] {
  const colon = value.indexOf(':');
  if (colon <= 0) throw new InvalidArgumentError('expected "name: value"');
  return [value.slice(0, colon).trim(), value.slice(colon + 1).trim()];
}

function parseRate(value: string): number {
  const rate = Number(value);
  if (!/^[0-9]*\.?[0-9]+$/.test(value) || !(rate > 0)) throw new InvalidArgumentError('not a number of requests a second > 0');
  return rate;
}

/** Adds the sink, filter and delivery options to `subs create` / `subs update`. */
export function addSubscriptionOptions(command: Command, { update }: { update: boolean }): Command {
  const replaces = update ? ' (replaces the filters)' : '';
  command
    .option('--sink <url>', 'the http(s) URL events are POSTed to')
    .option('--filter-type <prefix>', `only events whose type starts with this (repeatable)${replaces}`, collect(String))
    .option('--filter-source <prefix>', `only events whose source starts with this (repeatable)${replaces}`, collect(String))
    .option('--sql <expr>', `only events matching this CloudEvents SQL expression (repeatable)${replaces}`, collect(String))
    .option(
      '--filter <json>',
      `a filter object of any dialect, e.g. '{"exact":{"subject":"x"}}' (repeatable)${replaces}`,
      collect(parseJsonOption),
    )
    .addOption(new Option('--format <format>', 'delivery content mode').choices(['binary', 'structured']))
    .addOption(new Option('--ordering <ordering>', 'one event at a time per partition, or none').choices(['partition', 'none']))
    .addOption(
      new Option('--ack-mode <mode>', 'auto: a 2xx but 202 is done; manual: every 2xx waits for a callback').choices(['auto', 'manual']),
    )
    // The API's ranges: a value out of them is a usage error here, with nothing sent (CLI probe: a 400, exit 1).
    .option('--max-in-flight <n>', 'events started and unfinished at once, at most (1 to 1024)', parseIntBetween(1, 1024))
    .option('--timeout-ms <ms>', 'bound on one whole delivery attempt (10 to 300000)', parseIntBetween(10, 300_000))
    .option('--max-attempts <n>', 'attempts before an event is dead-lettered (1 to 1000)', parseIntBetween(1, 1000))
    .option('--rate-limit <perSecond>', 'delivery attempts a second, at most', parseRate)
    .option(
      '--header <name:value>',
      update
        ? 'set an extra request header sent with every delivery, keeping the others (repeatable); "name:" without a value removes that one'
        : 'an extra request header sent with every delivery (repeatable)',
      collect(parseHeader),
    )
    .option('--delivery <json>', 'delivery options as JSON (merged under the options above)', parseJsonOption);
  if (update) command.option('--clear-filters', 'remove every filter');
  return command;
}

/** The filters the options ask for; `undefined` when none was given (an update then keeps the current ones). */
export function filtersOf(options: SubscriptionOptions): Filter[] | undefined {
  const filters: Filter[] = [
    ...(options.filterType ?? []).map((type) => ({ prefix: { type } })),
    ...(options.filterSource ?? []).map((source) => ({ prefix: { source } })),
    ...(options.sql ?? []).map((sql) => ({ sql })),
    ...(options.filter ?? []).map((f) => f as Filter),
  ];
  if (options.clearFilters) {
    if (filters.length > 0) throw new UsageError('--clear-filters cannot be combined with filters');
    return [];
  }
  return filters.length > 0 ? filters : undefined;
}

/**
 * `delivery` from the single options over `--delivery JSON`; `undefined` when nothing was given.
 * `storedHeaders` (an update with `--header`): the names the subscription has now. The API replaces
 * the whole set with the one sent, so each stored name is sent as `"***"` (the API keeps its stored
 * value), then `--header` sets or, with an empty value, removes a name. Without `--header`, headers
 * in `--delivery` are sent as they are (the API's own meaning: the set given replaces the stored one).
 */
export function deliveryOf(options: SubscriptionOptions, storedHeaders?: string[]): DeliveryOptionsInput | undefined {
  if (
    options.delivery !== undefined &&
    (typeof options.delivery !== 'object' || options.delivery === null || Array.isArray(options.delivery))
  ) {
    throw new UsageError('--delivery must be a JSON object');
  }
  const delivery: Record<string, unknown> = { ...(options.delivery as Record<string, unknown> | undefined) };
  if (options.format) delivery.format = options.format;
  if (options.ordering) delivery.ordering = options.ordering;
  if (options.ackMode) delivery.ackMode = options.ackMode;
  if (options.maxInFlight !== undefined) delivery.maxInFlight = options.maxInFlight;
  if (options.timeoutMs !== undefined) delivery.timeoutMs = options.timeoutMs;
  if (options.rateLimit !== undefined) delivery.rateLimit = { perSecond: options.rateLimit };
  if (options.maxAttempts !== undefined) {
    delivery.retry = { ...(delivery.retry as Record<string, unknown> | undefined), maxAttempts: options.maxAttempts };
  }
  if (options.header) {
    // Names are case-insensitive (stored in lower case). No prototype: `__proto__` is a name like any other.
    const headers: Record<string, unknown> = Object.create(null);
    for (const name of storedHeaders ?? []) headers[name.toLowerCase()] = MASKED;
    for (const [name, value] of Object.entries((delivery.headers as Record<string, unknown> | undefined) ?? {}))
      headers[name.toLowerCase()] = value;
    for (const [name, value] of options.header) {
      if (value !== '') headers[name.toLowerCase()] = value;
      else if (storedHeaders) delete headers[name.toLowerCase()];
      else throw new UsageError(`--header "${name}:" has no value (an empty value removes a header, in subs update)`);
    }
    delivery.headers = headers;
  }
  return Object.keys(delivery).length > 0 ? (delivery as DeliveryOptionsInput) : undefined;
}
