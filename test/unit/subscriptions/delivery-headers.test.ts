import {
  createSubscriptionSchema,
  deliverySchema,
  maskDelivery,
  mergeDelivery,
  patchSubscriptionSchema,
  rotateSecretSchema,
  sinkSchema,
} from '../../../src/subscriptions/schema';
import { AppError } from '../../../src/errors';

/** `delivery.headers` (sink authentication), user info in sinks, and the rotate-secret body. */

const SINK = 'https://example.com/hook';
const issuesOf = (delivery: unknown) => {
  const parsed = createSubscriptionSchema.safeParse({ sink: SINK, delivery });
  return parsed.success ? [] : parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
};

describe('delivery.headers', () => {
  it('accepts up to 10 headers and stores their names in lower case', () => {
    const headers = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`X-Key-${i}`, `v${i}`]));
    expect(issuesOf({ headers })).toEqual([]);
    expect(issuesOf({ headers: { ...headers, Authorization: 'Bearer t' } })).toEqual([
      { path: 'delivery.headers', message: 'at most 10 headers' },
    ]);
    const parsed = createSubscriptionSchema.parse({ sink: SINK, delivery: { headers: { Authorization: 'Bearer t0k3n', 'X-Tenant': '' } } });
    expect(parsed.delivery.headers).toEqual({ authorization: 'Bearer t0k3n', 'x-tenant': '' });
  });

  it.each([
    'webhook-id',
    'Webhook-Signature',
    'webhook-anything',
    'herald-offset',
    'HERALD-X',
    'ce-id',
    'ce-custom',
    'traceparent',
    'TraceState',
    'content-type',
    'Content-Length',
    'host',
    'connection',
    'transfer-encoding',
  ])('refuses %s, naming the field', (name) => {
    expect(issuesOf({ headers: { [name]: 'x' } })).toEqual([
      { path: `delivery.headers.${name}`, message: expect.stringContaining('set by Herald') },
    ]);
  });

  it.each(['x y', 'x:y', '', 'x\u00e9', 'a(b)', 'x'.repeat(257)])('refuses the name %j (not an HTTP token)', (name) => {
    expect(issuesOf({ headers: { [name]: 'v' } })).toEqual([
      { path: `delivery.headers.${name}`, message: expect.stringContaining('token') },
    ]);
  });

  it.each(['a\r\nx-injected: 1', 'a\nb', ' leading', 'trailing ', 'caf\u00e9', 'nul\u0000'])('refuses the value %j', (value) => {
    expect(issuesOf({ headers: { 'x-a': value } })).toEqual([{ path: 'delivery.headers.x-a', message: expect.stringContaining('value') }]);
  });

  it('refuses a value that is not a string, or longer than 4096 characters, and a name given twice', () => {
    expect(issuesOf({ headers: { 'x-a': 1 } })[0]!.path).toBe('delivery.headers.x-a');
    expect(issuesOf({ headers: { 'x-a': 'v'.repeat(4097) } })[0]!.path).toBe('delivery.headers.x-a');
    expect(issuesOf({ headers: { 'X-A': '1', 'x-a': '2' } })).toEqual([
      { path: expect.stringMatching(/^delivery\.headers\.(X-A|x-a)$/), message: expect.stringContaining('twice') },
    ]);
    expect(issuesOf({ headers: ['authorization'] }).length).toBeGreaterThan(0);
  });

  it('leaves delivery without headers when none are given (the defaults are unchanged)', () => {
    expect(deliverySchema.parse({})).not.toHaveProperty('headers');
    expect(deliverySchema.parse(mergeDelivery(undefined, {}))).not.toHaveProperty('headers');
    expect(deliverySchema.parse(mergeDelivery(undefined, { headers: {} }))).not.toHaveProperty('headers');
  });

  it('shows every value as "***"', () => {
    const delivery = deliverySchema.parse({ headers: { authorization: 'Bearer secret', 'x-a': 'b' } });
    expect(maskDelivery(delivery).headers).toEqual({ authorization: '***', 'x-a': '***' });
    expect(delivery.headers).toEqual({ authorization: 'Bearer secret', 'x-a': 'b' });
    const none = deliverySchema.parse({});
    expect(maskDelivery(none)).toBe(none);
  });

  describe('in a PATCH', () => {
    const current = deliverySchema.parse({ maxInFlight: 3, headers: { authorization: 'Bearer old', 'x-a': 'a' } });
    const patch = (delivery: unknown) => {
      const change = patchSubscriptionSchema.parse({ delivery }).delivery;
      return deliverySchema.parse(mergeDelivery(current, change));
    };

    it('replaces the whole set when given', () => {
      expect(patch({ headers: { 'X-B': 'b' } }).headers).toEqual({ 'x-b': 'b' });
    });

    it('keeps the stored value of a name given as "***"', () => {
      expect(patch({ headers: { Authorization: '***', 'x-c': 'c' } }).headers).toEqual({ authorization: 'Bearer old', 'x-c': 'c' });
    });

    it('keeps them all when delivery.headers is not given', () => {
      expect(patch({ maxInFlight: 5 })).toEqual({ ...current, maxInFlight: 5 });
      expect(patch({})).toEqual(current);
    });

    it('removes them all with {}', () => {
      expect(patch({ headers: {} })).not.toHaveProperty('headers');
    });

    it('refuses "***" for a name with no stored value, naming it', () => {
      expect(() => patch({ headers: { 'x-unknown': '***' } })).toThrow(AppError);
      try {
        patch({ headers: { 'x-unknown': '***' } });
      } catch (err) {
        expect((err as AppError).code).toBe('invalid_request');
        expect((err as AppError).details).toEqual([{ attribute: 'delivery.headers.x-unknown', message: expect.stringContaining('***') }]);
      }
      // On create nothing is stored, so "***" never means anything.
      expect(() => mergeDelivery(undefined, { headers: { authorization: '***' } })).toThrow(AppError);
    });
  });
});

describe('sink user info', () => {
  it.each(['http://user:pass@example.com/hook', 'https://user@example.com/', 'http://:pass@127.0.0.1:9/'])('refuses %s', (sink) => {
    const parsed = sinkSchema.safeParse(sink);
    expect(parsed.success).toBe(false);
    expect(parsed.error!.issues[0]!.message).toMatch(/user info/);
    expect(createSubscriptionSchema.safeParse({ sink }).error!.issues[0]!.path).toEqual(['sink']);
    expect(patchSubscriptionSchema.safeParse({ sink }).error!.issues[0]!.path).toEqual(['sink']);
  });
});

describe('rotate-secret body', () => {
  it('defaults overlapSeconds to one day and allows 0 to 7 days', () => {
    expect(rotateSecretSchema.parse({})).toEqual({ overlapSeconds: 86_400 });
    expect(rotateSecretSchema.parse({ overlapSeconds: 0 })).toEqual({ overlapSeconds: 0 });
    expect(rotateSecretSchema.parse({ overlapSeconds: 604_800 })).toEqual({ overlapSeconds: 604_800 });
  });

  it.each([{ overlapSeconds: -1 }, { overlapSeconds: 604_801 }, { overlapSeconds: 1.5 }, { overlapSeconds: '60' }, { overlap: 60 }])(
    'refuses %j',
    (body) => {
      expect(rotateSecretSchema.safeParse(body).success).toBe(false);
    },
  );
});
