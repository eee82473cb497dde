import fs from 'node:fs';
import path from 'node:path';
import { useCliGateway } from '../helpers/cli-gateway';
import { waitFor } from '../helpers/receiver';
import { tmpDir } from '../helpers/tmp';

/**
 * The `herald` command line fed what a careless or hostile world sends it: event attributes and
 * receiver answers carrying terminal control sequences, and JSON Lines files as editors save them.
 */
const fx = useCliGateway(
  { HERALD_PARTITIONS: '1' }, // A receiver whose refusal carries escape sequences: OSC 52 (write the clipboard) and "clear screen".
  () => ({
    status: 400,
    headers: { 'content-type': 'text/plain' },
    body: 'no\u001b]52;c;cm0gLXJmIH4=\u0007\u001b[2J',
  }),
);
const { herald, json } = fx;

/** C0 controls but tab and newline, DEL and C1 controls: what a terminal acts on instead of printing. */
// eslint-disable-next-line no-control-regex -- these are exactly the characters looked for
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

async function publishStructured(event: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${fx.gw.url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents+json' },
    body: JSON.stringify({ specversion: '1.0', ...event }),
  });
  expect(res.status).toBe(202);
}

describe('herald: human output never passes control characters from the data to the terminal', () => {
  it('escapes them in events read, events get, subs attempts and dead-letters list', async () => {
    const sub = await json('subs', 'create', '--sink', fx.receiver.url, '--filter-source', '/hostile');
    await publishStructured({
      id: 'esc-\u001b[2J',
      source: '/hostile',
      type: 'com.example.\u001b]0;owned\u0007\u009b31m',
      data: { text: 'C1 CSI \u009b2J' },
    });

    const read = await herald('events', 'read', '--partition', '0');
    expect(read.code).toBe(0);
    expect(read.stdout).toContain('com.example.\\u001b]0;owned\\u0007\\u009b31m');
    expect(read.stdout).not.toMatch(CONTROL);

    const got = await herald('events', 'get', '/hostile', 'esc-\u001b[2J');
    expect(got.code).toBe(0);
    expect(got.stdout).not.toMatch(CONTROL);

    const attempts = await waitFor(
      async () => {
        const page = await json('subs', 'attempts', sub.id);
        return page.attempts.length > 0 ? page : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'an attempt' },
    );
    expect(attempts.attempts[0].error).toContain('\u001b]52;');
    const table = await herald('subs', 'attempts', sub.id);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('\\u001b]52;');
    expect(table.stdout).not.toMatch(CONTROL);

    const dead = await waitFor(
      async () => {
        const page = await json('dead-letters', 'list', sub.id);
        return page.deadLetters.length > 0 ? page : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'a dead letter' },
    );
    expect(dead.deadLetters[0].lastError).toContain('\u001b[2J');
    const letters = await herald('dead-letters', 'list', sub.id);
    expect(letters.code).toBe(0);
    expect(letters.stdout).not.toMatch(CONTROL);

    // --json stays the API's answer, as it is.
    expect((await json('events', 'get', '/hostile', 'esc-\u001b[2J')).event.type).toBe('com.example.\u001b]0;owned\u0007\u009b31m');
    // ...written with C1 controls as escapes (JSON.stringify left U+009B, an 8-bit CSI, raw: console probe).
    const raw = await herald('events', 'get', '/hostile', 'esc-\u001b[2J', '--json');
    expect(raw.code).toBe(0);
    expect(raw.stdout).toContain('\\u009b31m');
    expect(raw.stdout).not.toMatch(CONTROL);
    await herald('subs', 'delete', sub.id);
  });
});

describe('herald publish --batch: files as editors save them', () => {
  const line = (id: string) => JSON.stringify({ specversion: '1.0', id, source: '/cli/bom', type: 'com.example.bom' });

  it('reads a UTF-8 file that starts with a byte order mark, with CRLF line ends', async () => {
    const file = path.join(tmpDir(), 'windows.jsonl');
    fs.writeFileSync(file, `\ufeff${line('bom-1')}\r\n${line('bom-2')}\r\n`);
    const result = await herald('publish', '--batch', file);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toBe(`published 2 events from ${file}: 2 stored, 0 duplicates (already stored)\n`);
    expect((await json('events', 'get', '/cli/bom', 'bom-1')).event.id).toBe('bom-1');
  });

  it('refuses a --batch path that is a directory as a usage error (exit 2), sending nothing', async () => {
    const dir = tmpDir();
    const result = await herald('publish', '--batch', dir);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`cannot read --batch ${dir}`);
  });
});

describe('herald: a --limit the API would refuse is a usage error', () => {
  it('exits 2 naming --limit, sending nothing, for out-of-range page sizes', async () => {
    for (const args of [
      ['subs', 'attempts', '00000000-0000-4000-8000-000000000000', '--limit', '0'],
      ['subs', 'attempts', '00000000-0000-4000-8000-000000000000', '--limit', '5000'],
      ['events', 'read', '--partition', '0', '--limit', '1001'],
      ['dead-letters', 'list', '00000000-0000-4000-8000-000000000000', '--limit', '5000'],
      // Was: sent, and "(no dead letters)" printed whatever the subscription held.
      ['dead-letters', 'list', '00000000-0000-4000-8000-000000000000', '--limit', '0'],
      // Was: "(no events in partition 0 from offset 0)" whatever it held (CLI probe).
      ['events', 'read', '--partition', '0', '--limit', '0'],
    ]) {
      const result = await herald(...args);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr).toMatch(/option '--limit <n>' argument '[0-9]+' is invalid/);
      expect(result.stdout).toBe('');
    }
  });

  it('exits 2, sending nothing, for delivery settings and a secret overlap out of the API’s ranges (CLI probe: sent, a 400, exit 1)', async () => {
    const id = '00000000-0000-4000-8000-000000000000';
    for (const [args, option] of [
      [['subs', 'update', id, '--max-in-flight', '0'], '--max-in-flight'],
      [['subs', 'update', id, '--timeout-ms', '5'], '--timeout-ms'],
      [['subs', 'update', id, '--max-attempts', '1001'], '--max-attempts'],
      [['subs', 'rotate-secret', id, '--overlap-seconds', '999999'], '--overlap-seconds'],
    ] as const) {
      const result = await herald(...args);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr).toContain(`option '${option}`);
    }
  });
});

describe('herald: small usage errors a probe found', () => {
  it('names the range of --timeout for a negative one (was: "not a whole number ≥ 0")', async () => {
    const result = await herald('--timeout', '-1', 'subs', 'list');
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/not a whole number from 1 to 86400/);
  });

  it('names the limit for a whole number past 2^53 - 1 (console probe: was "not a whole number ≥ 0")', async () => {
    const result = await herald('events', 'read', '--partition', '0', '--from', '9007199254740993');
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/larger than 9007199254740991/);
  });

  it('refuses a dead letter id that is not digits before sending anything, as redeliver does (was: sent, exit 1)', async () => {
    const result = await herald('dead-letters', 'delete', '00000000-0000-4000-8000-000000000000', '-1');
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
  });
});

describe('herald: values no request can carry are usage errors (API probe: they were exit 1 with internal text)', () => {
  it.each([
    [['--api-key', 'a\nb', 'subs', 'list'], /the API key \(--api-key or HERALD_API_KEY\) contains a line end \(U\+000A/],
    [['--api-key', 'ключ', 'subs', 'list'], /the API key .* contains a character beyond U\+00FF at character 1 of 4/],
    [['--url', 'http://u:p@127.0.0.1:9', 'subs', 'list'], /must not carry user:password@/],
    [['publish', '--source', '/s', '--type', 't', '--data', 'x', '--content-type', 'te\nxt'], /--content-type must be printable/],
    [['subs', 'delete', '..'], /command-argument value '\.\.' is invalid for argument 'id'\. not an id/],
    [['dead-letters', 'delete', '.', '1'], /command-argument value '\.' is invalid for argument 'subscription'\. not an id/],
  ])('%j: exit 2, nothing sent', async (args, message) => {
    const result = await herald(...args);
    expect({ code: result.code, stdout: result.stdout }).toEqual({ code: 2, stdout: '' });
    expect(result.stderr).toMatch(message);
  });
});
