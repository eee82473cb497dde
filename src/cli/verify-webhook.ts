import { createHmac, timingSafeEqual } from 'node:crypto';
import { SIGNING_SECRET_PREFIX } from '../webhook-policy';

type HeaderValue = string | string[] | undefined;

/** Whether a delivery's signature verifies, and why not when it does not. */
export type VerifyResult = { ok: true } | { ok: false; reason: string };

const one = (value: HeaderValue): string | undefined => (Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value);

/**
 * Verifies a Standard Webhooks signature over the raw body: `webhook-signature` holds one or more
 * space-separated `v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with
 * the base64-decoded secret after `whsec_`; any one match verifies (two during a rotation's
 * overlap). A timestamp further than `toleranceSeconds` from now is refused (replay protection).
 * @see https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
 */
export function verifyWebhook(
  secret: string,
  headers: Record<string, HeaderValue>,
  body: Buffer,
  nowSeconds: number,
  toleranceSeconds = 300,
): VerifyResult {
  const id = one(headers['webhook-id']);
  const timestamp = one(headers['webhook-timestamp']);
  const signatures = one(headers['webhook-signature']);
  if (!id || !timestamp || !signatures) return { ok: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature' };
  if (!/^[0-9]+$/.test(timestamp)) return { ok: false, reason: 'webhook-timestamp is not a number of seconds' };
  if (Math.abs(nowSeconds - Number(timestamp)) > toleranceSeconds) {
    return { ok: false, reason: `webhook-timestamp is more than ${toleranceSeconds} s from now (check the clocks)` };
  }
  const key = Buffer.from(secret.startsWith(SIGNING_SECRET_PREFIX) ? secret.slice(SIGNING_SECRET_PREFIX.length) : secret, 'base64');
  // Anyone can sign with an empty key (CLI probe: `listen` verified against '' after a failed create).
  if (key.length === 0) return { ok: false, reason: 'no signing secret to verify against' };
  const expected = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest();
  const matches = signatures.split(' ').some((entry) => {
    const [version, signature] = entry.split(',');
    const given = Buffer.from(signature ?? '', 'base64');
    return version === 'v1' && given.length === expected.length && timingSafeEqual(given, expected);
  });
  return matches ? { ok: true } : { ok: false, reason: 'no signature matches the subscription secret' };
}
