import fs from 'node:fs';
import path from 'node:path';
import type { Browser, Locator, Page, Request as BrowserRequest } from 'playwright-core';
import { closeBrowser, launchChromium } from '../helpers/browser';
import { startTestGateway, type Env, type TestGateway } from '../helpers/gateway';
import { freePort } from '../helpers/nats-cluster';
import { startReceiver, useReceivers, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * The web console against what breaks it (found by hostile testing): a pasted key no HTTP header can
 * carry, a browser that refuses sessionStorage, new attempts arriving after "Older attempts", a tail
 * and dead letters of large events, a gateway that goes away, a new tail filter, and newer events
 * under an opened one. Debian's chromium against real gateways, one fresh browser context
 * (so a fresh sessionStorage) per test; every wait is bounded (playwright's default timeout below).
 */

const KEY = 'console-hostile-admin-key';
const auth = { authorization: `Bearer ${KEY}` };
const WAIT_MS = 15_000;
/** A zero-width space: pasted along with a key from a chat or a wiki, invisible, and `trim()` leaves it. */
const ZWSP = '\u200b';

let browser: Browser | undefined;
const gateways: TestGateway[] = [];
let receiver: Receiver | undefined;
const receive = useReceivers();

beforeAll(async () => {
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await closeBrowser(browser);
  await receiver?.close();
  for (const gw of gateways) await gw.close();
  cleanupTmpDirs();
});

async function gateway(env: Env = {}): Promise<TestGateway> {
  const gw = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_API_KEYS: `ops:${KEY}:admin+publish`, ...env });
  gateways.push(gw);
  return gw;
}

/** A new page in a new context, with `key` in its sessionStorage before the console's script runs. */
async function newPage(key?: string): Promise<Page> {
  const page = await (await browser!.newContext()).newPage();
  page.setDefaultTimeout(WAIT_MS);
  if (key !== undefined) await page.addInitScript(`sessionStorage.setItem('herald.apiKey', ${JSON.stringify(key)})`);
  return page;
}

async function publish(gw: TestGateway, events: { id: string; type?: string; data?: unknown }[]): Promise<void> {
  const res = await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/cloudevents-batch+json' },
    body: JSON.stringify(events.map((e) => ({ specversion: '1.0', source: '/console-hostile', type: 'com.example.hostile', ...e }))),
  });
  expect(res.status).toBe(202);
}

const storedKey = (page: Page) => page.evaluate("sessionStorage.getItem('herald.apiKey')");

/** A subscription to `sink`; returns its id. */
async function subscribe(gw: TestGateway, sink: string): Promise<string> {
  const res = await fetch(`${gw.url}/subscriptions`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ sink }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

describe('an API key that cannot go in an HTTP header', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await gateway();
  });

  it('is refused by the key prompt, which names the character, and a good key then works', async () => {
    const page = await newPage();
    await page.goto(`${gw.url}/console`);
    await page.fill('input[name=api-key]', `${KEY}${ZWSP}`);
    await page.click('text=Use this key');
    await page.locator('[data-testid=key-prompt] [role=alert]', { hasText: 'U+200B' }).waitFor();
    expect(await storedKey(page)).toBeNull();

    await page.fill('input[name=api-key]', KEY);
    await page.click('text=Use this key');
    await page.locator('[data-testid=partitions] tbody tr').first().waitFor();
    expect(await storedKey(page)).toBe(KEY);
  });

  it('when already stored, brings back the key prompt saying why, not "cannot reach the gateway"', async () => {
    const page = await newPage(`${KEY}${ZWSP}`);
    await page.goto(`${gw.url}/console`);
    await page.locator('[data-testid=key-prompt] [role=alert]', { hasText: 'U+200B' }).waitFor();
    expect(await page.locator('main').innerText()).not.toContain('cannot reach the gateway');
  });

  it('is not all the page offers when the gateway cannot be reached: the key can be forgotten there too', async () => {
    const page = await newPage(KEY);
    await page.route(`${gw.url}/partitions`, (route) => route.abort()); // as a network failure would
    await page.goto(`${gw.url}/console`);
    await page.locator('[role=alert]', { hasText: 'cannot reach the gateway' }).waitFor();
    await page.unroute(`${gw.url}/partitions`);
    await page.click('button:text-is("Forget the API key")');
    await page.locator('[data-testid=key-prompt]').waitFor();
    expect(await storedKey(page)).toBeNull();
  });
});

describe('a browser that refuses sessionStorage', () => {
  it('keeps the key in memory for the page, says so, and reaches the overview', async () => {
    const gw = await gateway();
    const page = await newPage();
    // As a privacy setting or a full quota makes it: every write throws.
    await page.addInitScript("Storage.prototype.setItem = () => { throw new DOMException('blocked', 'SecurityError'); }");
    await page.goto(`${gw.url}/console`);
    await page.fill('input[name=api-key]', KEY);
    await page.click('text=Use this key');
    await page.locator('[data-testid=partitions] tbody tr').first().waitFor();
    expect(await page.locator('[data-testid=key-in-memory]').innerText()).toMatch(/blocks session storage.*until you reload/);
    expect(await storedKey(page)).toBeNull();
  });
});

describe('the attempt log', () => {
  it('stays continuous, newest first, after "Older attempts" and new deliveries', async () => {
    const gw = await gateway();
    receiver = await startReceiver(() => ({ status: 204 }));
    const created = await fetch(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ sink: receiver.url }),
    });
    const { id } = (await created.json()) as { id: string };
    const attempts = async () => {
      const res = await fetch(`${gw.url}/subscriptions/${id}/attempts?limit=1000`, { headers: auth });
      return ((await res.json()) as { attempts: { partition: number; offset: number }[] }).attempts.map(
        (a) => `${a.partition}:${a.offset}`,
      );
    };
    const attempted = (n: number) =>
      waitFor(async () => ((await attempts()).length === n ? true : undefined), { timeoutMs: WAIT_MS, what: `${n} attempts` });
    await publish(
      gw,
      Array.from({ length: 30 }, (_, i) => ({ id: `a-${i}` })),
    );
    await attempted(30);

    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/subscriptions/${id}`);
    const rows = page.locator('[data-testid=attempts] tbody tr');
    await rows.nth(24).waitFor(); // the newest page: 25 of 30
    await page.click('button:text-is("Older attempts")');
    await rows.nth(29).waitFor();

    await publish(
      gw,
      Array.from({ length: 10 }, (_, i) => ({ id: `b-${i}` })),
    );
    await attempted(40);
    // Every attempt, the 10 new ones on top: none lost between the newest page and the older ones.
    await rows.nth(39).waitFor();
    expect(await page.locator('[data-testid=attempts] tbody tr td.mono').allInnerTexts()).toEqual(await attempts());
  });
});

describe('the live tail', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await gateway();
  });

  it('shows, once a filter is applied, only events that match it', async () => {
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/tail`);
    await page.locator('[data-testid=tail][data-live-sql=""]').waitFor({ state: 'attached' });
    await publish(gw, [{ id: 'unwanted-1', type: 'com.example.unwanted' }]);
    await page.locator('[data-testid=tail] li[data-event-id=unwanted-1]').waitFor();
    await page.locator('[data-testid=tail] li').first().click(); // opened: the open line must go too

    const sql = "type = 'com.example.wanted'";
    await page.fill('input[name=sql]', sql);
    await page.click('button:text-is("Apply")');
    await page.locator(`[data-testid=tail][data-live-sql="${sql}"]`).waitFor({ state: 'attached' });
    await publish(gw, [{ id: 'wanted-1', type: 'com.example.wanted' }]);
    await page.locator('[data-testid=tail] li[data-event-id=wanted-1]').waitFor();

    const lines = await page.locator('[data-testid=tail] li').all();
    expect(await Promise.all(lines.map((l) => l.getAttribute('data-event-id')))).toEqual(['wanted-1']);
    expect(await page.locator('p', { hasText: 'received, newest' }).innerText()).toMatch(
      new RegExp(`matching ${sql.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}; 1 received`),
    );
    expect(await page.locator('[data-testid=tail] pre').count()).toBe(0);
  });

  it('keeps a short preview of each large event, not the event, and reads the whole event when a line is opened', async () => {
    const page = await newPage(KEY);
    const cdp = await page.context().newCDPSession(page);
    await page.goto(`${gw.url}/console#/tail`);
    await page.locator('[data-testid=tail][data-live-sql=""]').waitFor({ state: 'attached' });
    const heapMB = async () => {
      await cdp.send('HeapProfiler.collectGarbage');
      return (await cdp.send('Runtime.getHeapUsage')).usedSize / 1e6;
    };
    const before = await heapMB();

    const N = 40;
    const data = 'x'.repeat(900_000); // under the default 1 MiB body limit
    for (let i = 0; i < N; i++) await publish(gw, [{ id: `big-${i}`, data }]);
    await page.locator(`[data-testid=tail] li[data-event-id=big-${N - 1}]`).waitFor();
    expect(await page.locator('[data-testid=tail] li').count()).toBe(N);
    // 40 events hold 36 MB of data: a tab keeping them grows by that much; previews take about 1 MB.
    expect((await heapMB()) - before).toBeLessThan(8);

    const line = page.locator('[data-testid=tail] li[data-event-id=big-3]');
    expect((await line.innerText()).length).toBeLessThan(400); // time, offset, attributes and 120 characters of data
    const read = page.waitForResponse((res) => /\/partitions\/0\/events\?from=\d+&limit=1$/.test(res.url()));
    await line.click();
    await read;
    const shown = await line.locator('pre').innerText();
    expect(shown).toContain('"id": "big-3"');
    expect(shown).toContain(data);
  }, 120_000);

  it('shows a long id, type and source cut short (console probe: 900 KB ids were kept and shown whole, 89 MB for 40 lines)', async () => {
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/tail`);
    await page.locator('[data-testid=tail][data-live-sql=""]').waitFor({ state: 'attached' });
    const N = 5;
    for (let i = 0; i < N; i++) await publish(gw, [{ id: `${i}-${'i'.repeat(300_000)}`, type: `t${'t'.repeat(100_000)}` }]);
    await page
      .locator('[data-testid=tail] li')
      .nth(N - 1)
      .waitFor();
    const lines = await page.locator('[data-testid=tail] li').allInnerTexts();
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(800);
    expect(lines[0]).toContain('…');
  });

  it('says an opened line whose record is now corrupt is corrupt (probe: "no longer in the log (retention)")', async () => {
    const own = await gateway();
    const page = await newPage(KEY);
    await page.goto(`${own.url}/console#/tail`);
    await page.locator('[data-testid=tail][data-live-sql=""]').waitFor({ state: 'attached' });
    await publish(own, [{ id: 'soon-bad', data: { mark: 'MARKBAD-payload' } }]);
    await page.locator('[data-testid=tail] li[data-event-id=soon-bad]').waitFor();
    // Large events after it, which the tail reads too, push it out of the gateway's 16 MiB cache of decoded events.
    for (let i = 0; i < 12; i++) await publish(own, [{ id: `after-${i}`, data: 'x'.repeat(900_000) }]);
    await page.locator('[data-testid=tail] li[data-event-id=after-11]').waitFor();
    const wal = path.join(own.dataDir, 'wal');
    const seg = path.join(
      wal,
      fs.readdirSync(wal).find((f) => f.endsWith('.seg'))!,
    );
    const bytes = fs.readFileSync(seg);
    const at = bytes.indexOf('MARKBAD-payload');
    expect(at).toBeGreaterThan(0);
    bytes[at + 5] = bytes[at + 5]! ^ 1;
    fs.writeFileSync(seg, bytes);
    await page.locator('[data-testid=tail] li[data-event-id=soon-bad]').click();
    await page.getByText('0:0 is corrupt').waitFor();
  });
});

describe('the dead letters view', () => {
  it('does not read the listed events again while it stays open, reads one when it is opened, and still shows new ones', async () => {
    const gw = await gateway();
    const refusing = await receive(() => ({ status: 400, body: 'refused' }));
    const id = await subscribe(gw, refusing.url);
    const N = 5;
    const data = 'x'.repeat(900_000);
    for (let i = 0; i < N; i++) await publish(gw, [{ id: `dead-${i}`, data }]);
    const page = await newPage(KEY);
    // The page's clock runs on, and the test moves it 2 s at a time to the next poll rather than waiting for it.
    await page.clock.install();
    await page.goto(`${gw.url}/console#/dead-letters/${id}`);
    const rows = page.locator('[data-testid=dead-letters] tbody tr');
    await rows.nth(N - 1).waitFor();

    // Three polls (one every 2 s) of a list holding 4.5 MB of events: a re-read would be that much each time.
    const sizes: Promise<number>[] = [];
    const count = (req: BrowserRequest) => sizes.push(req.sizes().then((s) => s.responseBodySize));
    page.on('requestfinished', count);
    // A poll (its first read: the subscription's count) starts 2 s after the one before settled, its reads included:
    // the fourth starting means three were done whole.
    await untilListPolls(page, id, 4);
    page.off('requestfinished', count);
    expect(sizes.length).toBeGreaterThan(0); // it does poll
    expect((await Promise.all(sizes)).reduce((a, b) => a + b, 0)).toBeLessThan(50_000);

    await publish(gw, [{ id: 'dead-late' }]);
    await page.locator('[data-testid=dead-letters] tr[data-event-id=dead-late]').waitFor();

    const read = page.waitForResponse((res) => /\/partitions\/0\/events\?from=\d+&limit=1$/.test(res.url()));
    await page.locator('[data-testid=dead-letters] tr[data-event-id=dead-2]').click();
    await read;
    const shown = await page.locator('[data-testid=dead-letter-detail] pre.json', { hasText: '"id": "dead-2"' }).innerText();
    expect(shown).toContain(data);
  }, 90_000);
});

describe('the dead letters view, among many subscriptions', () => {
  it('reads its choice of subscriptions (a page of 1,000 naming every partition) at opening and after an action, not every 5 s', async () => {
    const gw = await gateway({ HERALD_PARTITIONS: '16' });
    const refusing = await receive(() => ({ status: 400, body: 'refused' }));
    const id = await subscribe(gw, refusing.url);
    for (let i = 0; i < 20; i++) await subscribe(gw, `${refusing.url}/other-${i}`);
    await publish(gw, [{ id: 'choice-1' }]);
    const page = await newPage(KEY);
    await page.clock.install(); // moved on 2 s at a time to the list's next poll, as above
    const choiceReads: string[] = [];
    page.on('request', (r) => {
      const url = new URL(r.url());
      if (url.pathname.endsWith('/subscriptions') && url.searchParams.get('limit') === '1000') choiceReads.push(url.search);
    });
    await page.goto(`${gw.url}/console#/dead-letters/${id}`);
    await page.locator('[data-testid=dead-letters] tr[data-event-id=choice-1]').waitFor();
    // Five polls of the chosen subscription's list (one every 2 s): ten seconds in which a poll of the choice
    // every 5 s read its 1,000 subscriptions (2.3 MB on 16 partitions) twice more.
    await untilListPolls(page, id, 5);
    expect(choiceReads).toHaveLength(1);

    // After an action, the choice shows the new count.
    const option = page.locator(`[data-testid=dead-letter-subscription] option[value="${id}"]`);
    expect(await option.innerText()).toContain('(1)');
    await page.locator('[data-testid=dead-letters] tr[data-event-id=choice-1] button:text-is("Delete")').click();
    await page.click('button:text-is("Discard")');
    await page.locator('[data-testid=no-dead-letters]').waitFor();
    await page.waitForFunction((el) => el?.textContent?.includes('(0)'), await option.elementHandle());
    expect(choiceReads).toHaveLength(2);
  });
});

describe('the dead letters view, against what a receiver writes', () => {
  it('fits a 1280 px window however long the error and the event id, and shows bidi controls as escapes', async () => {
    const gw = await gateway();
    // U+202E reverses what follows it on screen: "…txt.exe" would read as "exe.txt…".
    const refusing = await receive(() => ({ status: 400, body: `refused \u202eexe.txt ${'x'.repeat(3000)}` }));
    const id = await subscribe(gw, refusing.url);
    const eventId = `long-${'i'.repeat(195)}`;
    await publish(gw, [{ id: eventId, type: 'com.example.\u2067hostile' }]);
    // A zero-width space would make this id look like "zw-1" (console probe).
    await publish(gw, [{ id: 'zw-\u200b1' }]);
    // A type of 1,000 characters, and a subscription whose sink is 1,500 long in the selector (re-probe: 8,005 and 12,331 px).
    await publish(gw, [{ id: 'long-type', type: `com.example.${'t'.repeat(1000)}` }]);
    await subscribe(gw, `${refusing.url}/${'p'.repeat(1500)}`);
    const page = await (await browser!.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.setDefaultTimeout(WAIT_MS);
    await page.addInitScript(`sessionStorage.setItem('herald.apiKey', ${JSON.stringify(KEY)})`);
    await page.goto(`${gw.url}/console#/dead-letters/${id}`);
    const row = page.locator('[data-testid=dead-letters] tbody tr').first();
    await page.locator('[data-testid=dead-letters] tr[data-event-id=long-type]').waitFor();
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBeLessThanOrEqual(1280);
    // The event column stays readable and the rows short (probe: 54 px wide, ids wrapped a few characters a
    // line, a row 1,556 px tall for a 200-character id).
    const cell = await row.locator('td.event-cell').boundingBox();
    expect(cell!.width).toBeGreaterThanOrEqual(120);
    for (const box of await page
      .locator('[data-testid=dead-letters] tbody tr')
      .evaluateAll((trs) => trs.map((tr) => tr.getBoundingClientRect().height)))
      expect(box).toBeLessThan(80);
    expect(await page.locator('[data-testid=dead-letters] tbody tr', { hasText: 'zw-' }).innerText()).toContain('zw-\\u200b1');
    const text = await row.innerText();
    expect(text).toContain('\\u202eexe.txt');
    expect(text).toContain('com.example.\\u2067hostile');
    expect(text).not.toMatch(/[\u202e\u2067]/);
    await row.click();
    const detail = await page.locator('[data-testid=dead-letter-detail]').innerText();
    expect(detail).toContain('\\u202eexe.txt');
    expect(detail).not.toMatch(/[\u202e\u2067]/);
  });
});

describe('the subscriptions list', () => {
  it('shows 100 subscriptions a page, with next and previous, however many there are', async () => {
    const gw = await gateway();
    const ids: string[] = [];
    for (let i = 0; i < 105; i++) ids.push(await subscribe(gw, `http://127.0.0.1:9/sub-${i}`));
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/subscriptions`);
    const rows = page.locator('[data-testid=subscriptions] tbody tr');
    const shownIds = () => rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-subscription')));
    await page.locator('[data-testid=subscriptions-range]', { hasText: 'page 1' }).waitFor();
    expect(await shownIds()).toEqual(ids.slice(0, 100));
    await page.click('[data-testid=subscriptions-next]');
    await page.locator('[data-testid=subscriptions-range]', { hasText: 'page 2' }).waitFor();
    expect(await shownIds()).toEqual(ids.slice(100));
    expect(await page.locator('[data-testid=subscriptions-next]').count()).toBe(0);
    await page.click('button:text-is("← previous")');
    await page.locator('[data-testid=subscriptions-range]', { hasText: 'page 1' }).waitFor();
    expect(await shownIds()).toEqual(ids.slice(0, 100));
  }, 90_000);
});

describe('the overview', () => {
  it("keeps an opened event of a partition's latest events on that event when newer events arrive", async () => {
    const gw = await gateway();
    await publish(
      gw,
      Array.from({ length: 3 }, (_, i) => ({ id: `older-${i}`, data: { n: i } })),
    );
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console`);
    await page.click('button:text-is("latest events")');
    const opened = page.locator('[data-testid=latest-events] li.selected');
    await page.locator('[data-testid=latest-events] li[data-event-id=older-1]').click();
    await opened.locator('pre', { hasText: '"id": "older-1"' }).waitFor();

    await publish(
      gw,
      Array.from({ length: 4 }, (_, i) => ({ id: `newer-${i}` })),
    );
    await page.locator('[data-testid=latest-events] li[data-event-id=newer-3]').waitFor();
    expect(await opened.count()).toBe(1);
    expect(await opened.getAttribute('data-event-id')).toBe('older-1');
    expect(await opened.locator('pre').innerText()).toContain('"id": "older-1"');
  });

  it("cuts a latest event's id, type and source to 200 characters, as the tail and dead letters do (console probe: 300,000 each, whole)", async () => {
    const gw = await gateway();
    const long = (c: string) => c.repeat(300_000);
    await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ specversion: '1.0', id: `big-${long('I')}`, source: `/big/${long('S')}`, type: `big.${long('T')}` }),
    }).then((res) => expect(res.status).toBe(202));
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console`);
    await page.click('button:text-is("latest events")');
    const item = page.locator('[data-testid=latest-events] li').first();
    await item.waitFor();
    const text = await item.innerText();
    expect(text.length).toBeLessThan(1000);
    for (const start of ['big-III', '/big/SSS', 'big.TTT']) expect(text).toContain(start);
    expect((await item.getAttribute('data-event-id'))!.length).toBe(200);
    // Opened, it is the whole event.
    await item.click();
    expect((await item.locator('pre').innerText()).length).toBeGreaterThan(900_000);
  });

  it('shows the ten latest events of a partition of 1 MiB events, the newest too (was: the first 8 MiB page, without the newest)', async () => {
    const gw = await gateway({ HERALD_MAX_BODY_BYTES: '16MiB' });
    const data = 'x'.repeat(1024 * 1024);
    await publish(
      gw,
      Array.from({ length: 12 }, (_, i) => ({ id: `big-${i}`, data })),
    );
    const page = await newPage(KEY);
    await page.clock.install(); // runs on; moved past the next poll below rather than waited for
    await page.goto(`${gw.url}/console`);
    await page.click('button:text-is("latest events")');
    await page.locator('[data-testid=latest-events] li[data-event-id=big-11]').waitFor();
    const ids = await page
      .locator('[data-testid=latest-events] li')
      .evaluateAll((items) => items.map((li) => li.getAttribute('data-event-id')));
    expect(ids).toEqual(Array.from({ length: 10 }, (_, i) => `big-${11 - i}`));
    // Polled again (every 4 s), it reads only what is new: nothing while the head stays, then the one new event
    // (probe: all ten again on every poll, 45 MB in 20 s).
    const asked: string[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/partitions/0/events')) asked.push(new URL(r.url()).search);
    });
    await page.clock.fastForward(4500);
    await page.waitForTimeout(300);
    expect(asked).toEqual([]);
    await publish(gw, [{ id: 'big-12', data }]);
    await page.locator('[data-testid=latest-events] li[data-event-id=big-12]').waitFor();
    expect(asked).toEqual(['?from=12&limit=1']);
  });

  it('shows the latest events past a corrupt oldest one (re-probe: was none at all)', async () => {
    const gw = await gateway();
    await publish(
      gw,
      Array.from({ length: 12 }, (_, i) => ({ id: `c-${i}`, data: { mark: `MARK${String(i).padStart(2, '0')}-payload` } })),
    );
    // A bad sector under offset 2, the oldest of the ten latest: its checksum no longer holds.
    const wal = path.join(gw.dataDir, 'wal');
    const seg = path.join(
      wal,
      fs.readdirSync(wal).find((f) => f.endsWith('.seg'))!,
    );
    const bytes = fs.readFileSync(seg);
    const at = bytes.indexOf('MARK02-payload');
    expect(at).toBeGreaterThan(0);
    bytes[at + 5] = bytes[at + 5]! ^ 1;
    fs.writeFileSync(seg, bytes);
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console`);
    await page.click('button:text-is("latest events")');
    await page.locator('[data-testid=latest-events] li[data-event-id=c-11]').waitFor();
    const ids = await page
      .locator('[data-testid=latest-events] li')
      .evaluateAll((items) => items.map((li) => li.getAttribute('data-event-id')));
    expect(ids).toEqual(Array.from({ length: 9 }, (_, i) => `c-${11 - i}`));
  });

  it('says the gateway is unreachable, and shows no checks, once it is gone', async () => {
    const gw = await startTestGateway({ HERALD_PARTITIONS: '1' }); // closed by the test
    const page = await newPage();
    try {
      await page.goto(`${gw.url}/console`);
      await page.locator('[data-testid=readiness] .badge', { hasText: /^ready$/ }).waitFor();
      expect(await page.locator('.checks .check').count()).toBeGreaterThan(0);
    } finally {
      await gw.close();
    }
    // Readiness is read every 4 s: the next failed read must replace "ready" (and its checks).
    await page.locator('[data-testid=readiness] .badge', { hasText: /^unreachable$/ }).waitFor();
    expect(await page.locator('.checks').count()).toBe(0);
  });
});

/**
 * Presses Tab (at most `max` times) until the focus is on `target`, as a keyboard-only operator moves
 * through the page; fails when it never gets there (the control cannot be reached without a mouse).
 */
/**
 * Moves the page's installed clock on, 2 s at a time, until the dead letters list of subscription `id` has been
 * polled `polls` times: the next poll's timer is set only once the one before has settled, reads included.
 */
async function untilListPolls(page: Page, id: string, polls: number): Promise<void> {
  const listPoll = (req: BrowserRequest) => new URL(req.url()).pathname.endsWith(`/subscriptions/${id}`);
  for (let poll = 0; poll < polls; poll++) {
    let started = false;
    const next = page.waitForRequest(listPoll).then(() => (started = true));
    for (let jump = 0; jump < 50 && !started; jump++) {
      await page.clock.fastForward(2000);
      await Promise.race([next, new Promise((r) => setTimeout(r, 100))]);
    }
    await next;
  }
}

async function tabTo(page: Page, target: Locator, max = 80): Promise<void> {
  const handle = await target.elementHandle();
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    if (await handle!.evaluate((el) => el === el.ownerDocument.activeElement)) return;
  }
  throw new Error(`${max} presses of Tab never reached ${target.toString()}`);
}

/** Waits until `target` has the focus (the page moves it after rendering). */
async function focused(target: Locator): Promise<void> {
  const handle = await target.elementHandle();
  await target.page().waitForFunction((el) => el === el.ownerDocument.activeElement, handle, { timeout: WAIT_MS });
}

describe('keyboard-only use', () => {
  it("opens a partition's latest event, a tail line and a dead letter with Tab and Enter (were: mouse clicks only)", async () => {
    const gw = await gateway();
    const refusing = await receive(() => ({ status: 400, body: 'refused' }));
    const id = await subscribe(gw, refusing.url);
    await publish(gw, [{ id: 'kb-1', data: { mark: 'KB-ONE' } }]);
    const page = await newPage(KEY);

    await page.goto(`${gw.url}/console`);
    await tabTo(page, page.locator('button:text-is("latest events")'));
    await page.keyboard.press('Enter');
    const latest = page.locator('[data-testid=latest-events] li[data-event-id=kb-1]');
    await latest.waitFor();
    await tabTo(page, latest.locator('button'));
    await page.keyboard.press('Enter');
    await latest.locator('pre', { hasText: 'KB-ONE' }).waitFor();
    expect(await latest.locator('button').getAttribute('aria-expanded')).toBe('true');
    // A click in the opened event (to select its text) leaves it open.
    await latest.locator('pre').click();
    expect(await latest.locator('pre').count()).toBe(1);

    await page.goto(`${gw.url}/console#/tail`);
    await page.locator('[data-testid=tail][data-live-sql=""]').waitFor({ state: 'attached' });
    await publish(gw, [{ id: 'kb-2', data: { mark: 'KB-TWO' } }]);
    const line = page.locator('[data-testid=tail] li[data-event-id=kb-2]');
    await line.waitFor();
    await tabTo(page, line.locator('button'));
    await page.keyboard.press('Enter');
    await line.locator('pre', { hasText: 'KB-TWO' }).waitFor();

    await page.goto(`${gw.url}/console#/dead-letters/${id}`);
    const row = page.locator('[data-testid=dead-letters] tr[data-event-id=kb-2]');
    await row.waitFor();
    await tabTo(page, row.getByRole('button', { name: /^open dead letter/ }));
    await page.keyboard.press('Enter');
    await page.locator('[data-testid=dead-letter-detail] pre.json', { hasText: 'KB-TWO' }).waitFor();
  });

  it('names the main controls for a screen reader: the page in the navigation, the back link, forget, each Delete, the tail state', async () => {
    const gw = await gateway();
    const refusing = await receive(() => ({ status: 400, body: 'refused' }));
    const id = await subscribe(gw, refusing.url);
    await publish(gw, [{ id: 'named-1' }]);
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/subscriptions/${id}`);
    // Were: "←", a bare "forget", and no way to tell which navigation link is the page shown.
    await page.locator('[data-testid=total-lag]').waitFor();
    await page.locator('.card-head').getByRole('link', { name: 'all subscriptions', exact: true }).waitFor();
    await page.getByRole('button', { name: 'forget the API key', exact: true }).waitFor();
    const current = page.locator('nav a[aria-current=page]');
    expect(await current.innerText()).toBe('Subscriptions');

    await page.goto(`${gw.url}/console#/dead-letters/${id}`);
    const row = page.locator('[data-testid=dead-letters] tr[data-event-id=named-1]');
    await row.waitFor();
    const deadLetterId = await row.getAttribute('data-dead-letter');
    // Was: a column of buttons all named "Delete".
    await row.getByRole('button', { name: `delete dead letter ${deadLetterId}` }).waitFor();
    expect(await current.innerText()).toBe('Dead letters');

    await page.goto(`${gw.url}/console#/tail`);
    await page
      .getByRole('status')
      .filter({ hasText: /^live$/ })
      .waitFor();
    await page.click('button:text-is("Pause")');
    await page
      .getByRole('status')
      .filter({ hasText: /^paused$/ })
      .waitFor();
  });

  it('moves the focus to a question asked again (Cancel, inside a group named by the question), and back after Cancel', async () => {
    const gw = await gateway();
    const id = await subscribe(gw, (await receive()).url);
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/subscriptions/${id}`);
    const remove = page.locator('button:text-is("Delete…")');
    await tabTo(page, remove);
    await page.keyboard.press('Enter');
    const question = page.getByRole('group', { name: 'Delete this subscription, its delivery state and dead letters?' });
    // Was: the focus fell to the top of the page, and the question was never read out.
    await focused(question.getByRole('button', { name: 'Cancel' }));
    await page.keyboard.press('Enter'); // Cancel: nothing is deleted
    await focused(remove);
    expect((await fetch(`${gw.url}/subscriptions/${id}`, { headers: auth })).status).toBe(200);

    await page.keyboard.press('Enter');
    await focused(question.getByRole('button', { name: 'Cancel' }));
    await page.keyboard.press('Shift+Tab'); // to "Delete"
    await page.keyboard.press('Enter');
    await page.locator('[data-testid=subscriptions-range]').waitFor();
    expect((await fetch(`${gw.url}/subscriptions/${id}`, { headers: auth })).status).toBe(404);
  });
});

describe('seeking a subscription', () => {
  it('asks again before seeking (was: one click sent every stored event again), then says a paused one waits for resume', async () => {
    const gw = await gateway();
    const receiver = await receive();
    const id = await subscribe(gw, receiver.url);
    await publish(
      gw,
      Array.from({ length: 3 }, (_, i) => ({ id: `seek-${i}` })),
    );
    await waitFor(() => receiver.requests.length >= 3, { what: 'three deliveries' });
    const page = await newPage(KEY);
    const seeks: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname.endsWith('/seek')) seeks.push(r.postData() ?? '');
    });
    await page.goto(`${gw.url}/console#/subscriptions/${id}`);
    await page.click('button:text-is("Seek…")');
    await page.getByRole('group', { name: 'Deliver every stored event (that its filters match) again?' }).waitFor();
    await page.click('button:text-is("Cancel")');
    expect(seeks).toEqual([]);

    await page.click('button:text-is("Seek…")');
    await page.click('.seek button:text-is("Seek")');
    await page.locator('[data-testid=seek-result]', { hasText: 'Every stored event will be delivered again.' }).waitFor();
    expect(seeks).toEqual([JSON.stringify({ to: 'earliest' })]);
    await waitFor(() => receiver.requests.length >= 6, { what: 'the three events again' });

    await page.click('button:text-is("Pause")');
    await page.locator('.badge', { hasText: 'paused · user' }).waitFor();
    await page.click('button:text-is("Seek…")');
    await page.click('.seek button:text-is("Seek")');
    // A paused subscription stays paused at its new position (the contract): nothing is delivered until it resumes.
    await page.locator('[data-testid=seek-result]', { hasText: 'delivered again once it is resumed.' }).waitFor();
  });
});

describe("a subscription's delivery options", () => {
  const LONG_HEADER = `x-${'h'.repeat(60)}`;
  it('shows the ack deadline, the auto-disable window and the names of extra headers (were: not shown at all)', async () => {
    const gw = await gateway();
    const receiver = await receive();
    const res = await fetch(`${gw.url}/subscriptions`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({
        sink: receiver.url,
        delivery: {
          ackMode: 'manual',
          ackDeadlineMs: 45_000,
          disableAfterFailingMs: 0,
          headers: { 'x-tenant': 'acme', authorization: 'Bearer s3cret', [LONG_HEADER]: 'v' },
        },
      }),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/subscriptions/${id}`);
    const facts = page.locator('dl.facts');
    await facts.waitFor();
    const text = await facts.innerText();
    expect(text).toMatch(/ack deadline\s+45 s/);
    expect(text).toMatch(/pauses after\s+never \(0\)/);
    expect(await page.locator('[data-testid=delivery-headers]').innerText()).toBe(`x-tenant, authorization, ${LONG_HEADER}`);
    // A long name wraps in its card: the page stays as wide as the window.
    expect(await page.evaluate('document.documentElement.scrollWidth')).toBe(page.viewportSize()!.width);
    expect(await page.locator('main').innerText()).not.toContain('s3cret'); // values are never returned
  });
});

describe('a double click', () => {
  it('redelivers every dead letter once and publishes one test event (were: twice each)', async () => {
    const gw = await gateway();
    const refusing = await receive(() => ({ status: 400, body: 'refused' }));
    const id = await subscribe(gw, refusing.url);
    await publish(gw, [{ id: 'twice-1' }, { id: 'twice-2' }]);
    const page = await newPage(KEY);
    const posts: string[] = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') posts.push(new URL(r.url()).pathname);
    });
    await page.goto(`${gw.url}/console#/dead-letters/${id}`);
    await page.locator('[data-testid=dead-letters] tr[data-event-id=twice-2]').waitFor();
    await page.dblclick('button:text-is("Redeliver all")');
    await page.locator('[role=status]', { hasText: 'queued for redelivery' }).waitFor();
    // Each queued redelivery stays listed until it starts: a second request queued both again, and the receiver got each twice.
    expect(posts.filter((p) => p.endsWith('/dead-letters/redeliver'))).toHaveLength(1);

    await page.goto(`${gw.url}/console#/tail`);
    await page.dblclick('[data-testid=publish-event] button[type=submit]');
    await page.locator('[data-testid=publish-result]').waitFor();
    expect(posts.filter((p) => p.endsWith('/events'))).toHaveLength(1);
  });
});

describe('a question answered', () => {
  it('gives the focus back to the button that asked it once Seek is confirmed (was: to <body>)', async () => {
    const gw = await gateway();
    const id = await subscribe(gw, (await receive()).url);
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/subscriptions/${id}`);
    const seek = page.locator('button:text-is("Seek…")');
    await tabTo(page, seek);
    await page.keyboard.press('Enter');
    await focused(page.getByRole('group', { name: /^Deliver every stored event/ }).getByRole('button', { name: 'Cancel' }));
    await page.keyboard.press('Shift+Tab'); // to "Seek"
    await page.keyboard.press('Enter');
    await page.locator('[data-testid=seek-result]').waitFor();
    await focused(seek);
  });
});

describe('a 401 while the operator types', () => {
  it('asks for a key again and keeps what was typed in the new subscription form (was: the form was thrown away)', async () => {
    const gw = await gateway();
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console#/subscriptions`);
    const form = page.locator('[data-testid=create-subscription]');
    await form.locator('input[name=sink]').fill('http://127.0.0.1:9/typed-sink');
    await form.locator('textarea[name=filters]').fill('[{"exact": {"type": "typed.type"}}]');
    await form.locator('select[name=ordering]').selectOption('none');
    // The key stops working (revoked, or the gateway restarted with other keys): the next poll is answered 401.
    await page.evaluate("sessionStorage.setItem('herald.apiKey', 'a-revoked-key')");
    await page.locator('[data-testid=key-prompt]').waitFor();
    await page.fill('input[name=api-key]', KEY);
    await page.click('text=Use this key');
    await page.locator('[data-testid=subscriptions-range]').waitFor();
    expect(await form.locator('input[name=sink]').inputValue()).toBe('http://127.0.0.1:9/typed-sink');
    expect(await form.locator('textarea[name=filters]').inputValue()).toBe('[{"exact": {"type": "typed.type"}}]');
    expect(await form.locator('select[name=ordering]').inputValue()).toBe('none');
    await form.locator('button[type=submit]').click();
    await page.locator('[data-testid=secret]').waitFor();
    const list = await fetch(`${gw.url}/subscriptions`, { headers: auth });
    const { subscriptions } = (await list.json()) as { subscriptions: { sink: string; delivery: { ordering: string } }[] };
    expect(subscriptions.map((s) => [s.sink, s.delivery.ordering])).toEqual([['http://127.0.0.1:9/typed-sink', 'none']]);
  });
});

describe('a gateway restarted with other keys', () => {
  it('asks for a key, and the live tail behind the prompt goes on with the new one (its 401 is not final)', async () => {
    const port = String(await freePort());
    // Closed by the test, then started again on its port with other keys.
    const before = await startTestGateway({ HERALD_PARTITIONS: '1', HERALD_API_KEYS: `ops:${KEY}:admin+publish`, HERALD_PORT: port });
    const page = await newPage(KEY);
    try {
      await page.goto(`${before.url}/console#/tail`);
      await page.locator('[data-testid=tail][data-live-sql=""]').waitFor({ state: 'attached' });
    } finally {
      await before.close();
    }
    const other = 'console-hostile-other-key';
    const after = await gateway({ HERALD_PORT: port, HERALD_API_KEYS: `ops:${other}:admin+publish` });
    await page.locator('[data-testid=key-prompt]').waitFor();
    await page.fill('input[name=api-key]', other);
    await page.click('text=Use this key');
    await page.locator('[data-testid=tail][data-live-sql=""]').waitFor({ state: 'attached' });
    const res = await fetch(`${after.url}/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${other}`, 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ specversion: '1.0', source: '/console-hostile', type: 'com.example.hostile', id: 'after-restart' }),
    });
    expect(res.status).toBe(202);
    await page.locator('[data-testid=tail] li[data-event-id=after-restart]').waitFor();
  });
});

describe('the dead letters choice of subscription', () => {
  it('reads the dead letters of the subscription the arrow keys stop on, not of each one passed (was: a read per key press)', async () => {
    const gw = await gateway();
    const refusing = await receive(() => ({ status: 400, body: 'refused' }));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await subscribe(gw, `${refusing.url}/arrow-${i}`));
    const page = await newPage(KEY);
    await page.clock.install();
    await page.goto(`${gw.url}/console#/dead-letters/${ids[0]}`);
    await page.locator('[data-testid=no-dead-letters]').waitFor();
    const read: string[] = [];
    page.on('request', (r) => {
      const m = /\/subscriptions\/([^/]+)\/dead-letters/.exec(new URL(r.url()).pathname);
      if (m) read.push(m[1]!);
    });
    // From here the page's time moves only when the test moves it.
    await page.clock.pauseAt(Date.now() + 1000);
    await page.locator('[data-testid=dead-letter-subscription]').focus();
    // Pressed as an operator does, a moment apart (the page's clock moved on 300 ms, the gateway given time to answer).
    for (let i = 0; i < 4; i++) {
      await page.keyboard.press('ArrowDown');
      await page.clock.fastForward(300);
      await page.waitForTimeout(200);
    }
    expect(await page.locator('[data-testid=dead-letter-subscription]').inputValue()).toBe(ids[4]);
    await page.clock.fastForward(1000);
    await page.waitForFunction(`location.hash.endsWith(${JSON.stringify(ids[4])})`);
    await page.clock.resume();
    await waitFor(() => read.includes(ids[4]!), { timeoutMs: WAIT_MS, what: 'the dead letters of the last subscription' });
    expect(new Set(read)).toEqual(new Set([ids[4]]));
  });
});

describe('the overview, with 4,096 partitions', () => {
  it('draws a page of partitions with the total, pages on, and lists only those holding events on demand (was: all 4,096 every 2 s)', async () => {
    const gw = await gateway({ HERALD_PARTITIONS: '4096' });
    await publish(gw, [{ id: 'many-1' }]);
    const found = await fetch(`${gw.url}/events?source=/console-hostile&id=many-1`, { headers: auth });
    const { partition } = (await found.json()) as { partition: number };
    const page = await newPage(KEY);
    await page.goto(`${gw.url}/console`);
    const rows = page.locator('[data-testid=partitions] tbody tr');
    const shown = () => rows.evaluateAll((trs) => trs.map((tr) => Number(tr.getAttribute('data-partition'))));
    await page.locator('[data-testid=partitions-range]', { hasText: '1–64 of 4,096' }).waitFor();
    expect(await shown()).toEqual(Array.from({ length: 64 }, (_, i) => i));
    await page.click('[data-testid=partitions-next]');
    await page.locator('[data-testid=partitions-range]', { hasText: '65–128 of 4,096' }).waitFor();
    expect(await shown()).toEqual(Array.from({ length: 64 }, (_, i) => 64 + i));
    await page.check('input[name=only-holding]');
    await page.locator('[data-testid=partitions-range]', { hasText: '1 of 4,096 holding events' }).waitFor();
    expect(await shown()).toEqual([partition]);
    await page.click('button:text-is("latest events")');
    await page.locator('[data-testid=latest-events] li[data-event-id=many-1]').waitFor();
  }, 60_000);
});
