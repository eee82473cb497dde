import fs from 'node:fs';
import path from 'node:path';

// No Docker engine runs on CI machines, so the image's contract is checked on the Dockerfile itself.
const root = path.resolve(__dirname, '..', '..');
const dockerfile = fs.readFileSync(path.join(root, 'Dockerfile'), 'utf8');
const instructions = dockerfile
  .replace(/\\\n/g, ' ')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'));
const runtime = instructions.slice(instructions.findLastIndex((l) => l.startsWith('FROM ')));

describe('Dockerfile', () => {
  it('builds in one stage and runs from a second, slim one', () => {
    expect(instructions.filter((l) => l.startsWith('FROM '))).toHaveLength(2);
    expect(runtime[0]).toMatch(/^FROM node:20-\S*slim\s*$/);
    expect(instructions.join('\n')).toMatch(/npm prune --omit=dev/);
    expect(runtime).toContain('COPY --from=build /app/dist ./dist');
  });

  it('runs as a non-root user with its data in a volume', () => {
    expect(runtime.some((l) => /^USER (?!root)\S+/.test(l))).toBe(true);
    expect(runtime).toContain('VOLUME /data');
    expect(runtime.join(' ')).toMatch(/HERALD_DATA_DIR=\/data/);
    expect(runtime.join(' ')).toMatch(/HERALD_HOST=0\.0\.0\.0/);
    expect(runtime).toContain('EXPOSE 8080');
  });

  it('checks readiness and lets SIGTERM reach node directly', () => {
    expect(runtime.some((l) => l.startsWith('HEALTHCHECK') && l.includes('/readyz'))).toBe(true);
    expect(runtime[runtime.length - 1]).toBe('CMD ["node", "dist/main.js"]');
  });

  it('ships every file the runtime reads outside dist/', () => {
    for (const dir of ['migrations', 'openapi']) expect(runtime).toContain(`COPY ${dir} ./${dir}`);
    const ignored = fs.readFileSync(path.join(root, '.dockerignore'), 'utf8').split('\n');
    for (const needed of ['src', 'migrations', 'openapi', 'package.json', 'package-lock.json']) expect(ignored).not.toContain(needed);
  });

  it('builds the same JavaScript that npm start runs', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(pkg.scripts.start).toBe('exec node dist/main.js'); // exec: a signal to npm start reaches the gateway
    expect(pkg.scripts.prestart).toBe('npm run build');
    expect(instructions.join('\n')).toMatch(/npm run build/);
  });
});
