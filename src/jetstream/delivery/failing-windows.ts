import type { KV, KvEntry, QueuedIterator } from 'nats';
import type { Logger } from 'pino';
import { DEFAULT_DISABLE_AFTER_FAILING_MS } from '../../webhook-policy';
import { natsReason } from '../nats-errors';

const SUFFIX = '.failing';
/** How long a watch that ended waits before it is made again. */
const REWATCH_MS = 1000;

/** A subscription's failing window in the positions bucket: `<token>.failing`, deleted with the subscription's keys. */
export const failingKey = (token: string): string => `${token}${SUFFIX}`;

const sinceOf = (entry: KvEntry): number | undefined => {
  try {
    const since = (JSON.parse(Buffer.from(entry.value).toString('utf8')) as { since?: unknown }).since;
    return typeof since === 'number' && Number.isFinite(since) ? since : undefined;
  } catch {
    return undefined;
  }
};

/**
 * Auto-disable on the JetStream engine (issue 12 §5; `delivery/failure-window.ts` on the local engine),
 * across nodes: since when every attempt of a subscription, on any node, has failed with no success
 * between is one KV entry that every node watches. The first failure after a success creates it
 * (create-only: the earliest node's time stands), a success on any node deletes it, and a failure
 * `disableAfterFailingMs` or more after it deletes it and asks for the pause (the service pauses once,
 * whichever nodes ask). Kept in the cluster, a window outlives a node's restart, as the local engine
 * keeps it in herald.db.
 */
export function createFailingWindows(deps: { kv: KV; log: Logger; clock: () => number }) {
  const { kv, log } = deps;
  /** Subscription token → since when its attempts have failed, as this node last heard. */
  const since = new Map<string, number>();
  /** Subscription token → when this node last had a 2xx for it: a window opened before that is over when heard of. */
  const lastSuccess = new Map<string, number>();
  /** Subscription token → this node's write of a new window, while under way. */
  const creating = new Map<string, Promise<unknown>>();
  let watcher: QueuedIterator<KvEntry> | undefined;
  let rewatch: NodeJS.Timeout | undefined;
  let stopped = false;

  function apply(entry: KvEntry): void {
    if (!entry.key.endsWith(SUFFIX)) return;
    const token = entry.key.slice(0, -SUFFIX.length);
    const at = entry.operation === 'PUT' ? sinceOf(entry) : undefined;
    if (at === undefined) return void since.delete(token);
    // Opened by another node before a 2xx here that did not know of it yet: ended now, as that 2xx would have (a
    // failure in the same millisecond as a 2xx opens a window after it, so only a later 2xx ends one).
    if ((lastSuccess.get(token) ?? -Infinity) > at) {
      since.delete(token);
      kv.delete(failingKey(token), { previousSeq: entry.revision }).catch(() => undefined);
      return;
    }
    since.set(token, at);
  }

  async function watch(): Promise<void> {
    const iterator = await kv.watch({ key: `*${SUFFIX}` });
    watcher = iterator;
    void (async () => {
      try {
        for await (const entry of iterator) apply(entry);
      } catch (err) {
        log.warn({ err: natsReason(err) }, 'the watch of failing delivery windows failed');
      }
      rewatchLater();
    })();
  }

  /** A watch that ended (a leader moved, the bucket made again) is made again, a second later, until one is. */
  function rewatchLater(): void {
    if (stopped) return;
    rewatch = setTimeout(() => {
      watch().catch((err: unknown) => {
        log.warn({ err: natsReason(err) }, 'could not watch failing delivery windows; trying again');
        rewatchLater();
      });
    }, REWATCH_MS);
    rewatch.unref();
  }

  /** A write of the window that failed: the next failure or success tries again (the window is advice, not state to lose). */
  const unwritten = (token: string) => (err: unknown) =>
    log.warn({ err: natsReason(err), key: failingKey(token) }, 'could not write a failing delivery window');

  return {
    /** Starts watching; the windows stored are heard first. */
    start: watch,
    /** A 2xx from the receiver: the window ends, on every node. */
    succeeded(token: string): void {
      lastSuccess.set(token, deps.clock());
      if (!since.has(token)) return;
      since.delete(token);
      kv.delete(failingKey(token)).catch(unwritten(token));
    },
    /**
     * Any other answer, or none. Returns since when every attempt has failed, once that has lasted
     * `limitMs` (undefined: the default; 0: never): the subscription is to pause. The window ends then.
     */
    failed(token: string, limitMs: number | undefined): number | undefined {
      const limit = limitMs ?? DEFAULT_DISABLE_AFTER_FAILING_MS;
      // Never paused: no window is kept in the cluster (review: alternating answers wrote to it four times a pair).
      if (limit <= 0) return undefined;
      const now = deps.clock();
      const at = since.get(token);
      if (at === undefined) {
        since.set(token, now);
        // Several round trips when the key was deleted before (a put, a read, an update): `ended` waits for them.
        const write = kv.create(failingKey(token), JSON.stringify({ since: now })).catch(async (err: unknown) => {
          // Another node's window is there already: its time stands (the watch brings it too).
          const stored = await kv.get(failingKey(token)).catch(() => null);
          const storedAt = stored && stored.operation === 'PUT' ? sinceOf(stored) : undefined;
          if (storedAt === undefined) return unwritten(token)(err);
          if (since.has(token)) since.set(token, storedAt);
        });
        creating.set(token, write);
        void write.finally(() => {
          if (creating.get(token) === write) creating.delete(token);
        });
        return undefined;
      }
      if (now - at < limit) return undefined;
      since.delete(token);
      kv.delete(failingKey(token)).catch(unwritten(token));
      return at;
    },
    /**
     * The subscription was paused for failing (this node heard the pause): its window is ended again. A node that
     * had not heard the pause yet can have opened a new window with a failure after the pausing node deleted it;
     * left there, it would pause the subscription at the first failure after a resume, not a limit later.
     */
    ended(token: string): void {
      since.delete(token);
      lastSuccess.delete(token);
      // After this node's own write of a window, should one be under way (it could otherwise land after the delete).
      void (creating.get(token) ?? Promise.resolve()).then(() => kv.delete(failingKey(token)).catch(unwritten(token)));
    },
    /** Since when the subscription's attempts have failed, as this node last heard (undefined: not failing). */
    failingSince: (token: string): number | undefined => since.get(token),
    stop(): void {
      stopped = true;
      if (rewatch) clearTimeout(rewatch);
      watcher?.stop();
    },
  };
}
export type FailingWindows = ReturnType<typeof createFailingWindows>;
