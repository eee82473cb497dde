/**
 * What a gateway answers while it starts (the JetStream engine waiting for its cluster), and the swap
 * to the started gateway's handlers on the same listening server, without nats-server: the real
 * node:http server, the real starting handlers, a real keep-alive client.
 */
import http from 'node:http';
import { createApp } from '../../src/api/app';
import { createAuthorizer } from '../../src/api/auth';
import { createHttpServer, type HttpServer } from '../../src/api/http-server';
import { newRouter, requireScope } from '../../src/api/routing';
import { startingHandlers } from '../../src/api/starting-http';
import { createLogger } from '../../src/logger';
import { StartupError } from '../../src/errors';
import { createMetrics } from '../../src/metrics';
import { startJetStreamTestGateway } from '../helpers/gateway';
import { freePort } from '../helpers/nats-cluster';

const log = createLogger('silent');
const authorize = createAuthorizer([]);
let server: HttpServer;
let url: string;
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

beforeAll(async () => {
  const metrics = createMetrics();
  server = createHttpServer({
    log,
    handlers: startingHandlers({ log, authorize, metrics, waitingFor: () => 'connecting to the JetStream cluster' }),
  });
  ({ url } = await server.listen(0, '127.0.0.1'));
});
afterAll(async () => {
  agent.destroy();
  await server.close(1000);
});

/** One request through the keep-alive agent (one socket, reused): status, headers and body. */
function get(path: string, method = 'GET'): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; socket: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { method, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, socket: req.socket }));
    });
    req.on('error', reject);
    req.end();
  });
}

it('is alive, not ready, and refuses the API with 503 and Retry-After while the gateway starts; serves /metrics and the contract', async () => {
  expect(JSON.parse((await get('/healthz')).body)).toEqual({ status: 'ok' });
  const ready = await get('/readyz');
  expect([ready.status, JSON.parse(ready.body)]).toEqual([
    503,
    { status: 'unavailable', checks: { log: 'starting: connecting to the JetStream cluster' } },
  ]);
  for (const [method, path] of [
    ['POST', '/events'],
    ['GET', '/subscriptions'],
    ['POST', '/deliveries/dlv_x/ack'],
  ]) {
    const refused = await get(path!, method);
    expect([path, refused.status, refused.headers['retry-after'], JSON.parse(refused.body).code]).toEqual([path, 503, '1', 'unavailable']);
  }
  const metrics = await get('/metrics');
  expect(metrics.status).toBe(200);
  expect(metrics.body).toMatch(/^herald_log_writable 0$/m);
  expect((await get('/openapi.json')).status).toBe(200);
  // This engine serves no console, started or not: a 404 as its contract says, not a 503.
  expect((await get('/console')).status).toBe(404);
});

it('answers with the started handlers from the swap on, on a connection kept alive across it', async () => {
  const before = await get('/subscriptions');
  expect(before.status).toBe(503);
  const router = newRouter();
  router.get('/subscriptions', requireScope('none'), (_req, res) => {
    res.json({ subscriptions: [] });
  });
  server.serve({
    authorize,
    ingest: (_req, res) => {
      res.writeHead(202).end();
      return Promise.resolve();
    },
    app: createApp({ log, authorize, routers: [router] }),
    ingestRejected: () => undefined,
  });
  const after = await get('/subscriptions');
  expect([after.status, JSON.parse(after.body)]).toEqual([200, { subscriptions: [] }]);
  expect(after.socket).toBe(before.socket);
  expect((await get('/events', 'POST')).status).toBe(202);
});

it('gives its port back when the start finally fails (a JetStream cluster that cannot be reached)', async () => {
  const nowhere = await freePort();
  const port = await freePort();
  const started = Date.now();
  await expect(startJetStreamTestGateway(`nats://127.0.0.1:${nowhere}`, { HERALD_PORT: String(port) })).rejects.toThrow(StartupError);
  expect(Date.now() - started).toBeLessThan(30_000);
  // Listening again on that port works: the server that answered while starting was closed.
  const again = http.createServer();
  await new Promise<void>((resolve, reject) => again.once('error', reject).listen(port, '127.0.0.1', resolve));
  await new Promise((resolve) => again.close(resolve));
});
