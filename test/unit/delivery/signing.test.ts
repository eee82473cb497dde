import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { signWebhook } from '../../../src/delivery/signing';
import { newSigningSecret } from '../../../src/webhook-policy';

/** Standard Webhooks signatures, checked with the reference `standardwebhooks` package. */

const nowSeconds = () => Math.floor(Date.now() / 1000);
const headersFor = (id: string, ts: number, signature: string) => ({
  'webhook-id': id,
  'webhook-timestamp': String(ts),
  'webhook-signature': signature,
});

describe('newSigningSecret', () => {
  it('is whsec_ followed by the base64 of 32 random bytes', () => {
    const secret = newSigningSecret();
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(secret.slice('whsec_'.length), 'base64')).toHaveLength(32);
  });

  it('is different every time', () => {
    const secrets = new Set(Array.from({ length: 200 }, () => newSigningSecret()));
    expect(secrets.size).toBe(200);
  });
});

describe('signWebhook', () => {
  it('produces a v1 signature that standardwebhooks verifies', () => {
    const secret = newSigningSecret();
    const body = JSON.stringify({ specversion: '1.0', id: 'e1', source: '/s', type: 't', data: { ok: true } });
    const ts = nowSeconds();
    const signature = signWebhook(secret, 'msg_1', ts, Buffer.from(body));
    expect(signature).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    expect(new Webhook(secret).verify(body, headersFor('msg_1', ts, signature))).toEqual(JSON.parse(body));
    expect(new Webhook(secret).verify(Buffer.from(body), headersFor('msg_1', ts, signature))).toEqual(JSON.parse(body));
  });

  it('equals the signature standardwebhooks computes, for any id, time and UTF-8 body', () => {
    const secret = newSigningSecret();
    const wh = new Webhook(secret);
    fc.assert(
      fc.property(
        fc.stringMatching(/^msg_[A-Za-z0-9_-]{1,40}$/),
        fc.integer({ min: 0, max: 4_000_000_000 }),
        fc.string({ unit: 'grapheme' }),
        (id, ts, body) => {
          expect(signWebhook(secret, id, ts, Buffer.from(body, 'utf8'))).toBe(wh.sign(id, new Date(ts * 1000), body));
        },
      ),
    );
  });

  it('accepts a secret without the whsec_ prefix as the same key', () => {
    const secret = newSigningSecret();
    const body = Buffer.from('{}');
    expect(signWebhook(secret.slice('whsec_'.length), 'msg_2', 1700000000, body)).toBe(signWebhook(secret, 'msg_2', 1700000000, body));
  });

  it('fails verification for a changed body, id, timestamp or secret', () => {
    const secret = newSigningSecret();
    const body = '{"n":1}';
    const ts = nowSeconds();
    const signature = signWebhook(secret, 'msg_3', ts, Buffer.from(body));
    const wh = new Webhook(secret);
    expect(() => wh.verify(body, headersFor('msg_3', ts, signature))).not.toThrow();
    expect(() => wh.verify('{"n":2}', headersFor('msg_3', ts, signature))).toThrow(WebhookVerificationError);
    expect(() => wh.verify(body, headersFor('msg_4', ts, signature))).toThrow(WebhookVerificationError);
    expect(() => wh.verify(body, headersFor('msg_3', ts - 1, signature))).toThrow(WebhookVerificationError);
    expect(() => new Webhook(newSigningSecret()).verify(body, headersFor('msg_3', ts, signature))).toThrow(WebhookVerificationError);
  });

  it('signs the body bytes exactly, including bytes that are not UTF-8', () => {
    // standardwebhooks decodes payloads as UTF-8 before signing, so it cannot check these; HMAC by hand.
    const secret = newSigningSecret();
    const body = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41]);
    const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
    const expected = createHmac('sha256', key)
      .update(Buffer.concat([Buffer.from('msg_5.1700000000.'), body]))
      .digest('base64');
    expect(signWebhook(secret, 'msg_5', 1700000000, body)).toBe(`v1,${expected}`);
  });
});
