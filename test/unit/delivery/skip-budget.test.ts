import type { CloudEvent } from '../../../src/cloudevents/event';
import { createHttpSender } from '../../../src/delivery/http-sender';
import { SKIP_BUDGET } from '../../../src/delivery/subscription-worker';
import { createDeliveryStateRepo } from '../../../src/store/delivery-state-repo';
import { createSubscriptionSchema } from '../../../src/subscriptions/schema';
import { openStoreAt } from '../../helpers/log-store';
import { useReceivers, waitFor } from '../../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';
import { deliveryStack } from '../../helpers/delivery-stack';

/**
 * Scale probe: a subscription from `earliest` whose filter matched none of a 200,000-event backlog skipped
 * it in one synchronous stretch, holding every other subscription's deliveries and the API answers of the
 * delivery thread for seconds. A pump passes at most `SKIP_BUDGET` items, then goes on in a later turn.
 * Real log and SQLite, real HTTP to the receiver.
 */

afterAll(cleanupTmpDirs);
const receivers = useReceivers();

const ev = (i: number, type: string): CloudEvent => ({
  attributes: { specversion: '1.0', id: `e${i}`, source: '/skip', type },
  data: { kind: 'none' },
});

/** Skipped events, with matching ones at `WANTED` (the run before the first is shorter than the one after). */
const SKIPPED = 5 * SKIP_BUDGET;
const WANTED = [2000, SKIPPED];
const HEAD = SKIPPED + 1;

async function gateway() {
  const { store, db } = openStoreAt(tmpDir(), { fsync: 'interval', segmentBytes: 8 << 20 });
  const events = Array.from({ length: HEAD }, (_, i) => ev(i, WANTED.includes(i) ? 'wanted' : 'other'));
  for (let i = 0; i < events.length; i += 1000) await store.append(events.slice(i, i + 1000));
  const sender = createHttpSender({ allowPrivate: true });
  const { dispatcher, service } = deliveryStack(store, db, sender);
  let closing: Promise<void> | undefined;
  const closeDispatcher = () => (closing ??= dispatcher.close({ deadline: Date.now() }));
  return {
    db,
    dispatcher,
    service,
    closeDispatcher,
    committed: (id: string) => dispatcher.stats(id).partitions[0]!.committedOffset,
    async close() {
      await closeDispatcher();
      await sender.close();
      await store.close();
      db.close();
    },
  };
}

/** Runs `each` once every turn of the event loop (a chain of immediates, as the pumps are) until stopped. */
function everyTurn(each: () => void) {
  let on = true;
  let turns = 0;
  const tick = () => {
    if (!on) return;
    turns++;
    each();
    setImmediate(tick);
  };
  setImmediate(tick);
  return {
    turns: () => turns,
    stop: () => {
      on = false;
    },
  };
}

describe('skipping filtered-out events', () => {
  it('gives the thread back every SKIP_BUDGET events, with the same deliveries and the same saved position', async () => {
    const receiver = await receivers();
    const gw = await gateway();
    let ticker: ReturnType<typeof everyTurn> | undefined;
    try {
      let id = '';
      const seen = new Set<number>();
      ticker = everyTurn(() => {
        if (id) seen.add(gw.committed(id));
      });
      ({ id } = await gw.service.create(
        createSubscriptionSchema.parse({ sink: receiver.url, startAt: 'earliest', filters: [{ exact: { type: 'wanted' } }] }),
      ));
      await waitFor(() => gw.committed(id) === HEAD, { what: 'the backlog passed', timeoutMs: 30_000 });
      ticker.stop();

      // Another turn came (an immediate queued meanwhile ran) inside each run of skipped events, not only at its ends
      // and while a matching event was in flight: without the budget each run is one synchronous stretch.
      const inside = [...seen].filter((c) => c > 0 && c < HEAD && !WANTED.includes(c));
      expect(inside.length).toBeGreaterThanOrEqual(Math.floor(SKIPPED / SKIP_BUDGET) - 2);

      // The same deliveries, the chain of previous offsets through the skipped ones, the same position written.
      expect(receiver.requests.map((r) => Number(r.headers['herald-offset']))).toEqual(WANTED);
      expect(receiver.requests.map((r) => r.headers['herald-previous-offset'])).toEqual([undefined, String(WANTED[0])]);
      await gw.closeDispatcher(); // writes what is buffered
      expect(createDeliveryStateRepo(gw.db).offsets(id)).toEqual([
        expect.objectContaining({ partition: 0, committedOffset: HEAD, lastMatchedOffset: SKIPPED }),
      ]);
    } finally {
      ticker?.stop();
      await gw.close();
    }
  });

  it('shares the budget between subscriptions skipping at once: a turn of the loop skips about one budget in all, not one each (re-probe: 400 held the thread 1.3 s a turn)', async () => {
    const gw = await gateway();
    const receiver = await receivers();
    let ticker: ReturnType<typeof everyTurn> | undefined;
    try {
      const ids: string[] = [];
      for (let i = 0; i < 8; i++) {
        const spec = { sink: receiver.url, startAt: 'latest', filters: [{ exact: { type: 'none' } }] };
        ids.push((await gw.service.create(createSubscriptionSchema.parse(spec))).id);
      }
      const total = () => ids.reduce((n, id) => n + gw.committed(id), 0);
      // Every subscription back to the start at once: each then skips the whole backlog, matching nothing.
      await Promise.all(ids.map((id) => gw.service.seek(id, { to: 'earliest' })));
      const totals: number[] = [];
      ticker = everyTurn(() => totals.push(total()));
      await waitFor(() => ids.every((id) => gw.committed(id) === HEAD), { what: 'every backlog passed', timeoutMs: 30_000 });
      ticker.stop();
      const perTurn = totals.slice(1).map((t, i) => t - totals[i]!);
      // Past the first turns (each may take a whole budget before the others have run out), a turn skips about one
      // budget in all (more while some finish and the rest's shares grow); one each would be 8 budgets a turn.
      expect(Math.max(...perTurn.slice(3))).toBeLessThanOrEqual(2 * SKIP_BUDGET);
      expect(receiver.requests).toHaveLength(0);
    } finally {
      ticker?.stop();
      await gw.close();
    }
  });

  it('a subscription paused in the middle of a skip stops there, and goes on once resumed', async () => {
    const receiver = await receivers();
    const gw = await gateway();
    let ticker: ReturnType<typeof everyTurn> | undefined;
    try {
      let id = '';
      let pausing: Promise<unknown> | undefined;
      ticker = everyTurn(() => {
        const c = id ? gw.committed(id) : 0;
        if (!pausing && c > 0 && c < WANTED[0]!) pausing = gw.service.pause(id);
      });
      ({ id } = await gw.service.create(
        createSubscriptionSchema.parse({ sink: receiver.url, startAt: 'earliest', filters: [{ exact: { type: 'wanted' } }] }),
      ));
      await waitFor(() => pausing, { what: 'paused inside the first run' });
      await pausing;
      ticker.stop();
      const at = gw.committed(id);
      expect(at).toBeLessThan(WANTED[0]!);
      // Turns enough for several budgets: a paused subscription skips nothing more.
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(gw.committed(id)).toBe(at);
      expect(receiver.requests).toHaveLength(0);

      await gw.service.resume(id);
      await waitFor(() => gw.committed(id) === HEAD, { what: 'the backlog passed after the resume', timeoutMs: 30_000 });
      expect(receiver.requests.map((r) => Number(r.headers['herald-offset']))).toEqual(WANTED);
    } finally {
      ticker?.stop();
      await gw.close();
    }
  });
});
