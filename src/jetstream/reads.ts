import type { JetStreamManager, KV, StoredMsg } from 'nats';
import type { Logger } from 'pino';
import { AppError } from '../errors';
import { newerFormatUnavailable } from '../wal/event-store';
import type { ReadPage, StoredEvent } from '../wal/event-store';
import type { ClusterMonitor } from './cluster-monitor';
import { NewerFormatError, decodeClaim, decodeEventMessage, formatOf } from './codec';
import { idempotencyKey, type JetStreamNames } from './names';
import { clusterUnavailable, isNotFound } from './nats-errors';

/** Direct gets in flight at once for one page (each is one small request on the shared connection). */
const READ_CONCURRENCY = 128;

/** nats.js's manager has direct gets (`$JS.API.DIRECT.GET`), though its exported interface does not list them. */
type WithDirectGet = JetStreamManager & { direct: { getMessage(stream: string, query: { seq: number }): Promise<StoredMsg> } };

export interface ReadsDeps {
  jsm: JetStreamManager;
  kv: KV;
  names: JetStreamNames;
  monitor: ClusterMonitor;
  log: Logger;
}

/**
 * Reads from the cluster. A message is fetched by a direct get (any replica answers); a replica that
 * has not caught up answers "not found", so a miss below the head asks the stream leader before it
 * counts as a gap. Lookups read the idempotency record from the bucket's leader (the bucket has no
 * direct gets), so an event acknowledged through any node is found through every other at once.
 */
export function createReads(deps: ReadsDeps) {
  const { jsm, kv, names, monitor, log } = deps;

  /** The message at `seq`: from any replica (direct get), or from the stream's leader alone. */
  async function messageAt(partition: number, seq: number, leaderOnly = false): Promise<StoredMsg | undefined> {
    const stream = names.stream(partition);
    if (!leaderOnly) {
      try {
        return await (jsm as WithDirectGet).direct.getMessage(stream, { seq });
      } catch (err) {
        if (!isNotFound(err)) throw clusterUnavailable(err, 'read events');
      }
    }
    try {
      return await jsm.streams.getMessage(stream, { seq });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw clusterUnavailable(err, 'read events');
    }
  }

  /** The event in a message; undefined (logged) when its payload is not one Herald wrote; 'newer' when a newer Herald wrote it. */
  function decode(partition: number, msg: StoredMsg): StoredEvent | 'newer' | undefined {
    try {
      return { partition, offset: msg.seq - 1, storedAt: msg.time.getTime(), event: decodeEventMessage(msg.data, formatOf(msg.header)) };
    } catch (err) {
      if (err instanceof NewerFormatError) return 'newer';
      log.error({ err, partition, offset: msg.seq - 1, stream: names.stream(partition) }, 'corrupt event message in a partition stream');
      return undefined;
    }
  }

  /** Up to `limit` events of a partition from `fromOffset` (from the first stored offset when below it), up to the head. */
  async function read(partition: number, fromOffset: number, limit: number): Promise<ReadPage> {
    const { head, first } = await monitor.boundsOf(partition);
    const start = Math.max(fromOffset, first);
    const end = Math.min(start + limit, head);
    const events: StoredEvent[] = [];
    for (let chunk = start; chunk < end; chunk += READ_CONCURRENCY) {
      const offsets = Array.from({ length: Math.min(READ_CONCURRENCY, end - chunk) }, (_, i) => chunk + i);
      const messages = await Promise.all(offsets.map((offset) => messageAt(partition, offset + 1)));
      for (const msg of messages) {
        if (!msg) continue; // a gap: nothing is stored there
        const stored = decode(partition, msg);
        if (!stored) return { events, corruptOffset: msg.seq - 1 };
        // A newer node's event ends the page; what came before it is served.
        if (stored === 'newer') return { events, newerFormatOffset: msg.seq - 1 };
        events.push(stored);
      }
    }
    return { events };
  }

  /** The event settled under source+id (a claim without an offset was never acknowledged: not found). */
  async function lookup(source: string, id: string): Promise<StoredEvent | undefined> {
    let entry;
    try {
      entry = await kv.get(idempotencyKey(source, id));
    } catch (err) {
      throw clusterUnavailable(err, 'read idempotency keys');
    }
    if (!entry || entry.operation !== 'PUT') return undefined;
    const claim = decodeClaim(entry.value);
    if (claim.o === undefined) return undefined;
    const found = await eventAt(claim.p, claim.o, source, id, false);
    if (found !== 'mismatch') return found;
    // Another event where the record says this one is: the replica that answered may have diverged from
    // the others (nats-server after long stalls, a JetStream probe saw). The leader's copy decides.
    const fromLeader = await eventAt(claim.p, claim.o, source, id, true);
    if (fromLeader === 'mismatch')
      throw new AppError('corrupt_record', `the event stored for source "${source}" and id "${id}" cannot be read`);
    log.error(
      { partition: claim.p, offset: claim.o, stream: names.stream(claim.p) },
      'a replica of a partition stream holds another event at this offset than its leader (diverged); the leader was read',
    );
    return fromLeader;
  }

  /** The event at `offset` if it is source+id's; `mismatch` when another event, or none Herald can read, is there. */
  async function eventAt(partition: number, offset: number, source: string, id: string, leaderOnly: boolean) {
    const msg = await messageAt(partition, offset + 1, leaderOnly);
    if (!msg) return undefined;
    const stored = decode(partition, msg);
    if (stored === 'newer') throw newerFormatUnavailable(partition, offset);
    if (!stored || stored.event.attributes.source !== source || stored.event.attributes.id !== id) return 'mismatch' as const;
    return stored;
  }

  return { read, lookup };
}
