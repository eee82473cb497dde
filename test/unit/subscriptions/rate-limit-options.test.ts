import { createSubscriptionSchema, deliverySchema, mergeDelivery } from '../../../src/subscriptions/schema';

/** `delivery.rateLimit` and `validation` in subscription requests (issue 12 §3, §4). */

describe('delivery.rateLimit', () => {
  it('is absent by default, and takes a positive perSecond (fractions allowed)', () => {
    expect(deliverySchema.parse({})).not.toHaveProperty('rateLimit');
    expect(deliverySchema.parse({ rateLimit: { perSecond: 0.5 } }).rateLimit).toEqual({ perSecond: 0.5 });
    for (const bad of [{ perSecond: 0 }, { perSecond: -1 }, {}, { perSecond: 1, burst: 2 }])
      expect(deliverySchema.safeParse({ rateLimit: bad }).success).toBe(false);
  });

  it('is kept by a PATCH that does not name it, replaced by one that does, removed by null', () => {
    const current = deliverySchema.parse({ rateLimit: { perSecond: 5 } });
    expect(deliverySchema.parse(mergeDelivery(current, { timeoutMs: 500 })).rateLimit).toEqual({ perSecond: 5 });
    expect(deliverySchema.parse(mergeDelivery(current, { rateLimit: { perSecond: 1 } })).rateLimit).toEqual({ perSecond: 1 });
    expect(deliverySchema.parse(mergeDelivery(current, { rateLimit: null }))).not.toHaveProperty('rateLimit');
  });
});

describe('validation', () => {
  it('defaults to none and accepts cloudevents', () => {
    expect(createSubscriptionSchema.parse({ sink: 'http://example.com/' }).validation).toBe('none');
    expect(createSubscriptionSchema.parse({ sink: 'http://example.com/', validation: 'cloudevents' }).validation).toBe('cloudevents');
    expect(createSubscriptionSchema.safeParse({ sink: 'http://example.com/', validation: 'eventgrid' }).success).toBe(false);
  });
});
