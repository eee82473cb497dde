import http from 'node:http';
import { useGatewayForFile } from '../helpers/gateway';

/**
 * Herald as a delivery target: "Delivery targets SHOULD support the abuse protection feature" (http-webhook
 * §4), and "If and only if the delivery target does allow delivery of the events, it MUST reply to the
 * request by including the WebHook-Allowed-Origin and WebHook-Allowed-Rate headers" (§4.2). A CloudEvents
 * webhook sender that validates its target (Azure Event Grid's CloudEvents subscriptions do) sends
 * `OPTIONS /events` with `WebHook-Request-Origin` first; spec probe: Herald answered 200 with `Allow` only,
 * which is no consent, so such a sender could not deliver to it.
 */
const gw = useGatewayForFile({ HERALD_API_KEYS: 'pub:pub-secret-0123456789:publish' });

function options(path: string, headers: Record<string, string>): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${gw.url}${path}`, { method: 'OPTIONS', headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the validation handshake on OPTIONS /events', () => {
  it('consents to the origin asked for, without a key, with no rate limit', async () => {
    const res = await options('/events', { 'WebHook-Request-Origin': 'eventemitter.example.com', 'WebHook-Request-Rate': '120' });
    expect(res.status).toBe(200);
    expect(res.headers['webhook-allowed-origin']).toBe('eventemitter.example.com');
    expect(res.headers['webhook-allowed-rate']).toBe('*');
    expect(res.headers.allow).toContain('POST');
  });

  it('answers a plain OPTIONS, and OPTIONS on other paths, as before: Allow only', async () => {
    const plain = await options('/events', {});
    expect(plain.status).toBe(200);
    expect(plain.headers['webhook-allowed-origin']).toBeUndefined();
    const other = await options('/subscriptions', { 'WebHook-Request-Origin': 'eventemitter.example.com' });
    expect(other.status).toBe(200);
    expect(other.headers['webhook-allowed-origin']).toBeUndefined();
  });
});
