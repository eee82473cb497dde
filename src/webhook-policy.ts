/**
 * Webhook policy: the rules of a subscription's delivery that both sides read. The subscriptions
 * service applies them to what it stores (defaults, bounds, secrets, consent to a sink's answer);
 * delivery applies them while it sends. Plain functions and constants that import neither
 * `subscriptions/` nor `delivery/`, so subscriptions depend on no part of delivery, and delivery on
 * subscription types only.
 */
import { randomBytes } from 'node:crypto';

// ---- Retry and auto-disable ----

export interface RetryPolicy {
  maxAttempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
  multiplier: number;
  /** Fraction of the delay randomised either way: 0.2 gives ±20 %. */
  jitter: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 10, initialDelayMs: 1000, maxDelayMs: 300_000, multiplier: 2, jitter: 0.2 };

/** `delivery.disableAfterFailingMs` when a subscription does not give it: 5 days, as Svix. */
export const DEFAULT_DISABLE_AFTER_FAILING_MS = 432_000_000;

// ---- Rate limits ----

/** The rates a subscription may have: one attempt a day to 100,000 a second. */
export const MIN_RATE_PER_SECOND = 1 / 86_400;
export const MAX_RATE_PER_SECOND = 100_000;

// ---- Signing secrets ----

export const SIGNING_SECRET_PREFIX = 'whsec_';

/** A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes. */
export function newSigningSecret(): string {
  return SIGNING_SECRET_PREFIX + randomBytes(32).toString('base64');
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

// ---- The CloudEvents webhook validation handshake ----
/*
 * The validation handshake (abuse protection), as pure functions: the `OPTIONS` request's headers,
 * and what an answer (or a callback request) means.
 * @see https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/http-webhook.md#4-abuse-protection
 */

/**
 * `WebHook-Request-Origin`: the host of `HERALD_PUBLIC_URL`, without its port (the spec asks for
 * "a DNS expression that identifies the sending system"). IPv6 literals keep their brackets.
 */
export function requestOrigin(publicUrl: string): string {
  return new URL(publicUrl).hostname;
}

/**
 * `WebHook-Request-Rate`: the rate limit in requests per minute, rounded up (a positive integer, as
 * the spec requires), so Herald never asks for less than it may send. Absent without a rate limit.
 */
export function requestRatePerMinute(perSecond: number | undefined): number | undefined {
  return perSecond === undefined ? undefined : Math.max(1, Math.ceil(perSecond * 60 - 1e-9));
}

/**
 * A sink URI whose query (from its first `?`, before any fragment) names `access_token` (http-webhook §3.2). The
 * first `?` only: `[^#]*\?` tried every `?` with every `&` after it, 25 ms a test of an 8,192-character sink.
 */
const ACCESS_TOKEN = /^[^#?]*\?(?:[^#]*&)?access_token=/;

/**
 * Whether requests to this sink carry their token in the URI's `access_token` parameter: "Clients using the URI
 * Query Parameter method SHOULD also send a Cache-Control header containing the no-store option" (http-webhook §3.2).
 */
export function carriesAccessToken(sink: string): boolean {
  return ACCESS_TOKEN.test(sink);
}

/**
 * The sink as log lines show it: the value of every `access_token` parameter of its query (http-webhook §3.2, a
 * credential) and the password of user info (refused now, but a sink stored before that kept it) read `***`. The
 * API shows a sink whole to those allowed to read it; a log goes wherever the operator ships it.
 */
export function sinkForLog(sink: string): string {
  const fragment = sink.indexOf('#');
  const head = fragment === -1 ? sink : sink.slice(0, fragment);
  const q = head.indexOf('?');
  const beforeQuery = (q === -1 ? head : head.slice(0, q)).replace(/^([a-z][a-z0-9+.-]*:\/\/[^/@:]*):[^/@]*@/i, '$1:***@');
  const query = q === -1 ? '' : head.slice(q).replace(/([?&]access_token=)[^&]*/g, '$1***');
  return beforeQuery + query + (fragment === -1 ? '' : sink.slice(fragment));
}

/** The headers of the validation request (names in lower case); sent to the sink's URI, `no-store` as its deliveries. */
export function handshakeHeaders(input: { origin: string; perSecond?: number; callbackUrl: string; sink: string }): Record<string, string> {
  const headers: Record<string, string> = {
    'webhook-request-origin': input.origin,
    'webhook-request-callback': input.callbackUrl,
  };
  const rate = requestRatePerMinute(input.perSecond);
  if (rate !== undefined) headers['webhook-request-rate'] = String(rate);
  if (carriesAccessToken(input.sink)) headers['cache-control'] = 'no-store';
  return headers;
}

type HeaderValue = string | string[] | undefined;
const first = (v: HeaderValue): string | undefined => (Array.isArray(v) ? v[0] : v)?.trim();

/**
 * What `WebHook-Allowed-Rate` grants: `{ perSecond }` for a positive number of requests per minute
 * (÷ 60, fractions kept), `null` for `*` (no limit), `undefined` when absent or not a positive number
 * (the current rate limit is kept).
 */
export function allowedRate(value: HeaderValue): { perSecond: number } | null | undefined {
  const raw = first(value);
  if (raw === undefined || raw === '') return undefined;
  if (raw === '*') return null;
  if (!/^\d+(\.\d+)?$/.test(raw)) return undefined;
  const perSecond = Number(raw) / 60;
  // Only a rate the API itself would accept (one a day to 100,000 a second); anything else is ignored.
  return perSecond >= MIN_RATE_PER_SECOND && perSecond <= MAX_RATE_PER_SECOND ? { perSecond } : undefined;
}

/**
 * Consent: `WebHook-Allowed-Origin` equal to `origin` (case-insensitive, as DNS names are) or `*`.
 * The status code alone never counts.
 */
export function grantsOrigin(headers: Record<string, HeaderValue>, origin: string): boolean {
  const allowed = first(headers['webhook-allowed-origin']);
  return allowed === '*' || (allowed !== undefined && allowed.toLowerCase() === origin.toLowerCase());
}

/**
 * Consent by the handshake's callback URL (http-webhook §4.1.3): the call itself grants, since the
 * unguessable URL went only to the sink and "can be performed manually using a browser client",
 * which cannot add headers. A `WebHook-Allowed-Origin` naming another origin is not consent.
 */
export function callbackGrants(headers: Record<string, HeaderValue>, origin: string): boolean {
  return first(headers['webhook-allowed-origin']) === undefined || grantsOrigin(headers, origin);
}

export type HandshakeVerdict =
  | { kind: 'consent'; rateLimit: { perSecond: number } | null | undefined }
  /** A 2xx without consent: wait for the callback (until the deadline). */
  | { kind: 'wait' }
  | { kind: 'refused'; reason: string };

/** What the answer to the `OPTIONS` request means; `status` null: no answer (the error says why). */
export function judgeHandshake(
  answer: { status: number | null; headers?: Record<string, HeaderValue>; error?: string },
  origin: string,
): HandshakeVerdict {
  if (answer.status === null)
    return { kind: 'refused', reason: `no answer to the validation request: ${answer.error ?? 'request failed'}` };
  const headers = answer.headers ?? {};
  if (answer.status >= 200 && answer.status < 300) {
    if (grantsOrigin(headers, origin)) return { kind: 'consent', rateLimit: allowedRate(headers['webhook-allowed-rate']) };
    return { kind: 'wait' };
  }
  return { kind: 'refused', reason: `the validation request was answered ${answer.status}` };
}
