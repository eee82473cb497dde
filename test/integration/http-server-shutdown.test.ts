import http from 'node:http';
import { createApp } from '../../src/api/app';
import { createAuthorizer } from '../../src/api/auth';
import { createHttpServer, endAtShutdown } from '../../src/api/http-server';
import { newRouter, requireScope } from '../../src/api/routing';
import { createLogger } from '../../src/logger';

/**
 * Long-lived answers (live tails) at a graceful close of the HTTP server: each ends its stream itself,
 * cleanly, as the close begins — also one whose handler was still starting (reading the heads) then.
 */

const log = createLogger('silent');
const authorize = createAuthorizer([]);

/** A server whose `GET /tail` waits for `gate`, then streams and asks to be ended at shutdown. */
async function tailServer(gate: Promise<void>, started: () => void) {
  const router = newRouter();
  router.get('/tail', requireScope('none'), async (_req, res) => {
    started();
    await gate;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(': tail\n\n');
    endAtShutdown(res, () => res.end());
  });
  const server = createHttpServer({
    log,
    handlers: {
      authorize,
      ingest: () => Promise.resolve(),
      app: createApp({ log, authorize, routers: [router] }),
      ingestRejected: () => undefined,
    },
  });
  const { url } = await server.listen(0, '127.0.0.1');
  return { server, url };
}

/** Opens `GET /tail`; resolves how its body ended: `end` (the last chunk came) or `aborted`. */
function openTail(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(`${url}/tail`, { agent: false }, (res) => {
        res.on('end', () => resolve('end'));
        res.on('aborted', () => resolve('aborted'));
        res.resume();
      })
      .on('error', reject);
  });
}

it.each([
  ['streaming when the close begins', true],
  // Was: registered after the close had looked, it held the close for the grace and was cut off (re-probe).
  ['still starting when the close begins', false],
])('ends a tail %s at once, with its last chunk, and the close does not wait for the grace', async (_name, openFirst) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let handlerStarted!: () => void;
  const handling = new Promise<void>((r) => (handlerStarted = r));
  const { server, url } = await tailServer(gate, handlerStarted);
  if (openFirst) release();
  const tail = openTail(url);
  await handling;
  if (openFirst) await new Promise((r) => setTimeout(r, 50)); // its headers and first line are out
  const began = Date.now();
  // A grace of 10 s (min(10 s, half of 30 s)): a tail that held the close would end after it, aborted.
  const closed = server.close(30_000);
  if (!openFirst) release();
  expect(await tail).toBe('end');
  await closed;
  expect(Date.now() - began).toBeLessThan(5_000);
});
