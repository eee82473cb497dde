/**
 * herald.db that cannot grow answers API writes like a locked database: a 503 problem+json with
 * Retry-After and nothing changed, never an opaque 500. SQLite reports a full disk and a database at
 * its `max_page_count` with the same error (`SQLITE_FULL`); the page limit makes it full without a
 * file system of its own. (A hostile probe on an 8 MiB tmpfs found `POST /subscriptions` and
 * `DELETE /subscriptions/{id}` answering 500 `internal`.)
 */
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
});
afterAll(async () => {
  await gw.close();
  cleanupTmpDirs();
});

async function req(method: string, path: string, body?: unknown) {
  const res = await fetch(gw.url + path, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return {
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    type: res.headers.get('content-type'),
    body: text ? JSON.parse(text) : undefined,
  };
}

const create = (i: number) =>
  req('POST', '/subscriptions', { sink: `http://127.0.0.1:9/full-${i}`, delivery: { headers: { 'x-pad': 'p'.repeat(2000) } } });

it('a subscription that cannot be stored is a 503 storage_full with Retry-After, and none is half made', async () => {
  const before = await create(0);
  expect(before.status).toBe(201);
  const pages = gw.db.pragma('page_count', { simple: true }) as number;
  gw.db.pragma(`max_page_count = ${pages}`);
  let refused: Awaited<ReturnType<typeof create>> | undefined;
  const created = [before.body.id as string];
  try {
    for (let i = 1; i <= 200 && !refused; i++) {
      const res = await create(i);
      if (res.status === 201) created.push(res.body.id as string);
      else refused = res;
    }
  } finally {
    gw.db.pragma('max_page_count = 4294967294');
  }
  expect(refused).toMatchObject({
    status: 503,
    retryAfter: '5',
    type: expect.stringMatching(/problem\+json/),
    body: { code: 'storage_full' },
  });
  const listed = (await req('GET', '/subscriptions')).body.subscriptions.map((s: { id: string }) => s.id);
  expect(listed.sort()).toEqual([...created].sort());
  expect((await create(999)).status).toBe(201); // space again: writes go on
});
