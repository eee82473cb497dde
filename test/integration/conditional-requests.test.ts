import { useGatewayForFile } from '../helpers/gateway';
import { createContractChecker, createContractClient, loadContract } from '../helpers/openapi';

/**
 * Conditional request headers. The API's answers carry no validator: express's `req.fresh` took
 * `If-None-Match: *` as a match anyway, so every `GET` of the API answered it `304` with no body (not in
 * the contract: a reader got nothing). The console's assets are static files: a `Range` was a `206`, an
 * unsatisfiable one or a failed `If-Match` a `400 invalid_request` ("Range Not Satisfiable",
 * "Precondition Failed"), none of them listed. Every answer here is checked against the contract.
 */
const gateway = useGatewayForFile({ HERALD_PARTITIONS: '2' });
const checker = createContractChecker(loadContract());
const call = (method: string, url: string, opts: Parameters<ReturnType<typeof createContractClient>>[2] = {}) =>
  createContractClient(gateway.url, checker)(method, url, opts);

/** fetch adds `cache-control: no-cache` to a conditional request (which makes it unconditional) unless one is given. */
const CACHE = { 'cache-control': 'max-age=0' };
const CONDITIONS: Record<string, string>[] = [
  { 'if-none-match': '*' },
  { 'if-none-match': 'W/"x", *' },
  { 'if-modified-since': 'Wed, 01 Jan 2100 00:00:00 GMT' },
  { 'if-match': '"nope"' },
  { 'if-unmodified-since': 'Sat, 01 Jan 2000 00:00:00 GMT' },
  { range: 'bytes=0-3' },
];

it('ignores conditional headers on the API, which has no validators', async () => {
  const published = await call('POST', '/events', {
    headers: { 'content-type': 'application/cloudevents+json' },
    json: { specversion: '1.0', id: 'c1', source: '/conditional', type: 't' },
  });
  expect(published.status).toBe(202);
  const sub = await call('POST', '/subscriptions', { json: { sink: 'http://127.0.0.1:9/hook' } });
  expect(sub.status).toBe(201);
  const gets = [
    '/events?source=%2Fconditional&id=c1',
    '/partitions',
    '/partitions/0/events',
    '/healthz',
    '/readyz',
    '/metrics',
    '/subscriptions',
    `/subscriptions/${sub.body.id}`,
    `/subscriptions/${sub.body.id}/attempts`,
    `/subscriptions/${sub.body.id}/dead-letters`,
  ];
  for (const url of gets) {
    const plain = await call('GET', url);
    expect([url, plain.status, plain.headers.get('etag')]).toEqual([url, 200, null]);
    for (const headers of CONDITIONS) {
      const answer = await call('GET', url, { headers: { ...CACHE, ...headers } });
      // Was a 304 with no body for `If-None-Match: *`.
      expect([url, headers, answer.status, answer.text.length > 0]).toEqual([url, headers, 200, true]);
    }
  }
});

it('answers 304 where there is a validator, and serves console assets whole', async () => {
  for (const url of ['/openapi.json', '/openapi.yaml', '/docs', '/docs/assets/redoc.standalone.js', '/console/assets/app.js']) {
    const first = await call('GET', url);
    const etag = first.headers.get('etag');
    expect([url, first.status, etag]).toEqual([url, 200, expect.stringMatching(/^(W\/)?"/)]);
    const cached = await call('GET', url, { headers: { ...CACHE, 'if-none-match': etag! } });
    expect([url, cached.status, cached.text, cached.headers.get('etag')]).toEqual([url, 304, '', etag]);
    const any = await call('GET', url, { headers: { ...CACHE, 'if-none-match': '*' } });
    expect([url, any.status]).toEqual([url, 304]);
    const unserved: Record<string, string>[] = [
      { range: 'bytes=0-3' },
      { range: 'bytes=99999999-' },
      { 'if-match': '"nope"' },
      { 'if-unmodified-since': 'Sat, 01 Jan 2000 00:00:00 GMT' },
    ];
    for (const headers of unserved) {
      const whole = await call('GET', url, { headers: { ...CACHE, ...headers } });
      // Was 206, or a 400 "Range Not Satisfiable" / "Precondition Failed", for the console's assets.
      expect([url, headers, whole.status, whole.text === first.text]).toEqual([url, headers, 200, true]);
    }
  }
});
