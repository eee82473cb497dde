import { headers, type JetStreamClient, type KV, type PubAck } from 'nats';
import type { CloudEvent } from '../cloudevents/event';
import { eventId, eventSource } from '../cloudevents/event';
import { partitionOf } from '../cloudevents/partition';
import type { AppendResult } from '../wal/event-store';
import { PUBLISHED_AT_HEADER, decodeClaim, encodeEventMessage, type Claim } from './codec';
import { idempotencyKey, type JetStreamNames } from './names';
import { AppError, type Violation } from '../errors';
import { STORE_FULL_RETRY_AFTER_SECONDS, clusterUnavailable, isWrongLastSequence, natsReason } from './nats-errors';
import { DUPLICATE_WINDOW_MS } from './provision';

/**
 * Ingest on JetStream: one event is three steps, each acknowledged by a majority of replicas.
 *
 *   1. claim   `kv.create(key, {p})`            the idempotency record, first writer wins, cluster-wide;
 *                                               `p` is the partition the event goes to, fixed from now on
 *   2. publish `js.publish(<prefix>.p.<p>, …, Nats-Msg-Id: key)`
 *                                               the event; offset = stream sequence − 1
 *   3. settle  `kv.update(key, {p, o}, claimRevision)`
 *                                               the record now names the offset
 *   then the 2xx.
 *
 * `key` is SHA-256(source NUL id); the bucket's TTL is HERALD_IDEMPOTENCY_WINDOW; the stream's
 * `Nats-Msg-Id` window is {@link DUPLICATE_WINDOW_MS} (2 minutes, in server memory).
 *
 * Whoever finds a claim without an offset (its writer crashed, timed out, or is still at work)
 * completes it: it publishes its own copy of the event to the claimed partition with the same
 * `Nats-Msg-Id`, then settles. A crash (of a node, or a lost connection) between any two steps:
 *
 *   - before 1 ends: nothing is stored or claimed; a retry is a new event.
 *   - between 1 and 2 (claimed, not published): nothing is stored. A retry completes the claim
 *     and stores the event once, answered as new (202, `duplicate: false`).
 *   - between 2 and 3 (published, not settled): the event is stored but not acknowledged. A retry
 *     within 2 minutes publishes with the same `Nats-Msg-Id`; JetStream answers the original
 *     sequence as a duplicate, and the retry settles and answers it (`duplicate: true`, original
 *     partition and offset). A retry after 2 minutes stores the event a second time (a duplicate
 *     stored, never acknowledged twice) and settles on the second copy; the first stays in the
 *     partition unreferenced. A node frozen (a GC pause, a stopped VM) for over 2 minutes with
 *     publishes handed to its connection but not yet sent stores those a second time when it
 *     resumes (what it had not handed over is read again first: see `append`). These are the only
 *     ways a source+id can be stored twice; delivery skips a copy stored over a minute after its
 *     publish was made (`Herald-Published-At`) when the record is settled on another.
 *   - between 3 and the answer: a retry finds the offset and answers `duplicate: true` with it.
 *
 * So a crash can cause at most one extra stored copy, never a lost acknowledged event (the 2xx
 * comes after all three steps) and never a wrong duplicate answer (a duplicate is answered only
 * from a settled record, or from JetStream's own de-duplication of the same key in the same stream).
 * Until a record is settled, `GET /events?source&id` answers 404 for it. Concurrent requests for
 * one source+id, on any nodes, store it once: all publish with the same `Nats-Msg-Id` to the same
 * partition, and one settles (the others' `update` loses and reads the settled record).
 *
 * A settled record whose offset is gone from the front of its stream (a purge, limits an operator
 * set; the cluster monitor's first offsets tell) is claimed again, `{p, g}` at the record's revision
 * with `g` one more than before, and its event stored again, as the local engine does after
 * retention. Its publish's `Nats-Msg-Id` is `key.g`, so JetStream does not answer it with the purged
 * sequence; a retry of that claim uses the same id, so the crash analysis above holds for it.
 *
 * A batch is not all or nothing (2.9.10 has no atomic batch publish): claims run concurrently,
 * publishes go out in input order (so offsets within a partition follow it), then settles; if any
 * step of any event fails the request is a 503, what was stored stays, and a retry of the batch
 * answers it as duplicates.
 */

const MAX_CLAIM_ATTEMPTS = 3;
/** Claims answered this long after they were asked are read again before their events are published (see `append`). */
const LATE_CLAIM_MS = DUPLICATE_WINDOW_MS / 2;
/** How long a publish may wait for its acknowledgement before the request is answered 503. */
const PUBLISH_TIMEOUT_MS = 5000;
/** NATS counts a message's headers (`Nats-Msg-Id`, `Nats-Expected-Stream`: about 150 bytes) toward `max_payload`. */
const HEADER_ALLOWANCE_BYTES = 1024;

const encodeClaim = (claim: Claim) => JSON.stringify(claim);

/** Where an event of the request ended up. */
export interface Outcome {
  partition: number;
  offset: number;
  duplicate: boolean;
}

export interface AppenderDeps {
  js: JetStreamClient;
  kv: KV;
  names: JetStreamNames;
  partitions: number;
  /** The server's `max_payload` (from its INFO), once connected. */
  maxPayload: () => number | undefined;
  /** Told where the request's events are, as soon as they are settled (also when another event of the request failed). */
  onSettled?: (outcomes: Outcome[]) => void;
  /** Every offset of the partition below this is known gone from its stream (0: none known). */
  knownGoneBelow: (partition: number) => number;
  /** The highest sequence known to exist in the partition's stream: a message published now must be stored above it. */
  knownHead: (partition: number) => number;
  /** Told that a publish was stored at or below a sequence known before it (the stream was replaced): writes stop. */
  wentBack: (partition: number, known: number, seen: number) => void;
  /** Told that a write to `stream` was refused (`code` as answered, `reason` the server's): storage, or a failed store write. */
  refused?: (stream: string, code: string, reason: string) => void;
  /** Told that a write to `stream` was taken. */
  took?: (stream: string) => void;
  /**
   * Why writes are refused until a restart (see `wentBack`, `refused`), or undefined. Read again when a publish is
   * answered: one sent before the fence and stored after it is at an offset the replicas may give to another event.
   */
  fenced?: () => string | undefined;
  /** Tests: the clock claims are timed by (default `Date.now`). */
  clock?: () => number;
}

/** A claimed record: ours or someone else's, settled or not, and the revision to settle it from. */
type Claimed = { claim: Claim; revision: number };

export function createAppender(deps: AppenderDeps) {
  const { js, kv, names, partitions } = deps;

  /** A write to `stream` that failed, as answered; the cluster monitor learns of a refusal for storage or a failed store. */
  const writeFailed = (err: unknown, what: string, stream: string): AppError => {
    const answer = clusterUnavailable(err, what);
    deps.refused?.(stream, answer.code, natsReason(err));
    return answer;
  };

  /** The idempotency record under `key` now (after a write lost to another writer), or undefined when there is none. */
  async function currentRecord(key: string) {
    let entry;
    try {
      entry = await kv.get(key);
    } catch (err) {
      throw clusterUnavailable(err, 'read idempotency keys');
    }
    return entry?.operation === 'PUT' ? entry : undefined;
  }

  /** Step 1: our claim, or the record that is already there. */
  async function claim(key: string, partition: number): Promise<Claimed> {
    for (let attempt = 1; ; attempt++) {
      try {
        const revision = await kv.create(key, encodeClaim({ p: partition }));
        deps.took?.(names.idempotencyStream);
        return { claim: { p: partition }, revision };
      } catch (err) {
        if (!isWrongLastSequence(err)) throw writeFailed(err, 'record idempotency keys', names.idempotencyStream);
      }
      const entry = await currentRecord(key);
      if (entry) {
        const found = decodeClaim(entry.value);
        if (!isGone(found)) return { claim: found, revision: entry.revision };
        // Its event is gone from the stream (a purge, an operator's limits): stored again, as the local engine
        // does after retention, rather than answered as a duplicate at an offset that holds nothing.
        const again: Claim = { p: partition, g: (found.g ?? 0) + 1 };
        const revision = await replace(key, entry.revision, again);
        if (revision !== undefined) return { claim: again, revision };
        continue; // changed meanwhile: look again
      }
      // Expired or deleted between our create and our get: claim again.
      if (attempt >= MAX_CLAIM_ATTEMPTS)
        throw clusterUnavailable(new Error('the idempotency record keeps changing'), 'record idempotency keys');
    }
  }

  /** Whether a settled record's event is gone from the front of its stream. */
  const isGone = (c: Claim): boolean => c.o !== undefined && c.o < deps.knownGoneBelow(c.p);

  /** Our claim in place of a stale record at `revision`; undefined when another writer changed it first. */
  async function replace(key: string, revision: number, claim: Claim): Promise<number | undefined> {
    try {
      return await kv.update(key, encodeClaim(claim), revision);
    } catch (err) {
      if (isWrongLastSequence(err)) return undefined;
      throw writeFailed(err, 'record idempotency keys', names.idempotencyStream);
    }
  }

  /**
   * Step 2. Called synchronously in input order by {@link append}, so a partition's offsets follow it.
   * A new message stored at or below the head known before it was sent means the stream was deleted
   * and made again behind Herald: its offset may be acknowledged for another event already, so it is
   * never settled or answered (the store stops taking writes; see the cluster monitor).
   */
  async function publish(message: Uint8Array, key: string, claim: Claim): Promise<PubAck> {
    const partition = claim.p;
    const knownBefore = deps.knownHead(partition);
    const h = headers();
    // Read by delivery: a copy stored past the de-duplication window is checked against the record.
    h.set(PUBLISHED_AT_HEADER, String(Date.now()));
    const ack = await js
      .publish(names.subject(partition), message, {
        headers: h,
        // A claim made again after its event was gone must not be deduplicated against the first publish.
        msgID: claim.g ? `${key}.${claim.g}` : key,
        expect: { streamName: names.stream(partition) },
        timeout: PUBLISH_TIMEOUT_MS,
      })
      .catch((err: unknown) => {
        throw writeFailed(err, `store events in stream ${names.stream(partition)}`, names.stream(partition));
      });
    deps.took?.(names.stream(partition));
    if (!ack.duplicate && ack.seq <= knownBefore) {
      deps.wentBack(partition, knownBefore, ack.seq);
      throw new AppError(
        'unavailable',
        `partition ${partition}'s stream went back to sequence ${ack.seq} behind Herald; the event was not acknowledged`,
        {
          retryAfter: 1,
        },
      );
    }
    // Another publish through this node was refused while this one was on its way (a server failed to store it):
    // this one was sequenced after that failure, at an offset the stream's replicas may hold for another event.
    const fence = deps.fenced?.();
    if (fence !== undefined)
      throw new AppError(
        'unavailable',
        `stream ${names.stream(partition)} stored the event at sequence ${ack.seq} after this node stopped taking writes (${fence}); the event was not acknowledged`,
        { retryAfter: STORE_FULL_RETRY_AFTER_SECONDS },
      );
    return ack;
  }

  /** Step 3: records the offset, or learns the one another node recorded first. */
  async function settle(key: string, claimed: Claimed, ack: PubAck): Promise<Outcome> {
    const offset = ack.seq - 1;
    try {
      await kv.update(key, encodeClaim({ ...claimed.claim, o: offset }), claimed.revision);
      return { partition: claimed.claim.p, offset, duplicate: ack.duplicate };
    } catch (err) {
      if (!isWrongLastSequence(err)) throw writeFailed(err, 'record idempotency keys', names.idempotencyStream);
    }
    const entry = await currentRecord(key);
    const settled = entry ? decodeClaim(entry.value) : undefined;
    if (settled?.o === undefined) throw clusterUnavailable(new Error('the idempotency record was not settled'), 'record idempotency keys');
    const same = settled.p === claimed.claim.p && settled.o === offset;
    return { partition: settled.p, offset: settled.o, duplicate: same ? ack.duplicate : true };
  }

  /** A claim as the record stands now: settled by another node meanwhile, its offset (the event is not published again). */
  async function recheck(key: string, claimed: PromiseSettledResult<Claimed>): Promise<Claimed> {
    if (claimed.status === 'rejected') throw claimed.reason;
    if (claimed.value.claim.o !== undefined) return claimed.value;
    const entry = await currentRecord(key);
    const now = entry ? decodeClaim(entry.value) : undefined;
    return now?.o !== undefined && now.p === claimed.value.claim.p && !isGone(now)
      ? { claim: now, revision: entry!.revision }
      : claimed.value;
  }

  /**
   * Stores the events not seen before (by source+id) and answers each, in input order.
   * @throws AppError `unavailable` when any step of any event failed (what was stored stays; see above)
   */
  async function append(events: CloudEvent[]): Promise<AppendResult[]> {
    const keys = events.map((e) => idempotencyKey(eventSource(e), eventId(e)));
    // A source+id repeated within the request is answered as a duplicate of its first occurrence.
    const first = new Map<string, number>();
    keys.forEach((key, i) => first.has(key) || first.set(key, i));
    const unique = [...first.values()];
    const messages = unique.map((i) => encodeEventMessage(events[i]!));
    refuseOversized(messages, unique, events.length > 1);

    const clock = deps.clock ?? Date.now;
    const claimedFrom = clock();
    const claims = await Promise.allSettled(unique.map((i) => claim(keys[i]!, partitionOf(events[i]!, partitions))));
    const publishClaimed = (u: number): Promise<PubAck> | undefined => {
      const c = claims[u]!;
      if (c.status === 'rejected' || c.value.claim.o !== undefined) return undefined;
      return publish(messages[u]!, keys[unique[u]!]!, c.value.claim);
    };
    const acks: (Promise<PubAck | undefined> | undefined)[] = [];
    let next = 0;
    for (; next < unique.length && clock() - claimedFrom < LATE_CLAIM_MS; next++) acks.push(publishClaimed(next));
    // Frozen meanwhile (a GC pause, a stopped VM: before the claims were answered, or in this very loop),
    // another node may have completed the claims left, past their publish's de-duplication window. Each is
    // read again before it is published, one after another (a partition's offsets follow the input).
    let issued: Promise<unknown> = Promise.resolve();
    for (; next < unique.length; next++) {
      const at = next;
      const turn = issued.then(async () => {
        claims[at] = (await Promise.allSettled([recheck(keys[unique[at]!]!, claims[at]!)]))[0]!;
        return { ack: publishClaimed(at) };
      });
      issued = turn.catch(() => undefined);
      acks.push(turn.then((t) => t.ack));
    }
    const outcomes = await Promise.allSettled(
      unique.map(async (i, u) => {
        const ack = await acks[u];
        const c = claims[u]!;
        if (c.status === 'rejected') throw c.reason;
        if (c.value.claim.o !== undefined) return { partition: c.value.claim.p, offset: c.value.claim.o, duplicate: true };
        return settle(keys[i]!, c.value, ack!);
      }),
    );

    const byKey = new Map<string, Outcome>();
    let failure: unknown;
    outcomes.forEach((o, u) => {
      if (o.status === 'fulfilled') byKey.set(keys[unique[u]!]!, o.value);
      else failure ??= o.reason;
    });
    deps.onSettled?.([...byKey.values()]);
    if (failure !== undefined) throw failure;
    return events.map((e, i) => {
      const outcome = byKey.get(keys[i]!)!;
      return { id: eventId(e), source: eventSource(e), ...outcome, duplicate: outcome.duplicate || first.get(keys[i]!) !== i };
    });
  }

  /**
   * The server refuses a message past its `max_payload` (1 MB by default, below what HERALD_MAX_BODY_BYTES may
   * allow): such an event is a 413 before anything is claimed or stored, not a 503 that no retry can cure.
   */
  function refuseOversized(messages: Uint8Array[], indexes: number[], batch: boolean): void {
    const max = deps.maxPayload();
    if (max === undefined) return;
    const limit = max - HEADER_ALLOWANCE_BYTES;
    const details: Violation[] = [];
    messages.forEach((m, u) => {
      if (m.length <= limit) return;
      const message = `the event is ${m.length} bytes stored; the JetStream cluster takes at most ${limit} (its max_payload less ${HEADER_ALLOWANCE_BYTES} for headers)`;
      details.push(batch ? { index: indexes[u]!, message } : { message });
    });
    if (details.length > 0)
      throw new AppError('payload_too_large', 'an event is larger than the JetStream cluster takes; nothing was stored', { details });
  }

  return { append };
}
