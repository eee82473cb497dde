import http from 'node:http';
import net from 'node:net';
import { killIfRunning, postBatch, postBinary, spawnGateway, startTestGateway, useGatewayForFile } from '../helpers/gateway';
import { tmpDir } from '../helpers/tmp';

// Its afterAll, once it has closed, removes every temp dir of the file (the child gateways' too): a describe's
// own cleanup removed this gateway's dir under it while it ran.
const gw = useGatewayForFile({ HERALD_PARTITIONS: '4' });

interface SseMessage {
  event?: string;
  id?: string;
  data?: string;
}

/** Opens `GET /events/stream` and collects its messages until `count` arrived (bounded in time). */
function openStream(query = '') {
  const messages: SseMessage[] = [];
  let buffer = '';
  let res: http.IncomingMessage | undefined;
  const ready = new Promise<http.IncomingMessage>((resolve, reject) => {
    const { hostname, port } = new URL(gw.url);
    const req = http.get({ host: hostname, port, path: `/events/stream${query}`, agent: false }, (r) => {
      res = r;
      r.setEncoding('utf8');
      r.on('data', (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const message: SseMessage = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(': ');
            const field = line.slice(0, colon) as keyof SseMessage;
            message[field] = line.slice(colon + 2);
          }
          if (message.event) messages.push(message);
        }
      });
      // The first bytes (a comment) say the tail is attached: events stored from now on are in it.
      r.once('data', () => resolve(r));
    });
    req.on('error', reject);
  });
  return {
    messages,
    ready,
    async waitFor(count: number, timeoutMs = 5000): Promise<SseMessage[]> {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      return messages;
    },
    close: () => res?.destroy(),
  };
}

describe('GET /events/stream', () => {
  it('sends every event stored after the request, as SSE messages with partition:offset ids, filtered by sql', async () => {
    await postBinary(gw.url, { source: '/stream', id: 'before', type: 'com.example.order.created' });
    const all = openStream();
    const orders = openStream(`?${new URLSearchParams({ sql: "type LIKE 'com.example.order.%'" })}`);
    const res = await all.ready;
    await orders.ready;
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    const sent = [
      (await postBinary(gw.url, { source: '/stream', id: 'o1', type: 'com.example.order.created', data: { n: 1 } })).body.results[0],
      (await postBinary(gw.url, { source: '/stream', id: 'p1', type: 'com.example.payment.made' })).body.results[0],
      ...(
        await postBatch(gw.url, [
          { source: '/stream', id: 'o2', type: 'com.example.order.shipped' },
          { source: '/stream', id: 'o3', type: 'com.example.order.created' },
        ])
      ).body.results,
    ];
    try {
      const got = await all.waitFor(4);
      expect(got).toHaveLength(4);
      const byId = new Map(got.map((m) => [JSON.parse(m.data!).event.id as string, m]));
      expect([...byId.keys()].sort()).toEqual(['o1', 'o2', 'o3', 'p1']); // not 'before'
      for (const r of sent) {
        const m = byId.get(r.id)!;
        expect(m.event).toBe('cloudevent');
        expect(m.id).toBe(`${r.partition}:${r.offset}`);
        expect(JSON.parse(m.data!)).toMatchObject({ partition: r.partition, offset: r.offset, event: { id: r.id, source: '/stream' } });
      }
      expect(JSON.parse(byId.get('o1')!.data!).event.data).toEqual({ n: 1 });
      const filtered = await orders.waitFor(3);
      await new Promise((r) => setTimeout(r, 200)); // nothing else is coming
      expect(orders.messages.map((m) => JSON.parse(m.data!).event.id).sort()).toEqual(['o1', 'o2', 'o3']);
      expect(filtered).toHaveLength(3);
    } finally {
      all.close();
      orders.close();
    }
  });

  it('answers HEAD with the headers a GET gets, at once and without a tail (before, it never answered)', async () => {
    const res = await fetch(`${gw.url}/events/stream`, { method: 'HEAD', signal: AbortSignal.timeout(5000) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(await res.text()).toBe('');
  });

  it('answers 400 problem+json naming sql for an expression that does not parse', async () => {
    const res = await fetch(`${gw.url}/events/stream?${new URLSearchParams({ sql: "type = 'a' AND AND" })}`);
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const body = (await res.json()) as { code: string; errors: { attribute: string }[] };
    expect(body.code).toBe('invalid_request');
    expect(body.errors[0]?.attribute).toBe('sql');
  });
});

// Each of these waits 15–30 s on the clock (the keepalive interval, the tail's wait for a reader): they run side by
// side. The keepalive and the slow reader filter or own what they read, so the others' events do not reach them.
describe('GET /events/stream: idle, stalled and slow readers', () => {
  it.concurrent(
    'sends a comment line every 15 s while nothing is stored, so proxies keep an idle stream open',
    async () => {
      const { hostname, port } = new URL(gw.url);
      const opened = Date.now();
      const keepaliveAt = await new Promise<number>((resolve, reject) => {
        const req = http.get(
          { host: hostname, port, path: '/events/stream?sql=' + encodeURIComponent("source = '/stream/idle'"), agent: false },
          (res) => {
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => {
              if (chunk.includes(': keepalive\n\n')) {
                resolve(Date.now());
                res.destroy();
              }
            });
          },
        );
        req.on('error', reject);
        setTimeout(() => reject(new Error('no keepalive comment within 20 s')), 20_000).unref();
      });
      // Not sooner than the interval (it is not chatter), and it came by itself (nothing was stored for this filter).
      expect(keepaliveAt - opened).toBeGreaterThanOrEqual(14_000);
    },
    30_000,
  );

  it.concurrent('disconnects a reader that does not keep up instead of buffering for it', async () => {
    const { hostname, port } = new URL(gw.url);
    const reader = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.get({ host: hostname, port, path: '/events/stream', agent: false }, (res) => {
        res.pause(); // reads nothing while the events are stored
        resolve(res);
      });
      req.on('error', reject);
    });
    const big = 'x'.repeat(16 * 1024);
    const batches = 60; // ≈ 19 MiB of messages: far past what the tail holds for a reader (1 MiB), plus the socket buffers
    for (let i = 0; i < batches; i++) {
      const res = await postBatch(
        gw.url,
        Array.from({ length: 20 }, (_, j) => ({ source: '/stream/slow', id: `${i}-${j}`, data: { big } })),
      );
      expect(res.status).toBe(202);
    }
    // It takes nothing for longer than the tail waits for a reader (15 s).
    await new Promise((r) => setTimeout(r, 16_000));
    // Now it reads: it gets what was in flight, then the end, long before the whole backlog.
    let received = 0;
    const ended = new Promise<void>((resolve) => {
      reader.socket.on('close', () => resolve());
      reader.on('data', (c: Buffer) => (received += c.length));
      reader.on('error', () => undefined);
    });
    reader.resume();
    const timeout = new Promise<'open'>((resolve) => setTimeout(() => resolve('open'), 10_000).unref());
    expect(await Promise.race([ended.then(() => 'closed' as const), timeout])).toBe('closed');
    expect(received).toBeLessThan(batches * 20 * big.length);
  });

  it.concurrent(
    'is waited for, not cut off, while it takes 150 KiB a second of a 20 MB backlog (re-probe: cut after 27 s)',
    async () => {
      const child = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1' });
      const { hostname, port } = new URL(child.url);
      const socket = net.connect(Number(port), hostname);
      try {
        await new Promise((resolve) => socket.once('connect', resolve));
        socket.write(`GET /events/stream HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`);
        let closed = false;
        let taken = 0;
        socket.on('close', () => (closed = true));
        socket.pause();
        // 15 KiB every 100 ms, never more than a few hundred ms without taking something.
        const sip = setInterval(() => {
          let budget = 15 * 1024;
          let chunk: Buffer | null;
          while (budget > 0 && (chunk = socket.read(Math.min(budget, socket.readableLength || budget)) as Buffer | null) !== null) {
            taken += chunk.length;
            budget -= chunk.length;
          }
        }, 100);
        try {
          const data = 'x'.repeat(100 * 1024);
          for (let i = 0; i < 200; i += 8) {
            const events = Array.from({ length: 8 }, (_, j) => ({ source: '/slow', id: `slow-${i + j}`, data }));
            expect((await postBatch(child.url, events)).status).toBe(202);
          }
          const until = Date.now() + 30_000;
          while (!closed && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
          expect({ closed, tookMiB: taken > 3 * 1024 * 1024 }).toEqual({ closed: false, tookMiB: true });
        } finally {
          clearInterval(sip);
        }
      } finally {
        socket.destroy();
        await killIfRunning(child);
      }
    },
    60_000,
  );
});

describe('GET /events/stream from a gateway in its own process', () => {
  it('hands a burst to a reader that keeps up, whatever its size: 80 events of 100 KiB stored at once all arrive (was: cut off after 0–3)', async () => {
    const child = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1' });
    try {
      const { hostname, port } = new URL(child.url);
      let received = 0;
      let closed = false;
      const reader = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.get({ host: hostname, port, path: '/events/stream', agent: false }, (res) => {
          res.on('data', (c: Buffer) => (received += (c.toString().match(/event: cloudevent/g) ?? []).length));
          res.on('close', () => (closed = true));
          res.once('data', () => resolve(res));
        });
        req.on('error', reject);
      });
      const body = Buffer.alloc(100 * 1024, 0x61);
      const answers = await Promise.all(
        Array.from({ length: 80 }, (_, i) =>
          fetch(`${child.url}/events`, {
            method: 'POST',
            headers: {
              'ce-specversion': '1.0',
              'ce-id': `burst-${i}`,
              'ce-source': '/burst',
              'ce-type': 't',
              'content-type': 'text/plain',
            },
            body,
          }),
        ),
      );
      expect(answers.map((r) => r.status)).toEqual(Array(80).fill(202));
      const deadline = Date.now() + 20_000;
      while (received < 80 && !closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      reader.destroy();
      expect({ received, closed }).toEqual({ received: 80, closed: false });
    } finally {
      await killIfRunning(child);
    }
  }, 40_000);
});

describe('GET /events/stream: HERALD_MAX_STREAMS', () => {
  it('refuses a tail past the limit with 503 unavailable and Retry-After (hostile probe: no limit, GBs held), and takes one again once another closed', async () => {
    const own = await startTestGateway({ HERALD_MAX_STREAMS: '2' });
    const { hostname, port } = new URL(own.url);
    const open = () =>
      new Promise<http.IncomingMessage>((resolve, reject) => {
        http.get({ host: hostname, port, path: '/events/stream', agent: false }, resolve).on('error', reject);
      });
    const readers: http.IncomingMessage[] = [];
    try {
      readers.push(await open());
      expect((await fetch(`${own.url}/events/stream`, { method: 'HEAD' })).status).toBe(200); // HEAD holds no tail…
      readers.push(await open());
      expect(readers.map((r) => r.statusCode)).toEqual([200, 200]);
      // …and answers what a GET gets, the 503 when full too (security probe: it said 200).
      const head = await fetch(`${own.url}/events/stream`, { method: 'HEAD' });
      expect([head.status, head.headers.get('retry-after')]).toEqual([503, '5']);
      const refused = await fetch(`${own.url}/events/stream`);
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      expect(refused.headers.get('content-type')).toBe('application/problem+json');
      expect(await refused.json()).toMatchObject({
        status: 503,
        code: 'unavailable',
        detail: expect.stringContaining('HERALD_MAX_STREAMS'),
      });
      // One reader leaves: once the gateway has seen it go, a new tail is taken, and it gets what is stored.
      readers.shift()!.destroy();
      let again: http.IncomingMessage | undefined;
      for (let i = 0; i < 100 && again?.statusCode !== 200; i++) {
        again?.destroy();
        await new Promise((r) => setTimeout(r, 20));
        again = await open();
      }
      readers.push(again!);
      expect(again!.statusCode).toBe(200);
      let text = '';
      again!.on('data', (c: Buffer) => (text += c.toString()));
      expect((await postBinary(own.url, { source: '/stream/limit', id: 'after' })).status).toBe(202);
      for (let i = 0; i < 250 && !text.includes('"id":"after"'); i++) await new Promise((r) => setTimeout(r, 20));
      expect(text).toContain('"id":"after"');
    } finally {
      for (const r of readers) r.destroy();
      await own.close();
    }
  });
});
