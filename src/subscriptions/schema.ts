import { z } from 'zod';
import { DEFAULT_DISABLE_AFTER_FAILING_MS, DEFAULT_RETRY, MAX_RATE_PER_SECOND, MIN_RATE_PER_SECOND } from '../webhook-policy';
import { AppError } from '../errors';
import { isUriReference } from '../cloudevents/validate';

const ms = (min: number, max: number) => z.number().int().min(min).max(max);

const retryShape = {
  maxAttempts: z.number().int().min(1).max(1000),
  initialDelayMs: ms(0, 86_400_000),
  maxDelayMs: ms(0, 7 * 86_400_000),
  multiplier: z.number().min(1).max(100),
  jitter: z.number().min(0).max(1),
};

export const retrySchema = z
  .object({
    maxAttempts: retryShape.maxAttempts.default(DEFAULT_RETRY.maxAttempts),
    initialDelayMs: retryShape.initialDelayMs.default(DEFAULT_RETRY.initialDelayMs),
    maxDelayMs: retryShape.maxDelayMs.default(DEFAULT_RETRY.maxDelayMs),
    multiplier: retryShape.multiplier.default(DEFAULT_RETRY.multiplier),
    jitter: retryShape.jitter.default(DEFAULT_RETRY.jitter),
  })
  .strict();

const deliveryShape = {
  format: z.enum(['binary', 'structured']),
  ordering: z.enum(['partition', 'none']),
  maxInFlight: z.number().int().min(1).max(1024),
  timeoutMs: ms(10, 300_000),
  ackMode: z.enum(['auto', 'manual']),
  ackDeadlineMs: ms(10, 86_400_000),
  /** Auto-disable (issue 12 §5): pause with reason `failing` after every attempt has failed this long; 0 = never. */
  disableAfterFailingMs: ms(0, 365 * 86_400_000),
};

export const MAX_DELIVERY_HEADERS = 10;
/** How a header value is shown (values are never returned), and, in a PATCH, "keep the stored value". */
export const MASKED_HEADER_VALUE = '***';
/** An HTTP field name (RFC 9110 §5.6.2 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
/** A field value sent as given: visible ASCII with inner spaces and tabs, no leading or trailing whitespace. */
const HEADER_VALUE = /^(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?$/;
const RESERVED_PREFIXES = ['webhook-', 'herald-', 'ce-'];
/**
 * Set by Herald on every delivery, or by the HTTP client. The last five are not in the issue's list:
 * undici refuses to send them (every attempt would fail), so they are refused here instead.
 */
const RESERVED_NAMES = new Set([
  'traceparent',
  'tracestate',
  'content-type',
  'content-length',
  'host',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
  'expect',
]);

/**
 * `delivery.headers`: extra request headers sent with every delivery (e.g. `authorization`). Names
 * are HTTP tokens, compared and stored in lower case; Herald's own names are refused.
 */
/** A `__proto__` key would be dropped by the record's plain output object: refused while it is still there. */
const noProtoKey = (value: unknown, ctx: z.core.$RefinementCtx) => {
  if (typeof value === 'object' && value !== null && Object.hasOwn(value, '__proto__')) {
    ctx.addIssue({ code: 'custom', message: '__proto__ is not accepted as a header name', path: ['__proto__'], input: value });
  }
  return value;
};

const headersSchema = z.preprocess(
  noProtoKey,
  z
    .record(z.string(), z.string().max(4096))
    .superRefine((headers, ctx) => {
      const names = Object.keys(headers);
      if (names.length > MAX_DELIVERY_HEADERS) ctx.addIssue({ code: 'custom', message: `at most ${MAX_DELIVERY_HEADERS} headers` });
      const seen = new Set<string>();
      for (const name of names) {
        const lower = name.toLowerCase();
        const problem = !HEADER_NAME.test(name)
          ? "a header name must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)"
          : RESERVED_NAMES.has(lower) || RESERVED_PREFIXES.some((p) => lower.startsWith(p))
            ? `${lower} is set by Herald (webhook-*, herald-*, ce-*, traceparent, tracestate, content-type, content-length, host and hop-by-hop headers cannot be given)`
            : seen.has(lower)
              ? `${lower} is given twice (header names are case-insensitive)`
              : !HEADER_VALUE.test(headers[name]!)
                ? 'a header value must be visible ASCII, with spaces or tabs only between other characters'
                : undefined;
        if (problem) ctx.addIssue({ code: 'custom', message: problem, path: [name] });
        seen.add(lower);
      }
    })
    .transform((headers) => Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]))),
);

/**
 * Refused in headers a request gives, though a subscription that stored one before keeps it (and sends
 * it): `content-*` fields that describe a body Herald writes and signs itself (a receiver that believes
 * `content-encoding: gzip` fails every delivery), and the hop-by-hop `te`, `trailer` and `proxy-*`,
 * which are meant for the next hop, not the receiver.
 */
const REFUSED_GIVEN = new Set([
  'content-encoding',
  'content-range',
  'content-md5',
  'content-digest',
  'repr-digest',
  'digest',
  'te',
  'trailer',
]);
const refusedGiven = (lower: string) => REFUSED_GIVEN.has(lower) || lower.startsWith('proxy-');

/** `delivery.headers` as a create or a PATCH gives them: {@link headersSchema}, and none of {@link REFUSED_GIVEN}. */
const givenHeadersSchema = headersSchema.superRefine((headers, ctx) => {
  for (const name of Object.keys(headers).filter(refusedGiven)) {
    const message = `${name} cannot be given: it describes the body Herald writes, or is meant for a proxy (content-encoding, content-range, content-md5, content-digest, repr-digest, digest, te, trailer and proxy-* headers)`;
    ctx.addIssue({ code: 'custom', message, path: [name] });
  }
});

/**
 * `delivery.rateLimit`: at most `perSecond` attempts a second (fractions allowed, e.g. 0.5 for one every
 * two seconds), over all partitions. Absent: no limit. A PATCH with `rateLimit: null` removes it.
 */
export const rateLimitSchema = z
  .object({
    perSecond: z
      .number()
      .min(MIN_RATE_PER_SECOND, 'must be at least one a day (1/86400, about 0.0000116 per second)')
      .max(MAX_RATE_PER_SECOND),
  })
  .strict();

export const deliverySchema = z
  .object({
    format: deliveryShape.format.default('binary'),
    ordering: deliveryShape.ordering.default('partition'),
    maxInFlight: deliveryShape.maxInFlight.default(16),
    timeoutMs: deliveryShape.timeoutMs.default(10_000),
    ackMode: deliveryShape.ackMode.default('auto'),
    ackDeadlineMs: deliveryShape.ackDeadlineMs.default(30_000),
    disableAfterFailingMs: deliveryShape.disableAfterFailingMs.default(DEFAULT_DISABLE_AFTER_FAILING_MS),
    retry: retrySchema.prefault({}),
    headers: headersSchema.optional(),
    rateLimit: rateLimitSchema.optional(),
  })
  .strict();

/**
 * Partial changes carry no defaults (zod 4 applies a default even inside
 * `.partial()`), so an absent field stays absent and `mergeDelivery` keeps the
 * current value instead of resetting it.
 */
const retryChangeSchema = z.object(retryShape).partial().strict();
const deliveryChangeSchema = z
  .object({ ...deliveryShape, retry: retryChangeSchema, headers: givenHeadersSchema, rateLimit: rateLimitSchema.nullable() })
  .partial()
  .strict();

export type DeliveryOptions = z.output<typeof deliverySchema>;

const DELIVERY_KEYS = new Set(Object.keys(deliveryChangeSchema.shape));

/**
 * The message of unknown keys at the top level of a create or PATCH: zod's, and where a delivery
 * option given there goes (`delivery.ackMode`). Create takes `ackMode` and `retry` at the top level
 * too, so only the others are ever named there.
 */
const topLevelKeys = (issue: z.core.$ZodRawIssue): string | undefined => {
  if (issue.code !== 'unrecognized_keys') return undefined;
  const keys = issue.keys;
  const message = `Unrecognized key${keys.length === 1 ? '' : 's'}: ${keys.map((k) => JSON.stringify(k)).join(', ')}`;
  const delivery = keys.filter((k) => DELIVERY_KEYS.has(k));
  if (delivery.length === 0) return message;
  return `${message}; delivery options go under \`delivery\` (${delivery.map((k) => `delivery.${k}`).join(', ')})`;
};

/** Longer sinks are refused: every list of subscriptions carries them. */
export const MAX_SINK_LENGTH = 8192;

/**
 * An absolute http(s) URL whose port, if given, can be connected to (1–65535; not 0), without user
 * info (`user:pass@`, which would be dropped: credentials go in `delivery.headers`).
 */
export const sinkSchema = z
  .string()
  .max(MAX_SINK_LENGTH, `sink must be at most ${MAX_SINK_LENGTH} characters`)
  // URL parsing drops control characters and reads `\` as `/`: `http://\\host` would pass as `http://host`.
  .refine(
    (sink) => !sink.includes('\\') && ![...sink].some((c) => c <= '\x1f' || c === '\x7f'),
    'sink must not contain a backslash or control characters',
  )
  .pipe(z.url({ protocol: /^https?$/, error: 'sink must be an absolute http(s) URL' }))
  // WHATWG URL parsing takes `http:///host/` as `http://host/`; an http URI with an empty host is not one (RFC 9110 §4.2.1).
  .refine(
    (sink) => !/^https?:\/\//i.test(sink) || !URL.canParse(sink) || /^https?:\/\/[^/?#]/i.test(sink),
    'sink must name a host after the scheme (http://host/…)',
  )
  // An unparsable URL has already failed above; only its own error is reported then.
  .refine((sink) => !URL.canParse(sink) || new URL(sink).port !== '0', 'sink port must be between 1 and 65535')
  .refine(
    (sink) => !URL.canParse(sink) || (new URL(sink).username === '' && new URL(sink).password === ''),
    'sink must not carry user info (user:password@); send credentials with delivery.headers',
  )
  .refine((sink) => !/%(?![0-9A-Fa-f]{2})/.test(sink), 'sink has a % that is not followed by two hex digits')
  .transform(uriOfSink)
  // Again as stored: percent-encoding an IRI can make it several times longer.
  .refine((sink) => sink.length <= MAX_SINK_LENGTH, `sink must be at most ${MAX_SINK_LENGTH} characters as a URI`);

/**
 * An IRI (`http://ü.example/`, a space in the path) as the URI it means, so every answer carries a URI
 * (`format: uri`); a sink that is already one is kept as given. Also for sinks an older version stored
 * as given (upgrade probe: served as IRIs), when they are shown.
 */
export function uriOfSink(sink: string): string {
  return isUriReference(sink) || !URL.canParse(sink) ? sink : new URL(sink).href;
}

/**
 * Create request. `ackMode` and `retry` are also accepted at the top level
 * (as some clients send them) and folded into `delivery`.
 */
export const createSubscriptionSchema = z
  .object(
    {
      sink: sinkSchema,
      filters: z.array(z.unknown()).max(64).default([]),
      delivery: deliveryChangeSchema.default({}),
      startAt: z.enum(['latest', 'earliest']).default('latest'),
      /** `cloudevents`: the sink must consent (CloudEvents http-webhook §4 handshake) before any delivery. */
      validation: z.enum(['none', 'cloudevents']).default('none'),
      ackMode: deliveryShape.ackMode.optional(),
      retry: retryChangeSchema.optional(),
    },
    { error: topLevelKeys },
  )
  .strict();

/** A create request, validated (defaults applied): what `SubscriptionsService.create` takes. */
export type CreateSubscriptionInput = z.output<typeof createSubscriptionSchema>;

export const patchSubscriptionSchema = z
  .object(
    {
      sink: sinkSchema.optional(),
      filters: z.array(z.unknown()).max(64).optional(),
      delivery: deliveryChangeSchema.optional(),
    },
    { error: topLevelKeys },
  )
  .strict();

/** A PATCH, validated: what `SubscriptionsService.patch` takes. */
export type PatchSubscriptionInput = z.output<typeof patchSubscriptionSchema>;

/** `POST /subscriptions/{id}/rotate-secret`: how long the replaced secret keeps signing (default one day, at most 7). */
export const rotateSecretSchema = z
  .object({
    overlapSeconds: z
      .number()
      .int()
      .min(0)
      .max(7 * 86_400)
      .default(86_400),
  })
  .strict();
export type RotateSecretInput = z.output<typeof rotateSecretSchema>;

/**
 * Headers a create or PATCH gives replace the stored set, except that a value of `"***"` keeps the
 * stored value of that name. `"***"` for a name with no stored value is a 400 naming it.
 */
function resolveHeaders(current: Record<string, string> | undefined, given: Record<string, string>): Record<string, string> {
  // No prototype: a header named `__proto__` is a name like any other, not a prototype assignment.
  const out: Record<string, string> = Object.create(null);
  for (const [name, value] of Object.entries(given)) {
    if (value !== MASKED_HEADER_VALUE) out[name] = value;
    else if (current !== undefined && Object.hasOwn(current, name)) out[name] = current[name]!;
    else {
      const message = `"${MASKED_HEADER_VALUE}" keeps a stored value, but there is no stored header ${name}`;
      throw new AppError('invalid_request', `the delivery headers are not valid: ${message}`, {
        details: [{ attribute: `delivery.headers.${name}`, message }],
      });
    }
  }
  return out;
}

/**
 * Stored header values (credentials, typically) go only to the origin they were given for: a PATCH that
 * moves the sink to another scheme, host or port must give `delivery.headers` again, values in full
 * (`{}` drops them), since no one can read them back to check where they would go. Browsers drop
 * `Authorization` on a redirect to another origin for the same reason.
 * @throws AppError `invalid_request` naming `delivery.headers` (or the header given as `"***"`)
 */
export function checkHeadersFollowSink(
  from: { sink: string; headers: Record<string, string> | undefined },
  to: { sink: string; headers: Record<string, string> | undefined },
): void {
  if (from.headers === undefined || Object.keys(from.headers).length === 0) return;
  const [before, after] = [new URL(from.sink).origin, new URL(to.sink).origin];
  if (before === after) return;
  const why = `the sink moves from ${before} to ${after}, and stored header values are sent only to the origin they were given for`;
  if (to.headers === undefined) {
    const message = `${why}: give delivery.headers again with their values (${Object.keys(from.headers).join(', ')}), or {} to drop them`;
    throw new AppError('invalid_request', `the delivery headers are not valid: ${message}`, {
      details: [{ attribute: 'delivery.headers', message }],
    });
  }
  const kept = Object.keys(to.headers).filter((name) => to.headers![name] === MASKED_HEADER_VALUE);
  if (kept.length === 0) return;
  const details = kept.map((name) => ({
    attribute: `delivery.headers.${name}`,
    message: `${why}: "${MASKED_HEADER_VALUE}" cannot keep it; give the value again`,
  }));
  throw new AppError('invalid_request', `the delivery headers are not valid: ${details[0]!.message}`, { details });
}

/** Delivery options as the API shows them: header values are never returned. */
export function maskDelivery(stored: DeliveryOptions): DeliveryOptions {
  // Subscriptions stored before auto-disable existed have no value: they use (and show) the default.
  const delivery =
    stored.disableAfterFailingMs === undefined ? { ...stored, disableAfterFailingMs: DEFAULT_DISABLE_AFTER_FAILING_MS } : stored;
  if (!delivery.headers) return delivery;
  return { ...delivery, headers: Object.fromEntries(Object.keys(delivery.headers).map((name) => [name, MASKED_HEADER_VALUE])) };
}

/**
 * Folds a (partial) delivery change over the current options and checks the result as a whole.
 * `headers`, when given, replace the stored set (see `resolveHeaders`); none at all is no `headers`.
 */
export function mergeDelivery(
  current: Partial<DeliveryOptions> | undefined,
  change: Record<string, unknown> | undefined,
  extra: { ackMode?: string; retry?: Record<string, unknown> } = {},
): unknown {
  const base = (current ?? {}) as Record<string, unknown>;
  const next = { ...base, ...(change ?? {}) };
  if (extra.ackMode !== undefined) next.ackMode = extra.ackMode;
  const retry = { ...((base.retry as object) ?? {}), ...((change?.retry as object) ?? {}), ...(extra.retry ?? {}) };
  next.retry = retry;
  if (next.rateLimit === null) delete next.rateLimit;
  if (change?.headers !== undefined) {
    const headers = resolveHeaders(base.headers as Record<string, string> | undefined, change.headers as Record<string, string>);
    if (Object.keys(headers).length > 0) next.headers = headers;
    else delete next.headers;
  }
  return next;
}

/**
 * `mergeDelivery`, then the result checked as a whole (as the API checks a body, with the same
 * problem): the delivery options to store.
 * @throws AppError `invalid_request` "the delivery options is not valid" listing each bad field, or as `mergeDelivery`
 */
export function applyDeliveryChange(...args: Parameters<typeof mergeDelivery>): DeliveryOptions {
  const parsed = deliverySchema.safeParse(mergeDelivery(...args));
  if (parsed.success) return parsed.data;
  throw new AppError('invalid_request', 'the delivery options is not valid', {
    details: parsed.error.issues.map((issue) => ({
      attribute: issue.path.length > 0 ? issue.path.join('.') : undefined,
      message: issue.message,
    })),
  });
}
