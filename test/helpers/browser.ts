import fs from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

import chromiumConfig from '../../scripts/chromium.json';

/** Debian's chromium: CI installs the package (.ci/run); no browser is downloaded from anywhere else. */
export const CHROMIUM = chromiumConfig.executablePath;

/**
 * The browser reaches nothing but loopback: no background networking, component updates or sync,
 * and every host name but 127.0.0.1 fails to resolve (scripts/chromium.json, which
 * scripts/screenshot-console.mjs reads too).
 */
export const CHROMIUM_ARGS = chromiumConfig.args;

/**
 * Launches headless chromium through playwright-core. A missing browser is a failure that says how
 * to install it, never a skip: the console's end-to-end test must run wherever `npm test` does.
 */
export async function launchChromium(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(
      `${CHROMIUM} is missing: the console's end-to-end test drives Debian's chromium. Install it with ` +
        '`apt-get install -y chromium` (as root, or with sudo); .ci/run installs it in CI.',
    );
  }
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** Closes the browser, waiting at most `timeoutMs` (playwright kills a browser it launched when the test process exits). */
export async function closeBrowser(browser: Browser | undefined, timeoutMs = 10_000): Promise<void> {
  if (!browser) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([browser.close(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
  clearTimeout(timer);
}
