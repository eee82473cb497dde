import { Webhook } from 'standardwebhooks';
import { buildDeliveryRequest, type DeliveryRequestInput } from '../../../src/delivery/request';
import { signWebhook } from '../../../src/delivery/signing';
import { newSigningSecret, previousSecretAt } from '../../../src/webhook-policy';

/** Secret rotation with overlap, and the subscription's own headers, in the request Herald builds. */

const nowSeconds = Math.floor(Date.now() / 1000);
const input = (extra: Partial<DeliveryRequestInput>): DeliveryRequestInput => ({
  subscriptionId: '6f1c2f0e-3b5a-4c1e-9a51-0d9b8f3f2a10',
  secret: newSigningSecret(),
  format: 'structured',
  partition: 0,
  offset: 1,
  previousOffset: null,
  attempt: 1,
  deliveryId: 'dlv_' + 'a'.repeat(24),
  ackUrlBase: 'http://127.0.0.1:8080',
  redrive: false,
  event: { attributes: { specversion: '1.0', id: 'e1', source: '/s', type: 't' }, data: { kind: 'json', value: { n: 1 } } },
  nowSeconds,
  ...extra,
});

describe('previousSecretAt', () => {
  const s = { previousSecret: 'whsec_old', previousSecretExpiresAt: 10_000 };
  it('is the previous secret strictly before its expiry, else null', () => {
    expect(previousSecretAt(s, 9_999)).toBe('whsec_old');
    expect(previousSecretAt(s, 10_000)).toBeNull();
    expect(previousSecretAt({ previousSecret: null, previousSecretExpiresAt: null }, 0)).toBeNull();
  });
});

describe('webhook-signature during an overlap', () => {
  it('carries the new signature, a space, then the old one; each secret verifies', () => {
    const secret = newSigningSecret();
    const previousSecret = newSigningSecret();
    const { headers, body } = buildDeliveryRequest(input({ secret, previousSecret }));
    const webhookId = headers['webhook-id']!;
    expect(headers['webhook-signature']).toBe(
      `${signWebhook(secret, webhookId, nowSeconds, body)} ${signWebhook(previousSecret, webhookId, nowSeconds, body)}`,
    );
    expect(() => new Webhook(secret).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(previousSecret).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(newSigningSecret()).verify(body, headers)).toThrow(/No matching signature/);
  });

  it('carries one signature without a previous secret', () => {
    const secret = newSigningSecret();
    const { headers } = buildDeliveryRequest(input({ secret, previousSecret: null }));
    expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
  });
});

describe('delivery.headers', () => {
  it('are sent with the request, and never replace a header Herald sets', () => {
    const { headers } = buildDeliveryRequest(
      input({ headers: { authorization: 'Bearer t0k3n', 'x-tenant': 'acme', 'webhook-id': 'forged', 'content-type': 'text/plain' } }),
    );
    expect(headers).toMatchObject({ authorization: 'Bearer t0k3n', 'x-tenant': 'acme' });
    expect(headers['webhook-id']).toMatch(/^msg_/);
    expect(headers['content-type']).toBe('application/cloudevents+json; charset=utf-8');
  });
});
