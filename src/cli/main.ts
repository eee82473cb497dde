/**
 * The `herald` command line (bin/herald.js loads the build of this file). Commands are built with
 * commander on the typed API client (src/client); one file per command group. Exit status: 0 done,
 * 1 the gateway refused the request or could not be reached, 2 a usage error (see errors.ts).
 */
import { Command, Option } from 'commander';
import { HERALD_VERSION } from '../version';
import {
  DEFAULT_TIMEOUT_SECONDS,
  DEFAULT_URL,
  parseApiKey,
  parseBaseUrl,
  parseIntBetween,
  refuseEmptyOnCommandLine,
  refuseEmptyValues,
  type GlobalOptions,
} from './context';
import { registerBackup } from './backup';
import { registerDeadLetters } from './dead-letters';
import { EXIT_FAILED, reportError } from './errors';
import { registerEvents } from './events';
import { registerListen } from './listen';
import type { CliStreams } from './output';
import { registerPublish } from './publish';
import { registerServe } from './serve';
import { stdoutClosed } from './signals';
import { registerSubs } from './subs';

/** The whole command tree. `onServing` is told when `serve` takes over the process. */
export function buildProgram(streams: CliStreams, onServing: () => void = () => undefined): Command {
  const program = new Command('herald')
    .description('Herald, a CloudEvents-over-HTTP event gateway: run it, publish and read events, manage subscriptions.')
    .version(HERALD_VERSION, '-v, --version', 'print the version')
    .addOption(
      new Option('--url <url>', 'base URL of the gateway (no query or fragment)')
        .env('HERALD_URL')
        .default(DEFAULT_URL)
        .argParser(parseBaseUrl),
    )
    .addOption(new Option('--api-key <key>', 'API key, sent as a bearer token').env('HERALD_API_KEY').argParser(parseApiKey))
    .option('--json', "machine output: the API's JSON answer (streams: one JSON object per line)")
    .addOption(
      new Option('--timeout <seconds>', 'how long each request may take, its whole answer included (streams: no limit)')
        .env('HERALD_TIMEOUT')
        .default(DEFAULT_TIMEOUT_SECONDS)
        .argParser(parseIntBetween(1, 86_400)),
    )
    // Settings every subcommand inherits (commander copies them when a subcommand is added).
    .exitOverride()
    .configureOutput({
      writeOut: (text) => streams.stdout.write(text),
      writeErr: (text) => streams.stderr.write(withoutInlineValues(text)),
    })
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(add --help for usage)')
    .showSuggestionAfterError()
    .addHelpText(
      'after',
      `
Every command takes --url, --api-key, --json and --timeout, before or after its name.
Exit status: 0 done; 1 the gateway refused the request (its problem's detail on stderr) or could not be
reached; 2 the command line is wrong.

Examples:
  herald serve
  herald publish --source /shop/orders --type com.example.order.created --data '{"orderId":1001}'
  herald events tail
  herald subs list
  herald listen --forward-to http://localhost:3000/webhooks`,
    );
  registerServe(program, onServing);
  registerPublish(program, streams);
  registerEvents(program, streams);
  registerSubs(program, streams);
  registerDeadLetters(program, streams);
  registerListen(program, streams);
  registerBackup(program, streams);
  refuseEmptyValues(program);
  refuseEmptyOnCommandLine(program);
  return program;
}

/**
 * Runs one command line (`argv` without node and the script) and resolves with its exit status,
 * or with `'serving'` when `herald serve` now runs the gateway (which exits by itself).
 */
export async function runCli(argv: string[], streams: CliStreams): Promise<number | 'serving'> {
  let serving = false;
  const program = buildProgram(streams, () => (serving = true));
  try {
    await program.parseAsync(argv, { from: 'user' });
    return serving ? 'serving' : 0;
  } catch (err) {
    // Global options are parsed before any command runs: set when a request could have been refused.
    const apiKeyGiven = Boolean(program.opts<GlobalOptions>().apiKey);
    return reportError(err, (text) => streams.stderr.write(text), apiKeyGiven);
  }
}

/** The process entry (bin/herald.js calls it): runs `process.argv` and exits with its status. */
export function main(): void {
  const streams = { stdout: process.stdout, stderr: process.stderr };
  // `herald … | head` closing the pipe is not an error. A command with something to undo (listen's
  // subscription) is told, and ends by itself; any other exits at once. Later writes go nowhere.
  let closed = false;
  // A full disk or an I/O error under `> file` is said in one line (CLI probe: a stack trace), the command
  // stops as on a closed pipe (listen deletes its subscription: re-probe), and the status is 1.
  let failed = false;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (closed) return;
    closed = true;
    if (err.code !== 'EPIPE') {
      failed = true;
      process.stderr.write(`herald: cannot write standard output: ${err.code ?? err.message}\n`);
    }
    if (!stdoutClosed()) process.exit(failed ? EXIT_FAILED : 0);
  });
  // Nor is closing stderr's (`2>&1 | head`): notes and errors written after go nowhere, and the status stays
  // the command's (CLI probe: an uncaught EPIPE from a note made it 1).
  process.stderr.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
  });
  void runCli(process.argv.slice(2), streams).then(
    (status) => {
      if (status === 'serving') return;
      const code = failed && status === 0 ? EXIT_FAILED : status;
      process.exitCode = code;
      // Let output drain and the event loop empty; if a pooled connection holds it open, exit anyway.
      setTimeout(() => process.exit(code), 1000).unref();
    },
    (err: unknown) => {
      process.stderr.write(`herald: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(EXIT_FAILED);
    },
  );
}

/**
 * commander's errors quote what was typed: a mistyped `--api-keyy=SECRET` came back whole on stderr
 * (a re-probe). The value after `=` of an option it names is left out.
 */
function withoutInlineValues(text: string): string {
  return text.replace(/(--?[A-Za-z][\w-]*)=[^'"\s]*/g, '$1=…');
}

// Run directly (`node dist/cli/main.js …`) as bin/herald.js runs it: it did nothing and exited 0 (a probe).
if (require.main === module) main();
