import type { KV, KvEntry, QueuedIterator } from 'nats';
import type { Logger } from 'pino';
import { AppError } from '../errors';
import type { SubscriptionRecord } from '../subscriptions/record';
import { RevisionConflict, type RecordChange, type StoredSubscription, type SubscriptionStore } from '../subscriptions/record-store';
import { jsonOrUndefined } from './codec';
import { removeCurrent } from './kv-update';
import { clusterUnavailable, isWrongLastSequence, natsReason } from './nats-errors';

/** Wait before watching again after the watch ended unasked (a lost connection that outlived its consumer). */
const REWATCH_DELAY_MS = 1000;
/**
 * How long a new watch waits, past its own "initialized", to reach the bucket's last revision as the
 * stream leader had it. The watch's consumer can sit on a replica that has not applied the latest
 * writes yet (CI saw a record deleted before a node opened reach it as stored, its deletion a moment
 * later); past this bound the watch is used as it is and the writes follow.
 */
const CATCH_UP_MS = 10_000;

const encode = (record: SubscriptionRecord) => JSON.stringify(record);

/**
 * The record an entry holds, checked for what every node relies on (its key as id, a sink, delivery
 * options, a state). The bucket can be written behind Herald's back: anything else is corrupt.
 * @throws AppError `corrupt_record`
 */
function recordOf(entry: KvEntry): SubscriptionRecord {
  const r = jsonOrUndefined(entry.value) as Partial<SubscriptionRecord> | null | undefined;
  const valid =
    typeof r === 'object' &&
    r !== null &&
    r.id === entry.key &&
    typeof r.sink === 'string' &&
    typeof r.state === 'string' &&
    typeof r.secret === 'string' &&
    Array.isArray(r.filters) &&
    typeof r.delivery === 'object' &&
    r.delivery !== null &&
    (r.allowedRate == null ||
      (typeof r.allowedRate === 'object' && r.allowedRate.perSecond > 0 && Number.isFinite(r.allowedRate.perSecond)));
  if (!valid) throw new AppError('corrupt_record', `the stored record of subscription ${entry.key} is not a subscription record`);
  // Records written before the sink's grant was kept apart have none.
  return { ...(r as SubscriptionRecord), allowedRate: r.allowedRate ?? null };
}

/** What a watched or read entry means: a record (PUT) or its deletion (DEL, PURGE). */
function changeOf(entry: KvEntry): RecordChange {
  if (entry.operation === 'PUT') return { kind: 'put', record: recordOf(entry), revision: entry.revision };
  return { kind: 'delete', id: entry.key, revision: entry.revision };
}

/** Sends one entry on; a listener that throws is logged, and the watch goes on with the next entry. */
function deliver(onChange: (change: RecordChange) => void, entry: KvEntry, log?: Logger): void {
  try {
    onChange(changeOf(entry));
  } catch (err) {
    log?.error({ err, subscription: entry.key, revision: entry.revision }, 'a subscription change from the bucket could not be applied');
  }
}

/**
 * The JetStream engine's {@link SubscriptionStore}: the KV bucket `<prefix>_subs`, key = subscription
 * id, value = the record as JSON, shared by every node.
 *
 * - `insert` is `kv.create` (refused if the key exists: a cluster-wide "first writer wins").
 * - `update` is `kv.update` from the revision read: JetStream refuses it ("wrong last sequence") when
 *   any node wrote or deleted the record since, which becomes a {@link RevisionConflict}; the service
 *   reads again and decides again.
 * - `get` reads from the bucket's stream leader (the bucket has `allow_direct` off), so a record
 *   written through any node is found at once.
 * - `open` watches the whole bucket: every record first, then every write by any node in the
 *   bucket's order. It resolves once the watch has reached the revision the stream leader had when it
 *   began, so a record deleted (or written) before a node opens is seen as such by then. A watch that ends unasked is started again from the revision after the last one
 *   seen, so no change is skipped.
 *
 * A cluster that cannot answer is AppError `unavailable` (503 + Retry-After), as for events.
 */
export function createKvSubscriptionStore(deps: { kv: KV; log: Logger }): SubscriptionStore {
  const { kv, log } = deps;
  let watcher: QueuedIterator<KvEntry> | undefined;
  let closed = false;
  let lastRevision = 0;

  /**
   * Watches from `lastRevision + 1` (everything, at first); resolves once the entries stored when it
   * started are sent, rejects if it ends before.
   */
  async function watch(onChange: (change: RecordChange) => void): Promise<void> {
    // Read from the stream leader: every write acknowledged before this watch started is at or below it.
    const target = (await kv.status()).streamInfo.state.last_seq;
    let initialized = false;
    let ready!: { resolve: () => void; reject: (err: unknown) => void };
    const started = new Promise<void>((resolve, reject) => (ready = { resolve, reject }));
    const resolveIfCaughtUp = () => {
      if (initialized && lastRevision >= target) ready.resolve();
    };
    const iterator = await kv.watch({
      key: '>',
      initializedFn: () => {
        initialized = true;
        resolveIfCaughtUp();
        setTimeout(() => {
          if (lastRevision < target) log.warn({ lastRevision, target }, 'the watch of the subscriptions bucket is behind its leader');
          ready.resolve();
        }, CATCH_UP_MS).unref();
      },
      ...(lastRevision > 0 && { resumeFromRevision: lastRevision + 1 }),
    });
    watcher = iterator;
    void (async () => {
      let failure: unknown = new Error('the watch ended');
      try {
        for await (const entry of iterator) {
          if (entry.revision <= lastRevision) continue;
          lastRevision = entry.revision;
          deliver(onChange, entry, log);
          resolveIfCaughtUp();
        }
      } catch (err) {
        failure = err;
        log.warn({ err: natsReason(err) }, 'the watch of the subscriptions bucket failed');
      }
      if (!initialized) return ready.reject(failure);
      if (closed) return;
      log.warn({ lastRevision }, 'watching the subscriptions bucket again');
      rewatch(onChange);
    })();
    await started;
  }

  function rewatch(onChange: (change: RecordChange) => void): void {
    setTimeout(() => {
      if (closed) return;
      watch(onChange).catch((err: unknown) => {
        log.warn({ err: natsReason(err) }, 'cannot watch the subscriptions bucket yet');
        rewatch(onChange);
      });
    }, REWATCH_DELAY_MS).unref();
  }

  return {
    async open(onChange) {
      try {
        await watch(onChange);
      } catch (err) {
        throw clusterUnavailable(err, 'read the subscriptions');
      }
    },
    async get(id): Promise<StoredSubscription | undefined> {
      // Not a key the bucket can hold: no such subscription (the NATS client's "invalid key" was a 503 to retry).
      if (!isKvKey(id)) return undefined;
      let entry: KvEntry | null;
      try {
        entry = await kv.get(id);
      } catch (err) {
        throw clusterUnavailable(err, 'read the subscription');
      }
      if (!entry || entry.operation !== 'PUT') return undefined;
      return { record: recordOf(entry), revision: entry.revision };
    },
    async insert(record) {
      try {
        return await kv.create(record.id, encode(record));
      } catch (err) {
        if (isWrongLastSequence(err)) throw new AppError('conflict', `subscription ${record.id} exists already`, { cause: err });
        throw clusterUnavailable(err, 'store the subscription');
      }
    },
    async update(record, revision) {
      try {
        return await kv.update(record.id, encode(record), revision);
      } catch (err) {
        if (isWrongLastSequence(err)) throw new RevisionConflict(record.id);
        throw clusterUnavailable(err, 'store the subscription');
      }
    },
    async remove(id) {
      if (!isKvKey(id)) return false;
      try {
        // From the revision it has now: an update from an older one cannot bring it back. False: another node's
        // deletion of it came first (a compare-and-set delete loses to it).
        return await removeCurrent(kv, id);
      } catch (err) {
        throw clusterUnavailable(err, 'delete the subscription');
      }
    },
    async close() {
      closed = true;
      watcher?.stop();
    },
  };
}

/** A key a KV bucket can hold (what the NATS client checks): letters, digits and `-/_=.`, no `.` first or last. */
function isKvKey(id: string): boolean {
  return /^[-/=.\w]+$/.test(id) && !id.startsWith('.') && !id.endsWith('.');
}
