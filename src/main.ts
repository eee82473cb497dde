import { ConfigError, loadConfig } from './config';
import { startGateway } from './gateway';
import { StartupError } from './log/local-event-store';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`herald: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  let gateway;
  try {
    gateway = await startGateway(config);
  } catch (err) {
    if (err instanceof StartupError || err instanceof ConfigError) {
      process.stderr.write(`herald: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    gateway.log.info({ signal }, 'shutting down: finishing in-flight requests, flushing the log');
    gateway.close().then(
      () => process.exit(0),
      (err) => {
        gateway.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`herald: failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
