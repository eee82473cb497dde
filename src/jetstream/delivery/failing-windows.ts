import type { KV, KvEntry, QueuedIterator } from 'nats';
import type { Logger } from 'pino';
import { DEFAULT_DISABLE_AFTER_FAILING_MS } from '../../webhook-policy';
import { isWrongLastSequence, natsReason } from '../nats-errors';
import { throttledLine } from '../../logger';

const SUFFIX = '.failing';
/** How long a watch that ended waits before it is made again. */
const REWATCH_MS = 1000;

/** A subscription's failing window in the positions bucket: `<token>.failing`, deleted with the subscription's keys. */
export const failingKey = (token: string): string => `${token}${SUFFIX}`;

/**
 * The key every node writes to learn the NATS server's clock: one key for all nodes, overwritten (it never piles
 * up). `=` is in no subscription token (names.ts), so it is no `<token>.…` key, no subscription's purge takes it and
 * the watch of `*.failing` does not hear it.
 */
export const CLOCK_KEY = '=clock';
/** How often a node writes the clock key again (a clock drifts, or is stepped). */
const CLOCK_EVERY_MS = 60_000;
/** The recent writes the offset is taken from: the one with the shortest round trip. */
const CLOCK_SAMPLES = 5;
/** The longest the start waits for the first estimate (until there is one, the local clock stands in). */
const CLOCK_START_WAIT_MS = 2000;
/**
 * A write of the clock key that another node overwrote before it was read back (nodes started together write it in
 * the same milliseconds, and again every minute after) is written again within this long (random, so that they part),
 * up to {@link CLOCK_TRIES} writes in all.
 */
const CLOCK_RETRY_MS = 250;
const CLOCK_TRIES = 8;
/** Until a first estimate, one that could not be made (the bucket has no leader yet, say) is tried again this soon. */
const CLOCK_FIRST_RETRY_MS = 2000;
/**
 * A window's time may be this much before the server stored it (the failure, then the write) and 1 s after (the
 * writer's estimate of the server clock is off by a round trip at most): outside that, the writer's clock was not on
 * the server's (no estimate yet, or an older version writing its local clock) and the server's store time stands.
 */
const WRITE_LAG_MS = 10_000;
const ESTIMATE_SLACK_MS = 1000;

/** The window's start, on the server's clock: as written, unless that is impossible beside the entry's store time. */
const sinceOf = (entry: KvEntry): number | undefined => {
  try {
    const since = (JSON.parse(Buffer.from(entry.value).toString('utf8')) as { since?: unknown }).since;
    if (typeof since !== 'number' || !Number.isFinite(since)) return undefined;
    const stored = entry.created.getTime();
    if (!Number.isFinite(stored) || stored <= 0) return since;
    return since < stored - WRITE_LAG_MS || since > stored + ESTIMATE_SLACK_MS ? stored : since;
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
 *
 * Its times are on one clock, the NATS server's, so that nodes whose clocks differ agree: each node estimates the
 * offset of the server's clock to its monotonic clock from the store time (`created`) of its write of
 * {@link CLOCK_KEY}, at start and every minute (the write with the shortest round trip of the last few stands), and
 * takes its own times (a failure, a 2xx, now) as its monotonic clock plus that offset. Until a first estimate, its
 * own wall clock.
 */
export function createFailingWindows(deps: {
  kv: KV;
  log: Logger;
  clock: () => number;
  /** A clock that never steps (default `performance.now`): the estimate is kept against it, so a step of `clock` changes nothing. */
  monotonic?: () => number;
}) {
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
  const monotonic = deps.monotonic ?? (() => performance.now());
  /** Recent writes of the clock key: their round trip and the offset (server − monotonic) each gave. */
  const samples: Array<{ rtt: number; offset: number }> = [];
  /**
   * The server's clock minus the monotonic clock, when estimated: kept against a clock that never steps, so a step of
   * this node's wall clock changes no window (re-probe: a step of an hour paused a subscription 6.4 s into a 20 s limit).
   */
  let offset: number | undefined;
  let sampling: NodeJS.Timeout | undefined;
  /** Now on the server's clock, as this node estimates it (its own wall clock until a first estimate). */
  const shared = () => (offset === undefined ? deps.clock() : monotonic() + offset);
  /** The server's clock minus this node's wall clock, now. */
  const wallOffset = () => shared() - deps.clock();
  /** A time on the server's clock as this node's wall clock reads it now (what the service reports). */
  const local = (at: number) => at - wallOffset();

  let firstRetry: NodeJS.Timeout | undefined;

  /** Writes the clock key and reads its store time: an estimate of the offset, within half the round trip. */
  async function sampleClock(): Promise<void> {
    for (let tries = 1; !(await sampleOnce()); tries++) {
      if (stopped || tries >= CLOCK_TRIES) return;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * CLOCK_RETRY_MS));
    }
  }

  /** One write and read of the clock key: false when another node overwrote it meanwhile (no estimate from it). */
  async function sampleOnce(): Promise<boolean> {
    const before = monotonic();
    const revision = await kv.put(CLOCK_KEY, String(deps.clock()));
    const after = monotonic();
    const entry = await kv.get(CLOCK_KEY, { revision });
    // Overwritten by another node meanwhile (one key for all, one revision kept): written again.
    if (!entry || entry.revision !== revision) return false;
    const sample = { rtt: after - before, offset: entry.created.getTime() - (before + after) / 2 };
    const best = samples.reduce<(typeof samples)[number] | undefined>((b, x) => (b && b.rtt <= x.rtt ? b : x), undefined);
    // Not within the two round trips of the best one: the server's clock stepped (or its leader moved to a server
    // whose clock differs), the older estimates are wrong now.
    if (best && Math.abs(sample.offset - best.offset) > sample.rtt + best.rtt + ESTIMATE_SLACK_MS) samples.length = 0;
    samples.push(sample);
    if (samples.length > CLOCK_SAMPLES) samples.shift();
    offset = samples.reduce((b, x) => (x.rtt < b.rtt ? x : b)).offset;
    return true;
  }

  /**
   * A failed estimate keeps the last one: tried again a minute later. With none yet (the local clock stands in), it
   * is tried again every {@link CLOCK_FIRST_RETRY_MS} until one is made, with one warning.
   */
  const sampleLogged = (quiet = false): Promise<void> =>
    sampleClock()
      .catch((err: unknown) => {
        if (stopped || quiet) return;
        const next = offset === undefined ? 'trying again every 2 s until it answers' : 'trying again in a minute';
        log.warn({ err: natsReason(err), key: CLOCK_KEY }, `could not read the NATS server's clock; ${next}`);
      })
      .finally(() => {
        if (stopped || offset !== undefined || firstRetry) return;
        firstRetry = setTimeout(() => {
          firstRetry = undefined;
          void sampleLogged(true);
        }, CLOCK_FIRST_RETRY_MS);
        firstRetry.unref();
      });

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
  // Once a minute, with suppressed: a churn probe saw 3,421 in 80 s from one subscription whose answers alternated
  // through two nodes. A compare-and-set lost to another node's write is the race working as meant: not a warning.
  const unwrittenLine = throttledLine(60_000);
  const unwritten = (token: string) => (err: unknown) => {
    if (isWrongLastSequence(err))
      return log.debug({ err: natsReason(err), key: failingKey(token) }, 'a failing delivery window changed by another node meanwhile');
    unwrittenLine((suppressed) =>
      log.warn(
        { err: natsReason(err), key: failingKey(token), suppressed },
        'could not write a failing delivery window (logged once a minute)',
      ),
    );
  };

  return {
    /** Starts watching (the windows stored are heard first) and estimating the server's clock (a first estimate is waited for, briefly). */
    async start(): Promise<void> {
      const first = sampleLogged();
      sampling = setInterval(() => void sampleLogged(), CLOCK_EVERY_MS);
      sampling.unref();
      let waited: NodeJS.Timeout | undefined;
      await Promise.race([first, new Promise((resolve) => (waited = setTimeout(resolve, CLOCK_START_WAIT_MS)))]);
      clearTimeout(waited);
      await watch();
    },
    /** The server's clock minus this node's, as estimated (undefined: not yet, the local clock is used). */
    clockOffset: (): number | undefined => (offset === undefined ? undefined : wallOffset()),
    /** A 2xx from the receiver: the window ends, on every node. */
    succeeded(token: string): void {
      lastSuccess.set(token, shared());
      if (!since.has(token)) return;
      since.delete(token);
      kv.delete(failingKey(token)).catch(unwritten(token));
    },
    /**
     * Any other answer, or none. Returns since when every attempt has failed (on this node's clock), once that has lasted
     * `limitMs` (undefined: the default; 0: never): the subscription is to pause. The window ends then.
     */
    failed(token: string, limitMs: number | undefined): number | undefined {
      const limit = limitMs ?? DEFAULT_DISABLE_AFTER_FAILING_MS;
      // Never paused: no window is kept in the cluster (review: alternating answers wrote to it four times a pair).
      if (limit <= 0) return undefined;
      const now = shared();
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
      return local(at);
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
    /** Since when the subscription's attempts have failed, as this node last heard, on this node's clock (undefined: not failing). */
    failingSince: (token: string): number | undefined => {
      const at = since.get(token);
      return at === undefined ? undefined : local(at);
    },
    stop(): void {
      stopped = true;
      if (sampling) clearInterval(sampling);
      if (firstRetry) clearTimeout(firstRetry);
      if (rewatch) clearTimeout(rewatch);
      watcher?.stop();
    },
  };
}
export type FailingWindows = ReturnType<typeof createFailingWindows>;
