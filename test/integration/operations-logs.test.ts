import { spawnSync } from 'node:child_process';
import request from 'supertest';
import { configTable } from '../../src/config';
import fs from 'node:fs';
import { MAIN_JS, killIfRunning, segmentFiles, spawnGateway, type ChildGateway } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';
import pkg from '../../package.json';

afterAll(cleanupTmpDirs);

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

const lines = (gw: ChildGateway): LogLine[] =>
  gw
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
const find = (gw: ChildGateway, msg: string, fields: Record<string, unknown> = {}) =>
  lines(gw).filter((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => JSON.stringify(l[k]) === JSON.stringify(v)));
const WARN = 40;
const INFO = 30;
const DEBUG = 20;

const structured = (id: string, type: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ specversion: '1.0', id, source: '/logs', type, data: {}, ...extra });

describe('logs that tell the story', () => {
  let gw: ChildGateway | undefined;
  let receiver: Receiver | undefined;
  afterEach(async () => {
    await killIfRunning(gw);
    await receiver?.close();
  });

  it('logs the subscription life cycle at info, dead letters and 410 pauses at warn, attempts and requests at debug; never a secret', async () => {
    receiver = await startReceiver((req) => ({
      status: req.headers['ce-type'] === 'logs.gone' ? 410 : req.headers['ce-type'] === 'logs.bad' ? 400 : 204,
    }));
    const keys = 'admin:admin-secret-123:admin+read+publish';
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_LOG_LEVEL: 'debug', HERALD_API_KEYS: keys });
    const auth = { authorization: 'Bearer admin-secret-123' };
    const started = find(gw, 'herald listening')[0]!;
    expect(started).toMatchObject({ level: INFO, version: pkg.version, apiKeys: ['admin'] });

    const created = (await request(gw.url).post('/subscriptions').set(auth).send({ sink: receiver.url }).expect(201)).body;
    await request(gw.url)
      .patch(`/subscriptions/${created.id}`)
      .set(auth)
      .send({ delivery: { maxInFlight: 4 } })
      .expect(200);
    await request(gw.url).post(`/subscriptions/${created.id}/pause`).set(auth).expect(200);
    await request(gw.url).post(`/subscriptions/${created.id}/resume`).set(auth).expect(200);
    expect(
      (await postEventsRaw(gw.url, { ...auth, 'content-type': 'application/cloudevents+json' }, structured('l1', 'logs.ok'))).status,
    ).toBe(202);
    expect(
      (await postEventsRaw(gw.url, { ...auth, 'content-type': 'application/cloudevents+json' }, structured('l2', 'logs.bad'))).status,
    ).toBe(202);
    await waitFor(() => find(gw!, 'event dead-lettered').length === 1 || undefined, { what: 'the dead letter line' });
    expect(
      (await postEventsRaw(gw.url, { ...auth, 'content-type': 'application/cloudevents+json' }, structured('l3', 'logs.gone'))).status,
    ).toBe(202);
    await waitFor(() => find(gw!, 'subscription paused: the receiver answered 410 Gone').length === 1 || undefined, {
      what: 'the 410 line',
    });
    await request(gw.url).post(`/subscriptions/${created.id}/dead-letters/redeliver`).set(auth).send({}).expect(202);
    const rotated = (
      await request(gw.url).post(`/subscriptions/${created.id}/rotate-secret`).set(auth).send({ overlapSeconds: 0 }).expect(200)
    ).body;
    await request(gw.url).delete(`/subscriptions/${created.id}`).set(auth).expect(204);
    // The child's stdout reaches this process a little after its answers.
    await waitFor(() => find(gw!, 'subscription deleted').length === 1 || undefined, { what: 'the deletion line' });

    const sub = { subscription: created.id };
    expect(find(gw, 'subscription created', sub)[0]).toMatchObject({ level: INFO, sink: receiver.url });
    expect(find(gw, 'subscription updated', sub)[0]).toMatchObject({ level: INFO, fields: ['delivery'] });
    expect(find(gw, 'subscription paused', { ...sub, stateReason: 'user' })[0]).toMatchObject({ level: INFO });
    expect(find(gw, 'subscription resumed', sub)[0]).toMatchObject({ level: INFO });
    expect(find(gw, 'subscription paused: the receiver answered 410 Gone', { ...sub, stateReason: 'gone' })[0]).toMatchObject({
      level: WARN,
    });
    expect(find(gw, 'event dead-lettered', sub)[0]).toMatchObject({
      level: WARN,
      reason: 'rejected_status',
      lastStatus: 400,
      attempts: 1,
      offset: expect.any(Number),
    });
    expect(find(gw, 'dead letters redelivered', sub)[0]).toMatchObject({ level: INFO, deadLetters: 1 });
    expect(find(gw, 'subscription deleted', sub)[0]).toMatchObject({ level: INFO });
    expect(find(gw, 'signing secret rotated', sub)[0]).toMatchObject({ level: INFO, overlapSeconds: 0 });
    expect(find(gw, 'delivery attempt', { ...sub, status: 204 })[0]).toMatchObject({ level: DEBUG, attempt: 1, ms: expect.any(Number) });
    expect(find(gw, 'http request', { method: 'POST', path: '/subscriptions', status: 201 })[0]).toMatchObject({
      level: DEBUG,
      key: 'admin',
    });
    expect(find(gw, 'http request', { method: 'POST', path: '/events', status: 202 })[0]).toMatchObject({ level: DEBUG, key: 'admin' });

    expect(gw.output()).not.toContain('admin-secret-123');
    expect(gw.output()).not.toContain(created.secret);
    expect(gw.output()).not.toContain(rotated.secret);
  });

  it("never logs a sink's access_token (http-webhook §3.2): the creation and handshake lines show it as ***", async () => {
    receiver = await startReceiver(() => ({ status: 200, headers: { 'webhook-allowed-origin': '*' } }));
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir() });
    const sink = `${receiver.url}?access_token=sink-token-4f2a91`;
    const created = (await request(gw.url).post('/subscriptions').send({ sink, validation: 'cloudevents' }).expect(201)).body;
    await waitFor(() => find(gw!, 'validation handshake sent').length === 1 || undefined, { what: 'the handshake line' });
    await waitFor(() => find(gw!, 'subscription created').length === 1 || undefined, { what: 'the creation line' });
    const shown = `${receiver.url}?access_token=***`;
    expect(find(gw, 'subscription created', { subscription: created.id })[0]).toMatchObject({ level: INFO, sink: shown });
    expect(find(gw, 'validation handshake sent', { subscription: created.id })[0]).toMatchObject({ sink: shown });
    expect(created.sink).toBe(sink); // the API still shows it to those allowed to read it
    expect(gw.output()).not.toContain('sink-token-4f2a91');
  });

  it("says each attempt's outcome in the attempt log's words (was: done, await_ack, dead)", async () => {
    receiver = await startReceiver((req) => ({
      status: req.headers['ce-type'] === 'logs.later' ? 202 : req.headers['ce-type'] === 'logs.bad' ? 400 : 204,
    }));
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_LOG_LEVEL: 'debug' });
    const created = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body as { id: string };
    for (const [id, type] of [
      ['o1', 'logs.ok'],
      ['o2', 'logs.later'],
      ['o3', 'logs.bad'],
    ] as const)
      expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, structured(id, type))).status).toBe(202);
    const sub = { subscription: created.id };
    await waitFor(() => find(gw!, 'delivery attempt', sub).length === 3 || undefined, { what: 'three attempt lines' });
    const logged = find(gw, 'delivery attempt', sub).map((l) => ({ status: l.status, outcome: l.outcome }));
    expect(logged).toEqual(
      expect.arrayContaining([
        { status: 204, outcome: 'delivered' },
        { status: 202, outcome: 'awaiting_ack' },
        { status: 400, outcome: 'dead_lettered' },
      ]),
    );
    // The same words as the attempt log's rows for those attempts.
    const rows = await waitFor(
      async () => {
        const body = (await request(gw!.url).get(`/subscriptions/${created.id}/attempts`).expect(200)).body as {
          attempts: { status: number; outcome: string }[];
        };
        return body.attempts.length === 3 ? body.attempts : undefined;
      },
      { what: 'three attempt rows' },
    );
    expect(rows.map((r) => ({ status: r.status, outcome: r.outcome }))).toEqual(expect.arrayContaining(logged));
  });

  it('writes at most one dead-letter line a second per subscription, saying how many it left out; every dead letter is stored', async () => {
    receiver = await startReceiver(() => ({ status: 400 }));
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir() });
    const created = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body as { id: string };
    const events = Array.from({ length: 200 }, (_, i) => JSON.parse(structured(`dl${i}`, 'logs.bad')) as object);
    expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify(events))).status).toBe(
      202,
    );
    await waitFor(
      async () => ((await request(gw!.url).get(`/subscriptions/${created.id}`)).body.stats.deadLetters === 200 ? true : undefined),
      { what: 'the 200 dead letters' },
    );
    await new Promise((r) => setTimeout(r, 300)); // the child's stdout reaches this process a little after
    const logged = find(gw, 'event dead-lettered', { subscription: created.id });
    // Was: one line per event (leak probe: 7.5 MB of log a minute for a sink that refused everything).
    expect(logged.length).toBeGreaterThan(0);
    expect(logged.length).toBeLessThan(50);
    expect(logged[0]).toMatchObject({ level: WARN, reason: 'rejected_status', suppressed: 0 });
    const told = logged.reduce((n, l) => n + 1 + (l.suppressed as number), 0);
    expect(told).toBeLessThanOrEqual(200);
  });

  it('stays quiet on the happy path at info: no line per event', async () => {
    receiver = await startReceiver();
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir() });
    await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201);
    // The child's stdout arrives a little after its answers: count from the creation line on.
    await waitFor(() => find(gw!, 'subscription created').length === 1 || undefined, { what: 'the creation line' });
    const before = lines(gw).length;
    for (let i = 0; i < 20; i++) {
      expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, structured(`q${i}`, 'logs.ok'))).status).toBe(
        202,
      );
    }
    await waitFor(() => receiver!.requests.length === 20 || undefined, { what: '20 deliveries' });
    await new Promise((r) => setTimeout(r, 200)); // a line per event would have arrived by now
    expect(
      lines(gw)
        .slice(before)
        .map((l) => l.msg),
    ).toEqual([]);
  });
});

describe('the command line', () => {
  it('--version prints the version and exits 0 without starting', () => {
    const out = spawnSync(process.execPath, [MAIN_JS, '--version'], { encoding: 'utf8', timeout: 20_000 });
    expect(out.status).toBe(0);
    expect(out.stdout.trim()).toBe(pkg.version);
  });

  it('--help prints usage and the configuration table, exit 0', () => {
    const out = spawnSync(process.execPath, [MAIN_JS, '--help'], { encoding: 'utf8', timeout: 20_000 });
    expect(out.status).toBe(0);
    expect(out.stdout).toMatch(/^Usage: herald/);
    expect(out.stdout).toContain(configTable());
  });

  it('an unknown argument is a usage error (exit 2)', () => {
    const out = spawnSync(process.execPath, [MAIN_JS, '--frobnicate'], { encoding: 'utf8', timeout: 20_000 });
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(/^herald: unknown argument "--frobnicate"/);
  });

  it('names the argument it does not understand after --version (was: "--version")', () => {
    const out = spawnSync(process.execPath, [MAIN_JS, '--version', 'extra'], { encoding: 'utf8', timeout: 20_000 });
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(/^herald: unknown argument "extra"/);
  });
});

describe('HERALD_DELIVERY=off', () => {
  let gw: ChildGateway | undefined;
  let receiver: Receiver | undefined;
  afterEach(async () => {
    await killIfRunning(gw);
    await receiver?.close();
  });

  it('ingests and serves reads but delivers nothing; /readyz says so and stays 200', async () => {
    receiver = await startReceiver();
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_DELIVERY: 'off' });
    const sub = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url, startAt: 'earliest' }).expect(201)).body;
    expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, structured('off1', 'logs.ok'))).status).toBe(
      202,
    );
    await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
    const ready = await request(gw.url).get('/readyz').expect(200);
    expect(ready.body.checks).toMatchObject({ delivery: 'off', log: 'ok', database: 'ok' });
    expect((await request(gw.url).get('/events?source=/logs&id=off1')).status).toBe(200);
    const stats = (await request(gw.url).get(`/subscriptions/${sub.id}`).expect(200)).body.stats;
    expect(stats.partitions.reduce((n: number, p: { lag: number }) => n + p.lag, 0)).toBe(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(receiver.requests).toHaveLength(0);
  });
});

describe('trace context', () => {
  let gw: ChildGateway | undefined;
  let receiver: Receiver | undefined;
  afterEach(async () => {
    await killIfRunning(gw);
    await receiver?.close();
  });

  it('delivers traceparent and tracestate as W3C headers as well as ce- attributes', async () => {
    receiver = await startReceiver();
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir() });
    await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201);
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const body = structured('t1', 'logs.trace', { traceparent, tracestate: 'congo=t61rcWkgMzE' });
    expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, body)).status).toBe(202);
    const [req] = await waitFor(() => (receiver!.requests.length === 1 ? receiver!.requests : undefined), { what: 'the delivery' });
    expect(req!.headers).toMatchObject({
      traceparent,
      tracestate: 'congo=t61rcWkgMzE',
      'ce-traceparent': traceparent,
      'ce-tracestate': 'congo=t61rcWkgMzE',
    });
  });
});

describe('a corrupt record read again and again', () => {
  it('is logged once a minute, not once a read (was one error line per read: a log flood any reader could cause)', async () => {
    const dataDir = tmpDir();
    const gw = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' });
    try {
      const res = await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, structured('flipped', 'logs.corrupt'));
      expect(res.status).toBe(202);
      // One byte of the record's data changed in place while the gateway runs.
      const file = segmentFiles(dataDir)[0]!;
      const bytes = fs.readFileSync(file);
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.from([bytes.readUInt8(bytes.length - 2) ^ 0xff]), 0, 1, bytes.length - 2);
      fs.closeSync(fd);
      for (let i = 0; i < 30; i++) await request(gw.url).get('/events').query({ source: '/logs', id: 'flipped' }).expect(500);
      await waitFor(() => lines(gw).some((l) => l.msg.startsWith('log: corrupt record')), { what: 'the error line' });
      expect(lines(gw).filter((l) => l.msg.startsWith('log: corrupt record'))).toHaveLength(1);
    } finally {
      await killIfRunning(gw);
    }
  });
});

describe('ordering none: the window past the oldest unfinished event', () => {
  let gw: ChildGateway | undefined;
  let receiver: Receiver | undefined;
  afterEach(async () => {
    await killIfRunning(gw);
    await receiver?.close();
  });

  it('says once, at warn, that a partition waits for one retrying event 10,000 offsets behind (delivery probe: a silent stall)', async () => {
    receiver = await startReceiver((req) => ({ status: req.headers['ce-id'] === 'poison' ? 500 : 204 }));
    gw = await spawnGateway({ HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1' });
    const created = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ordering: 'none', maxInFlight: 64, retry: { initialDelayMs: 600_000 } } })
      .expect(201);
    const batch = (from: number, n: number) =>
      JSON.stringify(Array.from({ length: n }, (_, i) => ({ specversion: '1.0', id: `e${from + i}`, source: '/window', type: 't' })));
    await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, structured('poison', 't'));
    for (let from = 0; from < 10_200; from += 1000) {
      const res = await postEventsRaw(
        gw.url,
        { 'content-type': 'application/cloudevents-batch+json' },
        batch(from, Math.min(1000, 10_200 - from)),
      );
      expect(res.status).toBe(202);
    }
    const waiting = () => find(gw!, 'partition waits for its oldest unfinished event: ordering none runs at most 10,000 offsets past it');
    await waitFor(() => waiting().length > 0, { what: 'the warn line', timeoutMs: 30_000 });
    expect(waiting()).toEqual([
      expect.objectContaining({ level: WARN, subscription: created.body.id, partition: 0, offset: 0, window: 10_000 }),
    ]);
    // It holds what is past the window: 9,999 of the others went, the rest wait for the retrying one.
    const others = () => receiver!.requests.filter((r) => r.headers['ce-id'] !== 'poison').length;
    await waitFor(() => others() >= 9_999, { what: 'the events within the window' });
    expect(others()).toBe(9_999);
  });
});
