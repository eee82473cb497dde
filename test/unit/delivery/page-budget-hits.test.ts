import type { CloudEvent } from '../../../src/cloudevents/event';
import { createHttpSender } from '../../../src/delivery/http-sender';
import { createSubscriptionSchema } from '../../../src/subscriptions/schema';
import { openStoreAt } from '../../helpers/log-store';
import { useReceivers, waitFor } from '../../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';
import { deliveryStack } from '../../helpers/delivery-stack';

/**
 * A page read from the decoded cache (another subscription read the same events just before) holds the same
 * events in memory as one read from the log: it is charged the same (it was charged 1 KiB an event, its data
 * free, so subscriptions that read what others had just read held pages far past the budget).
 */
afterAll(cleanupTmpDirs);
const receivers = useReceivers();
const DATA = Buffer.alloc(8000, 'x');
const ev = (i: number): CloudEvent => ({
  attributes: { specversion: '1.0', id: `e${i}`, source: '/hits', type: 't', datacontenttype: 'application/octet-stream' },
  data: { kind: 'bytes', bytes: DATA },
});

it('charges a page of events the decoded cache held as much as one read from the log', async () => {
  const { store, db } = openStoreAt(tmpDir(), { fsync: 'interval', partitions: 1 });
  await store.append(Array.from({ length: 100 }, (_, i) => ev(i)));
  const sender = createHttpSender({ allowPrivate: true });
  const { dispatcher, service } = deliveryStack(store, db, sender);
  const waiting: (() => void)[] = [];
  const receiver = await receivers(async () => {
    await new Promise<void>((resolve) => waiting.push(resolve));
    return { status: 204 };
  });
  try {
    const spec = (s: number) =>
      createSubscriptionSchema.parse({ sink: `${receiver.url}?s=${s}`, startAt: 'earliest', delivery: { maxInFlight: 1 } });
    await service.create(spec(0));
    await waitFor(() => receiver.requests.length >= 1, { what: 'the first subscription reading' });
    const one = dispatcher.pagesHeld();
    expect(one).toBeGreaterThan(2 * 8000 * 10); // a page of 8 KB events: its data charged
    // Three more at the same place: their pages come from the decoded cache, and hold as much as the first.
    for (let s = 1; s <= 3; s++) await service.create(spec(s));
    await waitFor(() => receiver.requests.length >= 4, { what: 'all four reading' });
    expect(dispatcher.pagesHeld()).toBe(4 * one);
  } finally {
    for (const release of waiting.splice(0)) release();
    setTimeout(() => {
      for (const release of waiting.splice(0)) release();
    }, 50);
    await dispatcher.close({ deadline: Date.now() });
    await sender.close();
    await store.close();
    db.close();
  }
});
