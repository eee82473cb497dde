import Database from 'better-sqlite3';
import path from 'node:path';
import { closeBrowser, launchChromium } from '../helpers/browser';
import { runHerald } from '../helpers/cli';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { createContractChecker, createContractClient, loadContract } from '../helpers/openapi';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * A subscription whose delivery does not start on this node (here: stored filters this version
 * cannot compile, as a newer version or a hand edit could leave) is retried in the background. It
 * must not hide the others: the list and /metrics still answer, with no stats for it; its own reads
 * answer 503; a PATCH that fixes it starts it at once.
 */

const checker = createContractChecker(loadContract());
let receiver: Receiver;
let gw: TestGateway | undefined;

beforeAll(async () => {
  receiver = await startReceiver();
});
afterEach(async () => {
  await gw?.close();
  gw = undefined;
});
afterAll(async () => {
  await receiver?.close();
  cleanupTmpDirs();
});

async function createSubscription(type: string): Promise<string> {
  const call = createContractClient(gw!.url, checker);
  const created = await call('POST', '/subscriptions', { json: { sink: receiver.url, filters: [{ exact: { type } }] } });
  expect(created.status).toBe(201);
  return created.body.id as string;
}

describe('a subscription whose delivery cannot start', () => {
  it('is listed without stats beside the others, /metrics still answers, and a PATCH that fixes it starts it', async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
    const healthy = await createSubscription('t.healthy');
    const broken = await createSubscription('t.broken');
    const { dataDir } = gw;
    await gw.close();
    const db = new Database(path.join(dataDir, 'herald.db'));
    // A filter as the document allows, calling a CESQL function this version does not have (a newer one might).
    db.prepare('UPDATE subscriptions SET filters = ? WHERE id = ?').run('[{"sql":"FUTUREFN(type)"}]', broken);
    db.close();

    gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    const call = createContractClient(gw.url, checker);

    // Before, one subscription that did not start made the whole list (and every scrape) a 503.
    const list = await call('GET', '/subscriptions');
    expect(list.status).toBe(200);
    const byId = new Map((list.body.subscriptions as { id: string; stats: unknown }[]).map((s) => [s.id, s]));
    expect(byId.get(healthy)?.stats).toMatchObject({ deadLetters: 0, partitions: expect.any(Array) });
    expect(byId.get(broken)?.stats).toBeNull();

    // `herald subs list` prints it with '-' for the numbers it does not have.
    const cli = await runHerald(['subs', 'list'], { url: gw.url });
    expect(cli.code).toBe(0);
    const row = cli.stdout.split('\n').find((line) => line.includes(broken));
    expect(row?.trim().split(/\s+/).slice(-3)).toEqual(['-', '-', '-']);

    // The console's list says so rather than showing zeros.
    const browser = await launchChromium();
    try {
      const page = await (await browser.newContext()).newPage();
      page.setDefaultTimeout(15_000);
      await page.goto(`${gw.url}/console`);
      await page.click('nav >> text=Subscriptions');
      const lagOf = (id: string) => page.locator(`tr[data-subscription="${id}"] [data-testid=lag]`).innerText();
      expect((await lagOf(broken)).trim()).toBe('not started');
      expect((await lagOf(healthy)).trim()).toBe('0');
    } finally {
      await closeBrowser(browser);
    }

    const scrape = await fetch(`${gw.url}/metrics`);
    expect(scrape.status).toBe(200);
    const metrics = await scrape.text();
    expect(metrics).toContain(`herald_dead_letters{subscription="${healthy}"} 0`);
    expect(metrics).toContain(`herald_subscription_state{subscription="${broken}",state="active"} 1`);
    expect(metrics).not.toContain(`herald_dead_letters{subscription="${broken}"}`);

    const own = await call('GET', `/subscriptions/${broken}`);
    expect(own.status).toBe(503);
    expect(own.headers.get('retry-after')).toBe('1');

    // A change that is stored is answered as stored, with no stats (contract probe: a 503 "nothing was changed"
    // for a change that was stored, so a client retried for ever).
    const unfixed = await call('PATCH', `/subscriptions/${broken}`, { json: { delivery: { maxInFlight: 5 } } });
    expect(unfixed).toMatchObject({ status: 200, body: { stats: null, delivery: { maxInFlight: 5 } } });
    expect(await call('POST', `/subscriptions/${broken}/pause`)).toMatchObject({ status: 200, body: { state: 'paused', stats: null } });
    expect(await call('POST', `/subscriptions/${broken}/resume`)).toMatchObject({ status: 200, body: { state: 'active', stats: null } });
    // What is not applied is still refused: a seek needs the delivery that has not started.
    expect((await call('POST', `/subscriptions/${broken}/seek`, { json: { to: 'earliest' } })).status).toBe(503);

    // The fix starts delivery at once (not at the next background try, 5 s later), so the PATCH is answered with stats.
    const patched = await call('PATCH', `/subscriptions/${broken}`, { json: { filters: [{ exact: { type: 't.broken' } }] } });
    expect(patched.status).toBe(200);
    expect(patched.body.stats).toMatchObject({ deadLetters: 0 });
    const published = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { 'ce-specversion': '1.0', 'ce-id': 'b1', 'ce-source': '/unstarted', 'ce-type': 't.broken', 'content-type': 'text/plain' },
      body: 'x',
    });
    expect(published.status).toBe(202);
    await waitFor(() => receiver.requests.some((r) => r.headers['ce-id'] === 'b1'), {
      what: 'the event delivered to the fixed subscription',
    });
    const relisted = await call('GET', '/subscriptions');
    expect((relisted.body.subscriptions as { stats: unknown }[]).every((s) => s.stats !== null)).toBe(true);
  });
});

describe('a subscription stored past today’s size limits (an older version accepted it)', () => {
  it('keeps delivering after the upgrade, while a PATCH to such filters is refused (upgrade probe: it stopped)', async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
    const wide = await createSubscription('t.wide');
    const long = await createSubscription('t.long');
    const { dataDir } = gw;
    await gw.close();
    // 70 filter objects (the limit is 64), and an sql expression of 5,000 characters (the limit is 4,096).
    const seventy = [
      { any: [{ exact: { type: 't.wide' } }, ...Array.from({ length: 68 }, (_, i) => ({ exact: { type: `t.other${i}` } }))] },
    ];
    const longSql = `type = 't.long'${" OR type = 't.none'".repeat(260)}`;
    expect(longSql.length).toBeGreaterThan(4096);
    const db = new Database(path.join(dataDir, 'herald.db'));
    db.prepare('UPDATE subscriptions SET filters = ? WHERE id = ?').run(JSON.stringify(seventy), wide);
    db.prepare('UPDATE subscriptions SET filters = ? WHERE id = ?').run(JSON.stringify([{ sql: longSql }]), long);
    db.close();

    gw = await startTestGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    const call = createContractClient(gw.url, checker);
    expect((await call('GET', `/subscriptions/${wide}`)).status).toBe(200);
    expect((await call('GET', `/subscriptions/${long}`)).status).toBe(200);
    for (const [id, type] of [
      ['w1', 't.wide'],
      ['l1', 't.long'],
    ]) {
      const published = await fetch(`${gw.url}/events`, {
        method: 'POST',
        headers: { 'ce-specversion': '1.0', 'ce-id': id!, 'ce-source': '/stored-limits', 'ce-type': type!, 'content-type': 'text/plain' },
        body: 'x',
      });
      expect(published.status).toBe(202);
    }
    await waitFor(() => ['w1', 'l1'].every((id) => receiver.requests.some((r) => r.headers['ce-id'] === id)), {
      what: 'both events delivered by the subscriptions stored past the limits',
    });
    expect((await call('PATCH', `/subscriptions/${wide}`, { json: { filters: seventy } })).status).toBe(400);
  });
});
