import { createHmac } from 'node:crypto';
import { SIGNING_SECRET_PREFIX } from '../webhook-policy';

/**
 * `webhook-signature` value: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`
 * keyed with the secret's decoded bytes.
 * @see standard-webhooks/spec/standard-webhooks.md (Signature scheme)
 */
export function signWebhook(secret: string, webhookId: string, timestampSeconds: number, body: Buffer): string {
  const mac = createHmac('sha256', keyOf(secret));
  mac.update(`${webhookId}.${timestampSeconds}.`);
  mac.update(body);
  return `v1,${mac.digest('base64')}`;
}

/** Secret → its decoded key bytes: decoded once per secret, not per attempt. */
const keys = new Map<string, Buffer>();
const MAX_CACHED_KEYS = 10_000;

function keyOf(secret: string): Buffer {
  let key = keys.get(secret);
  if (!key) {
    key = Buffer.from(secret.startsWith(SIGNING_SECRET_PREFIX) ? secret.slice(SIGNING_SECRET_PREFIX.length) : secret, 'base64');
    if (keys.size >= MAX_CACHED_KEYS) keys.clear(); // secrets are few (two per subscription at most)
    keys.set(secret, key);
  }
  return key;
}
