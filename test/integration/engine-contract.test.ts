import { crc32 } from 'node:zlib';
import request from 'supertest';
import { describeEngine, ENGINES, useEngineGateway } from '../helpers/engines';
import { postEventsRaw } from '../helpers/http';

/**
 * The ingest, read and idempotency contract, run against both engines: what a client sees must not
 * depend on HERALD_STORE. (The local engine's own files test it further; the JetStream engine's
 * cluster behaviour, several nodes and faults, is in jetstream-cluster.test.ts.)
 */

const PARTITIONS = 4;

for (const engine of ENGINES) {
  describeEngine(engine, () => {
    const gw = useEngineGateway(engine, { HERALD_PARTITIONS: String(PARTITIONS) });
    let seq = 0;
    const nextId = () => `contract-${engine}-${++seq}`;
    const SOURCE = '/contract';
    const event = (id: string, extra: Record<string, unknown> = {}) => ({
      specversion: '1.0',
      id,
      source: SOURCE,
      type: 'com.example.contract',
      ...extra,
    });
    const post = (headers: Record<string, string>, body: string | Buffer = '') => postEventsRaw(gw.url, headers, body);
    const postStructured = (e: unknown) => post({ 'content-type': 'application/cloudevents+json' }, JSON.stringify(e));
    const postBatch = (events: unknown) => post({ 'content-type': 'application/cloudevents-batch+json' }, JSON.stringify(events));
    const lookup = (id: string, source = SOURCE) => request(gw.url).get('/events').query({ source, id });
    const heads = async (): Promise<number[]> =>
      ((await request(gw.url).get('/partitions')).body.partitions as { headOffset: number }[]).map((p) => p.headOffset);
    const totalStored = async () => (await heads()).reduce((a, b) => a + b, 0);
    const fresh = (id: string, source = SOURCE) => ({
      id,
      source,
      partition: expect.any(Number),
      offset: expect.any(Number),
      duplicate: false,
    });

    describe('publishing', () => {
      it('stores a binary-mode event and reads back its data byte for byte', async () => {
        const id = nextId();
        const bytes = Buffer.from([0, 1, 2, 0xfe, 0xff]);
        const res = await post(
          { 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': SOURCE, 'ce-type': 't.binary', 'content-type': 'application/octet-stream' },
          bytes,
        );
        expect(res.status).toBe(202);
        expect(res.body).toEqual({ results: [fresh(id)] });
        const read = await lookup(id);
        expect(read.status).toBe(200);
        expect(read.body).toEqual({
          event: {
            specversion: '1.0',
            id,
            source: SOURCE,
            type: 't.binary',
            datacontenttype: 'application/octet-stream',
            data_base64: bytes.toString('base64'),
          },
          partition: res.body.results[0].partition,
          offset: res.body.results[0].offset,
        });
      });

      it('stores a structured-mode event with its extensions and JSON data', async () => {
        const id = nextId();
        const sent = event(id, { subject: 'café', time: '2026-12-01T10:00:00Z', myext: 'v', data: { n: 1, s: 'ü' } });
        const res = await postStructured(sent);
        expect(res.status).toBe(202);
        expect((await lookup(id)).body).toEqual({
          event: sent,
          partition: res.body.results[0].partition,
          offset: res.body.results[0].offset,
        });
      });

      it('stores every event of a batch and answers in input order', async () => {
        const ids = [nextId(), nextId(), nextId()];
        const before = await totalStored();
        const res = await postBatch(ids.map((id, i) => event(id, i === 1 ? { data_base64: 'AAECAw==' } : { data: { i } })));
        expect(res.status).toBe(202);
        expect(res.body.results).toEqual(ids.map((id) => fresh(id)));
        expect(await totalStored()).toBe(before + ids.length);
        for (const [i, id] of ids.entries()) expect((await lookup(id)).body.offset).toBe(res.body.results[i].offset);
      });

      it('accepts an empty batch with 202 and stores nothing', async () => {
        const before = await heads();
        const res = await postBatch([]);
        expect([res.status, res.body]).toEqual([202, { results: [] }]);
        expect(await heads()).toEqual(before);
      });
    });

    describe('refusing bad input before anything is stored', () => {
      it('answers 400 invalid_event naming each bad attribute', async () => {
        const res = await postStructured({ specversion: '1.0', id: '', source: SOURCE, type: 't', time: 'yesterday' });
        expect(res.status).toBe(400);
        expect(res.contentType).toBe('application/problem+json');
        expect(res.body).toMatchObject({
          code: 'invalid_event',
          errors: [
            { attribute: 'id', message: expect.any(String) },
            { attribute: 'time', message: expect.any(String) },
          ],
        });
      });

      it('stores none of a batch with an invalid event', async () => {
        const good = nextId();
        const before = await heads();
        const res = await postBatch([event(good), event(nextId(), { specversion: '0.3' })]);
        expect(res.status).toBe(400);
        expect(res.body).toMatchObject({ code: 'invalid_event', errors: [{ index: 1, attribute: 'specversion' }] });
        expect(await heads()).toEqual(before);
        expect((await lookup(good)).status).toBe(404);
      });

      it('answers 415 for an event format it does not know', async () => {
        const res = await post({ 'content-type': 'application/cloudevents+xml' }, '<event/>');
        expect(res.status).toBe(415);
        expect(res.body.code).toBe('unsupported_media_type');
      });
    });

    describe('idempotency by source and id', () => {
      it('answers a resend 200 with the original partition and offset, storing nothing', async () => {
        const id = nextId();
        const first = await postStructured(event(id, { data: 'original' }));
        const before = await heads();
        const again = await postStructured(event(id, { data: 'changed' }));
        expect(again.status).toBe(200);
        expect(again.body.results).toEqual([{ ...first.body.results[0], duplicate: true }]);
        expect(await heads()).toEqual(before);
        expect((await lookup(id)).body.event.data).toBe('original');
      });

      it('treats the same source and id sent in another mode, to another partition key, as a duplicate', async () => {
        const id = nextId();
        const first = await postStructured(event(id, { partitionkey: 'a' }));
        const again = await post(
          {
            'ce-specversion': '1.0',
            'ce-id': id,
            'ce-source': SOURCE,
            'ce-type': 'other',
            'ce-partitionkey': 'b',
            'content-type': 'text/plain',
          },
          'second',
        );
        expect(again.status).toBe(200);
        expect(again.body.results).toEqual([{ ...first.body.results[0], duplicate: true }]);
      });

      it('treats the same id from another source as a new event', async () => {
        const id = nextId();
        await postStructured(event(id));
        const other = await postStructured(event(id, { source: '/elsewhere' }));
        expect([other.status, other.body.results]).toEqual([202, [fresh(id, '/elsewhere')]]);
      });

      it('flags each duplicate of a batch mixing new and known events, and a repeat within the batch', async () => {
        const [a, b, c] = [nextId(), nextId(), nextId()];
        const first = await postBatch([event(a), event(b)]);
        const before = await totalStored();
        const res = await postBatch([event(b), event(c), event(a), event(c)]);
        expect(res.status).toBe(202);
        const [dupB, newC, dupA, repeatC] = res.body.results;
        expect(dupB).toEqual({ ...first.body.results[1], duplicate: true });
        expect(newC).toEqual(fresh(c));
        expect(dupA).toEqual({ ...first.body.results[0], duplicate: true });
        expect(repeatC).toEqual({ ...newC, duplicate: true });
        expect(await totalStored()).toBe(before + 1);
      });

      it('answers 200 when every event of a batch is a duplicate', async () => {
        const ids = [nextId(), nextId()];
        const first = await postBatch(ids.map((id) => event(id)));
        const res = await postBatch(ids.map((id) => event(id)));
        expect(res.status).toBe(200);
        expect(res.body.results).toEqual(first.body.results.map((r: object) => ({ ...r, duplicate: true })));
      });

      it('stores concurrent identical requests once and gives all of them the same position', async () => {
        const id = nextId();
        const before = await totalStored();
        const replies = await Promise.all(Array.from({ length: 8 }, () => postStructured(event(id))));
        const results = replies.map((r) => r.body.results[0]);
        expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
        for (const r of results) expect([r.partition, r.offset]).toEqual([results[0].partition, results[0].offset]);
        expect(replies.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 202]);
        expect(await totalStored()).toBe(before + 1);
      });
    });

    describe('reads', () => {
      it('answers 404 with a problem for an unknown source and id, 400 without one', async () => {
        const res = await lookup('never-sent');
        expect([res.status, res.body.code]).toEqual([404, 'not_found']);
        expect((await request(gw.url).get('/events').query({ source: SOURCE })).status).toBe(400);
      });

      it('gives events sharing a partitionkey one partition, consecutive offsets in send order, and pages through them', async () => {
        const key = `pk-${engine}`;
        const partition = crc32(Buffer.from(key, 'utf8')) % PARTITIONS;
        const head = (await heads())[partition]!;
        const ids = Array.from({ length: 5 }, () => nextId());
        const res = await postBatch(ids.map((id) => event(id, { partitionkey: key })));
        expect(res.body.results.map((r: { partition: number; offset: number }) => [r.partition, r.offset])).toEqual(
          ids.map((_, i) => [partition, head + i]),
        );

        const page1 = await request(gw.url).get(`/partitions/${partition}/events`).query({ from: head, limit: 3 });
        expect(page1.status).toBe(200);
        expect(page1.body.events.map((e: { offset: number; event: { id: string } }) => [e.offset, e.event.id])).toEqual(
          ids.slice(0, 3).map((id, i) => [head + i, id]),
        );
        expect(page1.body).toMatchObject({ nextOffset: head + 3, firstOffset: 0 });
        const page2 = await request(gw.url).get(`/partitions/${partition}/events`).query({ from: page1.body.nextOffset, limit: 100 });
        expect(page2.body.events.map((e: { event: { id: string } }) => e.event.id)).toEqual(ids.slice(3));
        expect(page2.body.nextOffset).toBe(head + 5);
        const end = await request(gw.url)
          .get(`/partitions/${partition}/events`)
          .query({ from: head + 5 });
        expect(end.body).toEqual({ events: [], nextOffset: head + 5, firstOffset: 0 });

        const partitions = (await request(gw.url).get('/partitions')).body.partitions;
        expect(partitions).toHaveLength(PARTITIONS);
        expect(partitions[partition]).toEqual({ partition, firstOffset: 0, headOffset: head + 5 });
      });

      it('answers 404 for a partition that does not exist and 400 for a bad page query', async () => {
        expect((await request(gw.url).get(`/partitions/${PARTITIONS}/events`)).status).toBe(404);
        expect((await request(gw.url).get('/partitions/0/events').query({ limit: 'ten' })).status).toBe(400);
      });
    });

    it('is ready', async () => {
      const res = await request(gw.url).get('/readyz');
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('ready');
    });
  });
}
