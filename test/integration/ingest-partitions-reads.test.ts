import { crc32 } from 'node:zlib';
import request from 'supertest';
import { startTestGateway, type TestGateway as Gw } from '../helpers/gateway';
import { postEventsRaw as post, sendRaw } from '../helpers/http';
import { cleanupTmpDirs } from '../helpers/tmp';

const PARTITIONS = 4;

const event = (id: string, extra: Record<string, unknown> = {}) => ({
  specversion: '1.0',
  id,
  source: '/parts',
  type: 'com.example.parts',
  ...extra,
});
const postBatch = (gw: Gw, events: unknown[]) =>
  post(gw.url, { 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify(events));
/** The documented routing: CRC-32 of the partitionkey, else of source + NUL + id, modulo the partition count. */
const expectedPartition = (e: { id: string; source: string; partitionkey?: string }, n = PARTITIONS) =>
  crc32(Buffer.from(e.partitionkey ?? `${e.source}\u0000${e.id}`, 'utf8')) % n;

afterAll(cleanupTmpDirs);

describe('partition routing and offsets', () => {
  let gw: Gw;
  beforeEach(async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: String(PARTITIONS) });
  });
  afterEach(async () => {
    await gw.close();
  });

  it('lists every configured partition with head offset 0 on a fresh data dir', async () => {
    const res = await request(gw.url).get('/partitions');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ partitions: [0, 1, 2, 3].map((partition) => ({ partition, firstOffset: 0, headOffset: 0 })) });
  });

  it('routes events without a partitionkey by CRC-32 of source, NUL and id', async () => {
    const events = Array.from({ length: 24 }, (_, i) => event(`no-key-${i}`, { source: `/parts/${i % 3}` }));
    const res = await postBatch(gw, events);
    expect(res.status).toBe(202);
    res.body.results.forEach((r: { partition: number }, i: number) => expect(r.partition).toBe(expectedPartition(events[i]!)));
    expect(new Set(res.body.results.map((r: { partition: number }) => r.partition)).size).toBeGreaterThan(1);
  });

  it('routes events with a partitionkey by CRC-32 of the key alone, in structured and binary mode', async () => {
    const keys = ['customer-1', 'customer-2', 'Ω-ключ', ' '];
    for (const [i, partitionkey] of keys.entries()) {
      const structured = await post(
        gw.url,
        { 'content-type': 'application/cloudevents+json' },
        JSON.stringify(event(`k-s-${i}`, { partitionkey })),
      );
      expect(structured.body.results[0].partition).toBe(expectedPartition({ id: '', source: '', partitionkey }));
      const binary = await post(
        gw.url,
        {
          'ce-specversion': '1.0',
          'ce-id': `k-b-${i}`,
          'ce-source': '/other',
          'ce-type': 't',
          'ce-partitionkey': encodeURIComponent(partitionkey),
        },
        '',
      );
      expect(binary.body.results[0].partition).toBe(structured.body.results[0].partition);
    }
  });

  it('refuses an empty, numeric or boolean partitionkey with a 400 naming it, and stores nothing', async () => {
    const refused = [
      await post(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(event('pk-empty', { partitionkey: '' }))),
      await post(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(event('pk-int', { partitionkey: 7 }))),
      await postBatch(gw, [event('pk-ok', { partitionkey: 'k' }), event('pk-bool', { partitionkey: true })]),
      await post(gw.url, { 'ce-specversion': '1.0', 'ce-id': 'pk-header', 'ce-source': '/p', 'ce-type': 't', 'ce-partitionkey': '' }, ''),
    ];
    for (const res of refused) {
      expect(res.status).toBe(400);
      expect(res.body.errors).toContainEqual(expect.objectContaining({ attribute: 'partitionkey' }));
    }
    const heads = (await request(gw.url).get('/partitions')).body.partitions as { headOffset: number }[];
    expect(heads.every((h) => h.headOffset === 0)).toBe(true);
  });

  it('gives events sharing a partitionkey one partition and consecutive offsets in send order', async () => {
    const events = Array.from({ length: 10 }, (_, i) => event(`same-key-${i}`, { source: `/s${i}`, partitionkey: 'order-42' }));
    const results = [...(await postBatch(gw, events.slice(0, 4))).body.results, ...(await postBatch(gw, events.slice(4))).body.results];
    const partition = expectedPartition({ id: '', source: '', partitionkey: 'order-42' });
    expect(results.map((r: { partition: number; offset: number }) => [r.partition, r.offset])).toEqual(
      events.map((_, i) => [partition, i]),
    );
  });

  it('assigns offsets from 0 per partition with no gaps across single, batch, duplicate and refused requests', async () => {
    const sent: { partition: number; offset: number }[] = [];
    for (let round = 0; round < 5; round++) {
      const batch = await postBatch(
        gw,
        Array.from({ length: 7 }, (_, i) => event(`gapless-${round}-${i}`)),
      );
      sent.push(...batch.body.results);
      const single = await post(
        gw.url,
        { 'content-type': 'application/cloudevents+json' },
        JSON.stringify(event(`gapless-single-${round}`)),
      );
      sent.push(...single.body.results);
      expect((await postBatch(gw, [event(`gapless-0-0`)])).status).toBe(200);
      expect((await postBatch(gw, [event(`never-${round}`), event('')])).status).toBe(400);
    }
    const heads = (await request(gw.url).get('/partitions')).body.partitions as { partition: number; headOffset: number }[];
    expect(heads.reduce((sum, h) => sum + h.headOffset, 0)).toBe(sent.length);
    for (const { partition, headOffset } of heads) {
      const page = await request(gw.url).get(`/partitions/${partition}/events`).query({ from: 0, limit: 1000 });
      expect(page.body.events.map((e: { offset: number }) => e.offset)).toEqual(Array.from({ length: headOffset }, (_, i) => i));
      expect(
        sent
          .filter((s) => s.partition === partition)
          .map((s) => s.offset)
          .sort((a, b) => a - b),
      ).toEqual(Array.from({ length: headOffset }, (_, i) => i));
    }
  });

  it('puts every event in partition 0 when there is a single partition', async () => {
    const single = await startTestGateway({ HERALD_PARTITIONS: '1' });
    try {
      const res = await postBatch(
        single,
        Array.from({ length: 5 }, (_, i) => event(`one-${i}`, { partitionkey: `k${i}` })),
      );
      expect(res.body.results.map((r: { partition: number; offset: number }) => [r.partition, r.offset])).toEqual(
        [0, 1, 2, 3, 4].map((o) => [0, o]),
      );
    } finally {
      await single.close();
    }
  });
});

describe('read endpoints', () => {
  let gw: Gw;
  const key = 'reads';
  const partition = expectedPartition({ id: '', source: '', partitionkey: key });
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: String(PARTITIONS) });
    const res = await postBatch(
      gw,
      Array.from({ length: 10 }, (_, i) => event(`r-${i}`, { partitionkey: key, data: { i } })),
    );
    expect(res.status).toBe(202);
  });
  afterAll(async () => {
    await gw.close();
  });

  it('returns one event by source and id with its partition and offset', async () => {
    const res = await request(gw.url).get('/events').query({ source: '/parts', id: 'r-3' });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ event: event('r-3', { partitionkey: key, data: { i: 3 } }), partition, offset: 3 });
  });

  it('answers 404 with a problem for an unknown source and id', async () => {
    for (const query of [
      { source: '/parts', id: 'missing' },
      { source: '/nowhere', id: 'r-3' },
    ]) {
      const res = await request(gw.url).get('/events').query(query);
      expect(res.status).toBe(404);
      expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(res.body).toMatchObject({
        type: 'urn:herald:problem:not_found',
        status: 404,
        code: 'not_found',
        errors: [{ message: expect.any(String) }],
      });
    }
  });

  it('answers 400 when source or id is missing or empty', async () => {
    for (const query of [{ source: '/parts' }, { id: 'r-1' }, { source: '', id: 'r-1' }, {}]) {
      const res = await request(gw.url).get('/events').query(query);
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ status: 400, code: 'invalid_request' });
    }
  });

  it('reports the head offset of each partition as the next offset to assign', async () => {
    const res = await request(gw.url).get('/partitions');
    expect(res.body.partitions).toHaveLength(PARTITIONS);
    expect(res.body.partitions[partition]).toEqual({ partition, firstOffset: 0, headOffset: 10 });
  });

  it('pages through a partition in offset order with from, limit and nextOffset', async () => {
    const seen: number[] = [];
    let from = 0;
    for (let guard = 0; guard < 10; guard++) {
      const res = await request(gw.url).get(`/partitions/${partition}/events`).query({ from, limit: 3 });
      expect(res.status).toBe(200);
      if (res.body.events.length === 0) {
        expect(res.body.nextOffset).toBe(from);
        break;
      }
      for (const e of res.body.events) {
        expect(e).toEqual({ partition, offset: e.offset, event: event(`r-${e.offset}`, { partitionkey: key, data: { i: e.offset } }) });
        seen.push(e.offset);
      }
      expect(res.body.nextOffset).toBe(res.body.events[res.body.events.length - 1].offset + 1);
      from = res.body.nextOffset;
    }
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('starts from offset 0 with up to 100 events when from and limit are omitted', async () => {
    const res = await request(gw.url).get(`/partitions/${partition}/events`);
    expect(res.body.events.map((e: { offset: number }) => e.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(res.body.nextOffset).toBe(10);
  });

  it('returns an empty page whose nextOffset does not pass the head at or beyond the end', async () => {
    for (const from of [10, 11, 500]) {
      const res = await request(gw.url).get(`/partitions/${partition}/events`).query({ from });
      expect(res.body).toEqual({ events: [], nextOffset: 10, firstOffset: 0 });
    }
  });

  it('returns no events for limit 0', async () => {
    const res = await request(gw.url).get(`/partitions/${partition}/events`).query({ from: 2, limit: 0 });
    expect(res.body).toEqual({ events: [], nextOffset: 2, firstOffset: 0 });
  });

  it('answers 404 for a partition that does not exist', async () => {
    const res = await request(gw.url).get(`/partitions/${PARTITIONS}/events`);
    expect(res.status).toBe(404);
    expect(res.body).toMatchObject({ code: 'not_found', status: 404 });
  });

  it.each([
    ['a negative from', `/partitions/0/events?from=-1`],
    ['a fractional from', `/partitions/0/events?from=1.5`],
    ['a non-numeric from', `/partitions/0/events?from=abc`],
    ['a repeated from', `/partitions/0/events?from=1&from=2`],
    ['a negative limit', `/partitions/0/events?limit=-1`],
    ['a limit over 1000', `/partitions/0/events?limit=1001`],
    ['a non-numeric limit', `/partitions/0/events?limit=ten`],
    ['a non-numeric partition', `/partitions/abc/events`],
    ['a negative partition', `/partitions/-1/events`],
    ['a partition that is not valid percent-encoding', `/partitions/%zz/events`],
  ])('answers 400 for %s', async (_label, path) => {
    const res = await request(gw.url).get(path);
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({
      type: 'urn:herald:problem:invalid_request',
      status: 400,
      code: 'invalid_request',
      errors: expect.any(Array),
    });
  });

  // Path and query integers are decimal digits only; what Number() would also take is refused.
  it.each([
    ['a blank partition', '/partitions/%20/events'],
    ['a partition with a leading space', '/partitions/%201/events'],
    ['a hexadecimal partition', '/partitions/0x1/events'],
    ['a partition with a fraction of zero', '/partitions/1.0/events'],
    ['a partition in exponent form', '/partitions/1e0/events'],
    ['a partition with a plus sign', '/partitions/+1/events'],
    ['a partition past the safe-integer range', '/partitions/9007199254740993/events'],
    ['a from with a fraction of zero', '/partitions/0/events?from=9.0'],
    ['a from in exponent form', '/partitions/0/events?from=9.3e2'],
    ['a hexadecimal from', '/partitions/0/events?from=0x9'],
    ['a from with spaces', '/partitions/0/events?from=%209'],
    ['a from past the safe-integer range', '/partitions/0/events?from=9007199254740993'],
    ['a limit of -0', '/partitions/0/events?limit=-0'],
    ['a limit with a plus sign', '/partitions/0/events?limit=%2B5'],
  ])('answers 400 for %s', async (_label, target) => {
    const res = await sendRaw(gw.url, 'GET', target);
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.body).toMatchObject({
      status: 400,
      code: 'invalid_request',
      errors: [expect.objectContaining({ message: expect.any(String) })],
    });
  });

  it('takes decimal digits, leading zeros included', async () => {
    const res = await sendRaw(gw.url, 'GET', `/partitions/${String(partition).padStart(3, '0')}/events?from=003&limit=002`);
    expect(res.status).toBe(200);
    expect(res.body.events.map((e: { offset: number }) => e.offset)).toEqual([3, 4]);
  });
});

describe('a page of large events', () => {
  let gw: Gw;
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
    // Twelve events of 900 KB each: 10.8 MB of data, 14 MB as the base64 a page carries.
    for (let i = 0; i < 12; i++) {
      const res = await post(
        gw.url,
        { 'content-type': 'application/octet-stream', 'ce-specversion': '1.0', 'ce-id': `big-${i}`, 'ce-source': '/big', 'ce-type': 't' },
        Buffer.alloc(900_000, i),
      );
      expect(res.status).toBe(202);
    }
  });
  afterAll(async () => {
    await gw.close();
  });

  it('ends once its JSON passes 8 MiB, and the next page goes on from there: every event read once, in order (was: 3 GB and a 500 for 1,000 such events)', async () => {
    const first = await request(gw.url).get('/partitions/0/events?from=0&limit=1000');
    expect(first.status).toBe(200);
    const firstOffsets = first.body.events.map((e: { offset: number }) => e.offset);
    expect(firstOffsets.length).toBeGreaterThan(1);
    expect(firstOffsets.length).toBeLessThan(12);
    expect(first.text.length).toBeLessThan(8 * 1024 * 1024 + 1_300_000); // the budget, and the one event that passed it
    expect(first.body.nextOffset).toBe(firstOffsets[firstOffsets.length - 1] + 1);
    const second = await request(gw.url).get(`/partitions/0/events?from=${first.body.nextOffset}&limit=1000`);
    const all = [...first.body.events, ...second.body.events];
    expect(all.map((e: { event: { id: string } }) => e.event.id)).toEqual(Array.from({ length: 12 }, (_, i) => `big-${i}`));
    expect(Buffer.from(all[5].event.data_base64, 'base64').equals(Buffer.alloc(900_000, 5))).toBe(true);
    expect(second.body.nextOffset).toBe(12);
  });

  it('still holds one event when that one alone passes the budget', async () => {
    const res = await request(gw.url).get('/partitions/0/events?from=11&limit=1');
    expect(res.body.events.map((e: { offset: number }) => e.offset)).toEqual([11]);
    expect(res.body.nextOffset).toBe(12);
  });
});
