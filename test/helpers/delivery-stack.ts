import pino from 'pino';
import type { Db } from '../../src/store/db';
import { createDispatcher, type DispatcherDeps } from '../../src/delivery/dispatcher';
import type { HttpSender } from '../../src/delivery/http-sender';
import { createSqliteSubscriptionStore } from '../../src/store/subscriptions-store';
import { createSubscriptionsService } from '../../src/subscriptions/service';
import type { LogReader } from '../../src/wal/event-store';

/**
 * A dispatcher and the subscriptions service over it, in-process, as the gateway wires them (its delivery thread
 * aside): real store and SQLite, the sender the test gives, no log output. `extra` adds dispatcher options.
 */
export function deliveryStack(
  store: LogReader,
  db: Db,
  sender: HttpSender,
  extra: Partial<Omit<DispatcherDeps, 'store' | 'db' | 'log' | 'sender'>> = {},
) {
  const log = pino({ level: 'silent' });
  const dispatcher = createDispatcher({ store, db, log, sender, ackUrlBase: () => 'http://gw', ...extra });
  const service = createSubscriptionsService({
    records: createSqliteSubscriptionStore({ db, initOffsets: dispatcher.initOffsets }),
    store,
    delivery: dispatcher,
    log,
  });
  return { dispatcher, service };
}
