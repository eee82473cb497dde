import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { runHerald, spawnHerald } from '../helpers/cli';
import request from 'supertest';
import { publishBatch } from '../helpers/delivery';
import { useCliGateway } from '../helpers/cli-gateway';
import { startTestGateway } from '../helpers/gateway';
import { waitFor } from '../helpers/receiver';
import { tmpDir } from '../helpers/tmp';

/**
 * The `herald` command line, each command run as a child process (`node bin/herald.js …`, what
 * `npx herald` runs) against a real gateway: exit statuses, `--json` output parsed, human output
 * read for the ids a user looks for.
 */
const version = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'package.json'), 'utf8')).version as string;

const fx = useCliGateway({ HERALD_PARTITIONS: '4' }, (req) => ({ status: req.headers['ce-type'] === 'com.example.refused' ? 400 : 204 }));
const { herald, json, running } = fx;

/** A loopback port nothing listens on (it just did). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('herald: usage and exit statuses', () => {
  it('prints the package version with --version and -v', async () => {
    for (const flag of ['--version', '-v']) {
      const result = await runHerald([flag]);
      expect(result).toMatchObject({ code: 0, stdout: `${version}\n` });
    }
  });

  it('runs the same when its compiled module is run directly (was: nothing done, exit 0)', () => {
    const entry = path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js');
    const printed = spawnSync(process.execPath, [entry, '--version'], { encoding: 'utf8' });
    expect([printed.status, printed.stdout]).toEqual([0, `${version}\n`]);
    const missing = spawnSync(process.execPath, [entry, 'backup'], { encoding: 'utf8' });
    expect(missing.status).toBe(2);
  });

  it('exits 2 on an unknown option, a missing argument, a bad value, a missing command', async () => {
    const unknown = await herald('subs', 'list', '--no-such-option');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown option '--no-such-option'/);
    const missing = await herald('events', 'get', '/only-a-source');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/missing required argument 'id'/);
    const bad = await herald('events', 'read', '--partition', 'two');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--partition/);
    expect((await runHerald(['subs', 'list', '--url', 'ftp://127.0.0.1'])).code).toBe(2);
    expect((await runHerald(['subs'])).code).toBe(2);
    expect((await runHerald(['no-such-command'])).code).toBe(2);
  });

  it('exits 1 naming the URL when the gateway cannot be reached', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const result = await runHerald(['subs', 'list'], { url });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot reach the gateway at ${url}: ECONNREFUSED`);
    expect(result.stdout).toBe('');
  });

  it('exits 1 with the problem detail and its errors on stderr when the gateway refuses', async () => {
    const result = await herald('publish', '--source', '/cli/refused', '--type', 't', '--time', 'yesterday');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('not a valid CloudEvent (400 invalid_event)');
    expect(result.stderr).toMatch(/- time: .*RFC 3339/);
    expect(result.stdout).toBe('');
  });

  it('sends --api-key (or HERALD_API_KEY) as a bearer token', async () => {
    const secured = await startTestGateway({ HERALD_API_KEYS: 'ops:cli-test-secret-0123456789:admin+read+publish' });
    try {
      // A 401 names the CLI's ways of giving a key, not the HTTP header.
      const denied = await runHerald(['subs', 'list'], { url: secured.url });
      expect(denied.code).toBe(1);
      expect(denied.stderr).toBe(
        'herald: the gateway needs an API key (401 unauthorized): give it with --api-key <key> or HERALD_API_KEY\n',
      );
      const wrong = await runHerald(['subs', 'list', '--api-key', 'not-the-key'], { url: secured.url });
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toBe(
        'herald: the API key is not valid (401 unauthorized): check the key given with --api-key or HERALD_API_KEY\n',
      );
      const wrongInEnv = await runHerald(['subs', 'list'], { url: secured.url, env: { HERALD_API_KEY: 'not-the-key' } });
      expect(wrongInEnv.stderr).toContain('check the key given with --api-key or HERALD_API_KEY');
      const batch = path.join(tmpDir(), 'one.jsonl');
      fs.writeFileSync(batch, '{"specversion":"1.0","id":"k-1","source":"/cli/keys","type":"t"}\n');
      const batchDenied = await runHerald(['publish', '--batch', batch], { url: secured.url });
      expect(batchDenied.code).toBe(1);
      expect(batchDenied.stderr).toContain(
        'the gateway needs an API key (401 unauthorized): give it with --api-key <key> or HERALD_API_KEY',
      );
      expect(batchDenied.stderr).not.toContain('Authorization: Bearer');
      const byOption = await runHerald(['subs', 'list', '--json', '--api-key', 'cli-test-secret-0123456789'], { url: secured.url });
      expect(byOption.code).toBe(0);
      expect(JSON.parse(byOption.stdout)).toEqual({ subscriptions: [] });
      const byEnv = await runHerald(['subs', 'list'], { url: secured.url, env: { HERALD_API_KEY: 'cli-test-secret-0123456789' } });
      expect(byEnv).toMatchObject({ code: 0, stdout: '(no subscriptions)\n' });
    } finally {
      await secured.close();
    }
  });
});

describe('herald publish', () => {
  it('publishes one event in binary mode and reports a resend as a duplicate', async () => {
    const args = ['publish', '--source', '/cli/orders', '--type', 'com.example.order.created', '--id', 'order-1001'];
    const first = await herald(
      ...args,
      '--partition-key',
      'customer-42',
      '--subject',
      'café 50% off',
      '--data',
      '{"orderId":1001,"total":99.5}',
    );
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^stored order-1001 \(source \/cli\/orders\) at partition \d, offset \d+\n$/);
    const again = await json(...args, '--partition-key', 'customer-42', '--data', '{"orderId":1001,"total":99.5}');
    expect(again).toEqual({ results: [expect.objectContaining({ id: 'order-1001', source: '/cli/orders', duplicate: true })] });
    const stored = await json('events', 'get', '/cli/orders', 'order-1001');
    expect(stored.event).toMatchObject({
      specversion: '1.0',
      type: 'com.example.order.created',
      partitionkey: 'customer-42',
      subject: 'café 50% off',
      datacontenttype: 'application/json',
      data: { orderId: 1001, total: 99.5 },
    });
    expect(stored.partition).toBe(again.results[0].partition);
  });

  it('gives an event without --id a random UUID, and takes data from stdin or a file byte for byte', async () => {
    const fromStdin = await runHerald(
      ['publish', '--source', '/cli/data', '--type', 't', '--data-stdin', '--content-type', 'text/plain', '--json'],
      {
        url: fx.gw.url,
        input: 'hello\nworld',
      },
    );
    expect(fromStdin.code).toBe(0);
    const { id } = JSON.parse(fromStdin.stdout).results[0];
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect((await json('events', 'get', '/cli/data', id)).event).toMatchObject({ datacontenttype: 'text/plain', data: 'hello\nworld' });

    const bytes = Buffer.from([0x00, 0xff, 0x80, 0x41]);
    const file = path.join(tmpDir(), 'blob.bin');
    fs.writeFileSync(file, bytes);
    const fromFile = await json(
      'publish',
      '--source',
      '/cli/data',
      '--type',
      't',
      '--id',
      'blob',
      '--data-file',
      file,
      '--content-type',
      'application/octet-stream',
    );
    expect(fromFile.results[0].duplicate).toBe(false);
    expect((await json('events', 'get', '/cli/data', 'blob')).event.data_base64).toBe(bytes.toString('base64'));
  });

  it('stores --data "" as empty data, not as an event without data (spec probe: an empty binary body is no data)', async () => {
    const args = ['publish', '--source', '/cli/data', '--type', 't', '--id', 'empty', '--subject', 'nothing', '--data', ''];
    expect((await json(...args, '--content-type', 'text/plain')).results[0].duplicate).toBe(false);
    const { event } = await json('events', 'get', '/cli/data', 'empty');
    expect(event).toMatchObject({ subject: 'nothing', datacontenttype: 'text/plain', data_base64: '' });
  });

  it('refuses data that is not JSON under a JSON content type, and conflicting data options, with exit 2', async () => {
    const notJson = await herald('publish', '--source', '/cli/data', '--type', 't', '--id', 'never', '--data', 'hello');
    expect(notJson.code).toBe(2);
    expect(notJson.stderr).toMatch(/--data is not JSON .*--content-type text\/plain/);
    const both = await herald('publish', '--source', '/cli/data', '--type', 't', '--data', '1', '--data-stdin');
    expect(both.code).toBe(2);
    expect((await herald('publish', '--type', 't')).code).toBe(2);
    expect((await herald('events', 'get', '/cli/data', 'never')).code).toBe(1);
  });
});

describe('herald publish --batch', () => {
  const event = (i: number) =>
    JSON.stringify({ specversion: '1.0', id: `b-${i}`, source: '/cli/batch', type: 'com.example.batch', data: { i } });

  it('sends a JSON Lines file in batches of up to 1,000, and a re-run stores nothing twice', async () => {
    const file = path.join(tmpDir(), 'events.jsonl');
    const lines = Array.from({ length: 2500 }, (_, i) => event(i));
    lines.splice(1200, 0, '', '   '); // blank lines are skipped
    fs.writeFileSync(file, `${lines.join('\n')}\n`);

    const first = await herald('publish', '--batch', file);
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(`published 2500 events from ${file}: 2500 stored, 0 duplicates (already stored)\n`);
    expect(first.stderr).toBe(''); // no progress bar without a terminal

    const again = await json('publish', '--batch', file);
    expect(again).toMatchObject({ stored: 0, duplicates: 2500 });
    expect(again.results).toHaveLength(2500);
    expect(again.results[2499]).toMatchObject({ id: 'b-2499', source: '/cli/batch', duplicate: true });
    expect((await json('events', 'get', '/cli/batch', 'b-1234')).event.data).toEqual({ i: 1234 });
  });

  it('refuses a file with a line that is not JSON before sending anything (exit 2, naming the line)', async () => {
    const file = path.join(tmpDir(), 'broken.jsonl');
    fs.writeFileSync(file, [event(90_000), '', '{"id": "x",', event(90_001)].join('\n'));
    const result = await herald('publish', '--batch', file);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${file}, line 3: not JSON`);
    expect((await herald('events', 'get', '/cli/batch', 'b-90000')).code).toBe(1); // nothing was sent
  });

  it('stops at a refused request, naming the bad lines, and keeps what was stored before it', async () => {
    const file = path.join(tmpDir(), 'invalid.jsonl');
    const lines = [
      event(80_000),
      event(80_001),
      JSON.stringify({ specversion: '1.0', id: 'no-type', source: '/cli/batch' }),
      event(80_002),
    ];
    fs.writeFileSync(file, lines.join('\n'));
    const result = await herald('publish', '--batch', file, '--batch-size', '2');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${file}, lines 3–4 (one request, nothing of it stored)`);
    expect(result.stderr).toMatch(/- line 3: type: /);
    expect(result.stderr).toContain('before it, 2 events were stored and 0 were duplicates');
    expect((await herald('events', 'get', '/cli/batch', 'b-80001')).code).toBe(0);
    expect((await herald('events', 'get', '/cli/batch', 'b-80002')).code).toBe(1);
  });

  it('names a refused request of one line as that line, not a range of one (was: lines 3–3)', async () => {
    const file = path.join(tmpDir(), 'last-alone.jsonl');
    const lines = [event(81_000), event(81_001), JSON.stringify({ specversion: '1.0', id: 'no-type-alone', source: '/cli/batch' })];
    fs.writeFileSync(file, lines.join('\n'));
    const result = await herald('publish', '--batch', file, '--batch-size', '2');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${file}, line 3 (one request, nothing of it stored)`);
    expect(result.stderr).not.toContain('lines 3–3');
    expect(result.stderr).toContain('before it, 2 events were stored and 0 were duplicates');
  });
});

describe('herald events', () => {
  it('gets an event, and reads a partition page as a table and as JSON', async () => {
    const published = await json('publish', '--source', '/cli/read', '--type', 'com.example.read', '--id', 'r-1', '--partition-key', 'k');
    const { partition, offset } = published.results[0];

    const got = await herald('events', 'get', '/cli/read', 'r-1');
    expect(got.code).toBe(0);
    expect(got.stdout).toMatch(new RegExp(`^partition:\\s+${partition}\\noffset:\\s+${offset}\\n`));
    expect(got.stdout).toContain('"id": "r-1"');

    const page = await json('events', 'read', '--partition', String(partition), '--from', String(offset), '--limit', '1');
    expect(page.events).toEqual([expect.objectContaining({ partition, offset, event: expect.objectContaining({ id: 'r-1' }) })]);
    expect(page.nextOffset).toBe(offset + 1);

    const table = await herald('events', 'read', '--partition', String(partition), '--from', String(offset), '--limit', '1');
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^OFFSET\s+TIME\s+TYPE\s+SOURCE\s+ID$/);
    expect(table.stdout).toMatch(new RegExp(`^${offset}\\s+-\\s+com\\.example\\.read\\s+/cli/read\\s+r-1$`, 'm'));
    expect(table.stderr).toContain(`next page: --from ${offset + 1}`);
  });

  it('tails the stream, filtered by --sql, until SIGTERM (exit 0)', async () => {
    const tail = spawnHerald(['events', 'tail', '--sql', "type = 'com.example.tail'"], { url: fx.gw.url });
    const tailJson = spawnHerald(['events', 'tail', '--json'], { url: fx.gw.url });
    running.push(tail, tailJson);
    await tail.waitFor('stderr', /tailing events/);
    // --json prints no note when connected: publish (events the other tail's filter drops) until one arrives.
    await waitFor(
      async () => {
        await herald('publish', '--source', '/cli/tail', '--type', 'com.example.other', '--id', `probe-${Date.now()}`);
        return tailJson.stdout().includes('/cli/tail');
      },
      { timeoutMs: 15_000, intervalMs: 200, what: 'the JSON tail to connect' },
    );
    await herald('publish', '--source', '/cli/tail', '--type', 'com.example.tail', '--id', 'tailed-1');

    const [line] = await tail.waitFor('stdout', /^.*tailed-1.*$/m);
    expect(line).toMatch(/^\S+Z {2}\d+:\d+\s+com\.example\.tail {2}\/cli\/tail {2}tailed-1$/);
    expect(tail.stdout()).not.toContain('com.example.other');
    await tailJson.waitFor('stdout', /tailed-1/);
    const messages = tailJson
      .stdout()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(messages.find((m) => m.event.id === 'tailed-1')).toMatchObject({ partition: expect.any(Number), offset: expect.any(Number) });

    tail.child.kill('SIGTERM');
    tailJson.child.kill('SIGINT');
    expect(await tail.exited).toBe(0);
    expect(await tailJson.exited).toBe(0);
  });

  it('exits 1 when the tail filter does not parse', async () => {
    const result = await herald('events', 'tail', '--sql', 'type LIKE');
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/sql expression is not valid \(400 invalid_request\)/);
  });
});

describe('herald subs', () => {
  it('creates, lists, gets, updates, pauses, resumes, rotates, seeks and deletes a subscription', async () => {
    const created = await herald(
      'subs',
      'create',
      '--sink',
      fx.receiver.url,
      '--filter-source',
      '/cli/subs',
      '--max-attempts',
      '3',
      '--header',
      'authorization: Bearer t0ken',
      '--start-at',
      'earliest',
    );
    expect(created.code).toBe(0);
    const id = /^id:\s+(\S+)$/m.exec(created.stdout)![1]!;
    expect(created.stdout).toMatch(/^secret:\s+whsec_\S+$/m);
    expect(created.stdout).toMatch(/^filters:\s+\[\{"prefix":\{"source":"\/cli\/subs"\}\}\]$/m);

    const list = await json('subs', 'list');
    expect(list.subscriptions.map((s: { id: string }) => s.id)).toContain(id);
    const table = await herald('subs', 'list');
    expect(table.stdout).toMatch(new RegExp(`^${id}\\s+active\\s+${fx.receiver.url.replace(/[.]/g, '\\.')}`, 'm'));

    const got = await json('subs', 'get', id);
    expect(got).toMatchObject({ id, delivery: { retry: { maxAttempts: 3 }, headers: { authorization: '***' } } });
    expect(got.secret).toBeUndefined();
    const shown = (await herald('subs', 'get', id)).stdout;
    expect(shown).toMatch(new RegExp(`^id:\\s+${id}$`, 'm'));
    // Every delivery setting the tour gives is shown (was: no ack deadline).
    expect(shown).toMatch(/^delivery:\s+binary, ordering partition, ack auto \(deadline 30000 ms\), max in flight 16, timeout 10000 ms$/m);

    const updated = await json('subs', 'update', id, '--max-in-flight', '4', '--format', 'structured');
    expect(updated.delivery).toMatchObject({ maxInFlight: 4, format: 'structured', headers: { authorization: '***' } });
    expect((await herald('subs', 'update', id)).code).toBe(2); // nothing to change
    expect((await herald('subs', 'update', id, '--format', 'xml')).code).toBe(2);

    expect(await herald('subs', 'pause', id)).toMatchObject({ code: 0, stdout: `subscription ${id} is paused (user)\n` });
    expect((await json('subs', 'resume', id)).state).toBe('active');

    const rotated = await json('subs', 'rotate-secret', id, '--overlap-seconds', '0');
    expect(rotated.secret).toMatch(/^whsec_/);
    expect(rotated.previousSecretExpiresAt).toBeUndefined();

    const sought = await json('subs', 'seek', id, '--to', 'latest');
    expect(sought.id).toBe(id);
    expect((await herald('subs', 'seek', id)).code).toBe(2);
    expect((await herald('subs', 'seek', id, '--to', 'latest', '--time', '2026-01-01T00:00:00Z')).code).toBe(2);

    expect(await json('subs', 'delete', id)).toEqual({ id, deleted: true });
    const gone = await herald('subs', 'get', id);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`subscription ${id} does not exist (404 not_found)`);
  });

  it('lists subscriptions a page at a time with --limit and --after, printing where the next page starts', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await json('subs', 'create', '--sink', fx.receiver.url, '--filter-source', `/cli/page-${i}`)).id);
    const all = (await json('subs', 'list')).subscriptions.map((s: { id: string }) => s.id);
    const seen: string[] = [];
    let after: string[] = [];
    for (let page = 0; page < all.length; page++) {
      const result = await herald('subs', 'list', '--limit', '2', ...after);
      expect(result.code).toBe(0);
      seen.push(...[...result.stdout.matchAll(/^([0-9a-f-]{36})\s/gm)].map((m) => m[1]!));
      const next = /^next page: --after (\S+)$/m.exec(result.stderr);
      if (!next) break;
      after = ['--after', next[1]!];
    }
    expect(seen).toEqual(all);
    expect(ids.every((id) => seen.includes(id))).toBe(true);
    expect((await json('subs', 'list', '--limit', '1')).nextAfter).toEqual(expect.any(String));
    expect((await herald('subs', 'list', '--limit', '0')).code).toBe(2);
    for (const id of ids) await herald('subs', 'delete', id);
  });

  it('lists delivery attempts, newest first', async () => {
    const sub = await json('subs', 'create', '--sink', fx.receiver.url, '--filter-source', '/cli/attempts');
    await herald('publish', '--source', '/cli/attempts', '--type', 'com.example.attempt', '--id', 'a-1');
    const page = await waitFor(
      async () => {
        const p = await json('subs', 'attempts', sub.id);
        return p.attempts.length > 0 ? p : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'an attempt' },
    );
    expect(page.attempts[0]).toMatchObject({ attempt: 1, status: 204, outcome: 'delivered', deliveryId: expect.stringMatching(/^dlv_/) });
    const table = await herald('subs', 'attempts', sub.id);
    expect(table.stdout).toMatch(new RegExp(`\\s1\\s+204\\s+delivered\\s+\\d+\\s+${page.attempts[0].deliveryId}`));
    await herald('subs', 'delete', sub.id);
  });
});

describe('herald dead-letters', () => {
  it('lists, redelivers and deletes dead letters', async () => {
    const sub = await json('subs', 'create', '--sink', fx.receiver.url, '--filter-source', '/cli/dead');
    // With data, so it is delivered in binary mode (ce-type is a header the receiver reads).
    await herald('publish', '--source', '/cli/dead', '--type', 'com.example.refused', '--id', 'd-1', '--data', '{}');
    const page = await waitFor(
      async () => {
        const p = await json('dead-letters', 'list', sub.id);
        return p.deadLetters.length > 0 ? p : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'a dead letter' },
    );
    const [deadLetter] = page.deadLetters;
    expect(deadLetter).toMatchObject({ reason: 'rejected_status', lastStatus: 400, event: { id: 'd-1' } });
    const table = await herald('dead-letters', 'list', sub.id);
    expect(table.stdout).toMatch(
      new RegExp(`^${deadLetter.id}\\s+\\d+:\\d+\\s+d-1\\s+com\\.example\\.refused\\s+1\\s+400\\s+rejected_status`, 'm'),
    );

    expect((await herald('dead-letters', 'redeliver', sub.id)).code).toBe(2); // ids or --all
    expect((await herald('dead-letters', 'redeliver', sub.id, deadLetter.id, '--all')).code).toBe(2);
    expect(await json('dead-letters', 'redeliver', sub.id, deadLetter.id)).toEqual({ redelivering: 1 });
    // Refused again: it comes back as a new dead letter, which --all redelivers and delete discards.
    const again = await waitFor(
      async () => {
        const p = await json('dead-letters', 'list', sub.id);
        return p.deadLetters.find((d: { id: string }) => d.id !== deadLetter.id);
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'the dead letter back' },
    );
    expect(await herald('dead-letters', 'redeliver', sub.id, '--all')).toMatchObject({
      code: 0,
      stdout: `redelivering 1 dead letter of subscription ${sub.id}\n`,
    });
    const third = await waitFor(
      async () => {
        const p = await json('dead-letters', 'list', sub.id);
        return p.deadLetters.find((d: { id: string }) => d.id !== again.id && d.id !== deadLetter.id);
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'the dead letter back again' },
    );
    expect(await herald('dead-letters', 'delete', sub.id, third.id)).toMatchObject({ code: 0 });
    expect((await json('dead-letters', 'list', sub.id)).deadLetters).toEqual([]);
    const missing = await herald('dead-letters', 'delete', sub.id, third.id);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/404 not_found/);
    await herald('subs', 'delete', sub.id);
  });

  it('finds a dead letter past a page that large events ended early (re-probe: "has no dead letter", exit 1)', async () => {
    const sub = await json('subs', 'create', '--sink', fx.receiver.url, '--filter-source', '/cli/dead-large');
    for (let i = 0; i < 12; i++)
      await publishBatch(fx.gw.url, [
        { specversion: '1.0', id: `l-${i}`, source: '/cli/dead-large', type: 'com.example.refused', data: 'x'.repeat(900_000) },
      ]);
    await waitFor(async () => (await request(fx.gw.url).get(`/subscriptions/${sub.id}`)).body.stats.deadLetters === 12, {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: '12 dead letters',
    });
    await herald('subs', 'pause', sub.id); // redelivered ones stay queued
    // Their ids, page by page: the first page holds fewer than 12 (8 MiB of events).
    const ids: string[] = [];
    let firstPage = 0;
    for (let after: string | null = '0'; after !== null;) {
      const page: { deadLetters: { id: string }[]; nextAfter: string | null } = (
        await request(fx.gw.url).get(`/subscriptions/${sub.id}/dead-letters?limit=1000&after=${after}`)
      ).body;
      ids.push(...page.deadLetters.map((d: { id: string }) => d.id));
      firstPage ||= page.deadLetters.length;
      after = page.nextAfter;
    }
    expect(firstPage).toBeLessThan(12);
    expect(ids).toHaveLength(12);
    expect(await herald('dead-letters', 'redeliver', sub.id, ids[0]!, ids[11]!)).toMatchObject({
      code: 0,
      stdout: `redelivering 2 dead letters of subscription ${sub.id}\n`,
    });
    await herald('subs', 'delete', sub.id);
  });

  it('names the ids a redeliver does not find, and exits 1 unless it found them all', async () => {
    // Paused: a redelivered dead letter stays queued, so the ids stay what the test says they are.
    const sub = await json('subs', 'create', '--sink', fx.receiver.url, '--filter-source', '/cli/dead-ids');
    for (const id of ['i-1', 'i-2'])
      await herald('publish', '--source', '/cli/dead-ids', '--type', 'com.example.refused', '--id', id, '--data', '{}');
    const letters = await waitFor(
      async () => {
        const p = await json('dead-letters', 'list', sub.id);
        return p.deadLetters.length === 2 ? p.deadLetters : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'two dead letters' },
    );
    await herald('subs', 'pause', sub.id);
    const [first, second] = letters.map((d: { id: string }) => d.id) as [string, string];
    const unknown = String(Number(second) + 1000);

    const none = await herald('dead-letters', 'redeliver', sub.id, unknown, '0');
    expect(none).toEqual({
      code: 1,
      stdout: '',
      stderr: `herald: subscription ${sub.id} has no dead letter ${unknown} or 0: nothing redelivered\n`,
    });

    const some = await herald('dead-letters', 'redeliver', sub.id, first, unknown, first);
    expect(some).toEqual({
      code: 1,
      stdout: `redelivering 1 dead letter of subscription ${sub.id}\n`,
      stderr: `herald: subscription ${sub.id} has no dead letter ${unknown}: not redelivered\n`,
    });
    const someJson = await herald('dead-letters', 'redeliver', sub.id, second, '007', '--json');
    expect(someJson.code).toBe(1);
    expect(JSON.parse(someJson.stdout)).toEqual({ redelivering: 1 });
    expect(someJson.stderr).toBe(`herald: subscription ${sub.id} has no dead letter 007: not redelivered\n`);

    const unknownSub = await herald('dead-letters', 'redeliver', '00000000-0000-4000-8000-000000000000', first);
    expect(unknownSub.code).toBe(1);
    expect(unknownSub.stderr).toMatch(/404 not_found/);
    await herald('subs', 'delete', sub.id);
  });
});
