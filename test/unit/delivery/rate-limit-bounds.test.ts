import { createFlowControl } from '../../../src/delivery/flow-control';
import { rateLimitSchema } from '../../../src/subscriptions/schema';
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
      options: () => ({ maxInFlight: 1, rateLimit: { perSecond: 1e-7 } }),
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
