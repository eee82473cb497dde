import type { CloudEvent } from '../../../src/cloudevents/event';
import { createHttpSender } from '../../../src/delivery/http-sender';
import { CURSOR_PAGE_BYTES, CURSOR_PAGE_EVENTS, createPageBudget } from '../../../src/delivery/page-budget';
import { createSubscriptionSchema } from '../../../src/subscriptions/schema';
import { decodedCharge } from '../../../src/wal/reads';
import { openStoreAt } from '../../helpers/log-store';
import { useReceivers, waitFor } from '../../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';
import { deliveryStack } from '../../helpers/delivery-stack';

/**
 * Scale probe: each subscription reads a page of up to 64 events per partition ahead of what it sends and holds
 * it; 300 subscriptions each at its own place in the backlogs of 16 partitions held 550 MB of 1 KB events (1,000
 * held 1.3 GB). The pages of a delivery thread share one budget: near it a page shrinks, down to one event.
 * Real log and SQLite, real HTTP to the receiver.
 */

afterAll(cleanupTmpDirs);
const receivers = useReceivers();

const PARTITIONS = 4;
const PER_PARTITION = 300;
const DATA = Buffer.alloc(1000, 'x');
/** Room for about one full page of these events. */
const BUDGET = 256 * 1024;
const SUBSCRIPTIONS = 12;

const ev = (i: number): CloudEvent => ({
  attributes: { specversion: '1.0', id: `e${i}`, source: '/pages', type: 't', datacontenttype: 'application/octet-stream' },
  data: { kind: 'bytes', bytes: DATA },
});

async function gateway() {
  const { store, db } = openStoreAt(tmpDir(), { fsync: 'interval', partitions: PARTITIONS });
  // Events spread over the partitions by their partition key (the `id` hashes): appended until each has enough.
  let i = 0;
  while (Math.min(...store.heads()) < PER_PARTITION) {
    await store.append(Array.from({ length: 200 }, () => ev(i++)));
  }
  const sender = createHttpSender({ allowPrivate: true });
  const { dispatcher, service } = deliveryStack(store, db, sender, { pagesBudget: BUDGET });
  return {
    store,
    dispatcher,
    service,
    async close() {
      await dispatcher.close({ deadline: Date.now() });
      await sender.close();
      await store.close();
      db.close();
    },
  };
}

describe('the pages of events a delivery thread holds', () => {
  it('are a full page each while there is room, then shrink to one event near the budget', () => {
    const budget = createPageBudget(decodedCharge(CURSOR_PAGE_BYTES, CURSOR_PAGE_EVENTS) + 10 * 1024);
    expect(budget.nextPage()).toEqual({ events: CURSOR_PAGE_EVENTS, bytes: CURSOR_PAGE_BYTES });
    const charge = budget.take(200_000, 40);
    expect(budget.nextPage().bytes).toBeLessThan(CURSOR_PAGE_BYTES);
    budget.take(10_000_000, 1); // past it
    expect(budget.nextPage()).toEqual({ events: 1, bytes: 0 });
    budget.give(charge);
    expect(budget.held()).toBe(decodedCharge(10_000_000, 1));
  });

  it('stay within the budget with many subscriptions each at its own place in the backlogs, and every event is still delivered once, in order', async () => {
    const gw = await gateway();
    let open = false;
    const waiting: (() => void)[] = [];
    // Holds every request until `open`: each subscription has a request in flight per partition, and its pages read.
    const receiver = await receivers(async () => {
      if (!open) await new Promise<void>((resolve) => waiting.push(resolve));
      return { status: 204 };
    });
    try {
      const ids: string[] = [];
      for (let s = 0; s < SUBSCRIPTIONS; s++) {
        const spec = { sink: `${receiver.url}?s=${s}`, startAt: 'latest', delivery: { ordering: 'partition', maxInFlight: PARTITIONS } };
        const { id } = await gw.service.create(createSubscriptionSchema.parse(spec));
        ids.push(id);
        const offsets = Object.fromEntries(Array.from({ length: PARTITIONS }, (_, p) => [String(p), s * 20]));
        await gw.service.seek(id, { offsets });
      }
      await waitFor(() => receiver.requests.length >= SUBSCRIPTIONS * PARTITIONS, {
        what: 'a request in flight per subscription and partition',
      });
      // Without the budget every cursor held a full page: 48 pages of 64 events, about 10 MB here. One event more
      // than the room is read per page at most (a page holds one event at least).
      const oneEvent = decodedCharge(DATA.length + 512);
      expect(gw.dispatcher.pagesHeld()).toBeGreaterThan(0);
      expect(gw.dispatcher.pagesHeld()).toBeLessThanOrEqual(BUDGET + SUBSCRIPTIONS * PARTITIONS * oneEvent);

      // Paused subscriptions hold no pages (read again once resumed).
      for (const id of ids) await gw.service.pause(id);
      expect(gw.dispatcher.pagesHeld()).toBe(0);
      for (const id of ids) await gw.service.resume(id);

      open = true;
      for (const release of waiting.splice(0)) release();
      const heads = gw.store.heads();
      await waitFor(() => ids.every((id) => gw.dispatcher.stats(id).partitions.every((p) => p.committedOffset === heads[p.partition])), {
        what: 'every subscription caught up',
        timeoutMs: 30_000,
      });
      // Each subscription got each event from its place on once, in order per partition (the requests held while
      // paused were answered, so nothing was sent twice).
      for (let s = 0; s < SUBSCRIPTIONS; s++) {
        const mine = receiver.requests.filter((r) => r.url.endsWith(`?s=${s}`));
        for (let p = 0; p < PARTITIONS; p++) {
          const offsets = mine.filter((r) => r.headers['herald-partition'] === String(p)).map((r) => Number(r.headers['herald-offset']));
          expect(offsets).toEqual(Array.from({ length: heads[p]! - s * 20 }, (_, k) => s * 20 + k));
        }
      }
      // Caught up: no cursor keeps its last page.
      expect(gw.dispatcher.pagesHeld()).toBe(0);
    } finally {
      open = true;
      for (const release of waiting.splice(0)) release();
      await gw.close();
    }
  });
});
