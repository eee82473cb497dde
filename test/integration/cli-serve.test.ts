import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { runHerald, spawnHerald, type RunningCli } from '../helpers/cli';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/** `herald serve` runs the gateway as `node dist/main.js` does; bin/herald.js builds dist/ when it is missing. */
const ROOT = path.resolve(__dirname, '..', '..');
const running: RunningCli[] = [];
afterEach(async () => {
  for (const cli of running.splice(0)) await cli.kill();
});
afterAll(cleanupTmpDirs);

describe('herald serve', () => {
  it('runs the gateway from HERALD_* variables and stops with exit 0 on SIGTERM', async () => {
    const serve = spawnHerald(['serve'], { env: { HERALD_PORT: '0', HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '2' } });
    running.push(serve);
    const [, url] = await serve.waitFor('stdout', /"url":"(http:\/\/127\.0\.0\.1:\d+)"[^\n]*"msg":"herald listening"/, 20_000);
    const published = await runHerald(['publish', '--source', '/cli/serve', '--type', 't', '--id', 's-1', '--json'], { url });
    expect(published.code).toBe(0);
    expect(JSON.parse(published.stdout).results[0]).toMatchObject({ id: 's-1', duplicate: false });
    serve.child.kill('SIGTERM');
    expect(await serve.exited).toBe(0);
    expect(serve.stdout()).toContain('herald stopped');
  });

  it('exits 2 with one line naming a bad setting', async () => {
    const result = await runHerald(['serve'], { env: { HERALD_PORT: 'eighty', HERALD_DATA_DIR: tmpDir() } });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^herald: .*HERALD_PORT/);
  });
});

describe('bin/herald.js in a checkout without dist/', () => {
  it('builds first, with a note on stderr, then runs the command', async () => {
    // A copy of the checkout's shape (sources linked, nothing built), as after `git clone && npm install`.
    const checkout = tmpDir('herald-checkout-');
    fs.mkdirSync(path.join(checkout, 'bin'));
    fs.copyFileSync(path.join(ROOT, 'bin', 'herald.js'), path.join(checkout, 'bin', 'herald.js'));
    for (const name of ['src', 'node_modules']) fs.symlinkSync(path.join(ROOT, name), path.join(checkout, name), 'dir');
    for (const name of ['tsconfig.json', 'tsconfig.build.json']) fs.copyFileSync(path.join(ROOT, name), path.join(checkout, name));
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    // Only the TypeScript part of the build: what the CLI needs (the web console's bundle is not).
    pkg.scripts = { build: 'tsc -p tsconfig.build.json' };
    fs.writeFileSync(path.join(checkout, 'package.json'), JSON.stringify(pkg));

    const child = spawn(process.execPath, [path.join(checkout, 'bin', 'herald.js'), '--version'], { env: { PATH: process.env.PATH } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const code = await new Promise((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    expect({ code, stdout }).toEqual({ code: 0, stdout: `${pkg.version}\n` });
    expect(stderr).toMatch(/^herald: dist\/ is not built yet in .*; building it first \(npm run build\)…\n/);
    expect(fs.existsSync(path.join(checkout, 'dist', 'cli', 'main.js'))).toBe(true);
  }, 150_000);
});
