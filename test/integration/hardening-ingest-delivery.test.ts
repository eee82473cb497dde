import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import request from 'supertest';
import {
  getJson,
  killIfRunning,
  postBinary,
  partitionHeads,
  recordEnds,
  runGatewayUntilExit,
  segmentFiles,
  spawnGateway,
  startTestGateway,
  type ChildGateway,
  type TestGateway,
} from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const structured = (id: string, data: unknown, key = 'deep') => ({
  specversion: '1.0',
  id,
  source: '/hard',
  type: 'hard.t',
  partitionkey: key,
  data,
});
/** JSON text of an event whose data nests arrays `depth` deep (built as text: JSON.stringify itself would overflow). */
const deepEvent = (id: string, depth: number) =>
  JSON.stringify(structured(id, 'DATA')).replace('"DATA"', '['.repeat(depth) + '1' + ']'.repeat(depth));

describe('a bad event never burns an offset', () => {
  let gw: TestGateway;
  let receiver: Receiver;
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await receiver.close();
    await gw.close();
  });

  it('refuses data nested 5,000 deep (structured, batch, binary JSON) with 400 naming data; heads stay, delivery does not stall', async () => {
    const sub = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url, startAt: 'earliest' }).expect(201)).body;
    const first = await postEventsRaw(
      gw.url,
      { 'content-type': 'application/cloudevents+json' },
      JSON.stringify(structured('ok-1', { a: 1 })),
    );
    expect(first.status).toBe(202);
    const { partition } = first.body.results[0];
    const heads = await partitionHeads(gw.url);

    const deep = await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, deepEvent('deep-1', 5000));
    expect(deep.status).toBe(400);
    expect(deep.body.code).toBe('invalid_event');
    expect(deep.body.errors).toEqual([
      expect.objectContaining({ attribute: 'data', message: expect.stringContaining('HERALD_MAX_JSON_DEPTH') }),
    ]);

    const batch = await postEventsRaw(
      gw.url,
      { 'content-type': 'application/cloudevents-batch+json' },
      `[${JSON.stringify(structured('ok-2', {}))},${deepEvent('deep-2', 5000)},${JSON.stringify(structured('ok-3', {}))}]`,
    );
    expect(batch.status).toBe(400);
    expect(batch.body.errors).toEqual([expect.objectContaining({ index: 1, attribute: 'data' })]);

    const binaryHeaders = {
      'ce-specversion': '1.0',
      'ce-id': 'deep-3',
      'ce-source': '/hard',
      'ce-type': 'hard.t',
      'ce-partitionkey': 'deep',
    };
    const deepText = '['.repeat(5000) + ']'.repeat(5000);
    const binary = await postEventsRaw(gw.url, { ...binaryHeaders, 'content-type': 'application/json' }, deepText);
    expect(binary.status).toBe(400);
    expect(binary.body.errors).toEqual([expect.objectContaining({ attribute: 'data' })]);
    // The same bytes declared as opaque are just bytes.
    const opaque = await postEventsRaw(
      gw.url,
      { ...binaryHeaders, 'ce-id': 'opaque-1', 'content-type': 'application/octet-stream' },
      deepText,
    );
    expect(opaque.status).toBe(202);

    expect(await partitionHeads(gw.url)).toEqual(heads.map((h, p) => (p === partition ? h + 1 : h)));
    expect(opaque.body.results[0]).toMatchObject({ partition, offset: heads[partition] });
    const after = await postEventsRaw(
      gw.url,
      { 'content-type': 'application/cloudevents+json' },
      JSON.stringify(structured('ok-4', { a: 4 })),
    );
    expect(after.body.results[0]).toMatchObject({ partition, offset: heads[partition]! + 1 });
    // Nothing waits at a missing offset: every stored event reaches the subscriber.
    await waitFor(() => receiver.requests.filter((q) => q.headers['herald-subscription-id'] === sub.id).length === 3 || undefined, {
      what: '3 deliveries',
    });
    expect(receiver.requests.map((q) => q.headers['ce-id'])).toEqual(['ok-1', 'opaque-1', 'ok-4']);
  });

  it('refuses a lookup whose id is not UTF-8 once percent-decoded, as ingest refuses such an id (edge probe: found the event whose id is U+FFFD)', async () => {
    expect((await postBinary(gw.url, { source: '/utf8', id: '%EF%BF%BD' })).status).toBe(202); // U+FFFD, percent-encoded
    const bad = await getJson(`${gw.url}/events?source=%2Futf8&id=%E0%A4`);
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({
      code: 'invalid_request',
      errors: [{ attribute: 'id', message: 'not valid UTF-8 once percent-decoded' }],
    });
    expect((await getJson(`${gw.url}/events?source=%2Futf8&id=%EF%BF%BD`)).body.event).toMatchObject({ id: '\ufffd' });
  });

  it('refuses escapes that are not UTF-8 in every query, the live tail’s filter included (API probe: it matched U+FFFD)', async () => {
    for (const path of [
      '/events/stream?sql=subject%20%3D%20%27%FF%27',
      '/partitions/0/events?limit=%FF',
      '/subscriptions/x/dead-letters?after=%E0%A4',
    ]) {
      const res = await fetch(`${gw.url}${path}`);
      expect(res.status).toBe(400);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(((await res.json()) as { errors: unknown[] }).errors).toEqual([
        expect.objectContaining({ message: 'not valid UTF-8 once percent-decoded' }),
      ]);
    }
  });

  it('answers OPTIONS on a path that is not valid percent-encoding as every other method does (API probe: 200 with Allow)', async () => {
    for (const [path, status] of [
      ['/subscriptions/%zz', 404],
      ['/deliveries/%zz/ack', 404],
      ['/partitions/%zz/events', 400],
    ] as const) {
      const [options, get] = await Promise.all(['OPTIONS', 'GET'].map((method) => fetch(`${gw.url}${path}`, { method })));
      expect([options!.status, get!.status]).toEqual([status, status]);
      expect(options!.headers.get('allow')).toBeNull();
      expect(await options!.json()).toEqual(await get!.json());
    }
  });

  it('honours HERALD_MAX_JSON_DEPTH', async () => {
    const shallow = await startTestGateway({ HERALD_MAX_JSON_DEPTH: '3' });
    try {
      const post = (id: string, data: unknown) =>
        postEventsRaw(shallow.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(structured(id, data)));
      expect((await post('d3', { a: { b: [1] } })).status).toBe(202);
      expect((await post('d4', { a: { b: [[1]] } })).status).toBe(400);
    } finally {
      await shallow.close();
    }
  });
});

describe('reads verify every record', () => {
  let gw: TestGateway;
  let receiver: Receiver;
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await receiver.close();
    await gw.close();
  });

  /** Flips one bit of the live segment file under the running gateway (a disk that lies). */
  function corrupt(file: string, at: number): void {
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0]! ^= 0x04;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
  }

  it('never serves or delivers a corrupt record: lookup 500 corrupt_record, pages stop at it, delivery dead-letters it', async () => {
    const ids = ['c0', 'c1', 'c2', 'c3', 'c4'];
    const res = await postEventsRaw(
      gw.url,
      { 'content-type': 'application/cloudevents-batch+json' },
      JSON.stringify(ids.map((id) => structured(id, { id, text: 'payload' }, 'crc'))),
    );
    expect(res.status).toBe(202);
    const partition: number = res.body.results[0].partition;
    const file = segmentFiles(gw.dataDir).at(-1)!;
    const ends = recordEnds(file);
    expect(ends).toHaveLength(5);
    corrupt(file, ends[2]! - 3); // inside record 2's data: it would be served as a different payload
    corrupt(file, ends[2]! + 40); // inside record 3's attributes: it would not parse

    const lookup = await getJson(`${gw.url}/events?source=/hard&id=c2`);
    expect(lookup.status).toBe(500);
    expect(lookup.body.code).toBe('corrupt_record');
    expect((await getJson(`${gw.url}/events?source=/hard&id=c1`)).status).toBe(200);

    const page = (await getJson(`${gw.url}/partitions/${partition}/events?from=0&limit=100`)).body;
    expect(page.events.map((e: { event: { id: string } }) => e.event.id)).toEqual(['c0', 'c1']);
    expect(page).toMatchObject({ corruptOffset: 2, nextOffset: 3 });
    const next = (await getJson(`${gw.url}/partitions/${partition}/events?from=3&limit=100`)).body;
    expect(next).toMatchObject({ events: [], corruptOffset: 3, nextOffset: 4 });
    const last = (await getJson(`${gw.url}/partitions/${partition}/events?from=4&limit=100`)).body;
    expect(last.events.map((e: { event: { id: string } }) => e.event.id)).toEqual(['c4']);

    const sub = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url, startAt: 'earliest' }).expect(201)).body;
    await waitFor(
      async () => (await getJson(`${gw.url}/subscriptions/${sub.id}`)).body.stats.partitions[partition].lag === 0 || undefined,
      { what: 'lag 0' },
    );
    expect(receiver.requests.map((q) => q.headers['ce-id'])).toEqual(['c0', 'c1', 'c4']);
    const dead = (await getJson(`${gw.url}/subscriptions/${sub.id}/dead-letters`)).body.deadLetters;
    expect(dead.map((d: { offset: number; reason: string; event: unknown }) => [d.offset, d.reason, d.event])).toEqual([
      [2, 'corrupt_record', null],
      [3, 'corrupt_record', null],
    ]);
    expect((await getJson(`${gw.url}/healthz`)).status).toBe(200);
  });
});

/** A receiver that answers 200 at once and then drips its body a byte at a time, for as long as it is let. */
async function startDripReceiver(intervalMs = 100, maxBytes = 300) {
  const requests: { attempt: string | undefined; closedAt?: number }[] = [];
  const server = http.createServer((req, res) => {
    const seen: { attempt: string | undefined; closedAt?: number } = { attempt: req.headers['herald-attempt'] as string | undefined };
    requests.push(seen);
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    let sent = 0;
    const timer = setInterval(() => {
      if (++sent > maxBytes) {
        clearInterval(timer);
        res.end();
      } else {
        res.write('.');
      }
    }, intervalMs);
    res.on('close', () => {
      clearInterval(timer);
      seen.closedAt = Date.now();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/drip`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve(server.closeAllConnections()))),
  };
}

describe('receivers that drip their answers', () => {
  let child: ChildGateway | undefined;
  afterEach(() => killIfRunning(child));

  it('times out the whole attempt (a 2xx whose body does not finish in time is retried)', async () => {
    const drip = await startDripReceiver();
    const gw = await startTestGateway();
    try {
      const sub = (
        await request(gw.url)
          .post('/subscriptions')
          .send({ sink: drip.url, delivery: { timeoutMs: 300, retry: { maxAttempts: 2, initialDelayMs: 10 } } })
          .expect(201)
      ).body;
      await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(structured('drip-1', {})));
      const dead = await waitFor(async () => (await getJson(`${gw.url}/subscriptions/${sub.id}/dead-letters`)).body.deadLetters[0], {
        what: 'dead letter',
      });
      expect(dead).toMatchObject({ reason: 'max_attempts', attempts: 2, lastError: expect.stringContaining('within 300 ms') });
      expect(drip.requests.map((r) => r.attempt)).toEqual(['1', '2']);
    } finally {
      await gw.close();
      await drip.close();
    }
  });

  it('aborts the open requests of a deleted subscription', async () => {
    const drip = await startDripReceiver();
    const gw = await startTestGateway();
    try {
      const sub = (
        await request(gw.url)
          .post('/subscriptions')
          .send({ sink: drip.url, delivery: { timeoutMs: 120_000 } })
          .expect(201)
      ).body;
      await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(structured('drip-2', {})));
      await waitFor(() => drip.requests.length === 1 || undefined, { what: 'the request' });
      await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
      await waitFor(() => drip.requests[0]!.closedAt, { what: 'the request to be aborted' });
    } finally {
      await gw.close();
      await drip.close();
    }
  });

  it('does not hold up shutdown past HERALD_SHUTDOWN_TIMEOUT_MS', async () => {
    const drip = await startDripReceiver(100, 1000);
    try {
      child = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_SHUTDOWN_TIMEOUT_MS: '1500' });
      await request(child.url)
        .post('/subscriptions')
        .send({ sink: drip.url, delivery: { timeoutMs: 120_000 } })
        .expect(201);
      await postEventsRaw(child.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(structured('drip-3', {})));
      await waitFor(() => drip.requests.length === 1 || undefined, { what: 'the request' });
      child.child.kill('SIGTERM');
      const code = await Promise.race([child.exited, new Promise((r) => setTimeout(() => r('still running'), 12_000))]);
      expect(code).toBe(0); // within 12 s, where the request alone would have held it 120 s
    } finally {
      await drip.close();
    }
  });
});

describe('start-up problems are one line and exit 2', () => {
  const oneLine = (stderr: string) => {
    const lines = stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^herald: /);
    return lines[0]!;
  };

  it('a port in use', async () => {
    const busy = http.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (busy.address() as AddressInfo).port;
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: tmpDir(), HERALD_PORT: String(port) });
      expect(refused.code).toBe(2);
      expect(oneLine(refused.stderr)).toMatch(new RegExp(`port ${port}: EADDRINUSE`));
      // The log does not say it stopped as after a run (ops probe: "herald stopped" at info after the failure).
      expect(refused.stdout).not.toContain('herald stopped');
    } finally {
      busy.close();
    }
  });

  it('a data dir that is a file, or under one', async () => {
    const file = path.join(tmpDir(), 'not-a-dir');
    fs.writeFileSync(file, 'x');
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: file });
    expect(refused.code).toBe(2);
    expect(oneLine(refused.stderr)).toBe(`herald: data dir ${file} is not a directory: a file is in its place`);
    const under = await runGatewayUntilExit({ HERALD_DATA_DIR: path.join(file, 'data') });
    expect(under.code).toBe(2);
    expect(oneLine(under.stderr)).toBe(`herald: data dir ${path.join(file, 'data')} is not usable: ${file} is a file, not a directory`);
  });

  it('a data dir with a newline in its path is named in one line, and one with a leading space is refused (start-up probe: two lines; herald.db and wal/ in two directories)', async () => {
    const file = path.join(tmpDir(), 'two\nlines');
    fs.writeFileSync(file, 'x');
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: file });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toBe(`herald: data dir ${file.replace('\n', '\\n')} is not a directory: a file is in its place\n`);
    const spaced = await runGatewayUntilExit({ HERALD_DATA_DIR: ` ${tmpDir()}` });
    expect(spaced.code).toBe(2);
    expect(spaced.stderr).toMatch(/^herald: .*HERALD_DATA_DIR.*must not begin or end with white space\n$/);
  });

  it('a data dir that cannot be created under /proc (was: a core at 100 % for good, SIGTERM unheard)', async () => {
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: '/proc/herald-nope/data' }, 10_000);
    expect(refused.code).toBe(2);
    expect(oneLine(refused.stderr)).toMatch(/^herald: data dir \/proc\/herald-nope\/data is not usable: ENOENT/);
  });

  it('HERALD_HOST=[::1] listens on IPv6 loopback', async () => {
    const gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_HOST: '[::1]' });
    try {
      expect(gw.url).toMatch(/^http:\/\/\[::1\]:\d+$/);
      expect((await getJson(`${gw.url}/healthz`)).status).toBe(200);
    } finally {
      await killIfRunning(gw);
    }
  });
});
