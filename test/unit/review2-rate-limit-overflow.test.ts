import { createFlowControl } from '../../src/delivery/flow-control';
import { rateLimitSchema } from '../../src/subscriptions/schema';
import { allowedRate } from '../../src/delivery/webhook-handshake';

/**
 * Review 2 (issue 12 §3): a rate limit so low that the wait for the next token exceeds setTimeout's
 * 2^31-1 ms. Node then fires the timer after 1 ms (TimeoutOverflowWarning), so the flow control wakes
 * the delivery loop ~1000 times a second and prints a warning each time, instead of waiting.
 * Both the API (`delivery.rateLimit.perSecond`) and a sink's `WebHook-Allowed-Rate` accept such rates.
 */
describe('a very low rate limit', () => {
  it('is accepted by the API and by the handshake (the precondition)', () => {
    expect(rateLimitSchema.safeParse({ perSecond: 1e-7 }).success).toBe(true);
    expect(allowedRate('0.000001')).toEqual({ perSecond: 0.000001 / 60 });
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
