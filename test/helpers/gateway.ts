import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { loadConfig } from '../../src/config';
import { startGateway, type Gateway } from '../../src/gateway';
import { startJetStreamGateway, type JetStreamGateway } from '../../src/jetstream-gateway';
import { createLogger } from '../../src/logger';
import type { Logger } from 'pino';
import { startNatsCluster, type NatsCluster } from './nats-cluster';
import { cleanupTmpDirs, tmpDir } from './tmp';

export type Env = Record<string, string | undefined>;

/** Starts the real gateway in-process on an ephemeral port with a fresh (or given) data dir. */
export async function startTestGateway(env: Env = {}): Promise<Gateway & { dataDir: string }> {
  const dataDir = env.HERALD_DATA_DIR ?? tmpDir();
  const config = loadConfig({ HERALD_PORT: '0', HERALD_LOG_LEVEL: 'silent', ...env, HERALD_DATA_DIR: dataDir });
  const gateway = await startGateway(config, { log: createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent') });
  return Object.assign(gateway, { dataDir });
}

/**
 * Starts a gateway on the JetStream engine in-process on an ephemeral port, on the cluster at
 * `servers` (HERALD_NATS_SERVERS). Give two gateways the same HERALD_NATS_PREFIX to make them two
 * nodes of one deployment.
 */
export async function startJetStreamTestGateway(
  servers: string,
  env: Env = {},
  opts: { leaseCheckMs?: number; log?: Logger } = {},
): Promise<JetStreamGateway> {
  const config = loadConfig({
    HERALD_PORT: '0',
    HERALD_LOG_LEVEL: 'silent',
    HERALD_STORE: 'jetstream',
    HERALD_NATS_SERVERS: servers,
    ...env,
  });
  return startJetStreamGateway(config, { log: createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent'), ...opts });
}

/** A NATS cluster for the whole test file, and the JetStream nodes a test starts on it. */
export interface JetStreamClusterFixture {
  /** The cluster: read it inside tests and hooks, once it has started. */
  readonly cluster: NatsCluster;
  /** Starts a node on the cluster (on `servers`, by default every server); closed after the file. */
  start(env: Env, servers?: string): Promise<JetStreamGateway>;
  /** Keeps a node started some other way, so that it is closed after the file. */
  keep(node: JetStreamGateway): JetStreamGateway;
}

/**
 * Starts a NATS cluster of `size` servers (`beforeAll`), then closes every node kept and stops the
 * cluster (`afterAll`): the set-up every JetStream test file had written out for itself.
 */
export function useJetStreamCluster(opts: { size?: number } = {}): JetStreamClusterFixture {
  let cluster: NatsCluster | undefined;
  const nodes: JetStreamGateway[] = [];
  beforeAll(async () => {
    cluster = await startNatsCluster(opts);
  }, 60_000);
  afterAll(async () => {
    for (const node of nodes) await node.close().catch(() => undefined);
    await cluster?.stop();
  }, 60_000);
  const fixture: JetStreamClusterFixture = {
    get cluster() {
      if (!cluster) throw new Error('the file cluster is not running: read cluster inside a test or hook');
      return cluster;
    },
    keep(node) {
      nodes.push(node);
      return node;
    },
    async start(env, servers) {
      return fixture.keep(await startJetStreamTestGateway(servers ?? fixture.cluster.serversEnv, env));
    },
  };
  return fixture;
}

/** A gateway started by {@link startTestGateway}. */
export type TestGateway = Awaited<ReturnType<typeof startTestGateway>>;

/**
 * Starts one gateway for the whole test file (`beforeAll`), then closes it and removes the temp
 * data dirs (`afterAll`). Read `url` inside tests and hooks, once the gateway has started.
 */
export function useGatewayForFile(env: Env = {}): { readonly url: string } {
  let gateway: TestGateway | undefined;
  beforeAll(async () => {
    gateway = await startTestGateway(env);
  });
  afterAll(async () => {
    await gateway?.close();
    cleanupTmpDirs();
  });
  return {
    get url() {
      if (!gateway) throw new Error('the file gateway is not running: read url inside a test or hook');
      return gateway.url;
    },
  };
}

export const MAIN_JS = path.resolve(__dirname, '..', '..', 'dist', 'main.js');

export interface ChildGateway {
  url: string;
  child: ChildProcess;
  output: () => string;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
}

/**
 * Runs the built gateway (`dist/main.js`, built by the integration global setup)
 * as a child process, for crash and signal tests. Resolves once it listens.
 */
export function spawnGateway(env: Env, opts: { fdLimit?: number } = {}): Promise<ChildGateway> {
  // Under a descriptor limit: the shell lowers it, then becomes the gateway (same process, so signals reach it).
  const [command, args] =
    opts.fdLimit === undefined
      ? [process.execPath, [MAIN_JS]]
      : ['/bin/sh', ['-c', `ulimit -n ${opts.fdLimit} && exec "$0" "$1"`, process.execPath, MAIN_JS]];
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH, HERALD_PORT: '0', HERALD_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const match = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"herald listening"/.exec(out);
      if (match) {
        child.stdout!.off('data', onData);
        child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
        resolve({ url: match[1]!, child, output: () => out, exited });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    void exited.then((code) => reject(new Error(`gateway exited (${code}) before listening:\n${out}`)));
  });
}

// ---- Durability and lifecycle helpers -------------------------------------------------

/** A child gateway that was started and must not outlive the test: SIGKILLs it if it still runs. */
export async function killIfRunning(gw: ChildGateway | undefined): Promise<void> {
  if (!gw || gw.child.exitCode !== null || gw.child.signalCode !== null) return;
  gw.child.kill('SIGKILL');
  await gw.exited;
}

/**
 * Returns `start(env)` and `stop(gw)` for in-process gateways ({@link startTestGateway}, `base` under
 * `env`), and registers an `afterEach` that closes, at the end of each test, every one still running.
 */
export function useTestGateways(base: Env = {}): { start(env?: Env): Promise<TestGateway>; stop(gw: TestGateway): Promise<void> } {
  const running: TestGateway[] = [];
  afterEach(async () => {
    for (const gw of running.splice(0)) await gw.close();
  });
  return {
    async start(env = {}) {
      const gw = await startTestGateway({ ...base, ...env });
      running.push(gw);
      return gw;
    },
    async stop(gw) {
      running.splice(running.indexOf(gw), 1);
      await gw.close();
    },
  };
}

/**
 * Returns a `spawn(env)` that starts the built gateway as a child process (see {@link spawnGateway})
 * and registers an `afterEach` that SIGKILLs, at the end of each test, every child it started.
 */
export function useChildGateways(): (env: Env) => Promise<ChildGateway> {
  const running: ChildGateway[] = [];
  afterEach(async () => {
    for (const gw of running.splice(0)) await killIfRunning(gw);
  });
  return async (env) => {
    const gw = await spawnGateway(env);
    running.push(gw);
    return gw;
  };
}

/** Runs the built gateway expecting it to refuse to start; resolves with its exit code and output. */
export function runGatewayUntilExit(env: Env, timeoutMs = 20_000): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [MAIN_JS], {
    env: { PATH: process.env.PATH, HERALD_PORT: '0', HERALD_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  // A gateway that starts after all must not linger: bound the wait and kill it.
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    }),
  );
}

export interface TestEvent {
  source: string;
  id: string;
  type?: string;
  data?: unknown;
}

export interface AppendResultBody {
  id: string;
  source: string;
  partition: number;
  offset: number;
  duplicate: boolean;
}

export const eventKey = (e: { source: string; id: string }) => `${e.source}\u0000${e.id}`;

/** POSTs one event in binary mode (JSON body). */
export async function postBinary(url: string, ev: TestEvent): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(`${url}/events`, {
    method: 'POST',
    headers: {
      'ce-specversion': '1.0',
      'ce-id': ev.id,
      'ce-source': ev.source,
      'ce-type': ev.type ?? 'test.event',
      'content-type': 'application/json',
    },
    body: JSON.stringify(ev.data ?? { id: ev.id }),
  });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

/** POSTs events as one `application/cloudevents-batch+json` request. */
export async function postBatch(url: string, events: TestEvent[]): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(`${url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents-batch+json' },
    body: JSON.stringify(
      events.map((ev) => ({
        specversion: '1.0',
        id: ev.id,
        source: ev.source,
        type: ev.type ?? 'test.event',
        data: ev.data ?? { id: ev.id },
      })),
    ),
  });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

export async function getJson(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

/** `GET /events?source&id`. */
export function lookupEvent(url: string, ev: { source: string; id: string }): Promise<{ status: number; body: any }> {
  return getJson(`${url}/events?${new URLSearchParams({ source: ev.source, id: ev.id })}`);
}

/**
 * `GET /events?source&id` for each event, 16 at a time, answers in the order asked: the suites check
 * thousands of acknowledged events after a crash, and one request at a time spent seconds waiting.
 */
export async function lookupEvents<T extends { source: string; id: string }>(
  url: string,
  evs: readonly T[],
): Promise<{ ev: T; status: number; body: any }[]> {
  const found: { ev: T; status: number; body: any }[] = new Array(evs.length);
  let next = 0;
  const worker = async () => {
    while (next < evs.length) {
      const i = next++;
      const ev = evs[i]!;
      found[i] = { ev, ...(await lookupEvent(url, ev)) };
    }
  };
  await Promise.all(Array.from({ length: Math.min(16, evs.length) }, worker));
  return found;
}

/** Next offset of each partition, from `GET /partitions`. */
export async function partitionHeads(url: string): Promise<number[]> {
  const { body } = await getJson(`${url}/partitions`);
  return (body.partitions as { partition: number; headOffset: number }[]).map((p) => p.headOffset);
}

export interface ReadEvent {
  partition: number;
  offset: number;
  event: Record<string, unknown> & { id: string; source: string };
}

/** Every stored event, paging through each partition with `GET /partitions/{p}/events`. */
export async function readAllEvents(url: string, pageSize = 1000): Promise<ReadEvent[]> {
  const heads = await partitionHeads(url);
  const all: ReadEvent[] = [];
  for (let p = 0; p < heads.length; p++) {
    let from = 0;
    for (let pages = 0; pages < 10_000; pages++) {
      const { status, body } = await getJson(`${url}/partitions/${p}/events?from=${from}&limit=${pageSize}`);
      if (status !== 200) throw new Error(`GET /partitions/${p}/events answered ${status}`);
      if (body.events.length === 0) break;
      all.push(...body.events);
      from = body.nextOffset;
    }
  }
  return all;
}

/** Segment files of a data dir's log, oldest first. */
export function segmentFiles(dataDir: string): string[] {
  const dir = path.join(dataDir, 'wal');
  return fs
    .readdirSync(dir)
    .filter((f) => /^\d{20}\.seg$/.test(f))
    .sort()
    .map((f) => path.join(dir, f));
}

/** Byte offsets just past each intact record of a segment file (independent of the gateway's own scanner). */
export function recordEnds(file: string): number[] {
  const buf = fs.readFileSync(file);
  // Version-2 checksums are seeded with the CRC-32 of the log's secret key (`wal/frame.key`).
  const keyFile = path.join(path.dirname(file), 'frame.key');
  const seed = fs.existsSync(keyFile) ? crc32(Buffer.from(fs.readFileSync(keyFile, 'utf8').trim(), 'hex')) : 0;
  const ends: number[] = [];
  let at = 0;
  while (at + 8 <= buf.length) {
    const length = 8 + buf.readUInt32LE(at);
    if (at + length > buf.length) break;
    const lengthCrc = crc32(buf.subarray(at, at + 4), seed);
    if (crc32(buf.subarray(at + 8, at + length), lengthCrc) !== buf.readUInt32LE(at + 4)) break;
    at += length;
    ends.push(at);
  }
  return ends;
}
