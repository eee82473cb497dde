import { InvalidArgumentError, type Command, type Option } from 'commander';
import { createHeraldClient, type HeraldClient } from '../client';
import { HERALD_VERSION } from '../version';
import { UsageError } from './errors';
import { createOutput, type CliStreams, type Output } from './output';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

/** The options every command takes (declared on the program, accepted before or after the command). */
export interface GlobalOptions {
  url: string;
  apiKey?: string;
  json?: boolean;
  /** Seconds each request may take, its answer's body included (streams: no limit). */
  timeout: number;
}

export const DEFAULT_TIMEOUT_SECONDS = 15;

/** What a command's action needs: the typed API client and the output, set up from the global options. */
export interface Context {
  url: string;
  apiKey?: string;
  /** Every request bounded by `--timeout`. */
  client: HeraldClient;
  /** For streams (`events tail`), which last until stopped. */
  streamClient: HeraldClient;
  out: Output;
  streams: CliStreams;
}

export function contextOf(command: Command, streams: CliStreams): Context {
  const globals = command.optsWithGlobals<GlobalOptions>();
  const clientOptions = { url: globals.url, apiKey: globals.apiKey || undefined, userAgent: `herald-cli/${HERALD_VERSION}` };
  return {
    url: globals.url,
    apiKey: globals.apiKey || undefined,
    client: createHeraldClient({ ...clientOptions, timeoutMs: globals.timeout * 1000 }),
    streamClient: createHeraldClient(clientOptions),
    out: createOutput(streams, { json: globals.json === true }),
    streams,
  };
}

// ---- Option value parsers (commander reports their errors as usage errors: exit 2) ----

/**
 * `--url` / `HERALD_URL`: an http(s) URL the API's paths are appended to. Surrounding white space (a
 * trailing space in an env file) is dropped; it was sent as it was ("Failed to parse URL", blamed on
 * the gateway). A query or fragment would end up before the paths ("no route for GET /"): refused.
 */
export function parseBaseUrl(value: string): string {
  const trimmed = value.trim();
  let url: URL;
  // Usage errors, not commander's InvalidArgumentError, whose message quotes the value whole: a
  // password or a token in it would go to the terminal and CI logs (re-probe).
  try {
    url = new URL(trimmed);
  } catch {
    throw new UsageError('--url (or HERALD_URL) is not a URL (e.g. http://127.0.0.1:8080); it is not shown, as it may carry a secret');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UsageError('--url (or HERALD_URL) must be an http:// or https:// URL; it is not shown, as it may carry a secret');
  // fetch refuses a URL with credentials: the key goes in --api-key. Not quoted: the password would be.
  if (url.username !== '' || url.password !== '')
    throw new UsageError('--url (or HERALD_URL) must not carry user:password@ (give the key with --api-key); the URL is not shown');
  // Named without the query or fragment, which may carry a token.
  if (trimmed.includes('?') || trimmed.includes('#')) {
    const what = /^[^#]*\?/.test(trimmed) ? 'a query (?…)' : 'a fragment (#…)';
    // The origin only: a token may sit in the path too.
    throw new UsageError(
      `--url (or HERALD_URL) ${url.origin}/… has ${what}: give the gateway's base URL alone, the API's paths are appended to it`,
    );
  }
  return trimmed;
}

/**
 * An API key as a header can carry it (visible characters up to U+00FF, as a ByteString). Others can
 * never be sent, so they are a usage error (exit 2), not a failed request. The message says what is
 * wrong and where, never the key: commander's own message for a bad value quotes it whole, into
 * terminals and CI logs.
 */
export function parseApiKey(value: string): string {
  const bad = /[^\x21-\x7e\xa0-\xff]/u.exec(value);
  if (bad) {
    const code = bad[0].codePointAt(0)!;
    const what =
      code === 0x20
        ? 'a space'
        : code === 0x0d || code === 0x0a
          ? `a line end (U+${hex(code)}; a key read from a file with its line end?)`
          : code < 0x20 || (code >= 0x7f && code <= 0x9f)
            ? `a control character (U+${hex(code)})`
            : 'a character beyond U+00FF';
    const at = [...value.slice(0, bad.index)].length + 1;
    throw new UsageError(
      `the API key (--api-key or HERALD_API_KEY) contains ${what} at character ${at} of ${[...value].length}; ` +
        'a key is visible characters up to U+00FF, without spaces (the key is not shown)',
    );
  }
  return value;
}

const hex = (code: number): string => code.toString(16).toUpperCase().padStart(4, '0');

/** An id that goes into a path: `.` and `..` would be dot-segments, removed from the URL before it is sent. */
export function parsePathId(value: string): string {
  if (value === '' || value === '.' || value === '..') throw new InvalidArgumentError('not an id');
  return value;
}

/** A dead letter id as the gateway writes them: digits. */
export const isDeadLetterId = (value: string): boolean => /^[0-9]+$/.test(value);

export function parseDeadLetterId(value: string): string {
  if (!isDeadLetterId(value)) throw new InvalidArgumentError('not a dead letter id (digits)');
  return value;
}

export function parseNonNegativeInt(value: string): number {
  if (!/^[0-9]+$/.test(value)) throw new InvalidArgumentError('not a whole number ≥ 0');
  if (!Number.isSafeInteger(Number(value))) throw new InvalidArgumentError(`larger than ${Number.MAX_SAFE_INTEGER}, the largest taken`);
  return Number(value);
}

/** A whole number from `min` to `max`, as the API takes it (a `--limit`): out of range is a usage error, not a 400. */
export function parseIntBetween(min: number, max: number) {
  return (value: string): number => {
    const n = /^-?[0-9]+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(`not a whole number from ${min} to ${max}`);
    return n;
  };
}

export function parsePort(value: string): number {
  const port = parseNonNegativeInt(value);
  if (port > 65535) throw new InvalidArgumentError('not a TCP port (0 to 65535; 0 picks a free one)');
  return port;
}

/** `--x JSON`: the parsed value, or a usage error naming what is wrong. */
export function parseJsonOption(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new InvalidArgumentError(`not JSON (${(err as Error).message})`);
  }
}

/** Collects a repeatable option into an array. */
export function collect<T>(parse: (value: string) => T) {
  return (value: string, previous: T[] | undefined): T[] => [...(previous ?? []), parse(value)];
}

/** Options whose empty value means something (`--data ''`: empty data; `events tail --sql ''`: no filter). */
const emptyAllowed = new WeakSet<Option>();

/** Marks `option` as taking an empty value (see {@link refuseEmptyValues}). */
export function allowEmpty(option: Option): Option {
  emptyAllowed.add(option);
  return option;
}

/**
 * Makes an empty value of every option that takes one, in `command` and its subcommands, a usage
 * error naming the option (exit 2): an unset `"$SINCE"` in a script went to the gateway, or failed
 * inside herald ("undefined is not iterable", reported as the gateway's fault). Not for options
 * read from the environment (an empty variable is handled where it is read) nor those
 * {@link allowEmpty} marks.
 */
export function refuseEmptyValues(command: Command): void {
  for (const option of command.options) {
    if (!option.required || option.envVar !== undefined || emptyAllowed.has(option)) continue;
    const parse = option.parseArg as ((value: string, previous: unknown) => unknown) | undefined;
    option.argParser((value: string, previous: unknown) => {
      if (value === '') throw new InvalidArgumentError('it is empty: give a value');
      return parse ? parse(value, previous) : value;
    });
  }
  for (const sub of command.commands) refuseEmptyValues(sub);
}

/**
 * The same for options that may come from the environment too, on the root command: empty on the
 * command line is refused once parsed, when its source is known (`--api-key ""` sent no key, where an
 * empty variable means none on purpose).
 */
export function refuseEmptyOnCommandLine(program: Command): void {
  program.hook('preAction', (_root, action) => {
    for (let at: Command | null = action; at; at = at.parent)
      for (const option of at.options) {
        const name = option.attributeName();
        if (option.envVar !== undefined && at.getOptionValueSource(name) === 'cli' && at.getOptionValue(name) === '')
          throw new UsageError(`${option.long ?? option.flags}: it is empty: give a value`);
      }
  });
}
