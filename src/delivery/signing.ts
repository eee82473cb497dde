import { createHmac, randomBytes } from 'node:crypto';

const SECRET_PREFIX = 'whsec_';

/** A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes. */
export function newSigningSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString('base64');
}

/**
 * `webhook-signature` value: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`
 * keyed with the secret's decoded bytes.
 * @see standard-webhooks/spec/standard-webhooks.md (Signature scheme)
 */
export function signWebhook(secret: string, webhookId: string, timestampSeconds: number, body: Buffer): string {
  const key = Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
  const mac = createHmac('sha256', key);
  mac.update(`${webhookId}.${timestampSeconds}.`);
  mac.update(body);
  return `v1,${mac.digest('base64')}`;
}

/**
 * The previous secret while its rotation overlap lasts (`nowMs` before `previousSecretExpiresAt`),
 * else null. During the overlap a delivery carries both signatures, new first.
 */
export function previousSecretAt(
  s: { previousSecret: string | null; previousSecretExpiresAt: number | null },
  nowMs: number,
): string | null {
  return s.previousSecret !== null && s.previousSecretExpiresAt !== null && nowMs < s.previousSecretExpiresAt ? s.previousSecret : null;
}
