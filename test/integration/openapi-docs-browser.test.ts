import type { Browser } from 'playwright-core';
import { closeBrowser, launchChromium } from '../helpers/browser';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * `GET /docs` in a real browser (Debian's chromium, reaching nothing but loopback): the Redoc page
 * renders the contract and requests nothing from anywhere but the gateway. Redoc's footer used to
 * load Redocly's logo from cdn.redoc.ly.
 */
let gw: TestGateway;
let browser: Browser | undefined;

beforeAll(async () => {
  browser = await launchChromium(); // fails, saying how to install chromium, when it is missing
  gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
}, 60_000);

afterAll(async () => {
  await closeBrowser(browser);
  await gw?.close();
  cleanupTmpDirs();
});

describe('the docs page in a browser', () => {
  it.each(['/docs', '/docs/'])('renders %s from the gateway alone, with no request elsewhere', async (route) => {
    const page = await (await browser!.newContext()).newPage();
    page.setDefaultTimeout(15_000);
    const requested: string[] = [];
    page.on('request', (request) => requested.push(request.url()));
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${gw.url}${route}`);
    // The contract is rendered, the footer (whose logo came from a CDN) among it.
    await page
      .getByRole('heading', { name: /Herald/, level: 1 })
      .first()
      .waitFor();
    await page.locator('a[href="https://redocly.com/redoc/"]').waitFor();
    // The footer's logo is an <img> mounted after the first render: wait until the page is quiet.
    await page.waitForLoadState('networkidle');
    // Redoc's search worker is a blob: of the page's own origin; data: URLs are no request either.
    const local = [`${gw.url}/`, `blob:${gw.url}/`, 'data:'];
    const offsite = requested.filter((url) => !local.some((prefix) => url.startsWith(prefix)));
    expect(offsite).toEqual([]);
    expect(requested.some((url) => url.endsWith('/assets/redoc.standalone.js'))).toBe(true);
    expect(pageErrors).toEqual([]);
    await page.context().close();
  });
});
