import { createFlowControl, effectiveRateLimit } from '../../../src/delivery/flow-control';
import { deliverySchema, rateLimitSchema } from '../../../src/subscriptions/schema';
import { allowedRate } from '../../../src/webhook-policy';

/**
 * Issue 12 §3: a wait for the next token longer than setTimeout's 2^31-1 ms must not fire at once
 * (Node then fires after 1 ms, which would wake the delivery loop ~1000 times a second). Rates below
 * one attempt a day are refused by the API and ignored from a sink's `WebHook-Allowed-Rate`, and the
 * flow control waits in steps anyway.
 */
describe('a very low rate limit', () => {
  it('is refused by the API and ignored from the handshake below one attempt a day', () => {
    expect(rateLimitSchema.safeParse({ perSecond: 1e-7 }).success).toBe(false);
    expect(rateLimitSchema.safeParse({ perSecond: 1 / 86_400 }).success).toBe(true);
    expect(allowedRate('0.000001')).toBeUndefined();
    expect(allowedRate('1')).toEqual({ perSecond: 1 / 60 });
  });

  it('waits for its next token instead of waking the loop every millisecond', async () => {
    let wakes = 0;
    const flow = createFlowControl({
      subscription: () => ({ delivery: { maxInFlight: 1, rateLimit: { perSecond: 1e-7 } }, allowedRate: null }),
      clock: Date.now,
      onToken: () => {
        wakes++;
        flow.ready(); // as the pump does: no token yet, so it arms the timer again
      },
    });
    expect(flow.take({}, () => undefined)).toBe(true); // the bucket's one token
    expect(flow.ready()).toBe(false); // arms the timer for the next token, ~10^10 ms away
    await new Promise((r) => setTimeout(r, 300));
    flow.stop();
    expect(wakes).toBe(0);
  });
});

describe("the rate limit with a sink's grant (WebHook-Allowed-Rate)", () => {
  const record = (own?: number, granted?: number) => ({
    delivery: { ...deliverySchema.parse({}), ...(own !== undefined && { rateLimit: { perSecond: own } }) },
    allowedRate: granted === undefined ? null : { perSecond: granted },
  });

  it("is the lower of the two: a grant caps the operator's limit, never raises it", () => {
    expect(effectiveRateLimit(record(1, 2))).toEqual({ perSecond: 1 });
    expect(effectiveRateLimit(record(2, 0.5))).toEqual({ perSecond: 0.5 });
    expect(effectiveRateLimit(record(undefined, 3))).toEqual({ perSecond: 3 });
    expect(effectiveRateLimit(record(4, undefined))).toEqual({ perSecond: 4 });
    expect(effectiveRateLimit(record())).toBeUndefined();
  });
});
