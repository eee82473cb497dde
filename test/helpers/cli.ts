import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

/** The `herald` command as a user runs it (`npx herald …` runs this file). */
export const HERALD_BIN = path.resolve(__dirname, '..', '..', 'bin', 'herald.js');

export interface CliResult {
  /** Exit status, or the signal's name. */
  code: number | string;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** HERALD_URL for the command (the gateway under test). */
  url?: string;
  /** More environment; nothing of the test runner's own environment is passed but PATH. */
  env?: Record<string, string>;
  /** Written to the command's stdin (which is closed either way). */
  input?: string | Buffer;
  timeoutMs?: number;
  /** The working directory (default: the test runner's). */
  cwd?: string;
}

function start(args: string[], options: CliOptions): ChildProcess {
  const child = spawn(process.execPath, [HERALD_BIN, ...args], {
    env: { PATH: process.env.PATH, ...(options.url ? { HERALD_URL: options.url } : {}), ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  child.stdin!.end(options.input ?? '');
  return child;
}

/** Runs `herald args…` to its end (killed after `timeoutMs`, 30 s by default). */
export function runHerald(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const child = start(args, options);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    }),
  );
}

/** Runs `herald args… --json` expecting exit 0, and parses its output as one JSON document. */
export async function heraldJson(args: string[], options: CliOptions = {}): Promise<any> {
  const result = await runHerald([...args, '--json'], options);
  if (result.code !== 0) throw new Error(`herald ${args.join(' ')} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

/** A long-running command (`events tail`, `listen`, `serve`) and ways to wait on its output. */
export interface RunningCli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in stdout (or stderr), failing after `timeoutMs`. */
  waitFor(stream: 'stdout' | 'stderr', pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Exit status (or signal name), once it has exited. */
  exited: Promise<number | string>;
  /** Kills it with SIGKILL if it still runs (for afterEach). */
  kill(): Promise<void>;
}

export function spawnHerald(args: string[], options: CliOptions = {}): RunningCli {
  const child = start(args, options);
  const output = { stdout: '', stderr: '' };
  const waiters = new Set<() => void>();
  const changed = () => {
    for (const w of [...waiters]) w();
  };
  child.stdout!.on('data', (c: Buffer) => {
    output.stdout += c.toString();
    changed();
  });
  child.stderr!.on('data', (c: Buffer) => {
    output.stderr += c.toString();
    changed();
  });
  const exited = new Promise<number | string>((resolve) => child.on('close', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    child,
    stdout: () => output.stdout,
    stderr: () => output.stderr,
    exited,
    waitFor(stream, pattern, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = output[stream].match(pattern);
          if (!match) return;
          done();
          resolve(match);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out waiting for ${pattern} on ${stream}:\n--- stdout\n${output.stdout}\n--- stderr\n${output.stderr}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        void exited.then(() => {
          if (!waiters.has(check)) return;
          check();
          if (!waiters.has(check)) return;
          done();
          reject(
            new Error(`herald exited before ${pattern} appeared on ${stream}:\n--- stdout\n${output.stdout}\n--- stderr\n${output.stderr}`),
          );
        });
        check();
      });
    },
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}
