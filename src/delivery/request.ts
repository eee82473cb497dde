import { hash } from 'node:crypto';
import { toBinaryMessage, toStructuredMessage } from '../cloudevents/format';
import { charsetOf, mediaType, type CloudEvent } from '../cloudevents/event';
import type { SubscriptionRecord } from '../subscriptions/record';
import { carriesAccessToken, previousSecretAt, requestOrigin } from '../webhook-policy';
import { signWebhook } from './signing';

export interface DeliveryRequestInput {
  subscriptionId: string;
  secret: string;
  /** The secret a rotation replaced, while its overlap lasts: signed too, after the new one. */
  previousSecret?: string | null;
  /** The subscription's `delivery.headers` (names lower-case; Herald's own names are refused at the API). */
  headers?: Readonly<Record<string, string>>;
  format: 'binary' | 'structured';
  partition: number;
  offset: number;
  /** Seek generation of the partition's position (issue 12 §2); 0 or absent: never sought. */
  seekGeneration?: number;
  previousOffset: number | null;
  attempt: number;
  deliveryId: string;
  ackUrlBase: string;
  redrive: boolean;
  event: CloudEvent;
  nowSeconds: number;
}

/** What one attempt adds to its subscription's fields (`requestFor`). */
export type AttemptFields = Pick<
  DeliveryRequestInput,
  'partition' | 'offset' | 'seekGeneration' | 'previousOffset' | 'attempt' | 'deliveryId' | 'redrive' | 'event'
>;

/**
 * One attempt's request, on either engine: what the subscription gives every request — the secrets
 * signing now (two during a rotation's overlap), its own headers (naming the gateway's origin once
 * the sink consented to a CloudEvents validation handshake, http-webhook §4), its content mode —
 * and the attempt's own fields. The input is one literal, not a spread of the two: built per
 * attempt, a spread copy cost a tenth of the delivery thread.
 */
export function requestFor(sub: SubscriptionRecord, now: number, ackUrlBase: string, a: AttemptFields) {
  return buildDeliveryRequest({
    subscriptionId: sub.id,
    secret: sub.secret,
    previousSecret: previousSecretAt(sub, now),
    headers: extraHeaders(sub, ackUrlBase),
    format: sub.delivery.format,
    partition: a.partition,
    offset: a.offset,
    seekGeneration: a.seekGeneration,
    previousOffset: a.previousOffset,
    attempt: a.attempt,
    deliveryId: a.deliveryId,
    ackUrlBase,
    redrive: a.redrive,
    event: a.event,
    nowSeconds: Math.floor(now / 1000),
  });
}

/**
 * A subscription's own headers, plus `webhook-request-origin` once its sink consented to a CloudEvents validation
 * handshake (http-webhook §4), and `cache-control: no-store` when its sink carries the token in the URI's
 * `access_token` parameter, as http-webhook §3.2 asks of such clients (unless its own headers set one).
 * Built once per headers object, gateway URL and those two.
 */
function extraHeaders(sub: SubscriptionRecord, ackUrlBase: string): Readonly<Record<string, string>> | undefined {
  const own = sub.delivery.headers;
  const origin = sub.validation === 'cloudevents';
  const noStore = carriesAccessToken(sub.sink) && (own === undefined || own['cache-control'] === undefined);
  if (!origin && !noStore) return own;
  const key = `${origin ? 'o' : ''}${noStore ? 'n' : ''} ${ackUrlBase}`;
  const holder = own ?? NO_HEADERS;
  const found = built.get(holder);
  if (found?.key === key) return found.headers;
  const headers: Record<string, string> = { ...own };
  if (origin) headers['webhook-request-origin'] = requestOrigin(ackUrlBase);
  if (noStore) headers['cache-control'] = 'no-store';
  built.set(holder, { key, headers });
  return headers;
}

const built = new WeakMap<object, { key: string; headers: Record<string, string> }>();
const NO_HEADERS = {};

/**
 * Same for every attempt of one event to one subscription, restarts included: derived, not stored.
 * A seek starts a new generation, so a replay gets new ids (a receiver de-duplicating on webhook-id
 * processes it); generation 0 keeps the ids of before seeking existed.
 * @see issue 12 §2
 */
export function webhookIdOf(subscriptionId: string, partition: number, offset: number, generation = 0): string {
  const key = generation === 0 ? `${subscriptionId}:${partition}:${offset}` : `${subscriptionId}:${generation}:${partition}:${offset}`;
  // One-shot: no Hash object per attempt.
  const digest = hash('sha256', key, 'base64url');
  return `msg_${digest.slice(0, 27)}`;
}

/**
 * Headers and body of one delivery attempt: the event in its HTTP binding
 * (binary by default; structured when asked, or when binary mode cannot carry
 * it as it is: see {@link binaryMessageOf}), Standard Webhooks signature
 * headers (two during a rotation overlap), Herald's ordering and ack headers,
 * and the subscription's own `delivery.headers`.
 */
export function buildDeliveryRequest(input: DeliveryRequestInput): { headers: Record<string, string>; body: Buffer } {
  const message = (input.format === 'binary' && binaryMessageOf(input.event)) || messageOf(input.event, 'structured');
  // One headers object, filled in place: a spread copy per delivery was a tenth of delivery CPU.
  const headers: Record<string, string> = {};
  // Set first, so Herald's own headers would win should a name ever collide.
  if (input.headers) for (const name in input.headers) headers[name] = input.headers[name]!;
  for (const [name, value] of message.headers) headers[name] = value;
  const webhookId = webhookIdOf(input.subscriptionId, input.partition, input.offset, input.seekGeneration);
  headers['webhook-id'] = webhookId;
  headers['webhook-timestamp'] = String(input.nowSeconds);
  // Standard Webhooks: several signatures separated by a space; a verifier accepts any one match.
  headers['webhook-signature'] = input.previousSecret
    ? `${signWebhook(input.secret, webhookId, input.nowSeconds, message.body)} ${signWebhook(input.previousSecret, webhookId, input.nowSeconds, message.body)}`
    : signWebhook(input.secret, webhookId, input.nowSeconds, message.body);
  // The distributed tracing extension also travels as W3C headers, so a receiver's tracing middleware joins the trace.
  const { traceparent, tracestate } = input.event.attributes;
  if (isTraceHeaderValue(traceparent)) headers.traceparent = traceparent;
  if (isTraceHeaderValue(tracestate)) headers.tracestate = tracestate;
  headers['herald-subscription-id'] = input.subscriptionId;
  headers['herald-partition'] = String(input.partition);
  headers['herald-offset'] = String(input.offset);
  headers['herald-attempt'] = String(input.attempt);
  headers['herald-delivery-id'] = input.deliveryId;
  headers['herald-ack-url'] = `${input.ackUrlBase}/deliveries/${input.deliveryId}/ack`;
  if (input.previousOffset !== null && !input.redrive) headers['herald-previous-offset'] = String(input.previousOffset);
  if (input.redrive) headers['herald-redelivery'] = 'true';
  return { headers, body: message.body };
}

/**
 * Most bytes of `ce-*` headers a binary delivery carries: past it the event goes structured. Common
 * servers refuse larger header blocks (Node 16 KiB in all, nginx 8 KiB a line) with a 431, which
 * would dead-letter an event the spec says intermediaries must forward (core spec, Size Limits: 64 KiB).
 */
export const BINARY_HEADER_BUDGET = 8 * 1024;

/**
 * The event in binary mode, or undefined when binary mode cannot carry it as it is, so it goes
 * structured: no data or empty data (a webhook request needs a body, and an empty one reads back as
 * no data); bytes without a `datacontenttype` (binary
 * mode would have to invent a Content-Type the event does not have, JSON format §3.1.1); a
 * `datacontenttype` that is not plain ASCII (Content-Type is sent verbatim, and such a value cannot
 * be a header, or not unambiguously); `ce-*` headers past {@link BINARY_HEADER_BUDGET}; text or
 * JSON data (held as characters, not bytes) whose `datacontenttype` names a charset the UTF-8 body
 * would not be in (a receiver decoding `café` as ISO-8859-1 reads `cafÃ©`); a `datacontenttype` of
 * the `application/cloudevents` family, which as a Content-Type makes the message structured or
 * batched mode (binding §3): a receiver would read the data as another event (API probe: the JS SDK
 * read a wrapper's data as the event it held, with that event's source and type, under Herald's signature).
 */
function binaryMessageOf(event: CloudEvent): Message | undefined {
  if (event.data.kind === 'none') return undefined;
  const contentType = event.attributes.datacontenttype;
  if (contentType === undefined ? event.data.kind !== 'json' : !/^[\t\x20-\x7e]*$/.test(String(contentType))) return undefined;
  if (contentType !== undefined && mediaType(String(contentType))!.startsWith('application/cloudevents')) return undefined;
  const message = messageOf(event, 'binary');
  // Empty data (`""`, empty bytes) would be an empty body, which binary mode reads back as no data.
  if (message.body.length === 0) return undefined;
  if (event.data.kind === 'json' && !bodyInCharset(message.body, contentType)) return undefined;
  return message.headerBytes <= BINARY_HEADER_BUDGET ? message : undefined;
}

/** Whether UTF-8 `body` is in the charset `contentType` names: any body when it names none or UTF-8, ASCII bytes for US-ASCII. */
function bodyInCharset(body: Buffer, contentType: unknown): boolean {
  const charset = charsetOf(contentType === undefined ? undefined : String(contentType));
  if (charset === undefined || charset === 'utf-8' || charset === 'utf8') return true;
  if (charset === 'us-ascii' || charset === 'ascii') return body.every((b) => b < 0x80);
  return false;
}

interface Message {
  /** The event's own headers in this mode (`ce-*` and content-type), in the order they are set. */
  headers: readonly (readonly [string, string])[];
  /** Their size on the wire (`name: value\r\n`). */
  headerBytes: number;
  body: Buffer;
}

/** Per decoded event object: its message in each content mode, built on first use. */
const messages = new WeakMap<CloudEvent, { binary?: Message; structured?: Message }>();

/**
 * The event in one content mode, serialised once per event object, not once per attempt or per
 * subscription: the delivery thread's reader hands every subscription the same decoded event (its
 * decoded-record cache), so fan-out and retries sign the same bytes without re-encoding them.
 * Callers must not modify the body (it is shared); signing only reads it.
 */
function messageOf(event: CloudEvent, mode: 'binary' | 'structured'): Message {
  let cached = messages.get(event);
  if (!cached) messages.set(event, (cached = {}));
  const found = cached[mode];
  if (found) return found;
  const built = mode === 'structured' ? toStructuredMessage(event) : toBinaryMessage(event);
  const headers = Object.entries(built.headers);
  // Header values are ASCII here (percent-encoded, or checked above), so length is bytes.
  const headerBytes = headers.reduce((n, [name, value]) => n + name.length + value.length + 4, 0);
  const message: Message = { headers, headerBytes, body: built.body };
  cached[mode] = message;
  return message;
}

/** A value that can be sent as a header as it is: printable ASCII only. */
const TRACE_HEADER_VALUE = /^[\x20-\x7e]*$/;
/**
 * The longest trace value copied to a W3C header. A `traceparent` is 55 characters and W3C Trace Context
 * asks that at least 512 of a `tracestate` be passed on (longer ones may be cut). Ingest checks neither
 * format, so an event may carry kilobytes in them: copied beside their `ce-*` copies, outside the
 * binary header budget, they made a header block receivers refuse with 431, and the event was
 * dead-lettered (API probe). Such values still travel in the event (`ce-*` headers or its JSON).
 */
const TRACE_HEADER_MAX = 512;

function isTraceHeaderValue(value: unknown): value is string {
  return typeof value === 'string' && value.length <= TRACE_HEADER_MAX && TRACE_HEADER_VALUE.test(value);
}

export type Outcome = 'done' | 'await_ack' | 'retry' | 'gone' | 'dead';

/**
 * What an HTTP answer means for the attempt.
 * @see http-webhook.md (202: accepted, not yet processed; 410: stop sending)
 */
export function classifyStatus(status: number, ackMode: 'auto' | 'manual'): Outcome {
  if (status >= 200 && status < 300) return status === 202 || ackMode === 'manual' ? 'await_ack' : 'done';
  if (status === 410) return 'gone';
  if (status === 408 || status === 409 || status === 425 || status === 429 || (status >= 500 && status < 600)) return 'retry';
  return 'dead';
}
