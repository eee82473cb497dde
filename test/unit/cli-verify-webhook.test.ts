import { createHmac } from 'node:crypto';
import { buildDeliveryRequest } from '../../src/delivery/request';
import { verifyWebhook } from '../../src/cli/verify-webhook';
import { newSigningSecret } from '../../src/webhook-policy';

/** A delivery as the dispatcher signs it, with the previous secret during a rotation when given. */
const delivery = (secret: string, nowSeconds: number, previousSecret?: string) =>
  buildDeliveryRequest({
    subscriptionId: '6f1c2f0e-3b5a-4c1e-9a51-0d9b8f3f2a10',
    secret,
    previousSecret,
    format: 'binary',
    partition: 1,
    offset: 2,
    previousOffset: null,
    attempt: 1,
    deliveryId: 'dlv_' + 'a'.repeat(24),
    ackUrlBase: 'http://127.0.0.1:8080',
    redrive: false,
    event: {
      attributes: { specversion: '1.0', id: 'e1', source: '/s', type: 't', datacontenttype: 'application/octet-stream' },
      data: { kind: 'bytes', bytes: Buffer.from([0, 0xff, 0x80]) },
    },
    nowSeconds,
  });

describe('verifyWebhook (herald listen)', () => {
  const now = 1_800_000_000;

  it.each(['', 'whsec_', '!!!'])(
    'refuses every signature against the empty key %j (CLI probe: listen verified forgeries after a failed create)',
    (secret) => {
      const body = Buffer.from('{}');
      const signature = createHmac('sha256', Buffer.alloc(0)).update(`msg_1.${now}.`).update(body).digest('base64');
      const headers = { 'webhook-id': 'msg_1', 'webhook-timestamp': String(now), 'webhook-signature': `v1,${signature}` };
      expect(verifyWebhook(secret, headers, body, now)).toEqual({ ok: false, reason: 'no signing secret to verify against' });
    },
  );

  it("accepts the gateway's signature over the raw bytes, with either secret during a rotation", () => {
    const secret = newSigningSecret();
    const { headers, body } = delivery(secret, now);
    expect(verifyWebhook(secret, headers, body, now)).toEqual({ ok: true });
    const old = newSigningSecret();
    const rotated = delivery(secret, now, old);
    expect(verifyWebhook(old, rotated.headers, rotated.body, now)).toEqual({ ok: true });
    expect(verifyWebhook(secret, rotated.headers, rotated.body, now)).toEqual({ ok: true });
  });

  it('refuses another secret, a changed body, a stale timestamp and missing headers, saying why', () => {
    const secret = newSigningSecret();
    const { headers, body } = delivery(secret, now);
    expect(verifyWebhook(newSigningSecret(), headers, body, now)).toEqual({
      ok: false,
      reason: expect.stringMatching(/no signature matches/),
    });
    expect(verifyWebhook(secret, headers, Buffer.concat([body, Buffer.from('x')]), now).ok).toBe(false);
    expect(verifyWebhook(secret, headers, body, now + 301)).toEqual({ ok: false, reason: expect.stringMatching(/more than 300 s/) });
    expect(verifyWebhook(secret, headers, body, now + 301, 600)).toEqual({ ok: true });
    expect(verifyWebhook(secret, { ...headers, 'webhook-signature': undefined }, body, now)).toEqual({
      ok: false,
      reason: expect.stringMatching(/missing/),
    });
    expect(verifyWebhook(secret, { ...headers, 'webhook-timestamp': '12a' }, body, now).ok).toBe(false);
  });
});
