import { useGatewayForFile } from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * A path id longer than any id (over 128 characters) names nothing and is a short 404, but only once
 * the route's scope is checked: "a request without a key is a 401 whatever else is wrong with it"
 * (openapi.yaml, Authentication). Express runs `router.param` callbacks before a route's handlers,
 * so the 404 came first (API probe: `GET /subscriptions/<200 characters>` without a key, or with a
 * read key, was a 404).
 */

const ADMIN = 'overlong-admin-key';
const READ = 'overlong-read-key';
const gateway = useGatewayForFile({ HERALD_API_KEYS: `a:${ADMIN}:admin+read,r:${READ}:read` });
afterAll(() => cleanupTmpDirs());

const long = 'a'.repeat(200);
const targets: [string, string][] = [
  ['GET', `/subscriptions/${long}`],
  ['PATCH', `/subscriptions/${long}`],
  ['DELETE', `/subscriptions/${long}`],
  ['POST', `/subscriptions/${long}/pause`],
  ['GET', `/subscriptions/${long}/attempts`],
  ['DELETE', `/subscriptions/${long}/dead-letters/1`],
];

const call = (method: string, path: string, key?: string) =>
  fetch(gateway.url + path, { method, headers: key ? { authorization: `Bearer ${key}` } : {} });

describe.each(targets)('%s %s (an id of 200 characters)', (method, path) => {
  test('without a key: 401, not the 404 of the id', async () => {
    const res = await call(method, path);
    expect(res.status).toBe(401);
    expect(((await res.json()) as { code: string }).code).toBe('unauthorized');
  });
  test('with a key that lacks admin: 403', async () => {
    const res = await call(method, path, READ);
    expect(res.status).toBe(403);
  });
  test('with the admin key: the short 404 that does not echo the id', async () => {
    const res = await call(method, path, ADMIN);
    expect(res.status).toBe(404);
    const body = await res.text();
    expect(body).toContain('200 characters');
    expect(body).not.toContain(long);
  });
});

test('delivery callbacks take no key: an overlong delivery id is still the short 404', async () => {
  const res = await call('POST', `/deliveries/${long}/ack`);
  expect(res.status).toBe(404);
  expect(await res.text()).not.toContain(long);
});
