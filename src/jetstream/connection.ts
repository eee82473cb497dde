import fs from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { NatsConfig } from '../config';
import { StartupError } from '../errors';
import { natsReason } from './nats-errors';

/** How long the first connection may take before start-up fails. */
const CONNECT_TIMEOUT_MS = 10_000;

function readSetting(file: string, variable: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new StartupError(`cannot read ${variable} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** nats.js options from the HERALD_NATS_* settings; files are read now, so a bad path fails start-up with its variable named. */
function connectionOptions(nats: Readonly<NatsConfig>): ConnectionOptions {
  const options: ConnectionOptions = {
    servers: nats.servers,
    name: 'herald',
    // Reconnect for ever, to any server of the cluster (those given and those it announces).
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    timeout: CONNECT_TIMEOUT_MS,
    pingInterval: 10_000,
  };
  if (nats.credsFile !== undefined) options.authenticator = credsAuthenticator(readSetting(nats.credsFile, 'HERALD_NATS_CREDS'));
  if (nats.tlsCaFile !== undefined) options.tls = { ca: readSetting(nats.tlsCaFile, 'HERALD_NATS_TLS_CA').toString('utf8') };
  else if (nats.servers.some((s) => s.startsWith('tls://'))) options.tls = {};
  return options;
}

/**
 * Connects to the cluster (reconnecting for ever afterwards) and logs what the connection goes
 * through: a disconnect at `warn`, a reconnect at `info`.
 * @throws StartupError when no server answers at start-up, naming HERALD_NATS_SERVERS
 */
export async function connectToCluster(nats: Readonly<NatsConfig>, log: Logger): Promise<NatsConnection> {
  const options = connectionOptions(nats);
  let nc: NatsConnection;
  try {
    nc = await connect(options);
  } catch (err) {
    throw new StartupError(`cannot connect to NATS at ${nats.servers.join(',')}: ${natsReason(err)} (HERALD_NATS_SERVERS)`);
  }
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect') log.warn({ server: String(status.data) }, 'disconnected from a NATS server; reconnecting');
      else if (status.type === 'reconnect') log.info({ server: String(status.data) }, 'reconnected to NATS');
      else if (status.type === 'error') log.warn({ err: status.data }, 'NATS connection error');
    }
  })();
  return nc;
}
