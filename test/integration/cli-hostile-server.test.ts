/**
 * The `herald` CLI against answers a gateway should never give (a fake loopback server) and
 * against a real gateway with path-segment ids. Each command runs as a child process.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { HERALD_BIN, runHerald, spawnHerald } from '../helpers/cli';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
const servers: http.Server[] = [];
async function fakeGateway(handler: Handler): Promise<{ url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
});
afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  await gw?.close();
  cleanupTmpDirs();
});

const problem =
  (status: number, body: unknown): Handler =>
  (_req, res) => {
    res.writeHead(status, { 'content-type': 'application/problem+json' });
    res.end(JSON.stringify(body));
  };

describe('herald: a problem answer it cannot fully read', () => {
  it('reports a problem without an errors list as the refusal it is (exit 1, no stack trace)', async () => {
    const fake = await fakeGateway(problem(400, { detail: 'the subscription update is not valid', code: 'invalid_request' }));
    const result = await runHerald(['subs', 'get', 'some-id'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('the subscription update is not valid (400 invalid_request)');
    // Was: "herald: TypeError: Cannot read properties of undefined (reading 'filter')" and its stack.
    expect(result.stderr).not.toMatch(/TypeError/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });

  it('reports a problem whose errors entries are not objects without a stack trace', async () => {
    const fake = await fakeGateway(problem(409, { detail: 'conflict', code: 'conflict', errors: [null] }));
    const result = await runHerald(['subs', 'pause', 'some-id'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).not.toMatch(/TypeError/);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  });
});

describe('herald: a 2xx answer of another shape (not a Herald gateway)', () => {
  const answer =
    (status: number, body: string): Handler =>
    (_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body);
    };

  it("says the answer is not what it expects (was JavaScript's words alone)", async () => {
    const fake = await fakeGateway(answer(200, 'null'));
    const result = await runHerald(['subs', 'list'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^herald: the gateway's answer is not what this herald expects \(is --url a Herald gateway of version .+\?\): /,
    );
  });

  it("says so too when the answer is not JSON at all: an HTML page (contract probe: JSON.parse's words alone)", async () => {
    const fake = await fakeGateway((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hi</html>'));
    const result = await runHerald(['subs', 'list'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^herald: the gateway's answer is not what this herald expects \(is --url a Herald gateway of version .+\?\): /,
    );
  });

  it('explains a port that fetch refuses to connect to (was "bad port")', async () => {
    const result = await runHerald(['subs', 'list'], { url: 'http://127.0.0.1:1', timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('cannot reach the gateway at http://127.0.0.1:1: fetch refuses port 1');
  });

  it('listen stops (exit 1) when the subscription it asked for comes back without an id or secret (was "Ready: subscription undefined")', async () => {
    const fake = await fakeGateway(answer(201, '{}'));
    const result = await runHerald(['listen', '--forward-to', 'http://127.0.0.1:9/'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/answered the subscription request without an id and secret/);
    expect(result.stderr).not.toMatch(/undefined/);
  });
});

describe('herald: control characters from others never reach the terminal', () => {
  it('escapes control characters of a problem detail and its errors on stderr (hostile server)', async () => {
    const fake = await fakeGateway(
      problem(404, { detail: 'no such\u001b]0;pwned\u0007 subscription', code: 'not_found', errors: [{ message: 'x\u001b[2J' }] }),
    );
    const result = await runHerald(['subs', 'get', 'some-id'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    // eslint-disable-next-line no-control-regex
    expect(result.stderr).not.toMatch(/[\u001b\u0007]/);
  });

  it('escapes what a hostile server puts in a publish answer and in a tail message (were printed raw)', async () => {
    const fake = await fakeGateway((req, res) => {
      if (req.url?.startsWith('/events/stream')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const data = { partition: '\u001b[31m', offset: 0, event: { id: 'e', source: '/s', type: 't' } };
        return void res.end(`event: cloudevent\ndata: ${JSON.stringify(data)}\n\n`);
      }
      res.writeHead(202, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ results: [{ id: 'a\r\nb\u001b[31m', source: '/s\u0007', partition: 0, offset: 0, duplicate: false }] }));
    });
    const published = await runHerald(['publish', '--source', '/s', '--type', 't', '--id', 'x'], { url: fake.url, timeoutMs: 20_000 });
    expect(published.code).toBe(0);
    // Newlines too (probe 27: they forged lines): one result, one line.
    expect(published.stdout).toContain('stored a\\u000d\\u000ab\\u001b[31m (source /s\\u0007)');
    // The tail reconnects when the server closes: it is stopped once the line is seen.
    const tail = spawnHerald(['events', 'tail'], { url: fake.url });
    try {
      await tail.waitFor('stdout', /\\u001b\[31m:0/);
    } finally {
      tail.child.kill('SIGTERM');
    }
    await tail.exited;
    expect(published.stdout.split('\n')).toHaveLength(2);
    // eslint-disable-next-line no-control-regex
    expect((published.stdout + tail.stdout()).replace(/\n/g, '')).not.toMatch(/[\u0000-\u001f]/);
  }, 30_000);

  it('escapes an event attribute a --batch file carries when the real gateway echoes it in its 400', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'events.jsonl');
    // A file of events from someone else: a specversion holding an OSC "set window title" sequence.
    fs.writeFileSync(file, `${JSON.stringify({ specversion: '1.0\u001b]0;pwned\u0007', id: 'b-1', source: '/x', type: 't' })}\n`);
    const result = await runHerald(['publish', '--batch', file], { url: gw.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/specversion/);
    // eslint-disable-next-line no-control-regex
    expect(result.stderr).not.toMatch(/[\u001b\u0007]/);
  });
});

describe('herald: a gateway that stops answering', () => {
  it('gives up on a body that drips after --timeout (exit 1, saying so), and a stream is not cut by it', async () => {
    const drips: NodeJS.Timeout[] = [];
    const fake = await fakeGateway((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"subscriptions":[');
      // One space every 200 ms, for at most 20 s: a valid JSON prefix that never ends.
      let n = 0;
      const t = setInterval(() => {
        if (++n > 100 || res.destroyed) return clearInterval(t);
        res.write(' ');
      }, 200);
      drips.push(t);
    });
    const started = Date.now();
    const result = await runHerald(['subs', 'list', '--timeout', '2'], { url: fake.url, timeoutMs: 25_000 });
    const tookMs = Date.now() - started;
    for (const t of drips) clearInterval(t);
    // Was: still running when the harness killed it (no limit at all).
    expect(result).toMatchObject({ code: 1, stderr: 'herald: the gateway did not answer in time (--timeout, HERALD_TIMEOUT)\n' });
    expect(tookMs).toBeGreaterThanOrEqual(2000);
    expect(tookMs).toBeLessThan(15_000);
  }, 40_000);

  it('gives up at --timeout on an answer whose head has not come, garbage collection having run (bulk probe: it waited the 30 s the server took, then blamed the version)', async () => {
    const held: http.ServerResponse[] = [];
    const fake = await fakeGateway((_req, res) => void held.push(res)); // never answers (ended by the test)
    const gcOften = path.resolve(__dirname, '..', 'helpers', 'gc-often.js');
    const started = Date.now();
    const result = await runHerald(['subs', 'pause', 'some-id', '--timeout', '2'], {
      url: fake.url,
      timeoutMs: 25_000,
      env: { NODE_OPTIONS: `--expose-gc --require ${gcOften}` },
    });
    const tookMs = Date.now() - started;
    for (const res of held) res.destroy();
    expect(result).toMatchObject({ code: 1, stderr: 'herald: the gateway did not answer in time (--timeout, HERALD_TIMEOUT)\n' });
    expect(tookMs).toBeLessThan(12_000); // was: killed by the harness at 25 s
  }, 40_000);

  it('ends a tail on SIGINT once garbage collection has run (CLI probe: after about 10 s idle it ran on; the first signal did nothing)', async () => {
    const gcOften = path.resolve(__dirname, '..', 'helpers', 'gc-often.js');
    const tail = spawnHerald(['events', 'tail'], { url: gw.url, env: { NODE_OPTIONS: `--expose-gc --require ${gcOften}` } });
    try {
      await tail.waitFor('stderr', /tailing events/);
      await new Promise((r) => setTimeout(r, 1500)); // collections ran, as after an idle while
      tail.child.kill('SIGINT');
      const code = await Promise.race([tail.exited, new Promise((r) => setTimeout(() => r('still running 5 s after SIGINT'), 5000))]);
      expect(code).toBe(0);
    } finally {
      await tail.kill();
    }
  }, 40_000);

  it('exits 0 when the reader of its stderr goes away (`2>&1 | head -1`; CLI probe: an uncaught EPIPE made it 1)', async () => {
    for (const id of ['p1', 'p2']) {
      const res = await fetch(`${gw.url}/events`, {
        method: 'POST',
        headers: {
          'ce-specversion': '1.0',
          'ce-id': id,
          'ce-source': '/pipe',
          'ce-type': 't',
          'ce-partitionkey': 'pipe',
          'content-type': 'text/plain',
        },
        body: 'x',
      });
      expect(res.status).toBe(202);
      await res.arrayBuffer();
    }
    const partition = (await (await fetch(`${gw.url}/events?source=%2Fpipe&id=p1`)).json()) as { partition: number };
    // Its stderr is closed before it starts: the note naming the next page meets EPIPE.
    const child = spawn(process.execPath, [HERALD_BIN, 'events', 'read', '--partition', String(partition.partition), '--limit', '1'], {
      env: { PATH: process.env.PATH, HERALD_URL: gw.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stderr!.destroy();
    let stdout = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    const code = await new Promise((resolve) => child.on('close', (c, signal) => resolve(c ?? signal)));
    expect(code).toBe(0);
    expect(stdout).toContain('p1');
  });

  it('escapes control characters of its own messages that quote what it was given (CLI probe: a file’s line reached the terminal raw)', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'esc.jsonl');
    fs.writeFileSync(file, 'x\u001b]0;PWNED\u0007\u001b[2J\n');
    const result = await runHerald(['publish', '--batch', file], { url: gw.url });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('\\u001b]0;PWNED\\u0007');
    // eslint-disable-next-line no-control-regex
    expect(result.stderr).not.toMatch(/[\u001b\u0007]/);
  });

  it('does not cut a stream (events tail) at --timeout', async () => {
    const tail = spawnHerald(['events', 'tail', '--timeout', '1'], { url: gw.url });
    try {
      await tail.waitFor('stderr', /tailing events/);
      await new Promise((r) => setTimeout(r, 2500));
      const published = await runHerald(['publish', '--source', '/tail', '--type', 't', '--id', 'after-the-timeout'], { url: gw.url });
      expect(published.code).toBe(0);
      await tail.waitFor('stdout', /after-the-timeout/);
    } finally {
      await tail.kill();
    }
  }, 40_000);
});

describe('herald publish: an answer that acknowledges less than was sent', () => {
  const answering =
    (body: unknown): Handler =>
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };

  it.each([
    ['no results', { results: [] }],
    ['results that are not a list', { results: 'nope' }],
    ['a result without its offset', { results: [{ id: 'a', source: '/s', partition: 0, duplicate: false }] }],
    ['a result without its id and source (re-probe)', { results: [{ partition: 0, offset: 1, duplicate: false }] }],
  ])('exits 1 on %s for one event (was: exit 0, nothing or "undefined" printed)', async (_what, body) => {
    const fake = await fakeGateway(answering(body));
    const result = await runHerald(['publish', '--source', '/s', '--type', 't', '--id', 'a'], { url: fake.url });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/not what this herald expects/);
    expect(result.stdout).not.toMatch(/undefined/);
  });

  it('exits 1 on a batch answered with fewer results than events (was: "published 0 events", exit 0)', async () => {
    const fake = await fakeGateway(answering({ results: [] }));
    const file = path.join(tmpDir(), 'events.jsonl');
    fs.writeFileSync(file, ['a', 'b'].map((id) => JSON.stringify({ specversion: '1.0', id, source: '/s', type: 't' })).join('\n'));
    const result = await runHerald(['publish', '--batch', file], { url: fake.url });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/acknowledges 0 of the 2 events sent/);
  });

  it('exits 1 on a created subscription without its id, printing no "undefined"', async () => {
    const fake = await fakeGateway((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end('{}');
    });
    const result = await runHerald(['subs', 'create', '--sink', 'http://127.0.0.1:9/hook'], { url: fake.url });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/not what this herald expects/);
    expect(result.stderr + result.stdout).not.toMatch(/undefined/);
  });
});

describe('herald: an answer cut off after its headers', () => {
  it('says the answer was cut off, not that the gateway cannot be reached (exit 1)', async () => {
    const fake = await fakeGateway((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"subscriptions":[');
      setTimeout(() => res.destroy(), 50);
    });
    const result = await runHerald(['subs', 'list'], { url: fake.url });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^herald: the gateway's answer was cut off before its end/);
    expect(result.stderr).not.toMatch(/cannot reach/);
  });
});

describe('herald: an answer larger than any gateway sends', () => {
  it('stops reading past 512 MiB and exits 1 saying so (was: read on until the timeout, holding it all)', async () => {
    const fake = await fakeGateway((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(4 * 1024 * 1024, 0x20);
      let sent = 0;
      // Bounded: 640 MiB at most, then the connection closes.
      const more = () => {
        while (sent < 160 && !res.destroyed && res.write(chunk)) sent++;
        if (sent >= 160) res.end();
        else if (!res.destroyed) res.once('drain', more);
      };
      more();
    });
    const result = await runHerald(['subs', 'list', '--timeout', '60'], { url: fake.url, timeoutMs: 90_000 });
    expect(result).toMatchObject({
      code: 1,
      stderr: 'herald: the answer is larger than 512 MiB, more than any Herald gateway sends; not read\n',
    });
  }, 120_000);
});

describe('herald events tail: a stream no gateway sends', () => {
  it('ends with exit 1 on a line that never ends, past 16 MiB (was stuck at full CPU, deaf to Ctrl-C)', async () => {
    const fake = await fakeGateway((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = 'x'.repeat(1024 * 1024);
      let sent = 0;
      // Bounded: 24 MiB at most, then the connection closes.
      const more = () => {
        while (sent < 24 && res.write(chunk)) sent++;
        if (sent >= 24) res.end();
        else res.once('drain', more);
      };
      more();
    });
    const result = await runHerald(['events', 'tail'], { url: fake.url, timeoutMs: 30_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/sent a stream line longer than 16777216 characters/);
  }, 40_000);
});

describe('herald events tail: a message that is not a stored event', () => {
  it('ends with exit 1 rather than reconnect to it again and again', async () => {
    let connections = 0;
    const fake = await fakeGateway((_req, res) => {
      connections += 1;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end('event: cloudevent\ndata: {"partition":1}\n\n');
    });
    const result = await runHerald(['events', 'tail'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/sent a stream message that is not a stored event/);
    expect(connections).toBe(1);
  }, 30_000);
});

describe('herald events tail: a lost stream', () => {
  const message = (partition: number, offset: number, id: string) =>
    `event: cloudevent\nid: ${partition}:${offset}\ndata: ${JSON.stringify({
      partition,
      offset,
      event: { specversion: '1.0', id, source: '/tail', type: 'com.example.tail' },
    })}\n\n`;

  it('reconnects after the gateway closes the stream, and says that events stored meanwhile are not shown', async () => {
    let connections = 0;
    const fake = await fakeGateway((req, res) => {
      connections += 1;
      if (connections === 2) return problem(503, { detail: 'shutting down', code: 'unavailable' })(req, res);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      if (connections === 1)
        res.end(message(0, 0, 'before-the-loss')); // a gateway that stops
      else res.write(message(0, 7, 'after-the-loss'));
    });
    const tail = spawnHerald(['events', 'tail'], { url: fake.url });
    try {
      await tail.waitFor('stdout', /after-the-loss/, 20_000);
      // Was: exit 1 at the first close ("closed the stream").
      expect(tail.stdout()).toMatch(/before-the-loss[\s\S]*after-the-loss/);
      expect(tail.stderr()).toMatch(/the stream from http:\/\/127\.0\.0\.1:\d+ was lost \(the gateway closed it\); reconnecting/);
      expect(tail.stderr()).toMatch(/reconnected; events stored since \S+Z are not shown/);
      expect(connections).toBe(3);
    } finally {
      tail.child.kill('SIGTERM');
    }
    expect(await tail.exited).toBe(0);
  }, 40_000);

  it('waits longer after each failed reconnection, starts over after a connection that lasted, and dates the loss by the last byte heard', async () => {
    // Connection 1 sends an event, stays silent 1.5 s, then ends; 2–4 are refused (503); 5 lasts 5.5 s; 6 stays.
    const opened: number[] = [];
    let firstEventAt = 0;
    let firstEndedAt = 0;
    const fake = await fakeGateway((req, res) => {
      opened.push(Date.now());
      const n = opened.length;
      if (n >= 2 && n <= 4) return problem(503, { detail: 'starting', code: 'unavailable' })(req, res);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(message(0, n, `event-${n}`));
      if (n === 1) firstEventAt = Date.now();
      if (n === 1 || n === 5)
        setTimeout(
          () => {
            if (n === 1) firstEndedAt = Date.now();
            res.end();
          },
          n === 1 ? 1_500 : 5_500,
        );
    });
    const tail = spawnHerald(['events', 'tail'], { url: fake.url });
    try {
      await tail.waitFor('stdout', /event-6/, 40_000);
      const gaps = opened.slice(1).map((at, i) => at - opened[i]!);
      // Lower bounds only (a sleep never ends early): 0.5 s, then 1, 2 and 4 s after each refusal.
      expect(opened[1]! - firstEndedAt).toBeGreaterThanOrEqual(450);
      expect(gaps[1]).toBeGreaterThanOrEqual(950);
      expect(gaps[2]).toBeGreaterThanOrEqual(1_950);
      expect(gaps[3]).toBeGreaterThanOrEqual(3_950);
      // Connection 5 lasted past the longest wait: the next one comes after the first wait again, not 5 s.
      expect(gaps[4]! - 5_500).toBeLessThan(3_000);
      // The events not shown are those after the last byte heard, not after the moment the loss was noticed.
      const since = Date.parse(/events stored since (\S+Z) are not shown/.exec(tail.stderr())![1]!);
      expect(since).toBeGreaterThanOrEqual(firstEventAt - 1_000);
      expect(since).toBeLessThan(firstEndedAt - 1_000);
      expect(tail.stderr().match(/was lost/g)).toHaveLength(2);
    } finally {
      tail.child.kill('SIGTERM');
    }
    expect(await tail.exited).toBe(0);
  }, 60_000);

  it('ends with exit 1 when a reconnection is refused (4xx)', async () => {
    let connections = 0;
    const fake = await fakeGateway((req, res) => {
      connections += 1;
      if (connections > 1) return problem(401, { detail: 'missing or invalid API key', code: 'unauthorized' })(req, res);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(message(1, 0, 'only-event'));
    });
    const result = await runHerald(['events', 'tail'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('only-event');
    expect(result.stderr).toMatch(/reconnecting[\s\S]*API key/);
  }, 30_000);

  it('ends with exit 1 when the gateway cannot be reached at the start (no retrying a wrong URL)', async () => {
    const fake = await fakeGateway(() => undefined);
    const closed = servers.pop()!;
    closed.closeAllConnections();
    await new Promise<void>((r) => closed.close(() => r()));
    const result = await runHerald(['events', 'tail'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/cannot reach the gateway/);
  }, 30_000);
});

describe('herald: what a hostile gateway answers, CLI probe of session 36', () => {
  const json =
    (status: number, body: unknown): Handler =>
    (_req, res) => {
      res.writeHead(status, { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json' });
      res.end(status === 204 ? undefined : JSON.stringify(body));
    };

  it('listen escapes the subscription id in the lines it writes at its shutdown (were raw: an OSC title, a forged line)', async () => {
    const id = 'sub\u001b[31mRED\u001b]0;pwned\u0007\nforged: deleted subscription ok';
    const fake = await fakeGateway((req, res) =>
      req.method === 'POST' ? json(201, { id, secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' })(req, res) : json(204, null)(req, res),
    );
    const cli = spawnHerald(['listen', '--forward-to', 'http://127.0.0.1:9/'], { url: fake.url });
    await cli.waitFor('stderr', /^Ready: /m);
    cli.child.kill('SIGINT');
    expect(await cli.exited).toBe(0);
    expect(cli.stderr()).toContain('deleted subscription sub\\u001b[31mRED');
    expect(cli.stderr()).not.toContain('\u001b');
    expect(cli.stderr()).not.toMatch(/^forged/m);
  });

  it('dead-letters redeliver stops (exit 1) on pages that never get past the ids it looks for (was: thousands of requests a second, for ever)', async () => {
    const fake = await fakeGateway(
      json(200, {
        deadLetters: [{ id: '1', partition: 0, offset: 0, attempts: 1, reason: 'max_attempts', deadAt: new Date().toISOString() }],
        nextAfter: '1',
      }),
    );
    const result = await runHerald(['dead-letters', 'redeliver', 'abc', '3'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/not what this herald expects.*ends at "1", not past it/);
    expect(fake.requests).toHaveLength(1);
  });

  it('prints a problem of 100,000 errors as 100 lines and a count, objects as JSON and no NaN (were: every line, [object Object], "NaN more")', async () => {
    const errors = Array.from({ length: 100_000 }, (_, i) => ({ attribute: 'x', message: i === 0 ? { nested: true } : `bad ${i}` }));
    const fake = await fakeGateway(
      problem(400, { detail: 'refused', code: 'invalid_request', errors, truncated: true, totalErrors: 'many' }),
    );
    const result = await runHerald(['subs', 'get', 'some-id'], { url: fake.url, timeoutMs: 20_000 });
    expect(result.code).toBe(1);
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1 + 100 + 1);
    expect(lines[1]).toBe('  - x: {"nested":true}');
    expect(lines[lines.length - 1]).toBe('  … and 99900 more');
  });

  /** A gateway that acknowledges each batch 300 ms after it came, calling `onFirst` when the first one has come. */
  const slowAcks = (onFirst: () => void) => {
    let first = true;
    return fakeGateway((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const events = JSON.parse(Buffer.concat(chunks).toString()) as { id: string; source: string }[];
        if (first) onFirst();
        first = false;
        const results = events.map((e, i) => ({ id: e.id, source: e.source, partition: 0, offset: i, duplicate: false }));
        setTimeout(() => json(202, { results })(req, res), 300);
      });
    });
  };

  it('publish --batch stops, blaming the file, when a line changes into something else while earlier ones are sent (was: sent unchecked, blamed on the gateway)', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'events.jsonl');
    const line = (i: number) => JSON.stringify({ specversion: '1.0', id: `e${i}`, source: '/changed', type: 't', data: 'x'.repeat(40) });
    const lines = Array.from({ length: 6000 }, (_, i) => line(i));
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const fake = await slowAcks(() => {
      // Past what the reader has buffered so far (64 KiB): line 5001 becomes garbage of the same length.
      const fd = fs.openSync(file, 'r+');
      const garbage = Buffer.from('#'.repeat(line(5000).length));
      fs.writeSync(fd, garbage, 0, garbage.length, Buffer.byteLength(lines.slice(0, 5000).join('\n') + '\n'));
      fs.closeSync(fd);
    });
    const result = await runHerald(['publish', '--batch', file, '--batch-size', '1000'], { url: fake.url, timeoutMs: 30_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/changed while it was sent: line 5001 is not JSON .*nothing from line 5001 on was sent/);
    expect(result.stderr).not.toMatch(/gateway's answer/);
    expect(fake.requests).toHaveLength(5);
  });

  it('publish --batch stops (exit 1) when the file is cut short at a line end while earlier lines are sent (re-probe: exit 0, part sent)', async () => {
    const file = path.join(tmpDir(), 'events.jsonl');
    const lines = Array.from({ length: 6000 }, (_, i) =>
      JSON.stringify({ specversion: '1.0', id: `c${i}`, source: '/cut', type: 't', data: 'x'.repeat(40) }),
    );
    fs.writeFileSync(file, lines.join('\n') + '\n');
    const fake = await slowAcks(() => fs.truncateSync(file, Buffer.byteLength(lines.slice(0, 5000).join('\n') + '\n')));
    const result = await runHerald(['publish', '--batch', file, '--batch-size', '1000'], { url: fake.url, timeoutMs: 30_000 });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/changed while it was sent: it had 6000 events when checked and 5000 when sent/);
  });

  it('restore escapes the time a (hand-edited) manifest gives (was: raw escape sequences, exit 0)', async () => {
    const source = await startTestGateway({ HERALD_PARTITIONS: '2' });
    const dataDir = source.dataDir;
    await source.close();
    const backup = path.join(tmpDir(), 'bk');
    expect((await runHerald(['backup', '--data-dir', dataDir, backup])).code).toBe(0);
    const manifestFile = path.join(backup, 'herald-backup.json');
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as { startedAt: string };
    manifest.startedAt = '2026\u001b]0;pwned\u0007\u001b[2J';
    fs.writeFileSync(manifestFile, JSON.stringify(manifest));
    const result = await runHerald(['restore', '--data-dir', path.join(tmpDir(), 'restored'), backup]);
    expect(result.stdout).not.toContain('\u001b');
    expect(result.code === 0 ? result.stdout : result.stderr).toContain('\\u001b');
  });

  it('backup refuses a target that is a dangling link before copying anything (was: a whole copy, then ENOTDIR at the rename)', async () => {
    const source = await startTestGateway({ HERALD_PARTITIONS: '2' });
    await source.close();
    const dir = tmpDir();
    const target = path.join(dir, 'link');
    fs.symlinkSync(path.join(dir, 'nowhere'), target);
    for (const given of [target, `${target}/`]) {
      const result = await runHerald(['backup', '--data-dir', source.dataDir, given]);
      expect({ given, code: result.code }).toEqual({ given, code: 1 });
      expect(result.stderr).toContain('already exists');
      expect(fs.readdirSync(dir)).toEqual(['link']);
    }
  });

  it('restore refuses a data dir that is a dangling link before copying anything (re-probe: a whole copy, then ENOTDIR)', async () => {
    const source = await startTestGateway({ HERALD_PARTITIONS: '2' });
    await source.close();
    const backup = path.join(tmpDir(), 'bk');
    expect((await runHerald(['backup', '--data-dir', source.dataDir, backup])).code).toBe(0);
    const dir = tmpDir();
    const target = path.join(dir, 'data');
    fs.symlinkSync(path.join(dir, 'not-made-yet'), target);
    const result = await runHerald(['restore', '--data-dir', target, backup]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('which does not exist');
    expect(fs.readdirSync(dir)).toEqual(['data']);
  });

  it('listen, its output on a full disk, stops and deletes its subscription (exit 1), as on a closed pipe (re-probe: left behind)', async () => {
    const full = fs.openSync('/dev/full', 'w');
    const child = spawn(process.execPath, [HERALD_BIN, 'listen', '--forward-to', 'http://127.0.0.1:9/'], {
      env: { PATH: process.env.PATH, HERALD_URL: gw.url },
      stdio: ['ignore', full, 'pipe'],
    });
    fs.closeSync(full);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise((resolve) => child.on('close', resolve));
    for (let i = 0; i < 200 && !/^Ready: subscription (\S+)/m.test(stderr); i++) await new Promise((r) => setTimeout(r, 50));
    const id = /^Ready: subscription (\S+)/m.exec(stderr)![1]!;
    const publish = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: { 'ce-specversion': '1.0', 'ce-id': 'to-full', 'ce-source': '/full', 'ce-type': 't', 'content-type': 'text/plain' },
      body: 'x',
    });
    expect(publish.status).toBe(202);
    expect(await exited).toBe(1);
    expect(stderr).toContain('herald: cannot write standard output: ENOSPC');
    expect((await fetch(`${gw.url}/subscriptions/${id}`)).status).toBe(404);
  });

  it('says in one line that it cannot write its output to a full disk (was: a stack trace)', async () => {
    const full = fs.openSync('/dev/full', 'w');
    const child = spawn(process.execPath, [HERALD_BIN, '--version'], { stdio: ['ignore', full, 'pipe'] });
    fs.closeSync(full);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect({ code, stderr }).toEqual({ code: 1, stderr: 'herald: cannot write standard output: ENOSPC\n' });
  });
});
