import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { startGateway, type Gateway } from '../../src/gateway';
import { createLogger } from '../../src/logger';
import { tmpDir } from './tmp';

export type Env = Record<string, string | undefined>;

/** Starts the real gateway in-process on an ephemeral port with a fresh (or given) data dir. */
export async function startTestGateway(env: Env = {}): Promise<Gateway & { dataDir: string }> {
  const dataDir = env.HERALD_DATA_DIR ?? tmpDir();
  const config = loadConfig({ HERALD_PORT: '0', HERALD_LOG_LEVEL: 'silent', ...env, HERALD_DATA_DIR: dataDir });
  const gateway = await startGateway(config, { log: createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent') });
  return Object.assign(gateway, { dataDir });
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
export function spawnGateway(env: Env): Promise<ChildGateway> {
  const child = spawn(process.execPath, [MAIN_JS], {
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
