// Light imports only: the signal handlers go in before the modules that take about half a second to
// load (zod, express, SQLite, pino) are required, so a signal meanwhile stops the start with exit 0.
import { StartupError } from './errors';
import { HERALD_VERSION } from './version';
import { limitHeapGrowth } from './heap-growth';
import type { Logger } from './logger';

const USAGE = `Usage: herald [--version | --help]

Runs the Herald event gateway. Everything else is configured with environment variables:

`;

/** A message as one line: control characters (a newline in a data dir's path) written as escapes (start-up probe). */
const oneLine = (message: string): string =>
  // eslint-disable-next-line no-control-regex -- control characters are what is escaped
  message.replace(/[\u0000-\u001f]/g, (c) => JSON.stringify(c).slice(1, -1));

/** `--version` and `--help` answer and exit 0 without starting anything; any other argument is a usage error. */
function handleArguments(args: string[]): void {
  if (args.length === 0) return;
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-v')) {
    process.stdout.write(`${HERALD_VERSION}\n`);
    process.exit(0);
  }
  if (args.length === 1 && (args[0] === '--help' || args[0] === '-h')) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only for --help (see the imports)
    process.stdout.write(USAGE + (require('./config') as typeof import('./config')).configTable());
    process.exit(0);
  }
  // `--version extra`: the one that is not understood is `extra`.
  const unknown = args.find((arg, i) => i > 0 || !['--version', '-v', '--help', '-h'].includes(arg)) ?? args[0];
  process.stderr.write(`herald: unknown argument ${JSON.stringify(unknown)}; try --help\n`);
  process.exit(2);
}

/**
 * Loads the configuration from the environment, starts the gateway and stops it gracefully on
 * SIGTERM/SIGINT/SIGHUP (exit 0). A bad setting or a start-up problem is one line on stderr and exit 2.
 * `node dist/main.js` and `herald serve` both run this.
 */
async function startFromEnv(): Promise<void> {
  let shutdownTimeoutMs = 0;
  let gateway: { log: Logger; close(): Promise<void> } | undefined;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    if (!gateway) {
      // Still starting (an index rebuild, a cluster not answering yet): nothing is acknowledged yet (a
      // JetStream node answers health checks meanwhile), and what start-up writes survives being cut
      // (as by a crash). Stopped at once.
      process.stderr.write(`herald: stopped during start-up (${signal}): nothing was acknowledged\n`);
      process.exit(0);
    }
    const running = gateway;
    running.log.info({ signal }, 'shutting down: finishing in-flight requests, flushing the log');
    // close() keeps to HERALD_SHUTDOWN_TIMEOUT_MS itself; this is the backstop if a step hangs anyway.
    setTimeout(() => {
      running.log.error({ timeoutMs: shutdownTimeoutMs }, 'shutdown took too long; exiting');
      process.exit(1);
    }, shutdownTimeoutMs + 5000).unref();
    running.close().then(
      () => process.exit(0),
      (err) => {
        running.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // From before the start: a supervisor stopping a gateway still rebuilding its index gets exit 0, not death by signal.
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A closed terminal or a stray `kill -HUP` (Herald has no reload): a graceful stop, not death by signal
  // (limits probe: exit 129, and under HERALD_FSYNC=interval the next start skipped offsets as after a crash).
  process.on('SIGHUP', () => stop('SIGHUP'));
  (await import('./durable-fs')).createOwnerOnly();
  const { ConfigError, configWarnings, loadConfig } = await import('./config');
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`herald: ${oneLine(err.message)}\n`);
      process.exit(2);
    }
    throw err;
  }
  shutdownTimeoutMs = config.shutdownTimeoutMs;
  // Warned before the engine starts: a JetStream node can wait minutes for its cluster, and a
  // setting it ignores should be said while the operator is still looking (README probe).
  const log = (await import('./logger')).createLogger(config.logLevel);
  const heapLimit = (await import('node:v8')).getHeapStatistics().heap_size_limit;
  for (const warning of configWarnings(process.env, config, heapLimit)) log.warn(warning);
  let started;
  try {
    // The JetStream engine (and the NATS client under it) is loaded only when asked for: the embedded
    // engine's main thread then carries 2 MB less heap for every major collection to mark.
    started =
      config.store === 'jetstream'
        ? await (await import('./jetstream-gateway')).startJetStreamGateway(config, { log })
        : await (await import('./gateway')).startGateway(config, { log });
  } catch (err) {
    if (err instanceof StartupError || err instanceof ConfigError) {
      process.stderr.write(`herald: ${oneLine(err.message)}\n`);
      process.exit(2);
    }
    throw err;
  }
  gateway = started;
}

/** {@link startFromEnv}, any other failure to start exiting 1 with its stack. */
export function serve(): Promise<void> {
  limitHeapGrowth();
  return startFromEnv().catch((err) => {
    process.stderr.write(`herald: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}

// Run as a program (`node dist/main.js`), not when `herald serve` imports it.
if (require.main === module) {
  handleArguments(process.argv.slice(2));
  void serve();
}
