/**
 * nats-server as a peer to measure Herald against (peer-jetstream). The suite
 * installs nothing: it runs the `nats-server` found on PATH or at Debian's
 * location, and skips the case when there is none.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { delay, exited, freePort, stopChild, track } from './children';
import { nowMs } from './stats';

/** Where Debian's `nats-server` package puts the binary (not on a non-root user's PATH). */
const DEBIAN_PATH = '/usr/sbin/nats-server';

const isExecutable = (file: string) => {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
};

/** `nats-server` on PATH, else /usr/sbin/nats-server; undefined when neither exists. */
export function findNatsServer(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, 'nats-server'))) return path.join(dir, 'nats-server');
  }
  return isExecutable(DEBIAN_PATH) ? DEBIAN_PATH : undefined;
}

/** `nats-server --version`, e.g. `v2.9.10`. */
export function natsServerVersion(bin: string): string {
  try {
    return execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 })
      .trim()
      .replace(/^nats-server:\s*/, '');
  } catch {
    return 'unknown';
  }
}

export interface NatsServer {
  child: ChildProcess;
  port: number;
  url: string;
  stop(): Promise<number | string>;
}

/** Connects, retrying until `deadline` (ms, `nowMs` clock) or until `child` exits. */
export async function connectWhenUp(url: string, deadline: number, child?: ChildProcess): Promise<NatsConnection> {
  let last: unknown;
  while (nowMs() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) break;
    try {
      return await connect({ servers: url, timeout: 1000, reconnect: false });
    } catch (err) {
      last = err;
      await delay(50);
    }
  }
  throw new Error(`nats-server at ${url} did not accept a connection: ${(last as Error | undefined)?.message ?? 'it exited'}`);
}

/**
 * Starts `nats-server -js -a 127.0.0.1 -p <free port> -sd <storeDir>` and waits (at most 30 s) until it
 * accepts a client connection with JetStream enabled.
 */
export async function startNatsServer(bin: string, storeDir: string): Promise<NatsServer> {
  const port = await freePort();
  const child = track(spawn(bin, ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir], { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const url = `127.0.0.1:${port}`;
  try {
    const nc = await connectWhenUp(url, nowMs() + 30_000, child);
    try {
      await (await nc.jetstreamManager()).getAccountInfo();
    } finally {
      await nc.close();
    }
  } catch (err) {
    child.kill('SIGKILL');
    await exited(child);
    throw new Error(`${(err as Error).message}; nats-server stderr: ${stderr.slice(-1500)}`);
  }
  return { child, port, url, stop: () => stopChild(child, 10_000) };
}

export interface NatsClusterProcs {
  servers: NatsServer[];
  /** `HERALD_NATS_SERVERS`: every server's client URL, comma-separated. */
  serversEnv: string;
  stop(): Promise<void>;
}

/**
 * A cluster of `size` JetStream servers on loopback (one config file and store dir each, routes to
 * every other), ready once its JetStream meta leader answers an account info request (at most 60 s).
 */
export async function startNatsCluster(bin: string, dir: string, size = 3): Promise<NatsClusterProcs> {
  const clientPorts: number[] = [];
  const routePorts: number[] = [];
  for (let i = 0; i < size; i++) {
    clientPorts.push(await freePort());
    routePorts.push(await freePort());
  }
  const servers: NatsServer[] = [];
  const stop = async () => {
    await Promise.all(servers.map((s) => s.stop()));
  };
  try {
    for (let i = 0; i < size; i++) {
      const store = path.join(dir, `n${i + 1}`);
      fs.mkdirSync(store, { recursive: true });
      const routes = routePorts.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`);
      const conf = [
        `server_name: n${i + 1}`,
        `listen: 127.0.0.1:${clientPorts[i]}`,
        `jetstream { store_dir: "${store}" }`,
        `cluster { name: herald-bench, listen: 127.0.0.1:${routePorts[i]}, routes: [ ${routes.join(', ')} ] }`,
      ].join('\n');
      const file = path.join(dir, `n${i + 1}.conf`);
      fs.writeFileSync(file, conf);
      const child = track(spawn(bin, ['-c', file], { stdio: ['ignore', 'ignore', 'ignore'] }));
      servers.push({ child, port: clientPorts[i]!, url: `127.0.0.1:${clientPorts[i]}`, stop: () => stopChild(child, 10_000) });
    }
    const deadline = nowMs() + 60_000;
    const nc = await connectWhenUp(servers[0]!.url, deadline);
    try {
      for (;;) {
        try {
          await (await nc.jetstreamManager()).getAccountInfo();
          break;
        } catch (err) {
          if (nowMs() > deadline) throw err;
          await delay(250);
        }
      }
    } finally {
      await nc.close();
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { servers, serversEnv: servers.map((s) => `nats://${s.url}`).join(','), stop };
}
