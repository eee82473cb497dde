import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { createContractChecker, createContractClient, loadContract, type ContractClient } from '../helpers/openapi';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * http-webhook §3.2: "Clients using the URI Query Parameter method SHOULD also send a Cache-Control header containing
 * the no-store option". The validation handshake's OPTIONS goes to the sink's URI, access_token and all, as the
 * deliveries do: it is sent no-store too (re-probe: the deliveries were, the OPTIONS before them was not).
 */
const checker = createContractChecker(loadContract());
let gw: TestGateway;
let call: ContractClient;
let receiver: Receiver;

beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '2' });
  call = createContractClient(gw.url, checker);
  receiver = await startReceiver((req) =>
    req.method === 'OPTIONS'
      ? { status: 200, headers: { 'WebHook-Allowed-Origin': '127.0.0.1', 'WebHook-Allowed-Rate': '*' } }
      : { status: 204 },
  );
});

afterAll(async () => {
  await receiver?.close();
  await gw?.close();
  cleanupTmpDirs();
});

async function subscribe(path: string, source: string) {
  const res = await call('POST', '/subscriptions', {
    json: { sink: `${receiver.url}${path}`, filters: [{ exact: { source } }], validation: 'cloudevents' },
  });
  expect(res.status).toBe(201);
  const handshake = await waitFor(() => receiver.requests.find((r) => r.method === 'OPTIONS' && r.url === `/hook${path}`), {
    what: `the OPTIONS to ${path}`,
  });
  const published = await call('POST', '/events', {
    headers: { 'content-type': 'application/cloudevents+json' },
    json: { specversion: '1.0', id: `e-${source}`, source, type: 'handshake.token', data: {} },
  });
  expect(published.status).toBe(202);
  const delivery = await waitFor(() => receiver.requests.find((r) => r.method === 'POST' && r.url === `/hook${path}`), {
    what: `the delivery to ${path}`,
  });
  return { handshake, delivery };
}

describe('validation: cloudevents, a sink with access_token in its query', () => {
  it('sends the OPTIONS with Cache-Control: no-store, as it does the deliveries', async () => {
    const { handshake, delivery } = await subscribe('/hs?access_token=abc', '/hs-token');
    expect(delivery.headers['cache-control']).toBe('no-store');
    expect(delivery.headers['webhook-request-origin']).toBe('127.0.0.1');
    expect(handshake.headers['cache-control']).toBe('no-store');
  });

  it('sends none to a sink without one', async () => {
    const { handshake, delivery } = await subscribe('/hs?token=abc', '/hs-plain');
    expect(delivery.headers['cache-control']).toBeUndefined();
    expect(handshake.headers['cache-control']).toBeUndefined();
  });
});
