import request from 'supertest';
import { useGatewayForFile } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';

const gw = useGatewayForFile();
let seq = 0;
const nextId = () => `bi-${++seq}`;

/** POST /events with headers and body exactly as given (no client-side serialisation). */
const post = (headers: Record<string, string>, body: string | Buffer = '') => postEventsRaw(gw.url, headers, body);

const event = (id: string, extra: Record<string, unknown> = {}) => ({
  specversion: '1.0',
  id,
  source: '/batch',
  type: 'com.example.batch',
  ...extra,
});
const postBatch = (events: unknown) => post({ 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify(events));
const postStructured = (e: unknown) => post({ 'content-type': 'application/cloudevents+json' }, JSON.stringify(e));
const heads = async (): Promise<{ partitions: { partition: number; headOffset: number }[] }> =>
  (await request(gw.url).get('/partitions')).body;
const totalStored = async () => (await heads()).partitions.reduce((sum, p) => sum + p.headOffset, 0);
const lookup = (id: string, source = '/batch') => request(gw.url).get('/events').query({ source, id });
const fresh = (id: string, source = '/batch') => ({
  id,
  source,
  partition: expect.any(Number),
  offset: expect.any(Number),
  duplicate: false,
});

describe('batch mode', () => {
  it('accepts an empty batch with 202 and no results, storing nothing', async () => {
    const before = await heads();
    const res = await postBatch([]);
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ results: [] });
    expect(await heads()).toEqual(before);
  });

  it('stores every event and answers in input order', async () => {
    const ids = [nextId(), nextId(), nextId(), nextId()];
    const before = await totalStored();
    const res = await postBatch(ids.map((id, i) => event(id, { data: { i } })));
    expect(res.status).toBe(202);
    expect(res.body.results).toEqual(ids.map((id) => fresh(id)));
    expect(await totalStored()).toBe(before + ids.length);
    for (const [i, id] of ids.entries()) {
      const read = await lookup(id);
      expect(read.body).toEqual({
        event: event(id, { data: { i } }),
        partition: res.body.results[i].partition,
        offset: res.body.results[i].offset,
      });
    }
  });

  it('stores none of a batch with an invalid event, listing each bad event by index', async () => {
    const ids = [nextId(), nextId(), nextId(), nextId(), nextId()];
    const before = await heads();
    const res = await postBatch([
      event(ids[0]!),
      event(ids[1]!, { specversion: '0.3' }),
      event(ids[2]!),
      'not an event',
      event(ids[4]!, { time: 'never', ext: { nested: true } }),
    ]);
    expect(res.status).toBe(400);
    expect(res.contentType).toBe('application/problem+json');
    expect(res.body).toEqual({
      type: 'urn:herald:problem:invalid_event',
      title: expect.any(String),
      status: 400,
      detail: '3 of 5 events in the batch are invalid; none was stored',
      code: 'invalid_event',
      errors: [
        { index: 1, attribute: 'specversion', message: expect.any(String) },
        { index: 3, message: 'an event must be a JSON object' },
        { index: 4, attribute: 'time', message: expect.any(String) },
        { index: 4, attribute: 'ext', message: expect.any(String) },
      ],
    });
    expect(await heads()).toEqual(before);
    for (const id of [ids[0]!, ids[2]!]) expect((await lookup(id)).status).toBe(404);
  });

  it('names the bad event even when it is the last of many', async () => {
    const events = Array.from({ length: 50 }, () => event(nextId()));
    events.push(event('', { type: 'x' }));
    const before = await heads();
    const res = await postBatch(events);
    expect(res.status).toBe(400);
    expect(res.body.errors).toEqual([{ index: 50, attribute: 'id', message: expect.any(String) }]);
    expect(await heads()).toEqual(before);
  });

  it.each<[string, unknown]>([
    ['an object', { specversion: '1.0' }],
    ['a string', 'events'],
    ['null', null],
  ])('answers 400 for a batch body that is %s', async (_label, body) => {
    const before = await heads();
    const res = await postBatch(body);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ code: 'invalid_event', errors: [{ message: 'expected a JSON array' }] });
    expect(await heads()).toEqual(before);
  });

  it('answers 400 for a batch body that is not JSON', async () => {
    const res = await post({ 'content-type': 'application/cloudevents-batch+json' }, '[{"id":');
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('invalid_event');
  });
});

describe('idempotency by source and id', () => {
  it('does not store a re-sent event again and answers 200 with the original position', async () => {
    const id = nextId();
    const first = await postStructured(event(id, { data: 'original' }));
    expect(first.status).toBe(202);
    const before = await heads();
    const again = await postStructured(event(id, { data: 'original' }));
    expect(again.status).toBe(200);
    expect(again.body.results).toEqual([{ ...first.body.results[0], duplicate: true }]);
    expect(await heads()).toEqual(before);
  });

  it('treats the same source and id as a duplicate whatever the content or mode, keeping the first event', async () => {
    const id = nextId();
    const first = await postStructured(event(id, { data: 'first' }));
    const again = await post(
      { 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/batch', 'ce-type': 'other.type', 'content-type': 'text/plain' },
      'second',
    );
    expect(again.status).toBe(200);
    expect(again.body.results).toEqual([{ ...first.body.results[0], duplicate: true }]);
    expect((await lookup(id)).body.event).toEqual(event(id, { data: 'first' }));
  });

  it('treats the same id from another source as a new event', async () => {
    const id = nextId();
    await postStructured(event(id));
    const other = await postStructured(event(id, { source: '/elsewhere' }));
    expect(other.status).toBe(202);
    expect(other.body.results).toEqual([fresh(id, '/elsewhere')]);
  });

  it('answers 202 for a batch mixing new and duplicate events, flagging each', async () => {
    const [a, b, c] = [nextId(), nextId(), nextId()];
    const first = await postBatch([event(a), event(b)]);
    const before = await totalStored();
    const res = await postBatch([event(b), event(c), event(a)]);
    expect(res.status).toBe(202);
    expect(res.body.results).toEqual([
      { ...first.body.results[1], duplicate: true },
      fresh(c),
      { ...first.body.results[0], duplicate: true },
    ]);
    expect(await totalStored()).toBe(before + 1);
  });

  it('answers 200 when every event of a batch is a duplicate', async () => {
    const ids = [nextId(), nextId()];
    const first = await postBatch(ids.map((id) => event(id)));
    const before = await heads();
    const res = await postBatch(ids.map((id) => event(id)));
    expect(res.status).toBe(200);
    expect(res.body.results).toEqual(first.body.results.map((r: object) => ({ ...r, duplicate: true })));
    expect(await heads()).toEqual(before);
  });

  it('stores an event repeated within one batch once, flagging the repeat as a duplicate of it', async () => {
    const [a, b] = [nextId(), nextId()];
    const before = await totalStored();
    const res = await postBatch([event(a, { data: 1 }), event(b), event(a, { data: 2 })]);
    expect(res.status).toBe(202);
    const [first, , repeat] = res.body.results;
    expect(first).toEqual(fresh(a));
    expect(repeat).toEqual({ ...first, duplicate: true });
    expect(await totalStored()).toBe(before + 2);
    expect((await lookup(a)).body.event.data).toBe(1);
  });

  it('stores concurrent identical requests once and gives all of them the same position', async () => {
    const id = nextId();
    const before = await totalStored();
    const replies = await Promise.all(Array.from({ length: 8 }, () => postStructured(event(id))));
    const results = replies.map((r) => r.body.results[0]);
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    for (const r of results)
      expect({ partition: r.partition, offset: r.offset }).toEqual({ partition: results[0].partition, offset: results[0].offset });
    expect(replies.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 202]);
    expect(await totalStored()).toBe(before + 1);
  });

  it('does not remember an event from a refused batch', async () => {
    const id = nextId();
    expect((await postBatch([event(id), event(nextId(), { id: '' })])).status).toBe(400);
    const res = await postStructured(event(id));
    expect(res.status).toBe(202);
    expect(res.body.results).toEqual([fresh(id)]);
  });
});
