import type { HttpSender, Outgoing } from '../../../src/delivery/http-sender';
import { openDatabase, type Db } from '../../../src/store/db';
import { createSubscriptionSchema } from '../../../src/subscriptions/schema';
import type { EventStore, StoredEvent } from '../../../src/wal/event-store';
import { waitFor } from '../../helpers/receiver';
import { deliveryStack } from '../../helpers/delivery-stack';

/**
 * Issue 10 §1: an append wakes only the subscription workers that can take more from a partition
 * that grew; a worker busy in that partition (ordering per partition, one event in flight) or
 * paused reads nothing.
 */

function countingStore(partitions: number) {
  const logs: StoredEvent[][] = Array.from({ length: partitions }, () => []);
  const listeners = new Set<(p: ReadonlySet<number>) => void>();
  /** Every look at the log (heads or a page), by partition (-1: heads), as a pump makes them. */
  const reads: number[] = [];
  const store: EventStore = {
    partitions,
    append: () => Promise.reject(new Error('not used')),
    read(partition, from, limit) {
      reads.push(partition);
      return { events: logs[partition]!.slice(from, from + limit) };
    },
    lookup: () => undefined,
    heads: () => {
      reads.push(-1);
      return logs.map((l) => l.length);
    },
    firstOffsets: () => logs.map(() => 0),
    health: () => ({ writable: true }),
    onAppend(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    onRetire: () => () => undefined,
    close: () => Promise.resolve(),
  };
  return {
    store,
    reads,
    publish(partition: number): void {
      const log = logs[partition]!;
      const offset = log.length;
      log.push({
        partition,
        offset,
        storedAt: Date.now(),
        event: { attributes: { specversion: '1.0', id: `e${partition}-${offset}`, source: '/w', type: 't' }, data: { kind: 'none' } },
      });
      for (const l of listeners) l(new Set([partition]));
    },
  };
}

/** Turns of the event loop enough for a scheduled pump to have run. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

describe('waking on append', () => {
  let db: Db;
  beforeEach(() => {
    db = openDatabase(':memory:');
  });
  afterEach(() => db.close());

  it('wakes a worker for a partition it has room in, not for one it is busy in, nor while paused', async () => {
    const { store, reads, publish } = countingStore(2);
    const sent: number[] = [];
    // Requests never answered: partition 0's first event stays in flight.
    const sender = {
      send: (_sink: string, build: () => Outgoing | undefined) => {
        sent.push(Number(build()!.headers['herald-partition']));
        return new Promise(() => undefined);
      },
      probe: () => Promise.resolve({ status: 200 }),
      close: () => Promise.resolve(),
    } as unknown as HttpSender;
    const { dispatcher, service } = deliveryStack(store, db, sender);
    try {
      const { id } = await service.create(createSubscriptionSchema.parse({ sink: 'http://receiver.test/hook', startAt: 'earliest' }));
      publish(0);
      await waitFor(() => sent.length === 1, { what: 'the first attempt' });

      reads.length = 0;
      publish(0); // partition 0 has its one event in flight: the worker is not even pumped
      await settle();
      expect(reads).toEqual([]);

      publish(1); // partition 1 is idle: woken, reads it, sends
      await waitFor(() => sent.length === 2, { what: 'partition 1 delivered' });
      expect(reads).not.toContain(0);
      expect(reads).toContain(1);

      await service.pause(id);
      await settle();
      reads.length = 0;
      publish(1);
      await settle();
      expect(reads).toEqual([]);
    } finally {
      await dispatcher.close({ deadline: Date.now() });
    }
  });
});
