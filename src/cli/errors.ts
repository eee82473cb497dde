import { CommanderError } from 'commander';
import { HeraldApiError, HeraldConnectionError } from '../client';
import { MAX_PROBLEM_ERRORS } from '../errors';
import { HERALD_VERSION } from '../version';
import { printable, printableLines } from './output';

/**
 * Exit statuses of every `herald` command: 0 done; 1 the gateway refused the request (a non-2xx
 * answer) or could not be reached, or the command failed at run time; 2 the command line itself was
 * wrong (unknown option, missing argument, bad value), so nothing was sent.
 */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A command line that cannot be run as given (exit 2), found after commander's own checks. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A failure whose message is its whole explanation, printed as is (exit 1). */
export class ReportedError extends Error {
  override name = 'ReportedError';
}

/**
 * What a refused request says, in the command line's terms: a 401 names `--api-key` and
 * `HERALD_API_KEY` (the gateway's own detail speaks of the `Authorization` header, which a user of
 * the CLI never writes); any other answer is the gateway's detail and status.
 */
export function refusalMessage(err: HeraldApiError, apiKeyGiven: boolean): string {
  if (err.status !== 401) return err.message;
  return apiKeyGiven
    ? `${err.message}: check the key given with --api-key or HERALD_API_KEY`
    : 'the gateway needs an API key (401 unauthorized): give it with --api-key <key> or HERALD_API_KEY';
}

/**
 * Explains `err` on stderr (one line, then the problem's `errors` list indented) and returns the
 * exit status. Commander has already printed its own errors (usage, `--help`, `--version`).
 * `apiKeyGiven`: whether the command had a key (`--api-key` or `HERALD_API_KEY`), for a 401.
 */
export function reportError(err: unknown, writeErr: (text: string) => void, apiKeyGiven = false): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (err instanceof UsageError) {
    // It may quote what it was given (a file's first line, a --data value): escaped for the terminal (CLI probe).
    writeErr(`herald: ${printableLines(err.message)}\n`);
    return EXIT_USAGE;
  }
  // Messages carry the gateway's words (and events' attributes it echoes): escaped for the terminal.
  // A ReportedError may be several lines of herald's own (the values in it escaped where it is made).
  if (err instanceof ReportedError) {
    writeErr(`${printableLines(err.message)}\n`);
    return EXIT_FAILED;
  }
  if (err instanceof HeraldApiError) {
    writeErr(`herald: ${printable(refusalMessage(err, apiKeyGiven))}\n`);
    for (const line of problemLines(err)) writeErr(`  ${printable(line)}\n`);
    return EXIT_FAILED;
  }
  if (err instanceof HeraldConnectionError) {
    writeErr(`herald: ${printable(err.message)} (is it running? set --url or HERALD_URL)\n`);
    return EXIT_FAILED;
  }
  // A 2xx whose body has another shape than the contract's, or is no JSON at all (not a Herald gateway,
  // or another version), fails where the command reads it: say so rather than pass on JavaScript's words alone.
  if (err instanceof TypeError || err instanceof SyntaxError) {
    writeErr(
      `herald: the gateway's answer is not what this herald expects (is --url a Herald gateway of version ${HERALD_VERSION}?): ${printable(err.message)}\n`,
    );
    return EXIT_FAILED;
  }
  if (err instanceof Error && err.name === 'TimeoutError') {
    writeErr('herald: the gateway did not answer in time (--timeout, HERALD_TIMEOUT)\n');
    return EXIT_FAILED;
  }
  writeErr(`herald: ${printable(err instanceof Error ? err.message : String(err))}\n`);
  return EXIT_FAILED;
}

/**
 * The problem's `errors`, one line each (`index` prefixed for batches), unless it only repeats
 * `detail`. `lineOfIndex` turns a batch index into a place in the user's input.
 */
export function problemLines(err: HeraldApiError, lineOfIndex?: (index: number) => string): string[] {
  const problem = err.problem;
  if (!problem) return [];
  const listed = problem.errors
    .filter((v) => v.message !== problem.detail || v.attribute !== undefined || v.index !== undefined)
    .map((v) => {
      const where = v.index === undefined ? '' : `${lineOfIndex ? lineOfIndex(v.index) : `event ${v.index}`}: `;
      return `- ${where}${v.attribute ? `${text(v.attribute)}: ` : ''}${text(v.message)}`;
    });
  // As many lines as a gateway lists (CLI probe: a hostile one's 100,000 were all printed), the rest counted.
  const lines = listed.slice(0, MAX_PROBLEM_ERRORS);
  const total = problem.truncated && Number.isSafeInteger(problem.totalErrors) ? problem.totalErrors! : problem.errors.length;
  const more = Math.max(0, total - problem.errors.length) + (listed.length - lines.length);
  if (more > 0) lines.push(`… and ${more} more`);
  return lines;
}

/** A problem's field as text: a string as it is, anything else (a hostile gateway's object) as JSON, not `[object Object]`. */
const text = (value: unknown): string => (typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value)));
