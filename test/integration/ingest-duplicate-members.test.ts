import request from 'supertest';
import { useGatewayForFile } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';

/**
 * "Each context attribute MUST only appear at most once in a CloudEvent" (spec.md, Context Attributes).
 * Binary mode refuses a repeated ce- header; the JSON format must not let the same attribute through
 * twice either, with the last member silently winning (spec probe: `{"id":"a","id":"b",…}` was stored
 * as the event `b`, and `"ext":"a","ext":"b"` as `ext: "b"`).
 */
const gw = useGatewayForFile();
const STRUCTURED = 'application/cloudevents+json';
const BATCH = 'application/cloudevents-batch+json';
const post = (contentType: string, body: string) => postEventsRaw(gw.url, { 'content-type': contentType }, body);
const heads = async () => (await request(gw.url).get('/partitions')).body;
const head = '"specversion":"1.0","source":"/dup","type":"com.example.dup"';

describe('an attribute given twice in the JSON format', () => {
  it.each([
    ['id', `{${head},"id":"dup-a","id":"dup-b"}`],
    ['ext', `{${head},"id":"dup-ext","ext":"a","ext":"b"}`],
    ['ext', `{${head},"id":"dup-ext-null","ext":"a","ext":null}`],
    ['type', `{${head},"id":"dup-type","type":"com.example.other"}`],
    // An escape names the same member: "\u0069d" is "id".
    ['id', `{${head},"id":"dup-esc-a","\\u0069d":"dup-esc-b"}`],
    ['data', `{${head},"id":"dup-data","data":1,"data":2}`],
    ['data_base64', `{${head},"id":"dup-b64","data_base64":"AA==","data_base64":"AQ=="}`],
  ])('is a 400 naming %s in structured mode, and nothing is stored', async (attribute, body) => {
    const before = await heads();
    const res = await post(STRUCTURED, body);
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('invalid_event');
    expect(res.body.errors).toContainEqual({ attribute, message: expect.stringMatching(/more than once/) });
    expect(await heads()).toEqual(before);
  });

  it('is a 400 naming the event by index in a batch, and nothing of the batch is stored', async () => {
    const before = await heads();
    const ok = `{${head},"id":"dup-batch-ok"}`;
    const bad = `{${head},"id":"dup-batch-a","id":"dup-batch-b"}`;
    const res = await post(BATCH, `[${ok},${bad}]`);
    expect(res.status).toBe(400);
    expect(res.body.errors).toContainEqual({ index: 1, attribute: 'id', message: expect.stringMatching(/more than once/) });
    expect(await heads()).toEqual(before);
  });

  it('still takes the same name at different depths, in data and in other events of a batch', async () => {
    const nested = `{${head},"id":"dup-nested","datacontenttype":"application/json","data":{"id":1,"data":{"id":2,"type":"x"}}}`;
    expect((await post(STRUCTURED, nested)).status).toBe(202);
    const batch = `[{${head},"id":"dup-batch-1","ext":"a"},{${head},"id":"dup-batch-2","ext":"a"}]`;
    const res = await post(BATCH, batch);
    expect(res.status).toBe(202);
    expect(res.body.results).toHaveLength(2);
    // Strings holding quotes, braces and escaped names are values, not members.
    const tricky = `{${head},"id":"dup-tricky","subject":"\\"id\\":{[","ext":"}\\\\","data":["id","id"]}`;
    expect((await post(STRUCTURED, tricky)).status).toBe(202);
  });
});
