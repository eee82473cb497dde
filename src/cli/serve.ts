import type { Command } from 'commander';

/**
 * `herald serve`: the gateway itself, exactly as `node dist/main.js` (`npm start` without the
 * build): configured by HERALD_* environment variables, stopped by SIGTERM / SIGINT / SIGHUP. The gateway's
 * modules are loaded only here, so the client commands start quickly.
 */
export function registerServe(program: Command, onServing: () => void): void {
  program
    .command('serve')
    .summary('run the gateway (configured with HERALD_* environment variables)')
    .description(
      'Runs the Herald gateway in the foreground, as `npm start` does after its build: it listens on\n' +
        'HERALD_HOST:HERALD_PORT (default 127.0.0.1:8080), keeps its data in HERALD_DATA_DIR (default ./data),\n' +
        "writes JSON logs to stdout, and shuts down gracefully on SIGTERM / SIGINT / SIGHUP. The README's\n" +
        '"Configuration" section lists every variable (or run: node dist/main.js --help).\n' +
        'The --url, --api-key and --json options do not apply.',
    )
    .action(async () => {
      onServing();
      const { serve } = await import('../main');
      await serve();
    });
}
