import request from 'supertest';
import { createApp } from '../../../src/api/app';
import { createAuthorizer, parseApiKeys } from '../../../src/api/auth';
import { toProblem } from '../../../src/api/problem';
import { hasBody, jsonBody, newRouter, normalizeRequestTarget, requireScope } from '../../../src/api/routing';
import { AppError } from '../../../src/errors';
import { createLogger } from '../../../src/logger';

const log = createLogger('silent');

describe('normalizeRequestTarget', () => {
  it.each([
    ['/events', '/events'],
    ['/events?source=a&id=b', '/events?source=a&id=b'],
    ['/events#frag', '/events'],
    ['/events?x=1#frag?y=2', '/events?x=1'],
    ['http://127.0.0.1:8080/subscriptions/x?y=1', '/subscriptions/x?y=1'],
    ['HTTPS://example.com/partitions#f', '/partitions'],
    ['http://user@example.com/events', '/events'],
    ['http://example.com', '/'],
    ['http://example.com?x=1', '/?x=1'],
    ['http://example.com#f', '/'],
  ])('turns %s into %s', (target, expected) => {
    expect(normalizeRequestTarget('GET', target)).toBe(expected);
  });

  it('keeps OPTIONS *', () => {
    expect(normalizeRequestTarget('OPTIONS', '*')).toBe('*');
  });

  it.each([
    ['GET', '*'],
    ['POST', '*'],
    ['GET', 'events'],
    ['GET', 'ftp://example.com/events'],
    ['GET', 'example.com:80'],
    ['GET', '#/events'],
  ])('refuses %s %s with a 400', (method, target) => {
    expect(() => normalizeRequestTarget(method, target)).toThrow(expect.objectContaining({ code: 'invalid_request', status: 400 }));
  });
});

describe('hasBody', () => {
  it.each([
    [{}, false],
    [{ 'content-length': '0' }, false],
    [{ 'content-length': '00' }, false],
    [{ 'content-length': '2' }, true],
    [{ 'transfer-encoding': 'chunked' }, true],
    [{ 'transfer-encoding': 'chunked', 'content-length': '0' }, true],
  ])('%j → %s', (headers, expected) => {
    expect(hasBody({ headers })).toBe(expected);
  });
});

describe('routes with a declared scope', () => {
  const app = () => {
    const router = newRouter();
    router.get('/things', requireScope('read'), (_req, res) => res.json({ ok: true }));
    router.post('/things', requireScope('admin'), jsonBody, (req, res) => res.json({ body: req.body ?? null }));
    router.get('/open', requireScope('none'), (_req, res) => res.json({ open: true }));
    return createApp({ log, authorize: createAuthorizer(parseApiKeys('r:read-key:read,a:admin-key:admin')), routers: [router] });
  };

  it('carries its scope on the middleware', () => {
    expect(requireScope('admin').scope).toBe('admin');
    expect(requireScope('none').scope).toBe('none');
  });

  it('checks the key on the route that matched, and nowhere else', async () => {
    expect((await request(app()).get('/things')).status).toBe(401);
    expect((await request(app()).get('/things').set('authorization', 'Bearer read-key')).status).toBe(200);
    expect((await request(app()).get('/things').set('authorization', 'Bearer admin-key')).status).toBe(200);
    expect((await request(app()).post('/things').set('authorization', 'Bearer read-key').send({})).status).toBe(403);
    expect((await request(app()).get('/open')).status).toBe(200);
    // No route: a 404 whatever the key.
    for (const path of ['/THINGS', '/things/', '/Things', '/nothing']) {
      expect((await request(app()).get(path)).status).toBe(404);
      expect((await request(app()).get(path).set('authorization', 'Bearer admin-key')).status).toBe(404);
    }
  });

  it('parses a JSON body, refuses another type with 415 after the key check, and lets a bodiless request through', async () => {
    const admin = (r: request.Test) => r.set('authorization', 'Bearer admin-key');
    expect((await admin(request(app()).post('/things')).send({ a: 1 })).body).toEqual({ body: { a: 1 } });
    expect((await admin(request(app()).post('/things')).set('content-type', 'application/merge-patch+json').send('{"a":2}')).body).toEqual({
      body: { a: 2 },
    });
    const refused = await admin(request(app()).post('/things')).set('content-type', 'text/plain').send('{"a":1}');
    expect(refused.status).toBe(415);
    expect(refused.body).toMatchObject({
      code: 'unsupported_media_type',
      errors: [{ attribute: 'content-type', message: expect.any(String) }],
    });
    expect((await request(app()).post('/things').set('content-type', 'text/plain').send('x')).status).toBe(401);
    expect((await admin(request(app()).post('/things')).set('content-type', 'text/plain')).body).toEqual({ body: null });
  });

  it('reads JSON bodies as body-parser did: empty is {}, white space or bad JSON a 400, other JSON values the wrong shape', async () => {
    const post = (body: string) =>
      request(app()).post('/things').set('authorization', 'Bearer admin-key').set('content-type', 'application/json').send(body);
    expect((await post('')).body).toEqual({ body: null }); // no body at all: nothing to parse
    const cases: [string, number, unknown][] = [
      ['\ufeff', 200, { body: {} }], // a byte-order mark alone is an empty body
      ['\ufeff{"a":1}', 200, { body: { a: 1 } }],
      ['[1,2]', 200, { body: [1, 2] }],
      // Was (with this reader's first version): {} for white space, so a callback ran with its defaults.
      ['   \n', 400, expect.objectContaining({ code: 'invalid_request', detail: 'the body is not valid JSON' })],
      ['\u00a0', 400, expect.objectContaining({ code: 'invalid_request', detail: 'the body is not valid JSON' })],
      ['{"a":', 400, expect.objectContaining({ code: 'invalid_request', detail: 'the body is not valid JSON' })],
      ['null', 400, expect.objectContaining({ code: 'invalid_request', detail: 'the body must be a JSON object' })],
      ['3', 400, expect.objectContaining({ code: 'invalid_request', detail: 'the body must be a JSON object' })],
    ];
    for (const [body, status, answer] of cases) {
      const res = await post(body);
      expect([body, res.status, res.body]).toEqual([body, status, answer]);
    }
  });

  it('fails closed when the app has no authoriser', async () => {
    const router = newRouter();
    router.get('/things', requireScope('read'), (_req, res) => res.json({ ok: true }));
    const app = createApp({ log, authorize: undefined as never, routers: [router] });
    expect((await request(app).get('/things')).status).toBe(500);
  });
});

describe('problem errors list', () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => ({ index: i, message: `bad ${i}` }));

  it('lists at most 100 violations, then says it is truncated and how many there are', () => {
    const { problem } = toProblem(new AppError('invalid_event', 'x', { details: many(250) }), log);
    expect(problem.errors).toHaveLength(100);
    expect(problem).toMatchObject({ truncated: true, totalErrors: 250 });
  });

  it('uses the count the error carries when it kept only some violations', () => {
    const { problem } = toProblem(new AppError('invalid_event', 'x', { details: many(100), totalErrors: 4000 }), log);
    expect(problem).toMatchObject({ truncated: true, totalErrors: 4000 });
  });

  it('adds neither field when every violation is listed', () => {
    const { problem } = toProblem(new AppError('invalid_event', 'x', { details: many(100) }), log);
    expect(problem.errors).toHaveLength(100);
    expect(problem).not.toHaveProperty('truncated');
    expect(problem).not.toHaveProperty('totalErrors');
  });
});
