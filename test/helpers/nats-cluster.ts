import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connect, StorageType } from 'nats';

/**
 * A real three-server NATS cluster with JetStream, on loopback, for the JetStream engine's tests:
 * one config file and one store dir per server under a temp dir, ports picked free on 127.0.0.1.
 * Servers come from Debian's `nats-server` package (2.9.10 here): looked for on PATH, then at
 * /usr/sbin/nats-server, where the package puts it.
 */

export const NATS_INSTALL_HINT = 'install it with `apt-get install -y nats-server` (Debian/Ubuntu), or put nats-server on PATH';

/** How long a server may take to accept clients, and the cluster to elect a JetStream meta leader (a busy 2-core CI box). */
const READY_TIMEOUT_MS = 30_000;
const META_LEADER_TIMEOUT_MS = 60_000;
/** One ask for the meta leader: an answer takes milliseconds, a request made before the election gets none. */
const META_LEADER_ASK_MS = 500;

/** The nats-server binary, or undefined when it is not installed. */
export function findNatsServer(): string | undefined {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const dir of [...dirs, '/usr/sbin', '/usr/local/sbin']) {
    const candidate = path.join(dir, 'nats-server');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * `describe` for suites that need nats-server. Without it: under `CI=true` the suite fails (CI must
 * run it: `.ci/run` installs the package); elsewhere it is skipped with one line saying how to install.
 */
export function describeWithNats(name: string, fn: () => void): void {
  if (findNatsServer()) {
    describe(name, fn);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it('needs nats-server', () => {
        throw new Error(`nats-server is not installed: ${NATS_INSTALL_HINT}`);
      });
    });
    return;
  }
  console.warn(`skipping "${name}": nats-server is not installed; ${NATS_INSTALL_HINT}`);
  describe.skip(name, fn);
}

/** Polls `check` every `everyMs` until it returns true; fails with `what` after `timeoutMs`. */
export async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Ports of HERALD_TEST_PORTS (`<first>-<last>`, on a shared machine) already handed out by {@link freePort}. */
let nextTestPort: number | undefined;

/**
 * A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it, or the next free one of HERALD_TEST_PORTS
 * when set; a race with another process is possible, and unlikely).
 */
export async function freePort(): Promise<number> {
  const range = /^(\d+)-(\d+)$/.exec(process.env.HERALD_TEST_PORTS ?? '');
  if (range) {
    // Each Jest worker takes its own slice of the range: workers hand out ports independently, and two probing the
    // same port in turn could both find it free before either binds it.
    const [lo, hi] = [Number(range[1]), Number(range[2])];
    const workers = 2; // jest.config.js's maxWorkers
    const slice = Math.floor((hi - lo + 1) / workers);
    const worker = (Math.max(1, Number(process.env.JEST_WORKER_ID ?? 1)) - 1) % workers;
    const [first, last] = [lo + worker * slice, lo + (worker + 1) * slice - 1];
    for (nextTestPort ??= first; nextTestPort <= last;) {
      const port = nextTestPort++;
      if (await canListen(port)) return port;
    }
    throw new Error(`no free port left in HERALD_TEST_PORTS=${process.env.HERALD_TEST_PORTS}`);
  }
  return canListen(0) as Promise<number>;
}

/** The port listened on (the one asked, or the OS's pick for 0), or false when it is taken. */
async function canListen(port: number): Promise<number | false> {
  const server = net.createServer();
  const ok = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (!ok) return false;
  const bound = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return bound;
}

export interface NatsServerNode {
  name: string;
  url: string;
  clientPort: number;
  clusterPort: number;
  configFile: string;
  storeDir: string;
  /** Whether its process is running (started and not yet exited). */
  running(): boolean;
  /** The server's own output (last 64 KiB), for failure messages. */
  output(): string;
  /** Its process id while it runs (fault injection). */
  pid(): number | undefined;
}

export interface NatsCluster {
  /** `nats://127.0.0.1:<port>` of every server, in order. */
  urls: string[];
  /** The same, comma-separated: a value for HERALD_NATS_SERVERS. */
  serversEnv: string;
  nodes: NatsServerNode[];
  /** SIGKILLs server `i` and waits for it to exit. */
  kill(i: number): Promise<void>;
  /** Starts server `i` again (same config, ports and store dir) and waits until it accepts clients. */
  restart(i: number): Promise<void>;
  /** Waits until the cluster has a JetStream meta leader (account info answers). */
  waitForMetaLeader(timeoutMs?: number): Promise<void>;
  /** Stops every server (SIGKILL: nothing here needs a clean shutdown) and removes the temp dir. */
  stop(): Promise<void>;
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
  out: { text: string };
}

/** Every server started by this process, so that a failing test file cannot leave one behind. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function configText(node: NatsServerNode, clusterName: string, peers: NatsServerNode[]): string {
  const routes = peers.filter((p) => p !== node).map((p) => `nats://127.0.0.1:${p.clusterPort}`);
  return [
    `server_name: ${node.name}`,
    `listen: 127.0.0.1:${node.clientPort}`,
    `jetstream {`,
    `  store_dir: ${JSON.stringify(node.storeDir)}`,
    `  max_memory_store: 64MB`,
    `  max_file_store: 1GB`,
    `}`,
    // One server runs JetStream standalone (a cluster of one needs routes).
    ...(peers.length > 1
      ? [`cluster {`, `  name: ${clusterName}`, `  listen: 127.0.0.1:${node.clusterPort}`, `  routes: [ ${routes.join(', ')} ]`, `}`]
      : []),
    '',
  ].join('\n');
}

/**
 * Starts `size` (default 3) clustered servers with JetStream (1: one standalone server) and waits
 * for the meta leader and for every server to take replicas.
 * @throws when nats-server is not installed, naming how to install it
 */
export async function startNatsCluster(opts: { size?: number } = {}): Promise<NatsCluster> {
  for (let tries = 1; ; tries++) {
    try {
      return await startNatsClusterOnce(opts);
    } catch (err) {
      // A port `freePort` found free was taken before nats-server bound it (other processes pick ports too):
      // new ports, a new cluster (a CI run failed so).
      if (tries >= PORT_RACE_TRIES || !/address already in use/.test((err as Error).message)) throw err;
    }
  }
}

/** Starts of a cluster made again when one of its ports was taken meanwhile. */
const PORT_RACE_TRIES = 3;

async function startNatsClusterOnce(opts: { size?: number }): Promise<NatsCluster> {
  const binary = findNatsServer();
  if (!binary) throw new Error(`nats-server is not installed: ${NATS_INSTALL_HINT}`);
  const size = opts.size ?? 3;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-nats-'));
  const clusterName = `herald-test-${path.basename(dir).replace(/[^A-Za-z0-9]/g, '')}`;
  const nodes: NatsServerNode[] = [];
  const procs: (Running | undefined)[] = [];
  for (let i = 0; i < size; i++) {
    const name = `n${i + 1}`;
    const clientPort = await freePort();
    const clusterPort = await freePort();
    nodes.push({
      name,
      url: `nats://127.0.0.1:${clientPort}`,
      clientPort,
      clusterPort,
      configFile: path.join(dir, `${name}.conf`),
      storeDir: path.join(dir, name),
      running: () => procs[i] !== undefined && procs[i]!.child.exitCode === null && procs[i]!.child.signalCode === null,
      output: () => procs[i]?.out.text ?? '',
      pid: () => procs[i]?.child.pid,
    });
  }
  for (const node of nodes) fs.writeFileSync(node.configFile, configText(node, clusterName, nodes));

  const launch = async (i: number): Promise<void> => {
    const node = nodes[i]!;
    const child = spawn(binary, ['-c', node.configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const out = { text: '' };
    const keep = (chunk: Buffer) => {
      out.text = (out.text + chunk.toString()).slice(-65_536);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    // `close`: the process ended and its output is all read (the cause of an early exit is in it).
    const exited = new Promise<void>((resolve) =>
      child.once('close', () => {
        live.delete(child);
        resolve();
      }),
    );
    procs[i] = { child, exited, out };
    try {
      // A server that exits (a port taken, a bad config) fails the start at once, not after the whole wait.
      let ready = false;
      const exitedFirst = new Promise<void>((_, reject) => {
        void exited.then(() => ready || reject(new Error(`nats-server ${node.name} exited before it accepted clients`)));
      });
      await Promise.race([
        waitUntil(`nats-server ${node.name} to accept clients on ${node.url}`, () => canConnect(node.clientPort), READY_TIMEOUT_MS),
        exitedFirst,
      ]);
      ready = true;
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- ${node.name} output ---\n${out.text}`);
    }
  };

  const kill = async (i: number): Promise<void> => {
    const running = procs[i];
    if (!running || !nodes[i]!.running()) return;
    running.child.kill('SIGKILL');
    await running.exited;
  };

  const waitForMetaLeader = async (timeoutMs = META_LEADER_TIMEOUT_MS): Promise<void> => {
    const servers = nodes.filter((n) => n.running()).map((n) => n.url);
    const nc = await connect({ servers, reconnect: false, timeout: 2000 });
    try {
      // Asked again every 100 ms, each ask bounded by META_LEADER_ASK_MS: asked before the election, a request is
      // not answered at all (was: bounded by 2 s, so every 3-server start waited about 2.25 s for an election of
      // well under a second). The whole wait is still bounded by `timeoutMs`.
      const jsm = await nc.jetstreamManager({ timeout: META_LEADER_ASK_MS, checkAPI: false });
      await waitUntil('a JetStream meta leader', async () => (await jsm.getAccountInfo(), true), timeoutMs, 100);
    } finally {
      await nc.close();
    }
  };

  /**
   * Waits until a stream with a replica on every server can be created: the meta leader is elected
   * before every server has joined as a JetStream peer, and until then an R3 bucket is refused
   * ("no suitable peers for placement"), which a busy machine showed at the start of a test file.
   */
  const waitForPlacement = async (timeoutMs = META_LEADER_TIMEOUT_MS): Promise<void> => {
    const nc = await connect({ servers: nodes.map((n) => n.url), reconnect: false, timeout: 2000 });
    try {
      const jsm = await nc.jetstreamManager({ timeout: 2000, checkAPI: false });
      const name = 'herald_test_placement';
      await waitUntil(
        `a stream placed on all ${size} servers`,
        async () => {
          await jsm.streams.add({ name, subjects: [`${name}.>`], num_replicas: size, storage: StorageType.Memory });
          await jsm.streams.delete(name);
          return true;
        },
        timeoutMs,
        250,
      );
    } finally {
      await nc.close();
    }
  };

  const stop = async (): Promise<void> => {
    for (let i = 0; i < size; i++) await kill(i);
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    await Promise.all(nodes.map((_, i) => launch(i)));
    await waitForMetaLeader();
    await waitForPlacement();
  } catch (err) {
    await stop();
    throw err;
  }
  const urls = nodes.map((n) => n.url);
  return { urls, serversEnv: urls.join(','), nodes, kill, restart: launch, waitForMetaLeader, stop };
}

/** Whether something accepts a TCP connection on 127.0.0.1:`port` (bounded by a 1 s timeout). */
function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

let prefixes = 0;
/** A prefix no other gateway of this test run uses: streams and buckets of one test never meet another's. */
export function uniquePrefix(label = 't'): string {
  return `${label}${process.pid}_${++prefixes}_${Date.now().toString(36)}`;
}
