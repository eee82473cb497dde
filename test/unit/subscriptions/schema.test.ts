import { DEFAULT_RETRY } from '../../../src/delivery/retry';
import {
  createSubscriptionSchema,
  deliverySchema,
  mergeDelivery,
  patchSubscriptionSchema,
  sinkSchema,
} from '../../../src/subscriptions/schema';
import { seekSchema } from '../../../src/subscriptions/seek-schema';

/** Subscription request bodies: defaults, folding of top-level options, and refusal of anything unknown. */

const DEFAULT_DELIVERY = {
  format: 'binary',
  ordering: 'partition',
  maxInFlight: 16,
  timeoutMs: 10_000,
  ackMode: 'auto',
  ackDeadlineMs: 30_000,
  disableAfterFailingMs: 432_000_000,
  retry: { maxAttempts: 10, initialDelayMs: 1000, maxDelayMs: 300_000, multiplier: 2, jitter: 0.2 },
};

/** What the service does on create: parse the body, then fold and default the delivery options. */
function createDelivery(body: unknown) {
  const input = createSubscriptionSchema.parse(body);
  return deliverySchema.parse(mergeDelivery(undefined, input.delivery, { ackMode: input.ackMode, retry: input.retry }));
}

describe('delivery options', () => {
  it('has the documented defaults', () => {
    expect(deliverySchema.parse({})).toEqual(DEFAULT_DELIVERY);
    expect(DEFAULT_RETRY).toEqual(DEFAULT_DELIVERY.retry);
    expect(createDelivery({ sink: 'http://example.com/hook' })).toEqual(DEFAULT_DELIVERY);
  });

  it('keeps the given options and defaults the rest, retry included', () => {
    const delivery = createDelivery({
      sink: 'http://example.com/hook',
      delivery: { format: 'structured', ordering: 'none', maxInFlight: 4, retry: { maxAttempts: 3 } },
    });
    expect(delivery).toEqual({
      ...DEFAULT_DELIVERY,
      format: 'structured',
      ordering: 'none',
      maxInFlight: 4,
      retry: { ...DEFAULT_DELIVERY.retry, maxAttempts: 3 },
    });
  });

  it('accepts ackMode and retry at the top level of a create request, folded into delivery', () => {
    const delivery = createDelivery({ sink: 'https://example.com/hook', ackMode: 'manual', retry: { initialDelayMs: 10, jitter: 0 } });
    expect(delivery.ackMode).toBe('manual');
    expect(delivery.retry).toEqual({ ...DEFAULT_DELIVERY.retry, initialDelayMs: 10, jitter: 0 });
  });

  it('folds top-level retry over delivery.retry field by field', () => {
    const delivery = createDelivery({
      sink: 'http://example.com/hook',
      delivery: { retry: { initialDelayMs: 10 } },
      retry: { maxAttempts: 3 },
    });
    expect(delivery.retry).toEqual({ ...DEFAULT_DELIVERY.retry, initialDelayMs: 10, maxAttempts: 3 });
  });

  it.each([
    ['an unknown format', { format: 'xml' }],
    ['an unknown ordering', { ordering: 'global' }],
    ['an unknown ackMode', { ackMode: 'sometimes' }],
    ['maxInFlight 0', { maxInFlight: 0 }],
    ['a fractional maxInFlight', { maxInFlight: 1.5 }],
    ['a negative timeout', { timeoutMs: -1 }],
    ['a timeout as a string', { timeoutMs: '500' }],
    ['maxAttempts 0', { retry: { maxAttempts: 0 } }],
    ['a multiplier below 1', { retry: { multiplier: 0.5 } }],
    ['jitter above 1', { retry: { jitter: 1.5 } }],
    ['an unknown delivery field', { colour: 'blue' }],
    ['an unknown retry field', { retry: { backoff: 'linear' } }],
  ])('refuses %s', (_name, delivery) => {
    expect(deliverySchema.safeParse(delivery).success).toBe(false);
    expect(createSubscriptionSchema.safeParse({ sink: 'http://example.com/hook', delivery }).success).toBe(false);
  });
});

describe('create request', () => {
  it('defaults startAt to latest and filters to none', () => {
    const input = createSubscriptionSchema.parse({ sink: 'http://example.com/hook' });
    expect(input.startAt).toBe('latest');
    expect(input.filters).toEqual([]);
    expect(createSubscriptionSchema.parse({ sink: 'http://example.com/hook', startAt: 'earliest' }).startAt).toBe('earliest');
  });

  it.each([
    ['an unknown field', { sink: 'http://example.com/hook', name: 'orders' }],
    ['no sink', {}],
    ['an unknown startAt', { sink: 'http://example.com/hook', startAt: 'middle' }],
    ['filters that are not a list', { sink: 'http://example.com/hook', filters: { exact: { type: 'x' } } }],
    ['an unknown top-level ackMode', { sink: 'http://example.com/hook', ackMode: 'never' }],
    ['an unknown top-level retry field', { sink: 'http://example.com/hook', retry: { tries: 3 } }],
  ])('refuses %s', (_name, body) => {
    expect(createSubscriptionSchema.safeParse(body).success).toBe(false);
  });
});

describe('sink', () => {
  it.each(['http://example.com/hook', 'https://example.com:8443/a/b?x=1', 'http://127.0.0.1:9/hook', 'http://[::1]:8080/'])(
    'accepts %s',
    (sink) => {
      expect(sinkSchema.parse(sink)).toBe(sink); // kept as given
    },
  );

  // Was: stored as given, and every later answer about the subscription broke its `format: uri`.
  it.each([
    ['http://ü.example/hook', 'http://xn--tda.example/hook'],
    ['https://example.com/a b?q=ü', 'https://example.com/a%20b?q=%C3%BC'],
  ])('keeps the IRI %s as the URI it means (%s)', (sink, uri) => {
    expect(sinkSchema.parse(sink)).toBe(uri);
  });

  it.each([
    'ftp://example.com/hook',
    'ws://example.com/hook',
    '/hook',
    'example.com/hook',
    'not a url',
    '',
    'mailto:ops@example.com',
    42,
    'http://127.0.0.1:0/hook',
    'https://example.com:000/hook',
    'http://example.com:65536/',
    'http://example.com/%zz',
    'http:///127.0.0.1:9/hook',
    'HTTPS:///example.com',
    `http://example.com/${'a'.repeat(8200)}`,
    // Re-probe: URL parsing took these as http://127.0.0.1:9/x, and an IRI grew past the limit once encoded.
    'http://\\127.0.0.1:9/x',
    'http://\n127.0.0.1:9/x',
    `http://example.com/${'€'.repeat(3000)}`,
  ])('refuses %s', (sink) => {
    expect(sinkSchema.safeParse(sink).success).toBe(false);
  });
});

describe('update request', () => {
  it('accepts any subset of sink, filters and delivery', () => {
    expect(patchSubscriptionSchema.safeParse({}).success).toBe(true);
    expect(patchSubscriptionSchema.safeParse({ sink: 'https://example.com/new' }).success).toBe(true);
    expect(patchSubscriptionSchema.safeParse({ filters: [{ exact: { type: 'x' } }] }).success).toBe(true);
    expect(patchSubscriptionSchema.safeParse({ delivery: { timeoutMs: 500, retry: { maxAttempts: 2 } } }).success).toBe(true);
  });

  it.each([
    ['an unknown field', { name: 'x' }],
    ['state', { state: 'paused' }],
    ['startAt', { startAt: 'earliest' }],
    ['a bad sink', { sink: 'ftp://example.com' }],
    ['an unknown delivery field', { delivery: { colour: 'blue' } }],
  ])('refuses %s', (_name, body) => {
    expect(patchSubscriptionSchema.safeParse(body).success).toBe(false);
  });

  it('leaves out what an update does not name, so the current values are kept', () => {
    const current = deliverySchema.parse({
      format: 'structured',
      ackMode: 'manual',
      ordering: 'none',
      retry: { maxAttempts: 3, initialDelayMs: 10 },
    });
    const change = patchSubscriptionSchema.parse({ delivery: { timeoutMs: 500, retry: { maxDelayMs: 100 } } }).delivery;
    expect(change).toEqual({ timeoutMs: 500, retry: { maxDelayMs: 100 } });
    expect(deliverySchema.parse(mergeDelivery(current, change))).toEqual({
      ...current,
      timeoutMs: 500,
      retry: { ...current.retry, maxDelayMs: 100 },
    });
  });

  it('merges a partial delivery change over the current options, retry field by field', () => {
    const current = deliverySchema.parse({ format: 'structured', retry: { maxAttempts: 3, initialDelayMs: 10 } });
    const merged = deliverySchema.parse(mergeDelivery(current, { timeoutMs: 500, retry: { maxDelayMs: 100 } }));
    expect(merged).toEqual({
      ...DEFAULT_DELIVERY,
      format: 'structured',
      timeoutMs: 500,
      retry: { ...DEFAULT_DELIVERY.retry, maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 100 },
    });
  });
});

describe('seek', () => {
  // Was: a 400 for both, though both are RFC 3339 date-times (and event `time` accepts them).
  it.each([
    ['2026-12-31T23:59:60Z', Date.parse('2027-01-01T00:00:00Z')],
    ['2026-12-01t10:00:00z', Date.parse('2026-12-01T10:00:00Z')],
    ['2026-12-01T10:00:00.250+05:30', Date.parse('2026-12-01T04:30:00.250Z')],
  ])('takes the time %s as epoch ms %d', (time, ms) => {
    expect(seekSchema.parse({ time })).toEqual({ time: ms });
  });

  it.each(['2026-12-01', '2026-12-01T10:00:00', '2026-02-30T00:00:00Z', '2026-12-01T24:00:00Z', 'yesterday'])(
    'refuses the time %s',
    (time) => {
      const parsed = seekSchema.safeParse({ time });
      expect(parsed.success).toBe(false);
      expect(parsed.error?.issues[0]?.message).toBe('time must be an RFC 3339 date-time such as 2026-12-01T10:00:00Z');
    },
  );

  it('names a __proto__ partition as no partition number (probe: dropped, then "must name at least one partition")', () => {
    const parsed = seekSchema.safeParse(JSON.parse('{"offsets":{"__proto__":0}}'));
    expect(parsed.error?.issues).toEqual([expect.objectContaining({ path: ['offsets', '__proto__'], message: 'not a partition number' })]);
  });
});
