import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HERALD_BIN, runHerald, spawnHerald } from '../helpers/cli';
import { useCliGateway } from '../helpers/cli-gateway';
import { startTestGateway } from '../helpers/gateway';
import { waitFor } from '../helpers/receiver';

/**
 * The `herald` command line against what a hostile tester (probe 27) found: inputs that can be read
 * only once, option values that make another request than the one asked for, output that forges
 * lines, and commands that leave a subscription behind. Each command runs as a child process against
 * a real gateway.
 */
const fx = useCliGateway({ HERALD_PARTITIONS: '2' }, () => ({ status: 204 }));
const { herald, json, running } = fx;

describe('herald publish --batch from an input that can be read only once', () => {
  const lines = (tag: string) =>
    [1, 2, 3].map((i) => JSON.stringify({ specversion: '1.0', id: `${tag}-${i}`, source: '/probe27/pipe', type: 't' })).join('\n') + '\n';

  it('publishes what a pipe gives on /dev/stdin and on "-" (was: "published 0 events", exit 0, nothing sent)', async () => {
    const devStdin = await runHerald(['publish', '--batch', '/dev/stdin'], { url: fx.gw.url, input: lines('dev') });
    expect(devStdin).toEqual({
      code: 0,
      stdout: 'published 3 events from /dev/stdin: 3 stored, 0 duplicates (already stored)\n',
      stderr: '',
    });
    const dash = await runHerald(['publish', '--batch', '-'], { url: fx.gw.url, input: lines('dash') });
    expect(dash).toEqual({
      code: 0,
      stdout: 'published 3 events from standard input: 3 stored, 0 duplicates (already stored)\n',
      stderr: '',
    });
    for (const id of ['dev-1', 'dev-3', 'dash-2']) expect((await json('events', 'get', '/probe27/pipe', id)).event.id).toBe(id);
  });

  it('still checks a piped input whole before sending any of it (exit 2, naming the line)', async () => {
    const input = `${lines('bad')}{"specversion":"1.0","source":"/probe27/pipe","type":"t"}\n`;
    const result = await runHerald(['publish', '--batch', '-'], { url: fx.gw.url, input });
    expect(result.code).toBe(2);
    expect(result.stderr).toBe('herald: standard input, line 4: the event has no string "id"; nothing was sent\n');
    expect((await herald('events', 'get', '/probe27/pipe', 'bad-1')).code).toBe(1);
  });

  it('publishes from a process substitution, <(…)', async () => {
    const script = `"${process.execPath}" "${HERALD_BIN}" publish --batch <(printf '%s' "$LINES")`;
    const child = spawn('bash', ['-c', script], { env: { PATH: process.env.PATH, HERALD_URL: fx.gw.url, LINES: lines('subst') } });
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect(stdout).toMatch(/^published 3 events from \/dev\/fd\/\d+: 3 stored, 0 duplicates \(already stored\)\n$/);
    expect((await json('events', 'get', '/probe27/pipe', 'subst-3')).event.id).toBe('subst-3');
  });
});

describe('herald publish --content-type application/cloudevents…', () => {
  it.each(['application/cloudevents+json', 'application/cloudevents-batch+json', 'Application/CloudEvents+xml; charset=utf-8'])(
    '%s: exit 2 naming publish --batch, nothing sent (was: another event stored than the options said)',
    async (contentType) => {
      const other = JSON.stringify({ specversion: '1.0', id: 'ct-other', source: '/probe27/other', type: 'x' });
      const data = contentType.includes('batch') ? `[${other}]` : other;
      const args = [
        'publish',
        '--source',
        '/probe27/mine',
        '--type',
        't',
        '--id',
        'ct-mine',
        '--content-type',
        contentType,
        '--data',
        data,
      ];
      const result = await herald(...args);
      expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 2, stdout: '' });
      expect(result.stderr).toContain(`--content-type ${contentType} is a CloudEvents format`);
      expect(result.stderr).toContain('publish --batch');
      expect((await herald('events', 'get', '/probe27/other', 'ct-other')).code).toBe(1);
      expect((await herald('events', 'get', '/probe27/mine', 'ct-mine')).code).toBe(1);
    },
  );
});

describe('herald listen when the reader of its output goes away (herald listen | head -1)', () => {
  it('deletes its subscription as on Ctrl-C, then exits 0 (was: exit at once, the subscription left delivering)', async () => {
    const cli = spawnHerald(['listen', '--json', '--forward-to', fx.receiver.url, '--filter-type', 'com.example.pipe.'], {
      url: fx.gw.url,
    });
    running.push(cli);
    const [, id] = await cli.waitFor('stderr', /^Ready: subscription (\S+) /m);
    const publish = (n: number) => herald('publish', '--source', '/probe27/listen', '--type', 'com.example.pipe.t', '--id', `lp-${n}`);
    await publish(0);
    await cli.waitFor('stdout', /"id":"lp-0"/);
    cli.child.stdout!.destroy(); // what head does after its line
    // The next line written finds the pipe closed: publish until one is (a few at most).
    let n = 1;
    await waitFor(
      async () => {
        if (cli.child.exitCode !== null) return true;
        await publish(n++);
        return cli.stderr().includes('deleted subscription') || undefined;
      },
      { timeoutMs: 15_000, intervalMs: 200, what: 'listen to stop' },
    );
    expect(await cli.exited).toBe(0);
    expect(cli.stderr()).toContain('herald: standard output was closed; stopping');
    expect(cli.stderr()).toContain(`deleted subscription ${id}`);
    expect((await herald('subs', 'get', id!)).code).toBe(1);
  });
});

describe('herald: a malformed API key is never printed', () => {
  const key = 'prod-Sup3rS3cretKeyValue';
  it.each([
    [
      'HERALD_API_KEY ending in a CR (a key file with Windows line ends)',
      [],
      { HERALD_API_KEY: `${key}\r` },
      /contains a line end \(U\+000D; .*\) at character 25 of 25/,
    ],
    ['--api-key with a space', ['--api-key', 'prod-Sup3rS3cret KeyValue'], {}, /contains a space at character 17 of 25/],
    ['--api-key with a tab', ['--api-key', `${key}\t`], {}, /contains a control character \(U\+0009\) at character 25 of 25/],
  ])('%s: exit 2 saying what is wrong, without the key (was: echoed whole by commander)', async (_what, args, env, message) => {
    const result = await runHerald([...args, 'subs', 'list'], { url: fx.gw.url, env });
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 2, stdout: '' });
    expect(result.stderr).toMatch(/^herald: the API key \(--api-key or HERALD_API_KEY\) contains /);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).not.toContain('Sup3rS3cret');
  });
});

describe('herald: control characters in attributes cannot forge lines of human output', () => {
  /** A made-up event line after a newline, a tab, a NEL (C1) and a CR in the type; a newline in the id. */
  const forgedType = 'com.x\t/forge\r\u0085\n2026-12-05T13:00:00.000Z  3:7       com.example.order.created  /shop/orders  order-999';
  // eslint-disable-next-line no-control-regex -- the characters that must not reach the terminal
  const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

  it('escapes them in events tail, listen, events read and publish (JSON output stays the API answer)', async () => {
    const tail = spawnHerald(['events', 'tail', '--sql', "source = '/probe27/forge'"], { url: fx.gw.url });
    const listen = spawnHerald(['listen', '--forward-to', fx.receiver.url, '--sql', "source = '/probe27/forge'"], { url: fx.gw.url });
    running.push(tail, listen);
    await tail.waitFor('stderr', /tailing events/);
    await listen.waitFor('stderr', /^Ready: /m);
    const published = await fetch(`${fx.gw.url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ specversion: '1.0', id: 'f-1\nforged', source: '/probe27/forge', type: forgedType }),
    });
    expect(published.status).toBe(202);
    const { partition } = ((await published.json()) as { results: { partition: number }[] }).results[0]!;
    const escapedType = 'com.x\\u0009/forge\\u000d\\u0085\\u000a2026-12-05T13:00:00.000Z';

    for (const cli of [tail, listen]) {
      const [line] = await cli.waitFor('stdout', /^.*f-1.*$/m);
      expect(line).toContain(escapedType);
      expect(line).toContain('f-1\\u000aforged');
      expect(
        cli
          .stdout()
          .split('\n')
          .filter((l) => l !== ''),
      ).toHaveLength(1); // one event, one line
      expect(cli.stdout()).not.toMatch(CONTROL);
    }

    const read = await herald('events', 'read', '--partition', String(partition));
    expect(read.code).toBe(0);
    expect(read.stdout.split('\n').filter((l) => l.includes('order-999'))).toHaveLength(1);
    expect(read.stdout).toContain(escapedType);
    expect(read.stdout).not.toMatch(CONTROL);
    const got = await herald('events', 'get', '/probe27/forge', 'f-1\nforged');
    expect(got.stdout).not.toMatch(CONTROL);
    expect((await json('events', 'get', '/probe27/forge', 'f-1\nforged')).event.type).toBe(forgedType);

    const stored = await herald('publish', '--source', '/probe27/forge', '--type', 't', '--id', 'p-1\tx\n2026  forged\u009b2J');
    expect(stored.code).toBe(0);
    expect(stored.stdout).toMatch(
      /^stored p-1\\u0009x\\u000a2026 {2}forged\\u009b2J \(source \/probe27\/forge\) at partition \d+, offset \d+\n$/,
    );
  });
});

describe('herald subs update --header', () => {
  it('adds a header keeping the stored ones (was: the authorization header dropped), and "name:" removes one', async () => {
    const sub = await json(
      'subs',
      'create',
      '--sink',
      fx.receiver.url,
      '--filter-source',
      '/probe27/headers',
      '--header',
      'Authorization: Bearer s3cr3t',
    );
    const updated = await herald('subs', 'update', sub.id, '--max-in-flight', '4', '--header', 'x-tenant: acme');
    expect(updated.code).toBe(0);
    expect(updated.stdout).toMatch(/^headers:\s+authorization, x-tenant$/m);

    await herald('publish', '--source', '/probe27/headers', '--type', 't', '--id', 'h-1', '--data', '{}');
    const delivered = await waitFor(() => fx.receiver.requests.find((r) => r.headers['ce-id'] === 'h-1'), {
      timeoutMs: 15_000,
      what: 'the delivery',
    });
    // The stored value was kept (sent back as "***"), not replaced by "***".
    expect(delivered.headers).toMatchObject({ authorization: 'Bearer s3cr3t', 'x-tenant': 'acme' });

    const removed = await runHerald(['subs', 'update', sub.id, '--header', 'X-Tenant:', '--header', 'x-none:', '--json'], {
      url: fx.gw.url,
    });
    expect(removed.code).toBe(0);
    expect(JSON.parse(removed.stdout).delivery.headers).toEqual({ authorization: '***' });
    expect(removed.stderr).toBe(`warning: subscription ${sub.id} has no header x-none: nothing to remove\n`);

    const help = await herald('subs', 'update', '--help');
    expect(help.stdout).toContain('--header "name:" removes one');
    const created = await herald('subs', 'create', '--sink', fx.receiver.url, '--header', 'x-empty:');
    expect(created.code).toBe(2);
    await herald('subs', 'delete', sub.id);
  });
});

describe('herald events read from a corrupt offset', () => {
  it('prints the next page the API gives past it, though the page holds no event (was: no "next page" hint)', async () => {
    const own = await startTestGateway({ HERALD_PARTITIONS: '1' });
    try {
      for (let i = 0; i < 4; i++) {
        const args = ['publish', '--source', '/probe27/corrupt', '--type', 't', '--id', `c-${i}`, '--data', `{"marker":"MARK${i}"}`];
        expect((await runHerald(args, { url: own.url })).code).toBe(0);
      }
      const wal = path.join(own.dataDir, 'wal');
      const segment = path.join(
        wal,
        fs.readdirSync(wal).find((f) => f.endsWith('.seg'))!,
      );
      const bytes = fs.readFileSync(segment);
      const at = bytes.indexOf('MARK1');
      expect(at).toBeGreaterThan(0);
      const fd = fs.openSync(segment, 'r+');
      fs.writeSync(fd, 'X', at); // damage the record at offset 1
      fs.closeSync(fd);

      const page = await runHerald(['events', 'read', '--partition', '0', '--from', '1'], { url: own.url });
      expect(page.code).toBe(0);
      expect(page.stdout).toBe('(no events in partition 0 from offset 1)\n');
      expect(page.stderr).toContain('warning: offset 1 is corrupt and was skipped');
      expect(page.stderr).toContain('next page: --from 2');
      const next = await runHerald(['events', 'read', '--partition', '0', '--from', '2'], { url: own.url });
      expect(next.stdout).toMatch(/^2\s.*c-2$/m);
      // The end of the partition: no hint.
      const end = await runHerald(['events', 'read', '--partition', '0', '--from', '4'], { url: own.url });
      expect(end.stderr).not.toContain('next page');
    } finally {
      await own.close();
    }
  });
});

describe('herald: an empty option value (an unset "$VAR" in a script)', () => {
  it.each([
    [['subs', 'seek', '00000000-0000-4000-8000-000000000000', '--time', ''], '--time <rfc3339>'],
    [['subs', 'attempts', '00000000-0000-4000-8000-000000000000', '--before', ''], '--before <cursor>'],
    [['publish', '--source', '/probe27/empty', '--type', 't', '--id', ''], '--id <id>'],
    [['listen', '--forward-to', 'http://127.0.0.1:9/', '--sql', ''], '--sql <expr>'],
    [['subs', 'create', '--sink', ''], '--sink <url>'],
  ])('%j: exit 2 naming the option (was: "undefined is not iterable" as the gateway\'s fault, or sent)', async (args, option) => {
    const result = await herald(...args);
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 2, stdout: '' });
    expect(result.stderr).toContain(`option '${option}' argument '' is invalid. it is empty: give a value`);
  });

  it('events tail --sql "" tails every event, as the console does with an empty filter (was: a 400, exit 1)', async () => {
    const tail = spawnHerald(['events', 'tail', '--sql', ''], { url: fx.gw.url });
    running.push(tail);
    const [note] = await tail.waitFor('stderr', /^tailing events stored at .*$/m);
    expect(note).not.toContain('matching');
    await herald('publish', '--source', '/probe27/empty', '--type', 't', '--id', 'e-1');
    await tail.waitFor('stdout', /\/probe27\/empty {2}e-1$/m);
    tail.child.kill('SIGINT');
    expect(await tail.exited).toBe(0);
  });

  it('still takes empty data (--data "" with a text type: an event without data)', async () => {
    const result = await herald(
      'publish',
      '--source',
      '/probe27/empty',
      '--type',
      't',
      '--id',
      'e-2',
      '--data',
      '',
      '--content-type',
      'text/plain',
    );
    expect(result.code).toBe(0);
  });
});

describe('herald: the base URL is checked before anything is sent', () => {
  it('drops white space around HERALD_URL or --url (was: "Failed to parse URL" blamed on the gateway, exit 1)', async () => {
    const fromEnv = await runHerald(['events', 'read', '--partition', '0', '--json'], { env: { HERALD_URL: `${fx.gw.url} ` } });
    expect(fromEnv.code).toBe(0);
    expect(JSON.parse(fromEnv.stdout)).toMatchObject({ events: expect.any(Array) });
    const fromOption = await runHerald(['--url', ` ${fx.gw.url}/\t`, 'events', 'read', '--partition', '0', '--json']);
    expect(fromOption.code).toBe(0);
  });

  it.each([
    [`?token=s3cr3t`, 'a query (?…)'],
    [`/#s3cr3t`, 'a fragment (#…)'],
  ])('refuses a URL with %s as a usage error without showing it (was: "no route for GET /", exit 1)', async (tail, what) => {
    const result = await runHerald(['subs', 'list'], { env: { HERALD_URL: `${fx.gw.url}${tail}` } });
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 2, stdout: '' });
    expect(result.stderr).toBe(
      `herald: --url (or HERALD_URL) ${fx.gw.url}/… has ${what}: give the gateway's base URL alone, the API's paths are appended to it\n`,
    );
  });

  it('does not print the password of a URL with user:password@', async () => {
    const result = await runHerald(['--url', 'http://user:s3cr3t@127.0.0.1:9', 'subs', 'list']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('must not carry user:password@');
    expect(result.stderr).not.toContain('s3cr3t');
  });

  it.each([
    'ftp://u:SECRETP@127.0.0.1:8080',
    'http://u:SECRETP@127.0.0.1:999999',
    'http://127.0.0.1:999999/?token=SECRETP',
    'http://127.0.0.1:1/SECRETP?x=1',
    'SECRETP:abc',
  ])('does not print %s, refused for another reason (re-probe: quoted whole by the option parser)', async (url) => {
    for (const result of [await runHerald(['--url', url, 'subs', 'list']), await runHerald(['subs', 'list'], { url })]) {
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--url \(or HERALD_URL\) (is not a URL|must be an http|http:\/\/127\.0\.0\.1:1\/… has a query)/);
      expect(result.stderr).not.toContain('SECRETP');
    }
  });
});

describe('herald with a mistyped option given a value', () => {
  it('does not print the value (re-probe: "unknown option \'--api-keyy=SECRET\'")', async () => {
    const result = await runHerald(['--api-keyy=SECRETP', 'subs', 'list'], { url: fx.gw.url });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("unknown option '--api-keyy=…'");
    expect(result.stderr).not.toContain('SECRETP');
  });
});

describe('herald --api-key ""', () => {
  it('is a usage error on the command line (re-probe: sent without a key), and an empty HERALD_API_KEY is none', async () => {
    const empty = await runHerald(['--api-key', '', 'subs', 'list'], { url: fx.gw.url });
    expect({ code: empty.code, stdout: empty.stdout }).toEqual({ code: 2, stdout: '' });
    expect(empty.stderr).toContain('--api-key: it is empty: give a value');
    expect((await runHerald(['subs', 'list'], { url: fx.gw.url, env: { HERALD_API_KEY: '' } })).code).toBe(0);
  });
});

describe('herald listen whose subscription was deleted elsewhere', () => {
  it('says it is already gone on Ctrl-C and exits 0 (was: "could not delete … 404", exit 1)', async () => {
    const cli = spawnHerald(['listen', '--forward-to', fx.receiver.url], { url: fx.gw.url });
    running.push(cli);
    const [, id] = await cli.waitFor('stderr', /^Ready: subscription (\S+) /m);
    expect((await herald('subs', 'delete', id!)).code).toBe(0);
    cli.child.kill('SIGINT');
    expect(await cli.exited).toBe(0);
    expect(cli.stderr()).toContain(`subscription ${id} was already deleted (404): nothing left behind\n`);
    expect(cli.stderr()).not.toContain('could not delete');
  });
});
