import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { closeBrowser, launchChromium } from '../helpers/browser';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * The web console end to end, in a real browser (Debian's chromium, driven by playwright-core,
 * reaching nothing but loopback) against a real gateway with API keys and a real receiver: the
 * page asks for a key, creates a subscription, shows the lag of published events fall to 0,
 * dead-letters an event the receiver refuses, redelivers it, and tails events live. The steps
 * share one page and run in order. Every wait is bounded (playwright's default timeout below).
 */

const ADMIN_KEY = 'console-test-admin-key';
const PUBLISH_KEY = 'console-test-publish-key';
const WAIT_MS = 15_000;

let gw: TestGateway;
let receiver: Receiver;
let browser: Browser | undefined;
let page: Page;
let subscriptionId: string;
/** Kept after the run (not under cleanupTmpDirs): the screenshots are for a person to look at. */
const shots = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-console-test-'));
const pageErrors: string[] = [];
const offsite: string[] = [];
/** The receiver refuses (400) events with these ids. */
const BAD_ID = 'order-bad';
const refused = new Set([BAD_ID, 'order-bad-2', 'order-bad-3']);

async function publish(events: { id: string; type: string; partitionkey?: string }[]): Promise<void> {
  const res = await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${PUBLISH_KEY}`, 'content-type': 'application/cloudevents-batch+json' },
    body: JSON.stringify(events.map((e) => ({ specversion: '1.0', source: '/console-test', data: { id: e.id }, ...e }))),
  });
  expect(res.status).toBe(202);
}

const orders = (ids: string[]) => ids.map((id, i) => ({ id, type: 'com.example.console.order', partitionkey: `customer-${i}` }));
const text = (selector: string) => page.locator(selector).first().innerText();
/** Waits (bounded) until the first element matching `selector` shows exactly `expected`. */
const shows = (selector: string, expected: string) =>
  page
    .locator(selector, { hasText: new RegExp(`^\\s*${expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`) })
    .first()
    .waitFor();

beforeAll(async () => {
  browser = await launchChromium(); // fails, saying how to install chromium, when it is missing
  gw = await startTestGateway({
    HERALD_PARTITIONS: '4',
    HERALD_API_KEYS: `ops:${ADMIN_KEY}:admin+publish,producer:${PUBLISH_KEY}:publish`,
  });
  receiver = await startReceiver((req) =>
    refused.has(String(req.headers['ce-id'])) ? { status: 400, body: 'order total is negative' } : { status: 204 },
  );
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (message) => {
    // Failed API calls (the 401 before a key is given) are logged by the browser; anything else is a page error.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) pageErrors.push(message.text());
  });
  page.on('request', (request) => {
    if (!request.url().startsWith(`${gw.url}/`) && !request.url().startsWith('data:')) offsite.push(request.url());
  });
}, 60_000);

afterAll(async () => {
  if (page) await page.screenshot({ path: path.join(shots, 'last.png') }).catch(() => undefined);
  await closeBrowser(browser);
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

describe('the web console, in chromium', () => {
  it('serves its page and assets from the gateway with a strict Content-Security-Policy', async () => {
    const res = await fetch(`${gw.url}/console`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('content-security-policy')).toMatch(/default-src 'self'/);
    expect(res.headers.get('content-security-policy')).not.toMatch(/unsafe-inline|unsafe-eval/);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const html = await res.text();
    expect([...html.matchAll(/\b(?:src|href)="([^"]*)"/g)].map((m) => m[1])).toEqual([
      'data:,',
      'console/assets/app.css',
      'console/assets/app.js',
    ]);
    expect(html).not.toMatch(/<script>|<style>|style="/); // nothing inline: the CSP would refuse it
    const script = await fetch(`${gw.url}/console/assets/app.js`);
    expect([script.status, script.headers.get('content-type'), script.headers.get('x-content-type-options')]).toEqual([
      200,
      expect.stringMatching(/^(text|application)\/javascript/),
      'nosniff',
    ]);
    expect(await script.text()).not.toMatch(/https?:\/\/(?!127\.0\.0\.1)[a-z0-9.-]+\.[a-z]{2,}\/[^"'\s]*\.(js|css|woff2?)\b/i); // no CDN
    expect((await fetch(`${gw.url}/console/assets/nope.js`)).status).toBe(404);
    expect((await fetch(`${gw.url}/console/assets/..%2F..%2Fpackage.json`)).status).toBe(404);
  });

  it('asks for an API key, refuses a wrong one, and keeps the key in sessionStorage only', async () => {
    await page.goto(`${gw.url}/console`);
    await page.locator('[data-testid=key-prompt]').waitFor();
    await page.fill('input[name=api-key]', 'not-a-key');
    await page.click('text=Use this key');
    await page.locator('[data-testid=key-prompt] [role=alert]', { hasText: 'refused' }).waitFor();
    await page.fill('input[name=api-key]', ADMIN_KEY);
    await page.click('text=Use this key');
    await page.locator('[data-testid=partitions] tbody tr').nth(3).waitFor(); // the overview: four partitions
    await shows('[data-testid=readiness]', 'ready');
    expect(await text('[data-testid=access]')).toContain('API key set');
    // Evaluated in the page (a string: this file is type-checked without the DOM library).
    const storage = await page.evaluate(
      "({ session: sessionStorage.getItem('herald.apiKey'), local: localStorage.length, cookie: document.cookie })",
    );
    expect(storage).toEqual({ session: ADMIN_KEY, local: 0, cookie: '' });
  });

  it('creates a subscription, pauses it, shows the lag of published events, and the lag falling to 0 on resume', async () => {
    await page.click('nav >> text=Subscriptions');
    const form = page.locator('[data-testid=create-subscription]');
    await form.locator('input[name=sink]').fill(receiver.url);
    await form.locator('textarea[name=filters]').fill('[{"prefix": {"type": "com.example.console."}}]');
    await form.locator('select[name=ordering]').selectOption('partition');
    await form.locator('select[name=format]').selectOption('binary');
    await form.locator('button[type=submit]').click();
    expect(await page.locator('[data-testid=secret]').inputValue()).toMatch(/^whsec_/); // shown once, copyable
    const row = page.locator('[data-testid=subscriptions] tbody tr').first();
    subscriptionId = (await row.getAttribute('data-subscription'))!;
    const stored = await (
      await fetch(`${gw.url}/subscriptions/${subscriptionId}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })
    ).json();
    expect(stored).toMatchObject({
      sink: receiver.url,
      filters: [{ prefix: { type: 'com.example.console.' } }],
      delivery: { format: 'binary' },
    });

    await row.click();
    await page.locator('[data-testid=total-lag]').waitFor();
    await page.click('button:text-is("Pause")');
    await page.locator('.badge', { hasText: 'paused · user' }).waitFor();
    const ids = Array.from({ length: 8 }, (_, i) => `order-${i + 1}`);
    await publish(orders(ids));
    await shows('[data-testid=total-lag]', '8');
    expect(await page.locator('[data-testid=lag-bars] .bar-lag').count()).toBeGreaterThan(0);
    expect(receiver.requests).toHaveLength(0);

    await page.click('button:text-is("Resume")');
    await shows('[data-testid=total-lag]', '0');
    await shows('[data-testid=in-flight]', '0');
    expect(receiver.requests.map((r) => r.headers['ce-id']).sort()).toEqual([...ids].sort());
    // The attempt log: one delivered attempt per event, with its status.
    await page.locator('[data-testid=attempts] tbody tr[data-outcome=delivered]').nth(7).waitFor();
    expect(await page.locator('[data-testid=attempts] tbody tr').first().innerText()).toContain('204');
  });

  it('dead-letters an event the receiver refuses, shows it with its error, and redelivers it from the page', async () => {
    await publish(orders([BAD_ID]));
    await page.locator('[data-testid=attempts] tbody tr[data-outcome=dead_lettered]').waitFor();
    expect(await page.locator('[data-testid=attempts] tr[data-outcome=dead_lettered]').innerText()).toContain('400');
    await shows('[data-testid=dead-letter-count]', '1');
    await shows('[data-testid=total-lag]', '0');

    await page.click('[data-testid=dead-letter-count] a');
    const deadLetter = page.locator(`[data-testid=dead-letters] tr[data-event-id=${BAD_ID}]`);
    await deadLetter.waitFor();
    expect(await deadLetter.innerText()).toMatch(/rejected status[^]*400[^]*order total is negative/);
    await deadLetter.click(); // opens it: the event itself, read from its partition
    await page.locator('[data-testid=dead-letter-detail] pre', { hasText: `"id": "${BAD_ID}"` }).waitFor();

    refused.delete(BAD_ID);
    await deadLetter.locator('input[type=checkbox]').check();
    await page.click('button:has-text("Redeliver selected (1)")');
    await page.locator('[data-testid=no-dead-letters]').waitFor();
    const redelivered = await waitFor(
      () => receiver.requests.find((r) => r.headers['ce-id'] === BAD_ID && r.headers['herald-redelivery'] === 'true'),
      { timeoutMs: WAIT_MS, what: 'the redelivery' },
    );
    expect(redelivered.headers['herald-attempt']).toBe('1');
  });

  it('discards one dead letter after asking again, and redelivers all the others', async () => {
    await publish(orders(['order-bad-2', 'order-bad-3']));
    const second = page.locator('[data-testid=dead-letters] tr[data-event-id=order-bad-2]');
    const third = page.locator('[data-testid=dead-letters] tr[data-event-id=order-bad-3]');
    await second.waitFor();
    await third.waitFor();
    await third.locator('button:text-is("Delete")').click();
    await third.locator('button:text-is("Discard")').click(); // the second click confirms
    await third.waitFor({ state: 'detached' });

    refused.clear();
    await page.click('button:text-is("Redeliver all")');
    await page.locator('[data-testid=no-dead-letters]').waitFor();
    await waitFor(() => receiver.requests.find((r) => r.headers['ce-id'] === 'order-bad-2' && r.headers['herald-redelivery'] === 'true'), {
      timeoutMs: WAIT_MS,
      what: 'the redelivery of order-bad-2',
    });
    expect(receiver.requests.filter((r) => r.headers['ce-id'] === 'order-bad-3')).toHaveLength(1); // discarded, never sent again
  });

  it('tails events live through a CloudEvents SQL filter, and pauses and clears', async () => {
    await page.click('nav >> text=Live tail');
    await page.fill('input[name=sql]', "type = 'com.example.console.tail'");
    await page.click('button:text-is("Apply")');
    await page.locator('.badge', { hasText: /^live$/ }).waitFor();
    // Live with this filter: the stream opened before Apply was still "live" for a moment, and events
    // stored before the new stream attached are not in it.
    await page.locator(`[data-testid=tail][data-live-sql="type = 'com.example.console.tail'"]`).waitFor({ state: 'attached' });
    await publish([
      { id: 'tail-skipped', type: 'com.example.console.other' },
      { id: 'tail-1', type: 'com.example.console.tail' },
    ]);
    await page.locator('[data-testid=tail] li[data-event-id=tail-1]').waitFor();
    expect(await page.locator('[data-testid=tail] li[data-event-id=tail-skipped]').count()).toBe(0);

    // The page's own publish form (the admin key here also has `publish`).
    const form = page.locator('[data-testid=publish-event]');
    await form.locator('input[name=type]').fill('com.example.console.tail');
    await form.locator('input[name=id]').fill('tail-2');
    await form.locator('button[type=submit]').click();
    await page.locator('[data-testid=publish-result]', { hasText: 'Stored tail-2' }).waitFor();
    const line = page.locator('[data-testid=tail] li[data-event-id=tail-2]');
    await line.waitFor();
    expect(await line.innerText()).toContain('com.example.console.tail');
    await page.screenshot({ path: path.join(shots, 'live-tail.png') });

    await page.click('button:text-is("Pause")');
    await page.locator('.badge', { hasText: /^paused$/ }).waitFor();
    await page.click('button:text-is("Clear")');
    expect(await page.locator('[data-testid=tail] li').count()).toBe(0);
  });

  it('saves a screenshot of the subscription, rotates its secret, and deletes it after asking again', async () => {
    await page.goto(`${gw.url}/console#/subscriptions/${subscriptionId}`);
    await page.locator('[data-testid=attempts] tbody tr').first().waitFor();
    const file = path.join(shots, 'console.png');
    await page.screenshot({ path: file });
    expect(fs.readFileSync(file).subarray(1, 4).toString()).toBe('PNG');

    await page.click('button:text-is("Rotate secret")');
    const secret = await page.locator('[data-testid=secret]').inputValue();
    expect(secret).toMatch(/^whsec_/);
    await publish(orders(['order-signed']));
    const signed = await waitFor(() => receiver.requests.find((r) => r.headers['ce-id'] === 'order-signed'), { timeoutMs: WAIT_MS });
    expect(String(signed.headers['webhook-signature']).split(' ')).toHaveLength(2); // new and old secret during the overlap

    await page.click('button:text-is("Delete…")');
    await page.click('button:text-is("Delete")');
    await page.locator('text=No subscriptions yet').waitFor(); // back on the list, now empty
    const gone = await fetch(`${gw.url}/subscriptions/${subscriptionId}`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    expect(gone.status).toBe(404);
  });

  it('met no page error and sent no request off the gateway', () => {
    expect(pageErrors).toEqual([]);
    expect(offsite).toEqual([]);
  });
});
