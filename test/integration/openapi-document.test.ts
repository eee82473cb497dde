import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Router } from 'express';
import { createApp } from '../../src/api/app';
import { createAuthorizer } from '../../src/api/auth';
import { createDeliveriesRouter } from '../../src/api/deliveries-router';
import { createValidationsRouter } from '../../src/api/validations-router';
import { createEventsRouter } from '../../src/api/events-router';
import { createHealthRouter } from '../../src/api/health-router';
import { createIngestHandler } from '../../src/api/ingest-handler';
import { createMetricsRouter } from '../../src/api/metrics-router';
import { createOpenApiRouter, DOCS_ALIAS } from '../../src/api/openapi-router';
import { createConsoleRouter } from '../../src/api/console-router';
import { createSubscriptionsRouter } from '../../src/api/subscriptions-router';
import { startTestGateway } from '../helpers/gateway';
import { createContractChecker, documentedOperations, listRoutes, loadContract, OPENAPI_FILE } from '../helpers/openapi';
import { cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const SRC = path.resolve(__dirname, '..', '..', 'src');
const doc = loadContract();
const operations = documentedOperations(doc);
const key = (r: { method: string; path: string }) => `${r.method.toUpperCase()} ${r.path}`;

/** Served but not documented on their own: `/docs/` is the `/docs` page under a second path. */
const ALIASES = [`GET ${DOCS_ALIAS}`];

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    // swagger-parser's resolver is ESM-only, which jest's CommonJS runtime cannot require: validate in plain node.
    const script = `require('@apidevtools/swagger-parser').validate(process.argv[1]).then(
      (api) => console.log(JSON.stringify({ openapi: api.openapi })),
      (err) => { console.log(JSON.stringify({ error: err.message })); process.exitCode = 1; })`;
    const out = await promisify(execFile)(process.execPath, ['-e', script, OPENAPI_FILE]).catch((err: { stdout: string }) => err);
    expect(JSON.parse(out.stdout)).toEqual({ openapi: '3.1.0' });
  });

  it('holds only schemas ajv compiles in strict mode (JSON Schema 2020-12)', () => {
    const checker = createContractChecker(doc);
    const pointers = checker.schemaPointers();
    expect(pointers.length).toBeGreaterThan(50);
    for (const pointer of pointers) expect(() => checker.compile(pointer)).not.toThrow();
  });

  it('has examples that match their schemas', () => {
    const checker = createContractChecker(doc);
    const examples: [string, unknown][] = [];
    const visit = (node: unknown, at: string) => {
      if (node === null || typeof node !== 'object') return;
      const media = node as { schema?: unknown; example?: unknown; examples?: Record<string, { value?: unknown }> };
      if (media.schema && typeof media.schema === 'object') {
        if ('example' in media) examples.push([`${at}/schema`, media.example]);
        for (const ex of Object.values(media.examples ?? {})) if ('value' in ex) examples.push([`${at}/schema`, ex.value]);
      }
      for (const [k, v] of Object.entries(node)) visit(v, `${at}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`);
    };
    visit(doc.paths, '/paths');
    visit(doc.components?.responses, '/components/responses');
    // Parameters (header, path, query) and the webhooks too: a parameter object holds `schema` and
    // `example` as a media type does (API probe: `herald-delivery-id`'s example failed its own pattern).
    visit(doc.components?.parameters, '/components/parameters');
    visit(doc.webhooks, '/webhooks');
    expect(examples.length).toBeGreaterThan(20);
    for (const [pointer, value] of examples) expect(() => checker.validateValue(pointer, value, `example at ${pointer}`)).not.toThrow();
  });

  it('names every operation with a unique operationId', () => {
    const ids = operations.map((o) => o.operation.operationId);
    expect(ids.every((id) => typeof id === 'string' && /^[a-z][A-Za-z]+$/.test(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('declares a scope for each operation, and security that agrees with it', () => {
    expect(doc.components?.securitySchemes).toEqual({ bearerAuth: expect.objectContaining({ type: 'http', scheme: 'bearer' }) });
    for (const op of operations) {
      const scope = op.operation['x-herald-scope'];
      expect([op.operationId, scope]).toEqual([op.operationId, expect.stringMatching(/^(publish|read|admin|none)$/)]);
      expect([op.operationId, op.operation.security]).toEqual([op.operationId, scope === 'none' ? [] : [{ bearerAuth: [] }]]);
      const secured = scope !== 'none';
      expect([op.operationId, '401' in op.operation.responses, '403' in op.operation.responses]).toEqual([
        op.operationId,
        secured,
        secured,
      ]);
    }
  });

  it('describes every error response as application/problem+json with the Problem schema', () => {
    for (const op of operations) {
      for (const [status, ref] of Object.entries(op.operation.responses)) {
        if (Number(status) < 400) continue;
        if (op.operationId === 'readyz' && status === '503') continue; // a readiness report, not a problem
        const response = (('$ref' in ref ? lookup(ref.$ref) : ref) as { content?: Record<string, { schema: unknown }> }).content;
        expect([op.operationId, status, Object.keys(response ?? {})]).toEqual([op.operationId, status, ['application/problem+json']]);
        expect(JSON.stringify(response!['application/problem+json']!.schema)).toContain('#/components/schemas/Problem');
      }
    }
  });
});

describe('the contract checker the response tests rely on', () => {
  const checker = createContractChecker(doc);
  const json = { 'content-type': 'application/json; charset=utf-8' };
  const published = (result: Record<string, unknown>) => ({
    method: 'POST',
    url: '/events',
    status: 202,
    headers: new Headers(json),
    body: JSON.stringify({ results: [result] }),
  });
  const result = { id: 'a', source: '/s', partition: 0, offset: 0, duplicate: false };

  it('accepts a documented response', () => {
    expect(checker.checkResponse(published(result))).toEqual({ operationId: 'publishEvents', responseKey: '202' });
  });

  it('refuses a renamed, missing or extra field, an undocumented status, and a wrong content type', () => {
    const { duplicate: _d, ...withoutDuplicate } = result;
    expect(() => checker.checkResponse(published({ ...withoutDuplicate, dup: false }))).toThrow(/duplicate/);
    expect(() => checker.checkResponse(published({ ...result, extra: 1 }))).toThrow(/additional/);
    expect(() => checker.checkResponse({ ...published(result), status: 201 })).toThrow(/201 is not documented/);
    expect(() => checker.checkResponse({ ...published(result), headers: new Headers({ 'content-type': 'text/plain' }) })).toThrow(
      /text\/plain is not documented/,
    );
    const problem = {
      type: 'urn:herald:problem:not_found',
      title: 'Not found',
      status: 404,
      detail: 'x',
      code: 'not_found',
      errors: [{ message: 'x' }],
    };
    const get = (status: number, body: unknown) => ({
      method: 'GET',
      url: '/subscriptions/abc',
      status,
      headers: new Headers({ 'content-type': 'application/problem+json' }),
      body: JSON.stringify(body),
    });
    expect(checker.checkResponse(get(404, problem)).responseKey).toBe('404');
    expect(() => checker.checkResponse(get(404, { ...problem, status: 400 }))).toThrow(/status/);
    expect(() =>
      checker.checkResponse({ method: 'DELETE', url: '/subscriptions/abc', status: 204, headers: new Headers(json), body: '{}' }),
    ).toThrow(/without a body/);
  });

  it('refuses a webhook request with an undocumented Herald header or a bad signature header', () => {
    const headers = {
      'content-type': 'application/cloudevents+json; charset=utf-8',
      'webhook-id': 'msg_' + 'a'.repeat(27),
      'webhook-timestamp': '1738324800',
      'webhook-signature': 'v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=',
      'herald-subscription-id': '6f1c2f0e-3b5a-4c1e-9a51-0d9b8f3f2a10',
      'herald-partition': '0',
      'herald-offset': '0',
      'herald-attempt': '1',
      'herald-delivery-id': 'dlv_' + 'b'.repeat(24),
      'herald-ack-url': 'http://127.0.0.1:1/deliveries/dlv_x/ack',
    };
    const body = Buffer.from(JSON.stringify({ specversion: '1.0', id: '1', source: '/s', type: 't' }));
    expect(() => checker.checkWebhookRequest({ headers, body })).not.toThrow();
    expect(() => checker.checkWebhookRequest({ headers: { ...headers, 'herald-tries': '1' }, body })).toThrow(
      /herald-tries is not documented/,
    );
    expect(() => checker.checkWebhookRequest({ headers: { ...headers, 'webhook-signature': 'sha256=abc' }, body })).toThrow(
      /webhook-signature/,
    );
    const { 'herald-offset': _o, ...withoutOffset } = headers;
    expect(() => checker.checkWebhookRequest({ headers: withoutOffset, body })).toThrow(/herald-offset/);
  });
});

describe('the document and the server agree on the routes', () => {
  it('documents every route express registers, and serves every documented one', async () => {
    const gw = await startTestGateway();
    try {
      // The same factories src/gateway.ts and src/api/gateway-http.ts wire (the test below checks that the list stays complete).
      const factories: Record<string, () => Router> = {
        createHealthRouter: () => createHealthRouter({ store: gw.store, db: gw.db }),
        createEventsRouter: () =>
          createEventsRouter(
            gw.store,
            createIngestHandler({ store: gw.store, log: gw.log, maxBodyBytes: 1024, bodyIdleMs: 10_000, maxJsonDepth: 64 }),
            {
              maxStreams: 64,
            },
          ),
        createSubscriptionsRouter: () => createSubscriptionsRouter(gw.subscriptions),
        createDeliveriesRouter: () => createDeliveriesRouter(gw.dispatcher),
        createValidationsRouter: () => createValidationsRouter(gw.subscriptions),
        createMetricsRouter: () => createMetricsRouter(gw.metrics),
        createOpenApiRouter: () => createOpenApiRouter(),
        createConsoleRouter: () => createConsoleRouter(),
      };
      const app = createApp({ log: gw.log, authorize: createAuthorizer([]), routers: Object.values(factories).map((make) => make()) });
      const routes = listRoutes(app as never);
      const served = routes
        .map(key)
        .filter((r) => !ALIASES.includes(r))
        .sort();
      const documented = operations.map(key).sort();
      expect(served.filter((r) => !documented.includes(r))).toEqual([]); // served but undocumented
      expect(documented.filter((r) => !served.includes(r))).toEqual([]); // documented but not served
      expect(new Set(served).size).toBe(served.length);

      // The local engine's composition root and the HTTP side both engines share.
      const wiring = ['gateway.ts', path.join('api', 'gateway-http.ts')].map((f) => fs.readFileSync(path.join(SRC, f), 'utf8')).join('\n');
      expect(Object.keys(factories).sort()).toEqual(routerFactoriesIn(wiring));
      expect(Object.keys(factories).sort()).toEqual(exportedRouterFactories());

      // Each route declares its scope where it is mounted (its first handler), as the document says.
      for (const route of routes) {
        const documentedPath = route.path === DOCS_ALIAS ? '/docs' : route.path;
        const op = operations.find((o) => o.method === route.method && o.path === documentedPath);
        expect([key(route), route.scope]).toEqual([key(route), op?.operation['x-herald-scope']]);
      }
    } finally {
      await gw.close();
    }
  });
});

describe("the JetStream engine's routes", () => {
  it('mounts every router of the local engine but the console (the same documented operations)', () => {
    expect(routerFactoriesIn(fs.readFileSync(path.join(SRC, 'jetstream-gateway.ts'), 'utf8'))).toEqual(
      routerFactoriesIn(fs.readFileSync(path.join(SRC, 'gateway.ts'), 'utf8')).filter((f) => f !== 'createConsoleRouter'),
    );
  });
});

function lookup(ref: string): unknown {
  return ref
    .slice(2)
    .split('/')
    .reduce<any>((node, k) => node[k.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
}

/** `createXRouter(` calls in the composition root. */
function routerFactoriesIn(source: string): string[] {
  return [...new Set([...source.matchAll(/\b(create\w+Router)\s*\(/g)].map((m) => m[1]!))].sort();
}

/** Every `export function createXRouter` under src/api: a new router file must join the comparison. */
function exportedRouterFactories(): string[] {
  const dir = path.join(SRC, 'api');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) => [...fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/export function (create\w+Router)\b/g)].map((m) => m[1]!))
    .sort();
}
