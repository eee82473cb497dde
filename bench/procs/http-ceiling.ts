/**
 * Ingest ceilings, each in its own process: the least a server must do for
 * `POST /events` — read the body, parse it, answer 202 with a small JSON body —
 * without storing anything.
 *
 * `bare`: node:http handler. `express`: express 5 with `express.json()`
 * (binary-mode requests carry `Content-Type: application/json`; batches
 * `application/cloudevents-batch+json`, accepted via `type`).
 *
 * Usage: `node http-ceiling.js bare|express`; prints `{"port":N}` on stdout once listening.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

function answer(id: string | undefined, events: number): string {
  return JSON.stringify({ results: [{ id: id ?? '', source: '/herald-bench', partition: 0, offset: 0, duplicate: false }], events });
}

function bare(): http.Server {
  return http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        res.writeHead(400).end();
        return;
      }
      const body = answer(req.headers['ce-id'] as string | undefined, Array.isArray(parsed) ? parsed.length : 1);
      res.writeHead(202, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
}

function express(): http.Server {
  // Loaded only in this mode: express is a runtime dependency of Herald itself.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const expressFn = require('express') as typeof import('express');
  const app = expressFn();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(expressFn.json({ limit: '1mb', type: ['application/json', 'application/*+json'] }));
  app.post('/events', (req, res) => {
    const events = Array.isArray(req.body) ? req.body.length : 1;
    res
      .status(202)
      .type('application/json')
      .send(answer(req.get('ce-id'), events));
  });
  return http.createServer(app);
}

const mode = process.argv[2] ?? 'bare';
const server = mode === 'express' ? express() : bare();
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port, mode })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
