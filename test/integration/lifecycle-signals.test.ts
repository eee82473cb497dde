import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import {
  eventKey,
  lookupEvent,
  MAIN_JS,
  postBatch,
  postBinary,
  readAllEvents,
  useChildGateways,
  type AppendResultBody,
  type ChildGateway,
} from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const spawnChildGateway = useChildGateways();
const start = (dataDir: string): Promise<ChildGateway> => spawnChildGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });

/** Waits (bounded by count) until the child's output shows `text`. */
async function waitForOutput(gw: ChildGateway, text: string): Promise<void> {
  for (let i = 0; i < 1000 && !gw.output().includes(text); i++) await new Promise((r) => setTimeout(r, 10));
  expect(gw.output()).toContain(text);
}

// SIGHUP too: a closed terminal (limits probe: it was death by signal, exit 129, an unclean stop).
describe.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)('%s', (signal) => {
  it('exits 0 and keeps every event acknowledged before it', async () => {
    const dataDir = tmpDir();
    const gw = await start(dataDir);
    const acked: AppendResultBody[] = [];
    for (let i = 0; i < 5; i++) acked.push(...(await postBinary(gw.url, { source: `/${signal}`, id: `b${i}` })).body.results);
    const batch = await postBatch(
      gw.url,
      Array.from({ length: 10 }, (_, i) => ({ source: `/${signal}`, id: `batch${i}` })),
    );
    expect(batch.status).toBe(202);
    acked.push(...batch.body.results);

    gw.child.kill(signal);
    expect(await gw.exited).toBe(0);
    expect(gw.output()).toContain('herald stopped');

    const again = await start(dataDir);
    for (const r of acked) expect((await lookupEvent(again.url, r)).body).toMatchObject({ partition: r.partition, offset: r.offset });
    expect((await readAllEvents(again.url)).map((e) => eventKey(e.event)).sort()).toEqual(acked.map(eventKey).sort());
  });
});

describe('npm start', () => {
  it('stops the gateway when it gets SIGTERM itself, as a supervisor sends it (probe: npm exited, the gateway ran on orphaned)', async () => {
    const dataDir = tmpDir();
    // `--ignore-scripts` skips `prestart` (the build: dist/ is built already), not `start` itself.
    const npm = spawn('npm', ['start', '--ignore-scripts', '--silent'], {
      cwd: path.resolve(__dirname, '../..'),
      env: { ...process.env, HERALD_DATA_DIR: dataDir, HERALD_PORT: '0', HERALD_HOST: '127.0.0.1', HERALD_PARTITIONS: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    npm.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    npm.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<void>((resolve) => npm.on('exit', () => resolve()));
    /** `pid`'s children and theirs (under `sh -c` the gateway is npm's grandchild). */
    const descendants = (pid: number): number[] => {
      let listed = '';
      try {
        listed = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
      } catch {
        return [];
      }
      const direct = listed.trim().split(/\s+/).filter(Boolean).map(Number);
      return [...direct, ...direct.flatMap(descendants)];
    };
    let gateway: number[] = [];
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    try {
      for (let i = 0; i < 600 && !output.includes('"url":"http'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(output).toContain('"url":"http');
      gateway = descendants(npm.pid!);
      expect(gateway.length).toBeGreaterThan(0);
      npm.kill('SIGTERM');
      await exited;
      for (let i = 0; i < 200 && gateway.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
      expect(gateway.filter(alive)).toEqual([]);
      expect(output).toContain('herald stopped');
    } finally {
      for (const pid of gateway.filter(alive)) process.kill(pid, 'SIGKILL');
      if (npm.exitCode === null) npm.kill('SIGKILL');
    }
  }, 60_000);
});

describe('graceful shutdown with a live tail open', () => {
  it('ends the tail cleanly at once and exits (was: held for the 10 s grace, then cut off mid-stream)', async () => {
    const gw = await spawnChildGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1', HERALD_SHUTDOWN_TIMEOUT_MS: '30000' });
    const { hostname, port } = new URL(gw.url);
    const tail = await new Promise<http.IncomingMessage>((resolve, reject) =>
      http.get({ host: hostname, port, path: '/events/stream', agent: false }, resolve).on('error', reject),
    );
    const ended = new Promise<string>((resolve) => {
      tail.on('end', () => resolve('end')); // the chunked stream's last chunk came
      tail.on('aborted', () => resolve('aborted'));
      tail.on('error', () => resolve('error'));
      tail.resume();
    });
    const signalled = Date.now();
    gw.child.kill('SIGTERM');
    expect(await ended).toBe('end');
    expect(await gw.exited).toBe(0);
    // The grace for open requests is min(10 s, half of HERALD_SHUTDOWN_TIMEOUT_MS): 10 s here; the tail held all of it.
    expect(Date.now() - signalled).toBeLessThan(8_000);
  }, 30_000);
});

describe('graceful shutdown with a request in flight', () => {
  it('finishes a large batch still being uploaded at SIGTERM, answers 202, then exits 0 with the batch stored', async () => {
    const dataDir = tmpDir();
    const gw = await start(dataDir);
    const events = Array.from({ length: 2000 }, (_, i) => ({
      specversion: '1.0',
      id: `slow-${i}`,
      source: '/inflight',
      type: 't',
      data: { i },
    }));
    const body = Buffer.from(JSON.stringify(events));
    const { hostname, port } = new URL(gw.url);

    const agent = new http.Agent({ keepAlive: true });
    const response = new Promise<{ status: number; connection?: string; body: any }>((resolve, reject) => {
      const req = http.request({
        hostname,
        port,
        method: 'POST',
        path: '/events',
        agent, // keep-alive, like a load balancer's pooled connection
        headers: {
          'content-type': 'application/cloudevents-batch+json',
          'content-length': body.length,
          // The server answers "100 Continue" once it has the headers: from then on the request is in flight.
          expect: '100-continue',
        },
      });
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode!, connection: res.headers.connection, body: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
        res.on('error', reject);
      });
      req.on('continue', () => {
        void (async () => {
          req.write(body.subarray(0, 1000));
          gw.child.kill('SIGTERM');
          await waitForOutput(gw, 'shutting down'); // the gateway is now closing, with our body half sent
          for (let at = 1000; at < body.length; at += 64 * 1024) {
            req.write(body.subarray(at, at + 64 * 1024));
            await new Promise((r) => setImmediate(r));
          }
          req.end();
        })().catch(reject);
      });
    });

    const res = await response;
    agent.destroy();
    expect(res.status).toBe(202);
    expect(res.body.results).toHaveLength(2000);
    // The pooled connection is let go, so shutdown need not wait out its grace period for it.
    expect(res.connection).toBe('close');
    expect(await gw.exited).toBe(0);

    const again = await start(dataDir);
    const stored = await readAllEvents(again.url);
    expect(stored.map((e) => e.event.id).sort()).toEqual(events.map((e) => e.id).sort());
    for (const r of res.body.results.slice(0, 20) as AppendResultBody[]) {
      expect((await lookupEvent(again.url, r)).body).toMatchObject({ partition: r.partition, offset: r.offset });
    }
  });
});

/**
 * `node dist/main.js` as a JetStream node whose "NATS server" accepts and never speaks, so its start waits on
 * it (10 s); resolves once it has connected, with its output so far and its exit. `close` stops the server.
 */
async function startWaitingForCluster(env: Record<string, string> = {}) {
  const silent = net.createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const child = spawn(process.execPath, [MAIN_JS], {
    env: {
      PATH: process.env.PATH,
      HERALD_PORT: '0',
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: `nats://127.0.0.1:${(silent.address() as AddressInfo).port}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout!.on('data', (c: Buffer) => (output.stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (output.stderr += c.toString()));
  const exited = new Promise<number | string>((resolve) => child.on('close', (code, sig) => resolve(code ?? sig ?? -1)));
  await new Promise<void>((resolve) => silent.once('connection', () => resolve()));
  return { child, output, exited, close: () => silent.close() };
}

describe('a signal during start-up', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s while the gateway still starts: exit 0 saying so (was: killed by the signal)',
    async (signal) => {
      const node = await startWaitingForCluster();
      try {
        node.child.kill(signal);
        expect(await node.exited).toBe(0);
        expect(node.output.stderr).toContain(`stopped during start-up (${signal})`);
      } finally {
        node.close();
      }
    },
  );
});

describe('configuration warnings', () => {
  it('are logged before the engine starts: a JetStream node waiting for its cluster already says what it ignores (README probe: said once connected)', async () => {
    const node = await startWaitingForCluster({ HERALD_RETENTION: '10s' });
    try {
      const warning = 'HERALD_RETENTION is set, but HERALD_STORE is jetstream: ignored';
      for (let i = 0; i < 500 && !node.output.stdout.includes(warning); i++) await new Promise((r) => setTimeout(r, 10));
      expect(node.output.stdout).toContain(warning);
      expect(node.output.stdout).not.toContain('herald listening'); // the cluster never answered: not started
      node.child.kill('SIGTERM');
      expect(await node.exited).toBe(0);
    } finally {
      node.close();
    }
  });
});

/**
 * Starts `node dist/main.js` with a preload (`preload(hold)`: `hold` is the code that writes a marker and
 * waits, blocking the main thread, until told to go on), sends SIGTERM once the marker is written, lets it
 * go on, and resolves with the exit code and everything it wrote.
 */
async function sigtermWhileHeld(preload: (hold: string) => string): Promise<{ code: number | string; output: string }> {
  const dir = tmpDir();
  const marker = `${dir}/held`;
  const hold = `fs.writeFileSync(${JSON.stringify(marker)}, '');
    const until = Date.now() + 3000;
    while (Date.now() < until && !fs.existsSync(${JSON.stringify(marker + '.go')})) {}`;
  const file = `${dir}/preload.js`;
  fs.writeFileSync(
    file,
    `const Module = require('node:module'); const fs = require('node:fs'); const load = Module._load; let held = false;\n${preload(hold)}`,
  );
  const child = spawn(process.execPath, [MAIN_JS], {
    env: { PATH: process.env.PATH, HERALD_PORT: '0', HERALD_DATA_DIR: `${dir}/data`, NODE_OPTIONS: `--require ${file}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
  child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | string>((resolve) => child.on('close', (code, sig) => resolve(code ?? sig ?? -1)));
  for (let i = 0; i < 1000 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 10));
  expect(fs.existsSync(marker)).toBe(true);
  child.kill('SIGTERM');
  fs.writeFileSync(`${marker}.go`, '');
  return { code: await exited, output };
}

describe('a signal while the modules load', () => {
  it('SIGTERM while express is being loaded: exit 0 (was: killed by the signal, exit 143, in the first half second)', async () => {
    // Holds the load of express for up to 3 s, once it has said so: a signal then comes while modules load.
    const { code, output } = await sigtermWhileHeld(
      (hold) => `Module._load = function (request, ...rest) {
  if (request === 'express' && !held) {
    held = true;
    ${hold}
  }
  return load.call(this, request, ...rest);
};`,
    );
    expect(code).toBe(0);
    // Stopped at once, or (the signal seen only once a main-thread step ended) the gateway that start made, gracefully.
    expect(output).toMatch(/stopped during start-up \(SIGTERM\)|"signal":"SIGTERM","msg":"shutting down/);
  });
});

describe('a signal while storage opens', () => {
  it('SIGTERM during recovery or an index rebuild: stopped before it listens (start-up probe: it listened, started delivery, then shut down)', async () => {
    // Holds the opening of index.db (the main thread, synchronously, as a long rebuild does) until told to go on.
    const { code, output } = await sigtermWhileHeld(
      (hold) => `Module._load = function (request, ...rest) {
  const loaded = load.call(this, request, ...rest);
  if (request !== 'better-sqlite3') return loaded;
  return new Proxy(loaded, {
    construct(target, args) {
      if (!held && String(args[0]).endsWith('index.db')) {
        held = true;
        ${hold}
      }
      return Reflect.construct(target, args);
    },
  });
};`,
    );
    expect(code).toBe(0);
    expect(output).toContain('stopped during start-up (SIGTERM)');
    expect(output).not.toContain('herald listening');
  });
});

/** A port free on loopback now (the child takes it a moment later). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('stdout that takes nothing (a full disk under the log file)', () => {
  it('serves, stores and stops on SIGTERM with exit 0, dropping the log lines (storage probe: the gateway hung for good)', async () => {
    const full = fs.openSync('/dev/full', 'w');
    const port = await freePort();
    const child = spawn(process.execPath, [MAIN_JS], {
      env: { PATH: process.env.PATH, HERALD_PORT: String(port), HERALD_DATA_DIR: tmpDir(), HERALD_LOG_LEVEL: 'debug' },
      stdio: ['ignore', full, 'pipe'],
    });
    fs.closeSync(full);
    const exited = new Promise<number | string>((resolve) => child.on('close', (code, sig) => resolve(code ?? sig ?? -1)));
    try {
      const url = `http://127.0.0.1:${port}`;
      for (
        let i = 0;
        i < 100 &&
        (await fetch(`${url}/readyz`)
          .then((r) => r.status)
          .catch(() => 0)) !== 200;
        i++
      )
        await new Promise((r) => setTimeout(r, 100));
      expect((await fetch(`${url}/readyz`)).status).toBe(200);
      expect((await postBinary(url, { source: '/full', id: 'stored' })).status).toBe(202);
      expect((await lookupEvent(url, { source: '/full', id: 'stored' })).status).toBe(200);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('serves and stops on SIGTERM with exit 0 when stdout is a pipe its reader stopped reading (lines are dropped, not waited for)', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [MAIN_JS], {
      env: { PATH: process.env.PATH, HERALD_PORT: String(port), HERALD_DATA_DIR: tmpDir(), HERALD_LOG_LEVEL: 'debug' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | string>((resolve) => child.on('close', (code, sig) => resolve(code ?? sig ?? -1)));
    try {
      // Read until it listens, then stop reading: the pipe fills (about 130 bytes a request at debug).
      await new Promise<void>((resolve) => {
        let seen = '';
        const onData = (chunk: Buffer) => {
          seen += chunk.toString();
          if (!seen.includes('herald listening')) return;
          child.stdout.off('data', onData);
          child.stdout.pause();
          resolve();
        };
        child.stdout.on('data', onData);
      });
      const url = `http://127.0.0.1:${port}`;
      const statuses = new Map<number | string, number>();
      for (let i = 0; i < 3000; i++) {
        const status = await fetch(`${url}/events`, {
          method: 'POST',
          headers: { 'ce-specversion': '1.0', 'ce-id': `e${i}`, 'ce-source': '/stalled', 'ce-type': 't', 'content-type': 'text/plain' },
          body: 'x',
          signal: AbortSignal.timeout(10_000),
        })
          .then((r) => r.status)
          .catch((err: Error) => err.name);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (status !== 202) break;
      }
      expect(Object.fromEntries(statuses)).toEqual({ 202: 3000 });
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
