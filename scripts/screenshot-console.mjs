// Refreshes docs/console.png, the console screenshot in the README: starts the built gateway (dist/, from
// `npm run build`; `npm run screenshot:console` builds first) on 127.0.0.1 with a temp data dir and a demo
// receiver, creates subscriptions, publishes events (a few dead-lettered, one retried, a backlog behind a
// paused subscription), then opens the console in Debian's chromium, driven by playwright-core with the flags
// the console test uses (test/integration/console.test.ts), and saves the subscription view at 1280×800.
// Usage: node scripts/screenshot-console.mjs [output.png]
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const output = path.resolve(process.argv[2] ?? path.join(root, 'docs', 'console.png'));
// The browser reaches nothing but loopback: the console test's flags (scripts/chromium.json).
const { executablePath: CHROMIUM, args: CHROMIUM_ARGS } = require('./chromium.json');

if (!fs.existsSync(CHROMIUM)) {
  console.error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)`);
  process.exit(1);
}
if (!fs.existsSync(path.join(root, 'dist', 'console', 'index.html'))) {
  console.error('dist/console is missing: run npm run build first (or npm run screenshot:console)');
  process.exit(1);
}
const { chromium } = require('playwright-core');
const { loadConfig } = require(path.join(root, 'dist', 'config'));
const { startGateway } = require(path.join(root, 'dist', 'gateway'));
const { createLogger } = require(path.join(root, 'dist', 'logger'));

/** A receiver for the demo: 400 for `*.invalid` events (dead letters), 503 to the first try of `order-retry`, 204 otherwise. */
async function startReceiver() {
  let failedOnce = false;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', () => {
      // Binary mode carries the type in `ce-type`; structured mode in the JSON body.
      const event = body.startsWith('{') ? JSON.parse(body) : {};
      const type = String(req.headers['ce-type'] ?? event.type);
      const id = String(req.headers['ce-id'] ?? event.id);
      if (type.endsWith('.invalid')) {
        res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"total must be a number"}');
      } else if (!failedOnce && id === 'order-retry') {
        failedOnce = true;
        res.writeHead(503, { 'content-type': 'text/plain' }).end('database is restarting');
      } else {
        setTimeout(() => res.writeHead(204).end(), 5 + Math.floor(Math.random() * 20));
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((resolve) => server.close(resolve)) };
}

async function call(base, method, url, body, contentType = 'application/json') {
  const res = await fetch(`${base}${url}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${url} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : undefined;
}

const TYPES = ['com.example.order.created', 'com.example.order.paid', 'com.example.order.shipped', 'com.example.invoice.sent'];
let sequence = 0;
function batch(n, special = []) {
  return Array.from({ length: n }, (_, i) => {
    const id = ++sequence;
    return {
      specversion: '1.0',
      id: special[i]?.id ?? `order-${1000 + id}`,
      source: '/shop/orders',
      type: special[i]?.type ?? TYPES[id % TYPES.length],
      partitionkey: `customer-${id % 23}`,
      datacontenttype: 'application/json',
      data: { orderId: 1000 + id, total: Math.round(Math.random() * 20000) / 100 },
    };
  });
}

async function waitUntil(check, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-screenshot-'));
const receiver = await startReceiver();
const gateway = await startGateway(
  loadConfig({ HERALD_PORT: '0', HERALD_HOST: '127.0.0.1', HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '8', HERALD_LOG_LEVEL: 'silent' }),
  { log: createLogger('silent') },
);
let browser;
try {
  const base = gateway.url;
  const retry = { maxAttempts: 5, initialDelayMs: 300, maxDelayMs: 1000 };
  await call(base, 'POST', '/subscriptions', {
    sink: `${receiver.url}/hooks/shipping`,
    filters: [{ exact: { type: 'com.example.order.shipped' } }],
    startAt: 'earliest',
  });
  const billing = await call(base, 'POST', '/subscriptions', {
    sink: `${receiver.url}/hooks/billing`,
    filters: [{ prefix: { type: 'com.example.order.' } }],
    delivery: { format: 'structured', retry },
    startAt: 'earliest',
  });
  const caughtUp = async () => {
    const s = await call(base, 'GET', `/subscriptions/${billing.id}`);
    return s.stats.partitions.every((p) => p.lag === 0 && p.inFlight === 0);
  };
  await call(base, 'POST', '/events', batch(60), 'application/cloudevents-batch+json');
  await waitUntil(caughtUp, 'the billing subscription to catch up');
  // Last, so they lead the attempt log: two dead letters (400) and a retry (503, then 204).
  const trouble = [
    { type: 'com.example.order.invalid' },
    { id: 'order-retry', type: 'com.example.order.paid' },
    { type: 'com.example.order.invalid' },
  ];
  await call(base, 'POST', '/events', batch(3, trouble), 'application/cloudevents-batch+json');
  await waitUntil(caughtUp, 'the retry and the dead letters');
  // A backlog: pause, publish more, and leave it waiting on disk.
  await call(base, 'POST', `/subscriptions/${billing.id}/pause`);
  for (let i = 0; i < 4; i++) await call(base, 'POST', '/events', batch(25 + i * 10), 'application/cloudevents-batch+json');

  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1, colorScheme: 'light' });
  page.setDefaultTimeout(15_000);
  await page.goto(`${base}/console#/subscriptions/${billing.id}`);
  await page.locator('[data-testid=attempts] tbody tr').first().waitFor();
  await page.locator('[data-testid=lag-bars] .bar-lag').first().waitFor();
  await page.waitForTimeout(300); // let the last poll settle
  fs.mkdirSync(path.dirname(output), { recursive: true });
  await page.screenshot({ path: output, type: 'png' });
  console.log(`wrote ${path.relative(process.cwd(), output)}`);
} finally {
  await browser?.close();
  await gateway.close();
  await receiver.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
}
