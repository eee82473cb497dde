import type { createDeliveryStateRepo } from '../store/delivery-state-repo';
import type { LogReader } from '../wal/event-store';

/**
 * A new subscription's first offsets: `earliest` is the first offset retention has kept (what was
 * deleted before is not expired: this subscription never had it to finish), `latest` the head.
 */
export function writeInitialOffsets(
  stateRepo: Pick<ReturnType<typeof createDeliveryStateRepo>, 'saveOffset'>,
  store: Pick<LogReader, 'heads' | 'firstOffsets' | 'partitions'>,
  subscriptionId: string,
  startAt: 'latest' | 'earliest',
): void {
  const heads = store.heads();
  const firsts = store.firstOffsets();
  for (let p = 0; p < store.partitions; p++) {
    stateRepo.saveOffset(subscriptionId, {
      partition: p,
      committedOffset: startAt === 'latest' ? heads[p]! : (firsts[p] ?? 0),
      lastMatchedOffset: null,
      expired: 0,
    });
  }
}
