import { createMetrics } from '../../src/metrics';

/** `/metrics` names only subscriptions that exist: a count that came in after a delete brings no series back. */
describe('the delivery series of a deleted subscription', () => {
  it('stay gone when a late count comes in for it (review: a JetStream lease counted after the delete)', async () => {
    const metrics = createMetrics();
    const sources = (ids: string[]) => ({
      log: () => ({ bytes: 0, segments: 0 }),
      writable: () => true,
      heads: () => [],
      subscriptions: async () => ids.map((id) => ({ id, state: 'active', delivery: null })),
    });
    const observer = metrics.delivery.observer();
    metrics.setSources(sources(['kept', 'deleted']));
    observer.outcome('kept', 'delivered');
    observer.outcome('deleted', 'delivered');
    expect(await metrics.exposition()).toMatch(/^herald_deliveries_total\{subscription="deleted",outcome="delivered"\} 1$/m);

    metrics.forgetSubscription('deleted');
    metrics.setSources(sources(['kept']));
    observer.outcome('deleted', 'lease_expired'); // late
    observer.answered('deleted', 5);
    const text = await metrics.exposition();
    expect(text).not.toMatch(/subscription="deleted"/);
    expect(text).toMatch(/^herald_deliveries_total\{subscription="kept",outcome="delivered"\} 1$/m);
  });
});
