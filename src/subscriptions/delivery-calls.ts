import { AppError } from '../errors';
import type { Logger } from '../logger';
import type { SubscriptionRecord } from './record';
import type { DeliveryControl, SubscriptionEvents } from './delivery-control';

/** Tries of `add` in a row (its consumers may be slow to create on a busy cluster), then again later. */
const START_TRIES = 3;
const START_BACKOFF_MS = 250;
/** After a start failed every try: when to try again (the subscription still existing). */
const START_AGAIN_MS = 5000;
/** What a client is told to wait while delivery of a subscription is not started on this node. */
const RETRY_AFTER_SECONDS = 1;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/** Calls `call` at once; its throw becomes a rejection. */
function now<T>(call: () => T | Promise<T>): Promise<T> {
  try {
    return Promise.resolve(call());
  } catch (err) {
    return Promise.reject(err as Error);
  }
}

/**
 * The subscriptions service's calls to delivery, per subscription in the order they were made:
 * each starts once the one before it settled, so a removal never overtakes the start it follows
 * (on JetStream, `add` creates consumers), and a read of delivery's state waits for the start.
 *
 * A start that fails (a cluster too busy to create consumers in time) is tried again, a few times at
 * once and then every few seconds while the subscription exists: until it succeeds, delivery's
 * "no such subscription" for a subscription that exists is answered 503 + Retry-After, not 404.
 */
export function createDeliveryCalls(deps: { delivery: DeliveryControl; log: Logger; exists: (id: string) => boolean }) {
  const queues = new Map<string, Promise<unknown>>();
  /** The last start of each subscription, settled or not (reads wait for it, not for the changes queued after it). */
  const starts = new Map<string, Promise<unknown>>();
  /** Starts that failed every try, each waiting for its timer to try again. */
  const failedStarts = new Map<string, { timer: NodeJS.Timeout; again: () => void }>();
  /** Subscriptions whose start failed and has not succeeded since: a list does not wait for their next try. */
  const unstarted = new Set<string>();
  let closed = false;

  function enqueue<T>(id: string, call: () => T | Promise<T>): Promise<T> {
    const before = queues.get(id);
    // Nothing before it: made now, synchronously, as a direct call would be (the local engine's tests rely on it).
    const result = before ? before.then(call) : now(call);
    const tail = result.catch(() => undefined);
    queues.set(id, tail);
    void tail.then(() => {
      if (queues.get(id) === tail) queues.delete(id);
    });
    return result;
  }

  async function addWithRetries(record: () => SubscriptionRecord | undefined, events: SubscriptionEvents): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      const current = record();
      if (!current || closed) return true; // deleted meanwhile, or shutting down: nothing to start
      try {
        await deps.delivery.add(current, events);
        return true;
      } catch (err) {
        if (attempt >= START_TRIES) {
          deps.log.error(
            { subscription: current.id, err },
            `delivery did not start for the subscription; trying again in ${START_AGAIN_MS} ms`,
          );
          return false;
        }
        await sleep(START_BACKOFF_MS * 2 ** (attempt - 1));
      }
    }
  }

  function start(id: string, record: () => SubscriptionRecord | undefined, events: SubscriptionEvents): void {
    const starting = enqueue(id, () => addWithRetries(record, events));
    starts.set(id, starting);
    void starting.then((started) => {
      if (started) {
        unstarted.delete(id);
        if (starts.get(id) === starting) starts.delete(id);
        return;
      }
      unstarted.add(id);
      const again = () => {
        failedStarts.delete(id);
        if (!closed && deps.exists(id)) start(id, record, events);
        else unstarted.delete(id);
      };
      failedStarts.set(id, { timer: setTimeout(again, START_AGAIN_MS).unref(), again });
    });
  }

  /** Delivery's "no such subscription" for one that exists: its start has not succeeded (yet). */
  const notStarted = (id: string, err: unknown): boolean => err instanceof AppError && err.code === 'not_found' && deps.exists(id);

  async function startingIsUnavailable<T>(id: string, answer: Promise<T>): Promise<T> {
    try {
      return await answer;
    } catch (err) {
      if (notStarted(id, err))
        throw new AppError('unavailable', `delivery of subscription ${id} is starting on this node; retry shortly`, {
          cause: err,
          retryAfter: RETRY_AFTER_SECONDS,
        });
      throw err;
    }
  }

  return {
    /** Starts delivery for the subscription (`record` gives its current record at each try). */
    start,
    /** The subscription changed: a start of it that failed is tried again now (the change may be its fix). */
    retryFailedStart(id: string): void {
      const failed = failedStarts.get(id);
      if (!failed) return;
      clearTimeout(failed.timer);
      failed.again();
    },
    /** A call whose failure is logged, never thrown at a caller that saved a change. */
    tell(what: string, id: string, call: () => unknown): void {
      enqueue(id, call).catch((err: unknown) =>
        deps.log.warn({ subscription: id, err }, `delivery did not take the subscription's ${what}`),
      );
    },
    /**
     * A call whose answer the caller needs, made after every call before it.
     * @throws AppError `unavailable` when delivery does not know a subscription that exists (not started yet)
     */
    ask<T>(id: string, call: () => T | Promise<T>): Promise<T> {
      return startingIsUnavailable(id, enqueue(id, call));
    },
    /**
     * A read of delivery's state (stats, attempts, dead letters): made once the start is done, without
     * waiting for changes queued after it (on JetStream an update of a consumer can take a while).
     * @throws AppError `unavailable` as `ask`
     */
    async read<T>(id: string, call: () => T | Promise<T>): Promise<T> {
      await starts.get(id);
      return startingIsUnavailable(id, Promise.resolve().then(call));
    },
    /**
     * As `read`, but null while delivery does not know the subscription (its start failed; the next try
     * is not waited for), so that a list or a scrape still shows every other subscription at once.
     */
    async readIfStarted<T>(id: string, call: () => T | Promise<T>): Promise<T | null> {
      if (unstarted.has(id)) return null;
      await starts.get(id);
      try {
        return await call();
      } catch (err) {
        if (notStarted(id, err)) return null;
        throw err;
      }
    },
    /** Resolves once every call made so far for the subscription has settled. */
    settled: (id: string): Promise<unknown> => queues.get(id) ?? Promise.resolve(),
    /** No more starts are tried (at shutdown). */
    close(): void {
      closed = true;
      for (const { timer } of failedStarts.values()) clearTimeout(timer);
      failedStarts.clear();
      unstarted.clear();
    },
  };
}
