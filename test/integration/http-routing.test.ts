import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import request from 'supertest';
import { killIfRunning, spawnGateway, useGatewayForFile } from '../helpers/gateway';
import { holdsWholeAnswer, rawExchange, sendRaw } from '../helpers/http';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * How request targets and methods reach the routes: exact (case-sensitive, strict) paths, the
 * absolute form and `#fragments` normalised, other target forms refused, and `OPTIONS` answered
 * from the routes actually registered, `POST /events` included.
 */

const gw = useGatewayForFile({ HERALD_API_KEYS: 'pub:routing-pub:publish,rd:routing-read:read,adm:routing-admin:admin' });
afterAll(cleanupTmpDirs);
const as = (secret: string) => ({ authorization: `Bearer ${secret}` });
let seq = 0;
const binary = () => ({
  'ce-specversion': '1.0',
  'ce-id': `routing-${++seq}`,
  'ce-source': '/routing',
  'ce-type': 't',
  'content-type': 'application/json',
});

describe('OPTIONS', () => {
  it('lists POST for /events along with GET, HEAD and OPTIONS, without a key', async () => {
    const res = await sendRaw(gw.url, 'OPTIONS', '/events');
    expect(res.status).toBe(200);
    expect(res.headers.allow?.split(/,\s*/).sort()).toEqual(['GET', 'HEAD', 'OPTIONS', 'POST']);
  });

  it('lists the methods of other routes, OPTIONS included (was: without it), and is a 404 on a path no route has', async () => {
    const res = await sendRaw(gw.url, 'OPTIONS', '/subscriptions/abc');
    expect([res.status, res.headers.allow]).toEqual([200, 'DELETE, GET, HEAD, OPTIONS, PATCH']);
    expect(res.headers['content-length']).toBe('0');
    expect((await sendRaw(gw.url, 'OPTIONS', '/nothing-here')).status).toBe(404);
  });

  it('answers OPTIONS * for the server as a whole', async () => {
    const res = await sendRaw(gw.url, 'OPTIONS', '*');
    expect(res.status).toBe(204);
    expect(res.headers.allow).toMatch(/POST/);
  });
});

describe('request targets', () => {
  it('serves POST /events in absolute form and with a fragment, and with a query string', async () => {
    for (const target of [`${gw.url}/events`, '/events#frag', '/events?x=1', `${gw.url}/events?x=1#frag`]) {
      const res = await sendRaw(gw.url, 'POST', target, { headers: { ...binary(), ...as('routing-pub') }, body: '{}' });
      expect([target, res.status]).toEqual([target, 202]);
    }
  });

  it('checks the scope of the path an absolute-form target names, whatever its host', async () => {
    const res = await sendRaw(gw.url, 'POST', 'http://other.example/subscriptions', {
      headers: { ...as('routing-read'), 'content-type': 'application/json' },
      body: JSON.stringify({ sink: 'http://127.0.0.1:9/' }),
    });
    expect(res.status).toBe(403);
    expect((await sendRaw(gw.url, 'GET', 'http://other.example/partitions#x', { headers: as('routing-read') })).status).toBe(200);
    expect((await sendRaw(gw.url, 'GET', 'https://other.example?x=1', { headers: as('routing-read') })).status).toBe(404); // path "/"
  });

  it.each([
    ['* with GET', 'GET', '*'],
    ['* with POST', 'POST', '*'],
    ['another scheme', 'GET', 'ftp://example.com/partitions'],
  ])('refuses a target that is %s with a 400 problem', async (_label, method, target) => {
    const res = await sendRaw(gw.url, method, target, { headers: as('routing-admin') });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.body).toMatchObject({ code: 'invalid_request', errors: [{ attribute: 'request-target', message: expect.any(String) }] });
  });

  it('matches paths case-sensitively and strictly, for every key, and says 404 without asking for one', async () => {
    for (const [method, target] of [
      ['POST', '/EVENTS'],
      ['POST', '/Events'],
      ['POST', '/events/'],
      ['POST', '/%65vents'],
      ['GET', '/PARTITIONS'],
      ['GET', '/partitions/'],
      ['POST', '/SUBSCRIPTIONS'],
      ['GET', '/subscriptions/'],
      ['GET', '/HEALTHZ'],
      ['GET', '/nowhere'],
    ] as const) {
      for (const headers of [{}, as('routing-pub'), as('routing-read'), as('routing-admin'), as('wrong')]) {
        const res = await sendRaw(gw.url, method, target, { headers: { ...binary(), ...headers }, body: '{}' });
        expect([method, target, headers, res.status]).toEqual([method, target, headers, 404]);
        expect(res.body).toMatchObject({ code: 'not_found' });
      }
    }
  });

  it('serves the docs page at /docs and /docs/', async () => {
    expect((await sendRaw(gw.url, 'GET', '/docs')).status).toBe(200);
    expect((await sendRaw(gw.url, 'GET', '/docs/')).status).toBe(200);
    expect((await sendRaw(gw.url, 'GET', '/DOCS')).status).toBe(404);
  });
});

describe('a read key and the admin routes (issue: case and target tricks reached them all)', () => {
  it('reaches none of them under another spelling, and changes nothing', async () => {
    const created = await sendRaw(gw.url, 'POST', '/subscriptions', {
      headers: { ...as('routing-admin'), 'content-type': 'application/json' },
      body: JSON.stringify({ sink: 'http://127.0.0.1:9/hook', filters: [{ exact: { source: '/never' } }] }),
    });
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    const json = { ...as('routing-read'), 'content-type': 'application/json' };
    const attempts: [string, string, string?][] = [
      ['POST', '/SUBSCRIPTIONS', JSON.stringify({ sink: 'http://127.0.0.1:9/x' })],
      ['POST', `${gw.url}/Subscriptions#x`, JSON.stringify({ sink: 'http://127.0.0.1:9/x' })],
      ['PATCH', `/SUBSCRIPTIONS/${id}`, JSON.stringify({ sink: 'http://127.0.0.1:9/x' })],
      ['PATCH', `/subscriptions/${id}/`, JSON.stringify({ sink: 'http://127.0.0.1:9/x' })],
      ['POST', `/Subscriptions/${id}/rotate-secret`],
      ['POST', `/subscriptions/${id}/ROTATE-SECRET`],
      ['POST', `/subscriptions/${id}/rotate-secret/`],
      ['POST', `/%73ubscriptions/${id}/rotate-secret`],
      ['DELETE', `/SUBSCRIPTIONS/${id}`],
    ];
    for (const [method, target, body] of attempts) {
      const res = await sendRaw(gw.url, method, target, { headers: json, body });
      expect([method, target, res.status]).toEqual([method, target, 404]);
      expect(res.text).not.toMatch(/whsec_/);
    }
    for (const [method, target] of [
      ['POST', `/subscriptions/${id}/rotate-secret`],
      ['DELETE', `/subscriptions/${id}`],
      ['POST', `${gw.url}/subscriptions/${id}/rotate-secret#x`],
    ]) {
      expect((await sendRaw(gw.url, method!, target!, { headers: json })).status).toBe(403);
    }
    const after = await sendRaw(gw.url, 'GET', `/subscriptions/${id}`, { headers: as('routing-admin') });
    expect(after.body).toMatchObject({ id, sink: 'http://127.0.0.1:9/hook' });
    expect((await sendRaw(gw.url, 'GET', '/subscriptions', { headers: as('routing-admin') })).body.subscriptions).toHaveLength(1);
  });
});

describe("requests that never reach the routes (node's parser refuses them, or CONNECT)", () => {
  it.each([
    [
      'a malformed chunk size',
      'POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\nzz\r\n',
    ],
    [
      'both Content-Length and Transfer-Encoding',
      'POST /events HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n',
    ],
    ['CONNECT in authority form (answered with nothing before)', 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n'],
    ['CONNECT with a path', 'CONNECT /events HTTP/1.1\r\nHost: x\r\n\r\n'],
    [
      'a header block over 16 KiB',
      `POST /events HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 600 }, (_, i) => `ce-x${i}: ${'v'.repeat(30)}\r\n`).join('')}content-length: 0\r\n\r\n`,
    ],
  ])('%s: a problem+json 400, and the connection closed', async (_what, text) => {
    const answer = await rawExchange(gw.url, text);
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head).toMatch(/content-type: application\/problem\+json/i);
    expect(head).toMatch(/connection: close/i);
    expect(JSON.parse(body!)).toMatchObject({ status: 400, code: 'invalid_request', errors: [{ message: expect.any(String) }] });
  });
});

describe('Host, Expect and bytes after an answered request (API probe)', () => {
  it.each([
    ['no Host (HTTP/1.1)', 'GET /healthz HTTP/1.1\r\n\r\n', 'an HTTP/1.1 request needs a Host header'],
    ['two Host headers', 'GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 'the request has 2 Host headers; it needs exactly one'],
    ['no Host on POST /events', 'POST /events HTTP/1.1\r\ncontent-length: 0\r\n\r\n', 'an HTTP/1.1 request needs a Host header'],
  ])('%s: a problem+json 400 (was a bare 400 from node, or a 200)', async (_what, text, message) => {
    const answer = await rawExchange(gw.url, text);
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head).toMatch(/content-type: application\/problem\+json/i);
    expect(JSON.parse(body!)).toMatchObject({ status: 400, code: 'invalid_request', errors: [{ attribute: 'host', message }] });
  });

  it('serves HTTP/1.0 without Host', async () => {
    expect(await rawExchange(gw.url, 'GET /healthz HTTP/1.0\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('ignores an Expect it does not know (was a bare 417)', async () => {
    const answer = await rawExchange(gw.url, 'GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: fancy\r\nConnection: close\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('answers a request once, even when bad bytes follow it on the connection (was a 200 then a 400)', async () => {
    const answer = await rawExchange(gw.url, 'GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n');
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
  });

  it.each([
    ['a request line that is not HTTP', 'GARBAGE\r\n\r\n'],
    ['a request with 20 KiB of headers', `GET /partitions HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`],
  ])(
    'answers each of three pipelined publishes awaiting their fsync with its 202 when %s follows them, then closes (edge probe: a 400 in their place, then nothing for the ones behind the first)',
    async (what, tail) => {
      const ids = [1, 2, 3].map((i) => `pipelined-${what.length}-${i}`);
      const publish = (id: string) =>
        `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /pipe\r\nce-type: t\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi`;
      const answer = await rawExchange(gw.url, ids.map(publish).join('') + tail);
      expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 202', 'HTTP/1.1 202', 'HTTP/1.1 202']);
      const bodies = answer.split(/\r\n\r\n/).filter((part) => part.startsWith('{'));
      expect(bodies.map((b) => JSON.parse(b.slice(0, b.lastIndexOf('}') + 1)).results[0].id)).toEqual(ids);
      expect(answer).toMatch(/\r\nconnection: close\r\n\r\n[^]*$/i);
    },
  );

  it('answers publishes whose client half-closed after sending them (a FIN), then closes (ingest probe: stored, never answered)', async () => {
    const ids = [1, 2, 3].map((i) => `half-closed-${i}`);
    const publish = (id: string) =>
      `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /half\r\nce-type: t\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi`;
    const { hostname, port } = new URL(gw.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(port), hostname, () => socket.end(ids.map(publish).join('')));
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString()));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
      socket.setTimeout(5000, () => socket.destroy());
    });
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 202', 'HTTP/1.1 202', 'HTTP/1.1 202']);
  });

  it.each([
    ['a 415 (a Content-Encoding it cannot undo)', 'POST /events', 'content-encoding: zstd\r\ncontent-type: text/plain\r\n'],
    ['a 404', 'POST /nope', ''],
    ['a 200 (a read)', 'GET /partitions', ''],
  ])(
    'does not serve a publish pipelined behind a request under Expect: 100-continue answered with %s before its body was asked for: the connection closes there (ingest probe: stored, never answered)',
    async (_what, line, headers) => {
      const id = `behind-expect-${line.replace(/\W+/g, '-')}`;
      const first = `${line} HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-admin\r\n${headers}expect: 100-continue\r\ncontent-length: 2\r\n\r\n{}`;
      const behind = `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /behind\r\nce-type: t\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi`;
      const answer = await rawExchange(gw.url, first + behind);
      expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toHaveLength(1);
      expect(answer).toMatch(/\r\nconnection: close\r\n/i);
      await new Promise((r) => setTimeout(r, 200));
      const stored = await fetch(`${gw.url}/events?source=/behind&id=${id}`, { headers: { authorization: 'Bearer routing-read' } });
      expect(stored.status).toBe(404);
    },
  );

  /** A connection sending `text` (then a FIN when `fin`); resolves with what came back once the server closed it, or undefined after `ms`. */
  const closedWithin = (text: string, fin: boolean, ms: number) =>
    new Promise<string | undefined>((resolve, reject) => {
      const { hostname, port } = new URL(gw.url);
      const socket = net.connect(Number(port), hostname, () => (fin ? socket.end(text) : socket.write(text)));
      let answer = '';
      socket.on('data', (c: Buffer) => (answer += c.toString()));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(answer));
      setTimeout(() => {
        socket.destroy();
        resolve(undefined);
      }, ms).unref();
      socket.on('error', reject);
    });

  it('cuts a live tail whose client half-closes without reading, and with it the connection (re-probe: never closed, its buffers kept)', async () => {
    const { hostname, port } = new URL(gw.url);
    const socket = net.connect(Number(port), hostname);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n');
    socket.pause(); // reads nothing
    socket.on('error', () => undefined);
    await new Promise((r) => setTimeout(r, 200));
    // More than the socket buffers take: the tail's output backs up.
    for (let i = 0; i < 12; i++) {
      const res = await fetch(`${gw.url}/events`, {
        method: 'POST',
        headers: {
          authorization: 'Bearer routing-pub',
          'ce-specversion': '1.0',
          'ce-id': `fin-${i}`,
          'ce-source': '/fin',
          'ce-type': 't',
          'content-type': 'text/plain',
        },
        body: 'x'.repeat(900_000),
      });
      expect(res.status).toBe(202);
    }
    socket.end();
    // The gateway's side of the connection, from /proc/net/tcp: closed by it (LAST_ACK, 09, or gone), not
    // left waiting (CLOSE_WAIT, 08) for a reader that reads nothing, as the client itself never closes.
    const serverSide = () => {
      const local = `0100007F:${Number(port).toString(16).toUpperCase().padStart(4, '0')}`;
      const remote = `0100007F:${socket.localPort!.toString(16).toUpperCase().padStart(4, '0')}`;
      const line = fs
        .readFileSync('/proc/net/tcp', 'utf8')
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .find(([, l, r]) => l === local && r === remote);
      return line?.[3] ?? 'gone';
    };
    let state = serverSide();
    for (let i = 0; i < 50 && (state === '01' || state === '08'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      state = serverSide();
    }
    socket.destroy();
    expect(['09', 'gone']).toContain(state);
  });

  it('answers publishes pipelined before a live tail whose client half-closes, then ends the tail (re-probe: cut with it, stored but unanswered)', async () => {
    const publish = (id: string) =>
      `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /before-tail\r\nce-type: t\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi`;
    const tail = 'GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n';
    const answer = await closedWithin(['b1', 'b2', 'b3'].map(publish).join('') + tail, true, 5000);
    expect(answer?.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 202', 'HTTP/1.1 202', 'HTTP/1.1 202', 'HTTP/1.1 200']);
  });

  it.each(['/events/stream', '/events/stream#x', 'http://x/events/stream?sql=true'])(
    'does not serve a publish pipelined behind a live tail at %s, whose answer could never come (re-probe: stored, never answered)',
    async (target) => {
      const id = `behind-tail-${target.length}`;
      const tail = `GET ${target} HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n`;
      const publish = `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /behind-tail\r\nce-type: t\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi`;
      const { hostname, port } = new URL(gw.url);
      const socket = net.connect(Number(port), hostname, () => socket.write(tail + publish));
      socket.on('error', () => undefined);
      await new Promise((r) => setTimeout(r, 500));
      socket.destroy();
      const stored = await fetch(`${gw.url}/events?source=/behind-tail&id=${id}`, { headers: as('routing-read') });
      expect(stored.status).toBe(404);
    },
  );

  const publishOf = (id: string, source: string, version = '1.1', extra = '') =>
    `POST /events HTTP/${version}\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: ${source}\r\nce-type: t\r\ncontent-type: text/plain\r\n${extra}content-length: 2\r\n\r\nhi`;
  const storedStatus = async (source: string, id: string) =>
    (await fetch(`${gw.url}/events?source=${source}&id=${id}`, { headers: as('routing-read') })).status;

  it.each([
    ['two Host headers', 'GET /partitions HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n', '400'],
    ['Transfer-Encoding: gzip, chunked', 'POST /events HTTP/1.1\r\nHost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n', '501'],
  ])(
    'does not serve publishes pipelined behind a request refused with Connection: close (%s): they were stored and never answered (re-probe)',
    async (what, first, status) => {
      const ids = [1, 2, 3].map((i) => `closed-${what.length}-${i}`);
      const answer = await closedWithin(first + ids.map((id) => publishOf(id, '/behind-close')).join(''), false, 5000);
      expect(answer?.match(/HTTP\/1\.1 \d{3}/g)).toEqual([`HTTP/1.1 ${status}`]);
      await new Promise((r) => setTimeout(r, 200));
      for (const id of ids) expect(await storedStatus('/behind-close', id)).toBe(404);
    },
  );

  it.each([
    [
      'HTTP/1.0 keep-alive',
      'GET /events/stream HTTP/1.0\r\nHost: x\r\nconnection: keep-alive\r\nauthorization: Bearer routing-read\r\n\r\n',
    ],
    ['Connection: close', 'GET /events/stream HTTP/1.1\r\nHost: x\r\nconnection: close\r\nauthorization: Bearer routing-read\r\n\r\n'],
    ['HTTP/1.1', 'GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n'],
  ])(
    'ends a live tail (%s) on a FIN with a publish pipelined behind it, which is not served, and closes the connection (re-probe: stored and never answered, or open for minutes)',
    async (what, tail) => {
      const id = `fin-behind-${what.length}`;
      const { hostname, port } = new URL(gw.url);
      const socket = net.connect(Number(port), hostname, () => socket.write(tail + publishOf(id, '/fin-behind')));
      let answer = '';
      socket.on('data', (c: Buffer) => (answer += c.toString()));
      socket.on('error', () => undefined);
      const closed = new Promise<boolean>((resolve) => {
        socket.on('close', () => resolve(true));
        setTimeout(() => resolve(false), 5000).unref();
      });
      await new Promise((r) => setTimeout(r, 300));
      socket.end();
      expect(await closed).toBe(true);
      socket.destroy();
      expect(answer.match(/HTTP\/1\.[01] \d{3}/g)).toEqual([expect.stringMatching(/ 200$/)]);
      expect(answer).toMatch(/\r\nconnection: close\r\n/i);
      await new Promise((r) => setTimeout(r, 200)); // a publish served would have been stored by now
      expect(await storedStatus('/fin-behind', id)).toBe(404);
    },
  );

  it('ends a live tail on a FIN with a publish of over 64 KiB pipelined behind it (re-probe: its unread body stopped the reads, the FIN unseen, open for minutes)', async () => {
    const body = 'x'.repeat(200_000);
    const publish = `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: big-behind\r\nce-source: /big-behind\r\nce-type: t\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`;
    const tail = 'GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n';
    expect(await closedWithin(tail + publish, true, 5000)).toMatch(/^HTTP\/1\.1 200 /);
    expect(await storedStatus('/big-behind', 'big-behind')).toBe(404);
  });

  it.each([
    ['under Expect: 100-continue, a publish of 70 KiB behind it', 'expect: 100-continue\r\n', true],
    ['with a body of 70 KiB of its own', `content-length: ${70 * 1024}\r\n`, false],
  ])(
    'ends a live tail %s on a FIN (re-probe: the unread bytes stopped the reads, open for minutes)',
    async (_what, extra, publishBehind) => {
      const body = 'x'.repeat(70 * 1024);
      const tail = `GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n${extra}\r\n`;
      const behind = publishBehind
        ? `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: expect-tail\r\nce-source: /expect-tail\r\nce-type: t\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`
        : body;
      expect(await closedWithin(tail + behind, true, 5000)).toMatch(/^HTTP\/1\.1 200 /);
      expect(await storedStatus('/expect-tail', 'expect-tail')).toBe(404);
    },
  );

  it('keeps streaming a live tail sent with a body (re-probe: the body read, the tail ended at once)', async () => {
    const { hostname, port } = new URL(gw.url);
    const socket = net.connect(Number(port), hostname, () =>
      socket.write('GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\ncontent-length: 1\r\n\r\nx'),
    );
    let answer = '';
    let closed = false;
    socket.on('data', (c: Buffer) => (answer += c.toString()));
    socket.on('error', () => undefined);
    socket.on('close', () => (closed = true));
    try {
      await new Promise((r) => setTimeout(r, 300));
      const published = await fetch(`${gw.url}/events`, {
        method: 'POST',
        headers: {
          ...as('routing-pub'),
          'ce-specversion': '1.0',
          'ce-id': 'to-bodied-tail',
          'ce-source': '/bodied',
          'ce-type': 't',
          'content-type': 'text/plain',
        },
        body: 'x',
      });
      expect(published.status).toBe(202);
      for (let i = 0; i < 50 && !answer.includes('to-bodied-tail'); i++) await new Promise((r) => setTimeout(r, 20));
      expect([closed, answer.includes('to-bodied-tail')]).toEqual([false, true]);
    } finally {
      socket.destroy();
    }
  });

  it.each(['/healthz?x=/events/stream', '/events?source=/events/stream&id=x', '/openapi.json#/events/stream', '/x/events/stream'])(
    'serves a publish pipelined behind GET %s, which is not the live tail (re-probe: taken for one, the publish was dropped)',
    async (target) => {
      const id = `not-tail-${target.length}`;
      const answer = await closedWithin(
        `GET ${target} HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n` + publishOf(id, '/not-tail'),
        true,
        5000,
      );
      expect(answer?.match(/HTTP\/1\.1 \d{3}/g)?.[1]).toBe('HTTP/1.1 202');
      expect(await storedStatus('/not-tail', id)).toBe(200);
    },
  );

  it('ends a live tail when bad bytes follow it, then a FIN (re-probe: the tail and its connection stayed open)', async () => {
    const tail = 'GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n';
    expect(await closedWithin(tail + '\x00\x01 not http\r\n\r\n', true, 5000)).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("ends a live tail on its client's FIN with a request cut short pipelined behind it (re-probe: the tail and connection stayed open)", async () => {
    const tail = 'GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n';
    const partial =
      'POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nab';
    const answer = await closedWithin(tail + partial, true, 5000);
    expect(answer).toBeDefined();
  });

  it('cuts a connection that pipelines more than 32 requests behind a live tail (re-probe: thousands held, out of memory)', async () => {
    const tail = 'GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\n\r\n';
    expect(await closedWithin(tail + 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(200), false, 3000)).toBeDefined();
  });

  it('takes twelve tails pipelined on one connection without a listener warning (re-probe: MaxListenersExceededWarning on stderr)', async () => {
    const child = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1' });
    try {
      const { port } = new URL(child.url);
      await new Promise<void>((resolve) => {
        const socket = net.connect(Number(port), '127.0.0.1', () =>
          socket.end('GET /events/stream HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(12)),
        );
        socket.on('error', () => undefined);
        socket.on('close', () => resolve());
        setTimeout(() => socket.destroy(), 3000).unref();
      });
      await new Promise((r) => setTimeout(r, 200));
      expect(child.output()).not.toContain('MaxListenersExceededWarning');
    } finally {
      await killIfRunning(child);
    }
  });

  it('cuts a connection that pipelines more than 32 requests behind one whose body is not asked for (re-probe: 300,000 read and held, 900 MB)', async () => {
    const first =
      'GET /events/stream HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-read\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n{}';
    const behind = 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(5000);
    expect(await closedWithin(first + behind, false, 3000)).toBeDefined();
    expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
  });

  it('serves a publish pipelined behind one under Expect: 100-continue whose body was asked for', async () => {
    const ids = ['invited-first', 'invited-behind'];
    const publish = (id: string, expect: string) =>
      `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /behind\r\nce-type: t\r\ncontent-type: text/plain\r\n${expect}content-length: 2\r\n\r\nhi`;
    const answer = await rawExchange(
      gw.url,
      publish(ids[0]!, 'expect: 100-continue\r\nconnection: keep-alive\r\n') + publish(ids[1]!, 'connection: close\r\n'),
    );
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 100', 'HTTP/1.1 202', 'HTTP/1.1 202']);
  });

  it.each([
    ['gzip, chunked', '1f8b'],
    ['identity, chunked', '7b7d'],
  ])('refuses Transfer-Encoding %s with a 501 and stores nothing (was: gzip bytes stored as the data)', async (codings) => {
    const id = `te-${codings.replace(/\W+/g, '-')}`;
    const answer = await rawExchange(
      gw.url,
      `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /te\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nTransfer-Encoding: ${codings}\r\n\r\n2\r\nab\r\n0\r\n\r\n`,
    );
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 501 /);
    expect(JSON.parse(body!)).toMatchObject({ status: 501, code: 'not_implemented', errors: [{ attribute: 'transfer-encoding' }] });
    expect((await sendRaw(gw.url, 'GET', `/events?source=/te&id=${id}`, { headers: as('routing-read') })).status).toBe(404);
  });

  it.each([
    ['in an HTTP/1.0 request', 'HTTP/1.0', 'chunked'],
    ['empty', 'HTTP/1.1', ''],
  ])('refuses Transfer-Encoding %s with a 400 (re-probe: 202, and a 501)', async (_what, version, codings) => {
    const answer = await rawExchange(
      gw.url,
      `POST /events ${version}\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: te-bad\r\nce-source: /te\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nTransfer-Encoding: ${codings}\r\n\r\n2\r\nab\r\n0\r\n\r\n`,
    );
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(body!)).toMatchObject({ status: 400, code: 'invalid_request', errors: [{ attribute: 'transfer-encoding' }] });
  });

  it('takes Transfer-Encoding: chunked, in any case', async () => {
    const answer = await rawExchange(
      gw.url,
      `POST /events HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-pub\r\nce-specversion: 1.0\r\nce-id: te-ok\r\nce-source: /te\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n2\r\nab\r\n0\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 202 /);
  });

  it('answers a request line of another HTTP version with a 505 (was served as HTTP/1.1)', async () => {
    const answer = await rawExchange(gw.url, 'GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n');
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 505 /);
    expect(JSON.parse(body!)).toMatchObject({ status: 505, code: 'http_version_not_supported' });
  });

  it.each([
    [
      'POST /events',
      'POST /events',
      'ce-specversion: 1.0\r\nce-id: big\r\nce-source: /big\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nauthorization: Bearer routing-pub',
    ],
    ['POST /subscriptions', 'POST /subscriptions', 'content-type: application/json\r\nauthorization: Bearer routing-admin'],
  ])(
    '%s with Expect: 100-continue and a body over the limit: the 413 at once, no invitation to send it (was a 100 first)',
    async (_what, line, headers) => {
      const answer = await rawExchange(
        gw.url,
        `${line} HTTP/1.1\r\nHost: x\r\n${headers}\r\nExpect: 100-continue\r\ncontent-length: 99999999\r\n\r\n`,
      );
      expect(answer).not.toMatch(/100 Continue/);
      const [head, body] = answer.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 413 /);
      expect(head).toMatch(/connection: close/i);
      expect(JSON.parse(body!)).toMatchObject({ status: 413, code: 'payload_too_large' });
    },
  );

  it.each([
    [
      'POST /events',
      'ce-specversion: 1.0\r\nce-id: zstd\r\nce-source: /expect\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nauthorization: Bearer routing-pub',
    ],
    ['POST /subscriptions', 'content-type: application/json\r\nauthorization: Bearer routing-admin'],
  ])(
    '%s with Expect: 100-continue in a Content-Encoding it cannot undo: the 415 at once, no invitation (re-probe: a 100 first)',
    async (line, headers) => {
      const answer = await rawExchange(
        gw.url,
        `${line} HTTP/1.1\r\nHost: x\r\n${headers}\r\ncontent-encoding: zstd\r\nExpect: 100-continue\r\ncontent-length: 2\r\n\r\n`,
      );
      expect(answer).not.toMatch(/100 Continue/);
      const [head, body] = answer.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 415 /);
      expect(head).toMatch(/connection: close/i);
      expect(JSON.parse(body!)).toMatchObject({ status: 415, code: 'unsupported_media_type' });
    },
  );

  it('POST /events without a key under Expect: 100-continue: the 401 at once, no invitation to send the body (hostile probe: a 100 first)', async () => {
    const answer = await rawExchange(
      gw.url,
      'POST /events HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: no-key\r\nce-source: /expect\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nExpect: 100-continue\r\ncontent-length: 2\r\nConnection: close\r\n\r\n',
    );
    expect(answer).not.toMatch(/100 Continue/);
    expect(answer).toMatch(/^HTTP\/1\.1 401 /);
  });

  it('invites a body within the limit under Expect: 100-continue', async () => {
    const answer = await rawExchange(
      gw.url,
      'POST /events HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: small-expect\r\nce-source: /expect\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nauthorization: Bearer routing-pub\r\nExpect: 100-continue\r\ncontent-length: 2\r\nConnection: close\r\n\r\n',
      // The body is never sent: the gateway waits for it (until the 5 s bound) once it has invited it.
      { until: (a) => /\r\n\r\n/.test(a) },
    );
    expect(answer).toMatch(/^HTTP\/1\.1 100 Continue/);
  });

  it('answers an unknown path of 10,000 characters with a short 404 (re-probe: echoed twice, 20 KB)', async () => {
    for (const path of [`/${'x'.repeat(10_000)}`, `/deliveries/dlv_${'A'.repeat(10_000)}`]) {
      const res = await sendRaw(gw.url, 'POST', path, { headers: as('routing-admin') });
      expect([res.status, res.body.code]).toEqual([404, 'not_found']);
      expect(JSON.stringify(res.body).length).toBeLessThan(1000);
      expect(res.body.detail).toContain('… (');
    }
    for (const path of [`/subscriptions/${'x'.repeat(10_000)}`, `/subscriptions/${'x'.repeat(10_000)}/pause`]) {
      const res = await sendRaw(gw.url, path.endsWith('pause') ? 'POST' : 'GET', path, { headers: as('routing-admin') });
      expect([res.status, res.body.code]).toEqual([404, 'not_found']);
      expect(JSON.stringify(res.body).length).toBeLessThan(1000);
    }
  });

  it("answers a route's path with a method it does not take 405 with Allow, whatever the key (was: 404 as if no route had it)", async () => {
    const cases: [string, string, string][] = [
      ['PUT', '/subscriptions', 'GET, HEAD, OPTIONS, POST'],
      ['DELETE', '/events', 'GET, HEAD, OPTIONS, POST'],
      ['POST', '/healthz', 'GET, HEAD, OPTIONS'],
      ['PUT', '/subscriptions/some-id', 'DELETE, GET, HEAD, OPTIONS, PATCH'],
      ['GET', '/deliveries/dlv_x/ack', 'OPTIONS, POST'],
      // The concrete route's path, not `…/:deadLetterId`'s (was: Allow listed DELETE, and a DELETE was a 404 "no dead letter redeliver").
      ['DELETE', '/subscriptions/some-id/dead-letters/redeliver', 'OPTIONS, POST'],
    ];
    for (const [method, path, allow] of cases) {
      for (const headers of [{}, as('routing-read')]) {
        const res = await sendRaw(gw.url, method, path, { headers });
        expect([method, path, res.status, res.headers.allow, res.headers['content-type'], res.body.code]).toEqual([
          method,
          path,
          405,
          allow,
          'application/problem+json',
          'method_not_allowed',
        ]);
      }
    }
    // A path no route has stays a 404, and a route's own method is not refused.
    expect((await sendRaw(gw.url, 'PUT', '/nothing-here')).status).toBe(404);
    const options = await sendRaw(gw.url, 'OPTIONS', '/subscriptions/some-id/dead-letters/redeliver');
    expect([options.status, options.headers.allow]).toEqual([200, 'OPTIONS, POST']);
    const deleteOne = await sendRaw(gw.url, 'DELETE', '/subscriptions/some-id/dead-letters/17', { headers: as('routing-admin') });
    expect([deleteOne.status, deleteOne.body.code]).toEqual([404, 'not_found']);
    expect((await sendRaw(gw.url, 'GET', '/healthz')).status).toBe(200);
  });

  it('keeps the connection of an invited publish open: a second request on it is answered', async () => {
    const publish = (id: string, extra: string) =>
      `POST /events HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /expect\r\nce-type: t\r\ncontent-type: application/octet-stream\r\nauthorization: Bearer routing-pub\r\n${extra}content-length: 2\r\n\r\nab`;
    const answer = await rawExchange(gw.url, publish('keep-1', 'Expect: 100-continue\r\n') + publish('keep-2', 'Connection: close\r\n'));
    const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    expect(statuses).toEqual(['100', '202', '202']);
    expect(answer.split('HTTP/1.1 202')[1]).toMatch(/connection: keep-alive/i);
  });

  it('invites a JSON body under Expect: 100-continue once its key and length pass, and answers it', async () => {
    const body = '{"delayMs":1}';
    const invited = await rawExchange(
      gw.url,
      `POST /deliveries/dlv_AAAAAAAAAAAAAAAAAAAAAAAA/nack HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-admin\r\ncontent-type: application/json\r\nExpect: 100-continue\r\ncontent-length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(invited).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 404 /);
    const refused = await rawExchange(
      gw.url,
      `POST /subscriptions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nExpect: 100-continue\r\ncontent-length: 2\r\n\r\n`,
    );
    expect(refused).not.toMatch(/100 Continue/);
    expect(refused).toMatch(/^HTTP\/1\.1 401 /);
    expect(refused).toMatch(/connection: close/i);
  });

  it.each([
    ['PATCH', ''],
    ['POST', '/seek'],
    ['POST', '/rotate-secret'],
    ['POST', '/dead-letters/redeliver'],
  ])(
    '%s /subscriptions/<unknown>%s under Expect: 100-continue: the 404 at once, no invitation to send the body (was: a 100 first)',
    async (method, tail) => {
      const answer = await rawExchange(
        gw.url,
        `${method} /subscriptions/7d4ab2a6-0000-4000-8000-000000000000${tail} HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-admin\r\ncontent-type: text/plain\r\nExpect: 100-continue\r\ncontent-length: 2\r\n\r\n`,
      );
      expect(answer).not.toMatch(/100 Continue/);
      const [head, body] = answer.split('\r\n\r\n');
      // 404 whatever the body: a content type the route refuses is not looked at for a subscription that is not there.
      expect(head).toMatch(/^HTTP\/1\.1 404 /);
      expect(head).toMatch(/connection: close/i);
      expect(JSON.parse(body!)).toMatchObject({ status: 404, code: 'not_found' });
    },
  );

  it('refuses a JSON body declared over 1 MiB at once, before it is sent (was no answer until it all came)', async () => {
    for (const path of ['/subscriptions', '/deliveries/dlv_AAAAAAAAAAAAAAAAAAAAAAAA/nack']) {
      const answer = await rawExchange(
        gw.url,
        `POST ${path} HTTP/1.1\r\nHost: x\r\nauthorization: Bearer routing-admin\r\ncontent-type: application/json\r\ncontent-length: 1048577\r\n\r\n{"sink":`,
        // Taken as soon as it is whole: the connection stays open for the rest of the body, never sent (5 s bound).
        { until: holdsWholeAnswer },
      );
      const [head, body] = answer.split('\r\n\r\n');
      expect({ path, head }).toEqual({ path, head: expect.stringMatching(/^HTTP\/1\.1 413 /) });
      expect(JSON.parse(body!)).toMatchObject({ status: 413, code: 'payload_too_large' });
    }
  });
});

describe('delivery callbacks, which take no key', () => {
  it.each(['nack', 'extend', 'reject'])(
    'refuse a %s body over 16 KiB (security probe: 1 MiB each, held open by many clients, pinned 729 MiB)',
    async (action) => {
      const path = `/deliveries/dlv_AAAAAAAAAAAAAAAAAAAAAAAA/${action}`;
      const body = JSON.stringify({ reason: 'x'.repeat(17_000) });
      const chunked = await rawExchange(
        gw.url,
        `POST ${path} HTTP/1.1\r\nHost: x\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
      );
      expect(chunked).toMatch(/^HTTP\/1\.1 413 /);
      // The largest body a callback takes (a 1,024-character reason, every character escaped) still fits.
      const largest = await request(gw.url)
        .post(path)
        .set('content-type', 'application/json')
        .send(`{"reason":"${'\\u00e9'.repeat(1024)}"}`);
      expect(largest.status).not.toBe(413);
    },
  );
  it('refuse a body declared over 16 KiB at once, before it is sent', async () => {
    const path = '/deliveries/dlv_AAAAAAAAAAAAAAAAAAAAAAAA/reject';
    const declared = await rawExchange(
      gw.url,
      `POST ${path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 16385\r\n\r\n{"reason":`,
      { until: holdsWholeAnswer }, // the rest of the body is never sent (5 s bound)
    );
    expect(declared).toMatch(/^HTTP\/1\.1 413 /);
    expect(JSON.parse(declared.split('\r\n\r\n')[1]!)).toMatchObject({
      code: 'payload_too_large',
      detail: 'the request body is larger than the 16 KiB a callback accepts',
    });
  });
});

describe('JSON bodies of the wrong shape', () => {
  it.each(['null', '3', '"text"'])('says a body of %s must be a JSON object (was: "not valid JSON", though it is)', async (body) => {
    const res = await request(gw.url).post('/deliveries/dlv_x/nack').set('content-type', 'application/json').send(body);
    expect(res.status).toBe(400);
    expect(res.body.detail).toBe('the body must be a JSON object');
  });

  it('still says a body that does not parse is not valid JSON', async () => {
    const res = await request(gw.url).post('/deliveries/dlv_x/nack').set('content-type', 'application/json').send('{"delayMs":');
    expect(res.status).toBe(400);
    expect(res.body.detail).toBe('the body is not valid JSON');
  });
});

/**
 * Sends `head`, then body bytes (`frame` wraps each 64 KiB block) as fast as the gateway takes them,
 * until it closes the connection or 256 MiB have gone (or 15 s). What it answered, and how much went.
 */
async function sendUntilCut(
  head: string,
  frame: (block: Buffer) => Buffer = (b) => b,
): Promise<{ status: string; sentMiB: number; cut: boolean }> {
  const socket = net.connect(Number(new URL(gw.url).port), '127.0.0.1');
  let answer = '';
  let sent = 0;
  let cut = false;
  socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
  socket.on('error', () => undefined); // the cut shows as EPIPE or ECONNRESET
  const block = frame(Buffer.alloc(64 * 1024, 0x61));
  const started = Date.now();
  await new Promise<void>((resolve) => {
    socket.once('close', () => {
      cut = sent < 256 * 1024 * 1024 && Date.now() - started < 15_000;
      resolve();
    });
    socket.write(head);
    const pump = () => {
      while (!socket.destroyed) {
        if (sent >= 256 * 1024 * 1024 || Date.now() - started >= 15_000) return void socket.destroy();
        sent += block.length;
        if (!socket.write(block)) return void socket.once('drain', pump);
      }
    };
    pump();
  });
  return { status: answer.split('\r\n')[0]!, sentMiB: Math.round(sent / 1024 / 1024), cut };
}

describe('a body left unread by its answer (hostile probe: read to its end, gigabytes from a client without a key)', () => {
  const events = 'ce-specversion: 1.0\r\nce-id: unread\r\nce-source: /unread\r\nce-type: t\r\ncontent-type: application/octet-stream';

  it('is read on no further than about 64 MiB after a 401 on POST /events: then the connection is closed', async () => {
    const r = await sendUntilCut(`POST /events HTTP/1.1\r\nHost: x\r\n${events}\r\ncontent-length: 1000000000\r\n\r\n`);
    expect(r).toEqual({ status: 'HTTP/1.1 401 Unauthorized', sentMiB: expect.any(Number), cut: true });
  });

  it('is read on no further than about 64 MiB after a 413 on a chunked POST /events past the limit', async () => {
    const r = await sendUntilCut(
      `POST /events HTTP/1.1\r\nHost: x\r\n${events}\r\nauthorization: Bearer routing-pub\r\ntransfer-encoding: chunked\r\n\r\n`,
      (b) => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]),
    );
    expect(r).toEqual({ status: 'HTTP/1.1 413 Payload Too Large', sentMiB: expect.any(Number), cut: true });
  });

  it('is read on no further than about 64 MiB after a 401 on another route (POST /subscriptions)', async () => {
    const r = await sendUntilCut(
      'POST /subscriptions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n',
    );
    expect(r).toEqual({ status: 'HTTP/1.1 401 Unauthorized', sentMiB: expect.any(Number), cut: true });
  });

  it('lets a client finish sending a refused 4 MiB body and read its 401, without a reset (re-probe: ECONNRESET at a 1 MiB cut)', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${gw.url}/events`, {
        method: 'POST',
        headers: { authorization: 'Bearer revoked', 'content-type': 'application/cloudevents-batch+json' },
        body: Buffer.alloc(4 * 1024 * 1024, 0x61),
      });
      expect(res.status).toBe(401);
      await res.text();
    }
  });

  it('lets a client streaming a body declared over the limit read its 413 (re-probe: EPIPE, the socket destroyed at once by Connection: close)', async () => {
    const { port } = new URL(gw.url);
    for (let i = 0; i < 3; i++) {
      const status = await new Promise<number | string>((resolve) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/events',
            headers: { ...binary(), ...as('routing-pub'), 'content-length': String(2 * 1024 * 1024) },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode!);
          },
        );
        req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        Readable.from(Array.from({ length: 32 }, () => Buffer.alloc(64 * 1024, 0x61))).pipe(req);
      });
      expect(status).toBe(413);
    }
  });

  it.each([
    ['Connection: close', 'HTTP/1.1', 'Connection: close\r\n'],
    ['HTTP/1.0', 'HTTP/1.0', ''],
  ])(
    'lets a client that closes after its answer (%s) send the rest of a refused body slowly and read its 401 (re-probe: a reset 2 s in, the 401 lost)',
    async (_name, version, close) => {
      const { port } = new URL(gw.url);
      const bytes = 768 * 1024;
      const answer = await new Promise<string>((resolve) => {
        const socket = net.connect(Number(port), '127.0.0.1');
        let text = '';
        socket.pause(); // read only once the body is sent, as a simple client does
        socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
        socket.on('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`));
        socket.on('close', () => resolve(text));
        socket.on('connect', async () => {
          socket.write(`POST /events ${version}\r\nHost: x\r\n${events}\r\n${close}content-length: ${bytes}\r\n\r\n`);
          // 3 s in all, past the 2 s a closing connection lingers for what its client still sends.
          for (let sent = 0; sent < bytes && !socket.destroyed; sent += 64 * 1024) {
            socket.write(Buffer.alloc(64 * 1024, 0x61));
            await new Promise((r) => setTimeout(r, 250));
          }
          socket.resume();
        });
      });
      expect(answer.split('\r\n')[0]).toMatch(/^HTTP\/1\.[01] 401 Unauthorized$/);
    },
  );

  it('keeps the connection of a refused request whose small body has come whole', async () => {
    const answer = await rawExchange(
      gw.url,
      `POST /events HTTP/1.1\r\nHost: x\r\n${events}\r\ncontent-length: 2\r\n\r\n{}GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    expect(answer.match(/HTTP\/1\.1 \d{3}/g)).toEqual(['HTTP/1.1 401', 'HTTP/1.1 200']);
  });
});
