/**
 * Child processes of the suite: the gateway (`node dist/main.js`), ceilings,
 * the receiver and load generators. Every child is registered so an aborted
 * run never leaves one behind (each is killed by its own pid).
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { nowMs } from './stats';

export const ROOT = path.resolve(__dirname, '..', '..');
export const PROCS = path.join(__dirname, '..', 'procs');
/** The gateway entry point; `snapshotGateway` points it at a private copy. */
export let MAIN_JS = path.join(ROOT, 'dist', 'main.js');

/**
 * Copies the built gateway (dist/, and the migrations/, openapi/ and package.json it reads
 * relative to itself) to dist-bench/gateway and runs that copy, so that a
 * rebuild of dist/ by someone else during the run cannot change the code
 * under test halfway through. node_modules still resolves from the repository.
 */
export function snapshotGateway(): string {
  const dest = path.join(ROOT, 'dist-bench', 'gateway');
  fs.rmSync(dest, { recursive: true, force: true });
  for (const dir of ['dist', 'migrations', 'openapi']) {
    if (fs.existsSync(path.join(ROOT, dir))) fs.cpSync(path.join(ROOT, dir), path.join(dest, dir), { recursive: true });
  }
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dest, 'package.json'));
  MAIN_JS = path.join(dest, 'dist', 'main.js');
  return dest;
}

/** The baseline gateway's entry point when `--baseline=<ref>` was given (see `buildBaseline`). */
export let BASELINE_JS: string | undefined;

/**
 * Builds the gateway of a git ref into dist-bench/baseline (dist/, migrations/,
 * openapi/ — the same layout as the snapshot): `git archive` of the ref into a
 * temporary directory, compiled with this checkout's TypeScript and
 * node_modules (symlinked), copied, and the temporary directory removed. Only
 * reads the repository. node_modules resolves from the repository at run time.
 */
export function buildBaseline(ref: string, log: (msg: string) => void): { ref: string; commit: string; dir: string } {
  const git = (args: string[], opts: { input?: Buffer } = {}) =>
    execFileSync('git', ['-C', ROOT, ...args], { input: opts.input, maxBuffer: 1 << 30 });
  const commit = git(['rev-parse', '--short', '--verify', `${ref}^{commit}`])
    .toString()
    .trim();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-baseline-'));
  const dest = path.join(ROOT, 'dist-bench', 'baseline');
  try {
    const wanted = ['src', 'migrations', 'openapi', 'tsconfig.json', 'tsconfig.build.json', 'package.json'];
    const present = git(['ls-tree', '--name-only', commit])
      .toString()
      .split('\n')
      .filter((n) => wanted.includes(n));
    const tar = git(['archive', '--format=tar', commit, ...present]);
    execFileSync('tar', ['-x', '-C', tmp], { input: tar, maxBuffer: 1 << 30 });
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(tmp, 'node_modules'), 'dir');
    log(`baseline: compiling ${ref} (${commit})`);
    execFileSync(
      process.execPath,
      [
        path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
        '-p',
        path.join(tmp, 'tsconfig.build.json'),
        '--outDir',
        path.join(tmp, 'dist'),
      ],
      {
        stdio: ['ignore', 'inherit', 'inherit'],
        timeout: 300_000,
      },
    );
    fs.rmSync(dest, { recursive: true, force: true });
    // package.json: the gateway reads its version from it.
    for (const dir of ['dist', 'migrations', 'openapi', 'package.json']) {
      if (fs.existsSync(path.join(tmp, dir))) fs.cpSync(path.join(tmp, dir), path.join(dest, dir), { recursive: true });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  BASELINE_JS = path.join(dest, 'dist', 'main.js');
  if (!fs.existsSync(BASELINE_JS)) throw new Error(`baseline ${ref}: ${BASELINE_JS} was not built`);
  return { ref, commit, dir: dest };
}

const live = new Set<ChildProcess>();

/** Registers a child so that `killAll` ends it if the suite is aborted. */
export function track(child: ChildProcess): ChildProcess {
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

/** Kills every child still running (SIGKILL, one pid at a time). Called on exit and on SIGINT. */
export function killAll(): void {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  live.clear();
}

export function exited(child: ChildProcess): Promise<number | string> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode ?? -1);
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
}

/** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 30_000): Promise<number | string> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode ?? child.signalCode ?? -1;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const code = await exited(child);
  clearTimeout(timer);
  return code;
}

export const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- IPC children (load generator, receiver) ---------------------------------

export interface RpcChild {
  child: ChildProcess;
  call<T = Record<string, unknown>>(type: string, payload?: Record<string, unknown>): Promise<T>;
  stop(): Promise<void>;
}

/** Forks `procs/<name>.js` and waits for its `{ type: 'ready' }`. Requests carry `rid`; replies echo it. */
export async function forkRpc(name: string): Promise<RpcChild> {
  const child = track(
    fork(path.join(PROCS, `${name}.js`), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' }),
  );
  const waiting = new Map<number, { resolve: (v: never) => void; reject: (e: Error) => void }>();
  let nextRid = 1;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} not ready within 30 s`));
    }, 30_000);
    child.once('message', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready`)));
  });
  child.on('message', (msg: { rid?: number; error?: string }) => {
    if (msg.rid === undefined) return;
    const w = waiting.get(msg.rid);
    if (!w) return;
    waiting.delete(msg.rid);
    if (msg.error) w.reject(new Error(`${name}: ${msg.error}`));
    else w.resolve(msg as never);
  });
  child.on('exit', (code) => {
    for (const w of waiting.values()) w.reject(new Error(`${name} exited (${code})`));
    waiting.clear();
  });
  return {
    child,
    call<T>(type: string, payload: Record<string, unknown> = {}): Promise<T> {
      const rid = nextRid++;
      return new Promise<T>((resolve, reject) => {
        waiting.set(rid, { resolve: resolve as (v: never) => void, reject });
        child.send({ rid, type, ...payload });
      });
    },
    async stop() {
      await stopChild(child, 5000);
    },
  };
}

// ---- plain children printing JSON -------------------------------------------

/** Runs `procs/<name>.js args…` to completion and parses the last stdout line as JSON. Bounded by `timeoutMs`. */
export function runJson<T>(name: string, args: string[], timeoutMs: number): Promise<T> {
  const child = track(spawn(process.execPath, [path.join(PROCS, `${name}.js`), ...args], { stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return exited(child).then((code) => {
    clearTimeout(timer);
    const last = out.trim().split('\n').pop();
    if (code !== 0 || !last) throw new Error(`${name} failed (${code}): ${err.slice(-2000)}`);
    return JSON.parse(last) as T;
  });
}

/** Starts a server child that prints `{"port":N}` on its first stdout line. */
export function startServer(name: string, args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = track(spawn(process.execPath, [path.join(PROCS, `${name}.js`), ...args], { stdio: ['ignore', 'pipe', 'inherit'] }));
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('exit', () => clearTimeout(timer));
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const nl = out.indexOf('\n');
      if (nl !== -1) {
        clearTimeout(timer);
        resolve({ child, port: (JSON.parse(out.slice(0, nl)) as { port: number }).port });
      }
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before listening`)));
  });
}

// ---- the gateway --------------------------------------------------------------

export interface GatewayOptions {
  dataDir: string;
  fsync?: 'always' | 'interval' | 'never';
  partitions?: number;
  logLevel?: string;
  /** Write a V8 CPU profile into this directory when the gateway exits (SIGTERM). */
  cpuProfDir?: string;
  /** Sampling interval of that profile in µs (V8's default is 1000). */
  cpuProfIntervalUs?: number;
  env?: Record<string, string>;
  /** Run the `--baseline` build instead of the current gateway. */
  baseline?: boolean;
}

export interface GatewayChild {
  url: string;
  pid: number;
  child: ChildProcess;
  /** ms from spawn to the "herald listening" line. */
  listeningMs: number;
  spawnedAt: number;
  /** Parsed JSON log lines so far. */
  logs(): Record<string, unknown>[];
  stop(): Promise<number | string>;
  kill(): Promise<number | string>;
}

function baselineJs(): string {
  if (!BASELINE_JS) throw new Error('a baseline gateway was asked for but --baseline was not given');
  return BASELINE_JS;
}

/** Starts `node dist/main.js` on a free port with only the given HERALD_* variables (plus PATH). */
export function startGateway(opts: GatewayOptions): Promise<GatewayChild> {
  const nodeArgs = opts.cpuProfDir
    ? [
        '--cpu-prof',
        `--cpu-prof-dir=${opts.cpuProfDir}`,
        ...(opts.cpuProfIntervalUs ? [`--cpu-prof-interval=${opts.cpuProfIntervalUs}`] : []),
      ]
    : [];
  const spawnedAt = nowMs();
  const child = track(
    spawn(process.execPath, [...nodeArgs, opts.baseline ? baselineJs() : MAIN_JS], {
      env: {
        PATH: process.env.PATH ?? '',
        HERALD_HOST: '127.0.0.1',
        HERALD_PORT: '0',
        HERALD_DATA_DIR: opts.dataDir,
        HERALD_FSYNC: opts.fsync ?? 'always',
        HERALD_PARTITIONS: String(opts.partitions ?? 16),
        HERALD_LOG_LEVEL: opts.logLevel ?? 'info',
        ...opts.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const lines: Record<string, unknown>[] = [];
  let partial = '';
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  return new Promise((resolve, reject) => {
    let listening = false;
    // Bounded: a gateway that never listens (a recovery that hangs) is killed and the case fails.
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.stdout!.on('data', (c: Buffer) => {
      partial += c.toString();
      let nl: number;
      while ((nl = partial.indexOf('\n')) !== -1) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (lines.length < 10_000) lines.push(parsed);
        if (!listening && parsed.msg === 'herald listening') {
          listening = true;
          clearTimeout(timer);
          resolve({
            url: String(parsed.url),
            pid: child.pid!,
            child,
            listeningMs: nowMs() - spawnedAt,
            spawnedAt,
            logs: () => lines,
            stop: () => stopChild(child),
            kill: async () => {
              child.kill('SIGKILL');
              return exited(child);
            },
          });
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (!listening) reject(new Error(`gateway exited (${code}) before listening: ${stderr}`));
    });
  });
}

// ---- control-plane HTTP ---------------------------------------------------------

export async function httpJson<T = Record<string, unknown>>(
  method: 'GET' | 'POST' | 'DELETE',
  url: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await request(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  const text = await res.body.text();
  let parsed: unknown = undefined;
  try {
    parsed = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    parsed = { text };
  }
  return { status: res.statusCode, body: parsed as T };
}

/** Polls `GET /readyz` until 200; resolves with the time it answered 200. Bounded by `timeoutMs`. */
export async function waitReady(url: string, timeoutMs: number): Promise<number> {
  const deadline = nowMs() + timeoutMs;
  while (nowMs() < deadline) {
    try {
      const res = await request(`${url}/readyz`, { headersTimeout: 2000, bodyTimeout: 2000 });
      await res.body.dump();
      if (res.statusCode === 200) return nowMs();
    } catch {
      // not listening yet
    }
    await delay(5);
  }
  throw new Error(`${url} not ready within ${timeoutMs} ms`);
}

// ---- memory -----------------------------------------------------------------------

/** A process's CPU time so far, user + system, in seconds (fields 14 and 15 of /proc/<pid>/stat); 0 once it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The fields after the command name (which may hold spaces, inside parentheses).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return 0;
  }
}

/** Samples VmRSS of a pid from /proc every `everyMs`; `stop()` returns the max and a coarse timeline (MB). */
export function sampleRss(pid: number, everyMs = 100) {
  let maxKb = 0;
  const timeline: { t: number; mb: number }[] = [];
  const started = nowMs();
  let last = 0;
  const read = () => {
    try {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      const m = /VmRSS:\s+(\d+) kB/.exec(status);
      if (!m) return;
      const kb = Number(m[1]);
      maxKb = Math.max(maxKb, kb);
      const t = nowMs() - started;
      if (t - last >= 1000 || timeline.length === 0) {
        timeline.push({ t: Math.round(t / 100) / 10, mb: Math.round(kb / 1024) });
        last = t;
      }
    } catch {
      // process gone
    }
  };
  read();
  const timer = setInterval(read, everyMs);
  return {
    maxMb: () => Math.round((maxKb / 1024) * 10) / 10,
    stop() {
      clearInterval(timer);
      read();
      return { maxMb: Math.round((maxKb / 1024) * 10) / 10, samplesEverySecond: timeline };
    },
  };
}

/** A port free right now on 127.0.0.1 (for a receiver that must come up later on a known address). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}
