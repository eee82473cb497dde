import request from 'supertest';
import { useDeliveryFixture } from '../helpers/delivery';
import { waitFor } from '../helpers/receiver';

/**
 * http-webhook §3.2: a sink whose URL carries its token as the `access_token` query parameter is sent it in
 * every request URI, and "Clients using the URI Query Parameter method SHOULD also send a Cache-Control header
 * containing the no-store option". Spec probe: deliveries to `…?access_token=abc` carried no Cache-Control.
 */
const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '2' });

async function deliveredTo(path: string, id: string, headers?: Record<string, string>) {
  const created = await request(gw.url)
    .post('/subscriptions')
    .send({
      sink: `${receiver.url.replace(/\/hook$/, '')}${path}`,
      filters: [{ exact: { id } }],
      ...(headers ? { delivery: { headers } } : {}),
    });
  expect(created.status).toBe(201);
  const published = await request(gw.url)
    .post('/events')
    .set('content-type', 'application/cloudevents+json')
    .send(JSON.stringify({ specversion: '1.0', id, source: '/token', type: 'com.example.token', data: {} }));
  expect(published.status).toBe(202);
  return waitFor(() => receiver.requests.find((r) => r.url === path), { what: `a delivery to ${path}` });
}

describe('a sink with access_token in its query', () => {
  it('is sent Cache-Control: no-store', async () => {
    const req = await deliveredTo('/hook?access_token=mF_9.B5f-4.1JqM&p=q', 'token-1');
    expect(req.headers['cache-control']).toBe('no-store');
  });

  it('keeps a Cache-Control of the subscription’s own headers', async () => {
    const req = await deliveredTo('/hook?p=q&access_token=abc', 'token-2', { 'cache-control': 'no-store, no-transform' });
    expect(req.headers['cache-control']).toBe('no-store, no-transform');
  });

  it('adds none to a sink without one', async () => {
    const req = await deliveredTo('/hook?my_access_token=abc', 'token-3');
    expect(req.headers['cache-control']).toBeUndefined();
  });
});
