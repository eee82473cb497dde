import fs from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import request from 'supertest';
import pino from 'pino';
import YAML from 'yaml';
import { createApp } from '../../src/api/app';
import { createAuthorizer } from '../../src/api/auth';
import { createOpenApiRouter, OPENAPI_FILE } from '../../src/api/openapi-router';
import { createLogger } from '../../src/logger';
import { OPENAPI_FILE as CONTRACT } from '../helpers/openapi';
import { tmpDir, cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const app = () => createApp({ log: createLogger('silent'), authorize: createAuthorizer([]), routers: [createOpenApiRouter()] });

describe('the contract router', () => {
  it('finds openapi/openapi.yaml from src/ and from the build in dist/', () => {
    expect(OPENAPI_FILE).toBe(CONTRACT);
    // The integration global setup builds dist/ first.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- the built file, not the source
    const built = require(path.resolve(__dirname, '../../dist/api/openapi-router.js')) as { OPENAPI_FILE: string };
    expect(built.OPENAPI_FILE).toBe(CONTRACT);
  });

  it('serves the YAML file byte for byte and the same document as JSON', async () => {
    const yaml = await request(app()).get('/openapi.yaml').expect(200);
    expect(yaml.headers['content-type']).toMatch(/^application\/yaml/);
    expect(yaml.text).toBe(fs.readFileSync(CONTRACT, 'utf8'));
    const json = await request(app()).get('/openapi.json').expect(200);
    expect(json.headers['content-type']).toMatch(/^application\/json/);
    expect(json.body).toEqual(YAML.parse(yaml.text));
  });

  it('reads the document once, at start-up', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'openapi.yaml');
    fs.writeFileSync(file, 'openapi: 3.1.0\ninfo: { title: First, version: "1" }\npaths: {}\n');
    const served = createApp({ log: createLogger('silent'), authorize: createAuthorizer([]), routers: [createOpenApiRouter({ file })] });
    fs.writeFileSync(file, 'openapi: 3.1.0\ninfo: { title: Second, version: "1" }\npaths: {}\n');
    expect((await request(served).get('/openapi.json')).body.info.title).toBe('First');
    expect(() => createOpenApiRouter({ file: path.join(dir, 'missing.yaml') })).toThrow(/ENOENT/);
  });

  // Re-probe: since the parse waits for the first request, a damaged file answered 500 with a logged stack
  // and a new parse on every request.
  it('answers a document that does not parse with one logged error, then a short 500 problem, without parsing it again', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'openapi.yaml');
    fs.writeFileSync(file, 'openapi: 3.1.0\ninfo: { title: "unclosed\npaths: {}\n');
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const served = createApp({ log, authorize: createAuthorizer([]), routers: [createOpenApiRouter({ file })] });
    expect((await request(served).get('/openapi.yaml')).status).toBe(200); // served as written
    const parse = jest.spyOn(YAML, 'parse');
    const answers = [];
    for (const url of ['/openapi.json', '/docs', '/openapi.json', '/docs/']) answers.push(await request(served).get(url));
    expect(answers.map((a) => [a.status, a.headers['content-type']])).toEqual(
      Array(4).fill([500, expect.stringMatching(/^application\/problem\+json/)]),
    );
    expect(answers[3]!.body.detail).toMatch(/does not parse/);
    expect(parse).toHaveBeenCalledTimes(1);
    expect(lines.filter((l) => JSON.parse(l).level === 50)).toHaveLength(1);
    parse.mockRestore();
  });

  it('renders the docs page with the Redoc bundle from node_modules, loading nothing from elsewhere', async () => {
    const page = await request(app()).get('/docs').expect(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    const sources = [...page.text.matchAll(/\b(?:src|href)="([^"]*)"/g)].map((m) => m[1]);
    expect(sources).toEqual(['docs/assets/redoc.standalone.js']); // relative, so a path prefix in front of Herald keeps working
    expect(page.text).toContain('Redoc.init(');
    expect(page.text).not.toMatch(/<\/script>[^]*<\/script>[^]*<\/script>/); // the inlined spec cannot close its script early
    expect((await request(app()).get('/docs/').expect(200)).text).toContain('src="assets/redoc.standalone.js"');

    const script = await request(app())
      .get('/docs/assets/redoc.standalone.js')
      .buffer(true)
      .parse((res, done) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done(null, Buffer.concat(chunks)));
      });
    expect(script.status).toBe(200);
    expect(script.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(script.headers['cache-control']).toMatch(/max-age=86400/);
    // Redoc's bundle, but for its footer logo from cdn.redoc.ly (openapi-docs-browser.test.ts: no request leaves the gateway).
    const installed = fs.readFileSync(require.resolve('redoc/bundles/redoc.standalone.js'), 'utf8');
    expect(installed).toContain('"https://cdn.redoc.ly/redoc/logo-mini.svg"');
    expect((script.body as Buffer).toString('utf8')).toBe(installed.replace('"https://cdn.redoc.ly/redoc/logo-mini.svg"', '"data:,"'));
    const cached = await request(app()).get('/docs/assets/redoc.standalone.js').set('if-none-match', String(script.headers.etag));
    expect(cached.status).toBe(304);
  });

  it('escapes the inlined document so text in it cannot end the script', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'openapi.yaml');
    fs.writeFileSync(file, 'openapi: 3.1.0\ninfo: { title: "</script><script>alert(1)</script>", version: "1" }\npaths: {}\n');
    const page = await request(
      createApp({ log: createLogger('silent'), authorize: createAuthorizer([]), routers: [createOpenApiRouter({ file })] }),
    )
      .get('/docs')
      .expect(200);
    expect(page.text).not.toContain('<script>alert(1)');
    expect(page.text).toContain('\\u003c/script>');
  });

  it('serves the docs page unframeable, and a problem that repeats a path as never-HTML (console probe)', async () => {
    for (const route of ['/docs', '/docs/']) {
      const page = await request(app()).get(route).expect(200);
      expect(page.headers['x-frame-options']).toBe('DENY');
      expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
      expect(page.headers['x-content-type-options']).toBe('nosniff');
    }
    const missing = await request(app()).get('/docs/assets/<script>alert(1)</script>.html').expect(404);
    expect(missing.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(missing.headers['x-content-type-options']).toBe('nosniff');
  });
});

describe('the contract router under pipelined GETs whose answers are not read', () => {
  it.each(['/openapi.json'])(
    'holds the answers to ~1,600 GET %s in one 64 KiB write without a copy each (HTTP probe: 190 MB per connection, no key)',
    async (target) => {
      const server = http.createServer(app());
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const { port } = server.address() as AddressInfo;
      await request(app()).get(target).expect(200); // prepared (parsed) before measuring
      const line = `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`;
      const requests = Math.floor(65536 / line.length);
      global.gc?.();
      const held = () => process.memoryUsage().arrayBuffers + process.memoryUsage().heapUsed;
      const before = held();
      const socket = net.connect(port, '127.0.0.1');
      socket.pause(); // never reads an answer
      await new Promise<void>((resolve) => socket.on('connect', resolve));
      socket.write(line.repeat(requests));
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const grown = held() - before;
      socket.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      // Each answer is over 100 KB: a copy per answer would be well over 100 MB.
      expect(grown).toBeLessThan(32 * 1024 * 1024);
    },
    30_000,
  );
});
