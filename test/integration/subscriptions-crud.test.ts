import Database from 'better-sqlite3';
import path from 'node:path';
import request from 'supertest';
import { Webhook } from 'standardwebhooks';
import { getSubscription, requestsForSubscription, totalLag, useDeliveryFixture, waitForLagZero } from '../helpers/delivery';
import { startTestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { tmpDir } from '../helpers/tmp';

/** The subscriptions resource: create/read/update/delete, validation, secrets, pause and resume. */

const PARTITIONS = 4;
const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: String(PARTITIONS) });

const FAST = { retry: { initialDelayMs: 10, maxDelayMs: 50 } };
let seq = 0;

async function create(body: Record<string, unknown>) {
  const res = await request(gw.url).post('/subscriptions').send(body);
  expect(res.status).toBe(201);
  expect(res.headers.location).toBe(`/subscriptions/${res.body.id}`);
  return res.body;
}

/** Publishes binary-mode events; returns the append results. */
async function publish(type: string, n = 1, attrs: Record<string, string> = {}) {
  const results = [];
  for (let i = 0; i < n; i++) {
    const headers: Record<string, string> = {
      'ce-specversion': '1.0',
      'ce-id': `crud-${++seq}`,
      'ce-source': '/crud',
      'ce-type': type,
      'content-type': 'application/json',
    };
    for (const [k, v] of Object.entries(attrs)) headers[`ce-${k}`] = v;
    const res = await request(gw.url).post('/events').set(headers).send(JSON.stringify({ seq }));
    expect(res.status).toBe(202);
    results.push(res.body.results[0]);
  }
  return results;
}

const getSub = (id: string) => getSubscription(gw.url, id);
const waitLagZero = (id: string) => waitForLagZero(gw.url, id);
const typesFor = (r: Receiver, sub: string) => requestsForSubscription(r, sub).map((q) => q.headers['ce-type']);

function expectProblem(res: request.Response, status: number, code: string) {
  expect(res.status).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(res.body).toMatchObject({ status, code });
}

describe('creating a subscription', () => {
  it('answers 201 with the subscription, its defaults, stats and a whsec_ secret', async () => {
    const sub = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.created' } }] });
    expect(sub).toEqual({
      id: expect.any(String),
      sink: receiver.url,
      filters: [{ exact: { type: 'crud.created' } }],
      delivery: {
        format: 'binary',
        ordering: 'partition',
        maxInFlight: 16,
        timeoutMs: 10_000,
        ackMode: 'auto',
        ackDeadlineMs: 30_000,
        disableAfterFailingMs: 432_000_000,
        retry: { maxAttempts: 10, initialDelayMs: 1000, maxDelayMs: 300_000, multiplier: 2, jitter: 0.2 },
      },
      startAt: 'latest',
      validation: 'none',
      state: 'active',
      stateReason: null,
      createdAt: expect.any(String),
      stats: { partitions: expect.any(Array), deadLetters: 0, currentMaxInFlight: 16, throttled: false },
      secret: expect.stringMatching(/^whsec_/),
    });
    expect(new Date(sub.createdAt).toISOString()).toBe(sub.createdAt);
    expect(Buffer.from(sub.secret.slice('whsec_'.length), 'base64')).toHaveLength(32);
    expect(sub.stats.partitions).toHaveLength(PARTITIONS);
    for (const p of sub.stats.partitions) {
      expect(p).toEqual({
        partition: expect.any(Number),
        committedOffset: p.headOffset,
        headOffset: expect.any(Number),
        lag: 0,
        inFlight: 0,
        oldestPendingAgeMs: null,
        expired: 0,
      });
    }
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('accepts ackMode and retry at the top level', async () => {
    const sub = await create({ sink: receiver.url, ackMode: 'manual', retry: { maxAttempts: 3 } });
    expect(sub.delivery.ackMode).toBe('manual');
    expect(sub.delivery.retry).toMatchObject({ maxAttempts: 3, initialDelayMs: 1000 });
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it.each([
    ['a sink with another scheme', { sink: 'ftp://example.com/hook' }],
    ['a relative sink', { sink: '/hook' }],
    ['a sink that is not a URL', { sink: 'not a url' }],
    ['no sink', {}],
    ['an unknown filter dialect', { filters: [{ regex: { type: '.*' } }] }],
    ['a malformed filter', { filters: [{ exact: { type: 42 } }] }],
    ['a filter with two dialects', { filters: [{ exact: { type: 'a' }, prefix: { type: 'b' } }] }],
    ['filters that are not a list', { filters: { exact: { type: 'a' } } }],
    ['an unknown field', { colour: 'blue' }],
    ['an unknown delivery field', { delivery: { colour: 'blue' } }],
    ['an unknown retry field', { delivery: { retry: { backoff: 'linear' } } }],
    ['an unknown format', { delivery: { format: 'xml' } }],
    ['an unknown startAt', { startAt: 'middle' }],
    ['a sink on port 0', { sink: 'http://127.0.0.1:0/hook' }],
    ['an https sink on port 0', { sink: 'https://example.com:0/hook' }],
    // Was accepted, and delivered to 127.0.0.1:9: URL parsing takes the path's first segment as the host.
    ['a sink with an empty host', { sink: 'http:///127.0.0.1:9/hook' }],
    ['a sink over 8192 characters', { sink: `http://127.0.0.1:9/${'a'.repeat(8192)}` }],
  ])('refuses %s with 400', async (_name, body) => {
    const full = 'sink' in body || Object.keys(body).length === 0 ? body : { sink: receiver.url, ...body };
    const count = async () => (await request(gw.url).get('/subscriptions').expect(200)).body.subscriptions.length;
    const before = await count();
    const res = await request(gw.url).post('/subscriptions').send(full);
    expectProblem(res, 400, 'invalid_request');
    expect(res.body.errors.length).toBeGreaterThan(0);
    expect(await count()).toBe(before);
  });
});

describe('filter attribute names', () => {
  it('refuses names no CloudEvent can carry (upper case, data), at any nesting, with a 400 naming the path', async () => {
    const count = async () => (await request(gw.url).get('/subscriptions').expect(200)).body.subscriptions.length;
    const before = await count();
    for (const [filters, attribute] of [
      [[{ exact: { Type: 'x' } }], 'filters.0.exact.Type'],
      [[{ prefix: { Type: 'com.' } }], 'filters.0.prefix.Type'],
      [[{ suffix: { data: 'x' } }], 'filters.0.suffix.data'],
      [
        [{ exact: { type: 'a' } }, { any: [{ not: { all: [{ prefix: { 'x-tenant': 'a' } }] } }] }],
        'filters.1.any.0.not.all.0.prefix.x-tenant',
      ],
    ] as const) {
      const res = await request(gw.url).post('/subscriptions').send({ sink: receiver.url, filters });
      expectProblem(res, 400, 'invalid_request');
      expect(res.body.errors).toEqual([{ attribute, message: expect.stringContaining('so no event could match') }]);
    }
    expect(await count()).toBe(before);

    const sub = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.names' } }] });
    const patched = await request(gw.url)
      .patch(`/subscriptions/${sub.id}`)
      .send({ filters: [{ not: { exact: { Source: '/x' } } }] });
    expectProblem(patched, 400, 'invalid_request');
    expect(patched.body.errors).toEqual([{ attribute: 'filters.0.not.exact.Source', message: expect.stringContaining('"source"') }]);
    expect((await getSub(sub.id)).filters).toEqual([{ exact: { type: 'crud.names' } }]);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('still loads a subscription stored with such a name before they were refused, and it matches nothing', async () => {
    const dir = tmpDir();
    const env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1' };
    const first = await startTestGateway(env);
    let id: string;
    try {
      id = (await request(first.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body.id;
    } finally {
      await first.close();
    }
    const db = new Database(path.join(dir, 'herald.db'));
    try {
      db.prepare('UPDATE subscriptions SET filters = ? WHERE id = ?').run(JSON.stringify([{ exact: { Type: 'crud.legacy' } }]), id);
    } finally {
      db.close();
    }
    const again = await startTestGateway(env);
    try {
      expect((await getSubscription(again.url, id)).filters).toEqual([{ exact: { Type: 'crud.legacy' } }]);
      const res = await request(again.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': 'legacy-1', 'ce-source': '/crud', 'ce-type': 'crud.legacy' })
        .send('');
      expect(res.status).toBe(202);
      await waitForLagZero(again.url, id); // filtered out: the offset moves on without a request
      expect(requestsForSubscription(receiver, id)).toEqual([]);
      // A change that does not touch the filters is still taken.
      await request(again.url)
        .patch(`/subscriptions/${id}`)
        .send({ delivery: { maxInFlight: 2 } })
        .expect(200);
    } finally {
      await again.close();
    }
  });
});

describe('delivery headers that describe the body or are meant for a proxy', () => {
  const refused = [
    'content-encoding',
    'Content-MD5',
    'Content-Digest',
    'repr-digest',
    'digest',
    'content-range',
    'te',
    'trailer',
    'proxy-authorization',
  ];

  it('are refused in a create and in a PATCH, naming the field', async () => {
    for (const name of refused) {
      const res = await request(gw.url)
        .post('/subscriptions')
        .send({ sink: receiver.url, delivery: { headers: { [name]: 'gzip' } } });
      expect(res.status).toBe(400);
      expect(res.body.errors).toEqual([
        { attribute: `delivery.headers.${name.toLowerCase()}`, message: expect.stringContaining('cannot be given') },
      ]);
    }
    const sub = await create({ sink: receiver.url, delivery: { headers: { authorization: 'Bearer t' } } });
    const patch = await request(gw.url)
      .patch(`/subscriptions/${sub.id}`)
      .send({ delivery: { headers: { authorization: '***', 'content-encoding': 'gzip' } } });
    expect(patch.status).toBe(400);
    expect(patch.body.errors).toEqual([
      { attribute: 'delivery.headers.content-encoding', message: expect.stringContaining('cannot be given') },
    ]);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('stored before they were refused, are kept and sent, and a PATCH of another field is taken (and an IRI sink stored so is shown as a URI)', async () => {
    const dir = tmpDir();
    const env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1' };
    const first = await startTestGateway(env);
    let id: string;
    try {
      const body = { sink: receiver.url, filters: [{ exact: { type: 'crud.stored-header' } }], delivery: { headers: { 'x-a': '1' } } };
      id = (await request(first.url).post('/subscriptions').send(body).expect(201)).body.id;
    } finally {
      await first.close();
    }
    const db = new Database(path.join(dir, 'herald.db'));
    try {
      const row = db.prepare<[string], { delivery: string }>('SELECT delivery FROM subscriptions WHERE id = ?').get(id)!;
      const delivery = { ...JSON.parse(row.delivery), headers: { 'x-a': '1', te: 'trailers' } };
      // And a sink stored as given, an IRI, as versions before 2026-12-04 kept it.
      db.prepare('UPDATE subscriptions SET delivery = ?, sink = ? WHERE id = ?').run(
        JSON.stringify(delivery),
        `${receiver.url}/hook/ü space`,
        id,
      );
    } finally {
      db.close();
    }
    const again = await startTestGateway(env);
    try {
      expect((await getSubscription(again.url, id)).delivery.headers).toEqual({ 'x-a': '***', te: '***' });
      // Shown as the URI it means (upgrade probe: served as the IRI, not `format: uri`), in the list too.
      const uri = `${receiver.url}/hook/%C3%BC%20space`;
      expect((await getSubscription(again.url, id)).sink).toBe(uri);
      const listed = (await request(again.url).get('/subscriptions').expect(200)).body.subscriptions;
      expect(listed.find((s: { id: string }) => s.id === id).sink).toBe(uri);
      await request(again.url)
        .patch(`/subscriptions/${id}`)
        .send({ delivery: { maxInFlight: 2 } })
        .expect(200);
      await request(again.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': 'stored-header-1', 'ce-source': '/crud', 'ce-type': 'crud.stored-header' })
        .send('')
        .expect(202);
      const sent = await waitFor(() => requestsForSubscription(receiver, id)[0]);
      expect(sent.headers).toMatchObject({ 'x-a': '1', te: 'trailers' });
      // Giving headers again must leave it out, "***" too; leaving it out removes it.
      const kept = await request(again.url)
        .patch(`/subscriptions/${id}`)
        .send({ delivery: { headers: { 'x-a': '***', te: '***' } } });
      expect(kept.status).toBe(400);
      await request(again.url)
        .patch(`/subscriptions/${id}`)
        .send({ delivery: { headers: { 'x-a': '***' } } })
        .expect(200);
      expect((await getSubscription(again.url, id)).delivery.headers).toEqual({ 'x-a': '***' });
    } finally {
      await again.close();
    }
  });
});

describe('request bodies that are not JSON', () => {
  const count = async () => (await request(gw.url).get('/subscriptions').expect(200)).body.subscriptions.length;

  it.each(['text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream'])(
    'refuses a %s create body with 415 and creates nothing',
    async (type) => {
      const before = await count();
      const res = await request(gw.url)
        .post('/subscriptions')
        .set('content-type', type)
        .send(JSON.stringify({ sink: receiver.url }));
      expectProblem(res, 415, 'unsupported_media_type');
      expect(res.body.errors).toEqual([expect.objectContaining({ attribute: 'content-type' })]);
      expect(await count()).toBe(before);
    },
  );

  it('refuses a non-JSON update body with 415 and keeps the subscription as it was', async () => {
    const sub = await create({ sink: receiver.url });
    const res = await request(gw.url)
      .patch(`/subscriptions/${sub.id}`)
      .set('content-type', 'text/plain')
      .send(JSON.stringify({ sink: 'http://127.0.0.1:9/elsewhere' }));
    expectProblem(res, 415, 'unsupported_media_type');
    expect((await getSub(sub.id)).sink).toBe(receiver.url);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('refuses a non-JSON redeliver body with 415, but takes a request without a body whatever its Content-Type', async () => {
    const sub = await create({ sink: receiver.url });
    const path = `/subscriptions/${sub.id}/dead-letters/redeliver`;
    expectProblem(await request(gw.url).post(path).set('content-type', 'text/plain').send('{"ids":[]}'), 415, 'unsupported_media_type');
    // No body: no Content-Length (or 0) and no Transfer-Encoding.
    expect((await request(gw.url).post(path).set('content-type', 'text/plain')).status).toBe(202);
    expect((await request(gw.url).post(path).set('content-type', 'text/plain').set('content-length', '0')).status).toBe(202);
    expect((await request(gw.url).post(path)).status).toBe(202);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it.each(['limit=1e2', 'limit=-0', 'after=0x1', 'after=1.0'])('refuses a dead-letter page with %s', async (query) => {
    const sub = await create({ sink: receiver.url });
    expectProblem(await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters?${query}`), 400, 'invalid_request');
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });
});

describe('reading, listing and secrets', () => {
  it('lists and reads subscriptions without their secret', async () => {
    const sub = await create({ sink: receiver.url });
    const list = await request(gw.url).get('/subscriptions').expect(200);
    const listed = list.body.subscriptions.find((s: { id: string }) => s.id === sub.id);
    expect(listed).toMatchObject({ id: sub.id, sink: receiver.url, state: 'active' });
    expect(listed).not.toHaveProperty('secret');
    const got = await getSub(sub.id);
    expect(got).not.toHaveProperty('secret');
    const { secret: _secret, ...withoutSecret } = sub;
    expect(got).toMatchObject({ ...withoutSecret, stats: { deadLetters: 0 } });
    expect(JSON.stringify(list.body)).not.toContain(sub.secret);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('rotate-secret with overlapSeconds 0 returns a new secret that alone signs the following deliveries', async () => {
    const sub = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.rotate' } }], delivery: FAST });
    const rotated = await request(gw.url).post(`/subscriptions/${sub.id}/rotate-secret`).send({ overlapSeconds: 0 }).expect(200);
    expect(rotated.body.secret).toMatch(/^whsec_/);
    expect(rotated.body.secret).not.toBe(sub.secret);
    expect(rotated.body.id).toBe(sub.id);
    expect(rotated.body).not.toHaveProperty('previousSecretExpiresAt');
    expect(await getSub(sub.id)).not.toHaveProperty('secret');
    await publish('crud.rotate');
    const req = await waitFor(() => receiver.requests.find((q) => q.headers['herald-subscription-id'] === sub.id));
    const headers = req.headers as Record<string, string>;
    expect(() => new Webhook(rotated.body.secret).verify(req.body, headers)).not.toThrow();
    expect(() => new Webhook(sub.secret).verify(req.body, headers)).toThrow(/No matching signature/);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });
});

describe('unknown subscriptions', () => {
  it.each([
    ['get', '/subscriptions/nope'],
    ['patch', '/subscriptions/nope'],
    ['delete', '/subscriptions/nope'],
    ['post', '/subscriptions/nope/pause'],
    ['post', '/subscriptions/nope/resume'],
    ['post', '/subscriptions/nope/rotate-secret'],
    ['get', '/subscriptions/nope/dead-letters'],
    ['post', '/subscriptions/nope/dead-letters/redeliver'],
    ['delete', '/subscriptions/nope/dead-letters/1'],
  ] as const)('%s %s → 404 problem', async (method, path) => {
    const agent = request(gw.url);
    const res = await agent[method](path).send(method === 'patch' ? { sink: receiver.url } : undefined);
    expectProblem(res, 404, 'not_found');
  });
});

describe('updating and deleting', () => {
  it('refuses a bad update with 400 and keeps the subscription as it was', async () => {
    const sub = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.keep' } }] });
    for (const body of [
      { sink: 'ftp://x' },
      { filters: [{ nope: {} }] },
      { filters: [{ exact: {} }] },
      { name: 'x' },
      { delivery: { colour: 'blue' } },
      { state: 'paused' },
    ]) {
      expectProblem(await request(gw.url).patch(`/subscriptions/${sub.id}`).send(body), 400, 'invalid_request');
    }
    const got = await getSub(sub.id);
    expect(got).toMatchObject({ sink: receiver.url, filters: [{ exact: { type: 'crud.keep' } }], delivery: sub.delivery, state: 'active' });
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('says where delivery options go when given at the top level, and the least rate in words', async () => {
    const sub = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.hints' } }] });
    const errorsOf = async (res: request.Response) => {
      expectProblem(res, 400, 'invalid_request');
      return res.body.errors;
    };
    // ackMode and retry are taken at the top level of a create (README), not of a PATCH.
    expect(await errorsOf(await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ ackMode: 'manual' }))).toEqual([
      { message: 'Unrecognized key: "ackMode"; delivery options go under `delivery` (delivery.ackMode)' },
    ]);
    expect(
      await errorsOf(
        await request(gw.url)
          .patch(`/subscriptions/${sub.id}`)
          .send({ retry: { maxAttempts: 3 }, colour: 'blue', ackMode: 'auto' }),
      ),
    ).toEqual([
      {
        message: 'Unrecognized keys: "retry", "colour", "ackMode"; delivery options go under `delivery` (delivery.retry, delivery.ackMode)',
      },
    ]);
    expect(await errorsOf(await request(gw.url).post('/subscriptions').send({ sink: receiver.url, maxInFlight: 4 }))).toEqual([
      { message: 'Unrecognized key: "maxInFlight"; delivery options go under `delivery` (delivery.maxInFlight)' },
    ]);
    for (const perSecond of [0, 0.00001])
      expect(
        await errorsOf(
          await request(gw.url)
            .patch(`/subscriptions/${sub.id}`)
            .send({ delivery: { rateLimit: { perSecond } } }),
        ),
      ).toEqual([
        { attribute: 'delivery.rateLimit.perSecond', message: 'must be at least one a day (1/86400, about 0.0000116 per second)' },
      ]);
    await request(gw.url)
      .patch(`/subscriptions/${sub.id}`)
      .send({ delivery: { rateLimit: { perSecond: 1 / 86_400 } } })
      .expect(200);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('changes filters live and merges partial delivery options', async () => {
    const sub = await create({
      sink: receiver.url,
      filters: [{ exact: { type: 'crud.a' } }],
      delivery: { ...FAST, ordering: 'none', maxInFlight: 4 },
    });
    await publish('crud.a');
    await publish('crud.b');
    await waitLagZero(sub.id);
    expect(typesFor(receiver, sub.id)).toEqual(['crud.a']);

    const patched = await request(gw.url)
      .patch(`/subscriptions/${sub.id}`)
      .send({ filters: [{ exact: { type: 'crud.b' } }], delivery: { timeoutMs: 500, retry: { maxAttempts: 4 } } })
      .expect(200);
    expect(patched.body.filters).toEqual([{ exact: { type: 'crud.b' } }]);
    expect(patched.body.delivery).toEqual({ ...sub.delivery, timeoutMs: 500, retry: { ...sub.delivery.retry, maxAttempts: 4 } });
    await publish('crud.a');
    await publish('crud.b');
    await waitLagZero(sub.id);
    expect(typesFor(receiver, sub.id)).toEqual(['crud.a', 'crud.b']);
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });

  it('PATCH sink sends the following deliveries to the new sink, path and query included', async () => {
    const other = await startReceiver();
    try {
      const sub = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.sink' } }], delivery: FAST });
      await publish('crud.sink');
      await waitLagZero(sub.id);
      const sink = other.url.replace('/hook', '/other/path?token=a%20b&x=1');
      expect((await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink }).expect(200)).body.sink).toBe(sink);
      await publish('crud.sink');
      await waitLagZero(sub.id);
      expect(typesFor(receiver, sub.id)).toEqual(['crud.sink']);
      expect(other.requests.map((q) => [q.method, q.url])).toEqual([['POST', '/other/path?token=a%20b&x=1']]);
      await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
    } finally {
      await other.close();
    }
  });

  it('DELETE answers 204, the subscription is gone, and nothing more is delivered to it', async () => {
    const doomed = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.del' } }], delivery: FAST });
    const control = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.del' } }], delivery: FAST });
    await request(gw.url).delete(`/subscriptions/${doomed.id}`).expect(204);
    expectProblem(await request(gw.url).get(`/subscriptions/${doomed.id}`), 404, 'not_found');
    expectProblem(await request(gw.url).delete(`/subscriptions/${doomed.id}`), 404, 'not_found');
    const list = await request(gw.url).get('/subscriptions').expect(200);
    expect(list.body.subscriptions.map((s: { id: string }) => s.id)).not.toContain(doomed.id);
    await publish('crud.del', 3);
    await waitLagZero(control.id);
    expect(typesFor(receiver, control.id)).toHaveLength(3);
    expect(typesFor(receiver, doomed.id)).toEqual([]);
    await request(gw.url).delete(`/subscriptions/${control.id}`).expect(204);
  });
});

describe('startAt', () => {
  it('latest delivers only events stored after creation; earliest delivers the stored ones too', async () => {
    const [before] = await publish('crud.start');
    const latest = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.start' } }], delivery: FAST });
    const earliest = await create({
      sink: receiver.url,
      filters: [{ exact: { type: 'crud.start' } }],
      delivery: FAST,
      startAt: 'earliest',
    });
    expect(earliest.startAt).toBe('earliest');
    const [after] = await publish('crud.start');
    await waitLagZero(latest.id);
    await waitLagZero(earliest.id);
    const ids = (sub: string) =>
      receiver.requests.filter((q) => q.headers['herald-subscription-id'] === sub).map((q) => q.headers['ce-id']);
    expect(ids(latest.id)).toEqual([after.id]);
    expect(ids(earliest.id).sort()).toEqual([before.id, after.id].sort());
    await request(gw.url).delete(`/subscriptions/${latest.id}`).expect(204);
    await request(gw.url).delete(`/subscriptions/${earliest.id}`).expect(204);
  });
});

describe('pause and resume', () => {
  it('a paused subscription receives nothing new, its lag shows the backlog, and resume delivers it in order', async () => {
    const sub = await create({ sink: receiver.url, filters: [{ exact: { type: 'crud.pause' } }], delivery: FAST });
    const paused = await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
    expect(paused.body).toMatchObject({ id: sub.id, state: 'paused', stateReason: 'user' });
    const published = await publish('crud.pause', 5, { partitionkey: 'one-key' });
    const withBacklog = await waitFor(async () => {
      const got = await getSub(sub.id);
      return totalLag(got) === 5 ? got : undefined;
    });
    expect(withBacklog.state).toBe('paused');
    const partition = withBacklog.stats.partitions.find((p: { partition: number }) => p.partition === published[0].partition);
    expect(partition).toMatchObject({ lag: 5, inFlight: 0, oldestPendingAgeMs: expect.any(Number) });
    // Give a wrongly active worker the time to deliver; the backlog must stay put.
    await new Promise((r) => setTimeout(r, 200));
    expect(typesFor(receiver, sub.id)).toEqual([]);

    const resumed = await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
    expect(resumed.body).toMatchObject({ state: 'active', stateReason: null });
    await waitLagZero(sub.id);
    const delivered = receiver.requests.filter((q) => q.headers['herald-subscription-id'] === sub.id);
    expect(delivered.map((q) => q.headers['ce-id'])).toEqual(published.map((r: { id: string }) => r.id));
    expect(delivered.map((q) => Number(q.headers['herald-offset']))).toEqual(published.map((r: { offset: number }) => r.offset));
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });
});
