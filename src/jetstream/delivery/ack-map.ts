import { nanos, type JsMsg, type KV, type NatsConnection } from 'nats';
import { isWrongLastSequence } from '../nats-errors';
import type { AckEntry } from './outcome';

/** How long a node waits for JetStream to confirm an ack, nak or term it sent. */
const SIGNAL_TIMEOUT_MS = 5000;

export type Signal = { kind: 'ack' } | { kind: 'nak'; delayMs?: number } | { kind: 'term' } | { kind: 'progress' };

function payloadOf(signal: Signal): string {
  switch (signal.kind) {
    case 'ack':
      return '+ACK';
    case 'nak':
      return signal.delayMs ? `-NAK ${JSON.stringify({ delay: nanos(signal.delayMs) })}` : '-NAK';
    case 'term':
      return '+TERM';
    case 'progress':
      return '+WPI';
  }
}

/**
 * Settles a JetStream message through its ack subject, from any connection (the node that pulled
 * it may be another, or gone). Ack, nak and term wait for the consumer's confirmation (a request,
 * as `ackAck` does); a progress signal is published and flushed (the server does not answer it).
 */
export async function signal(nc: NatsConnection, reply: string, s: Signal): Promise<void> {
  if (s.kind === 'progress') {
    nc.publish(reply, payloadOf(s));
    await nc.flush();
    return;
  }
  await nc.request(reply, payloadOf(s), { timeout: SIGNAL_TIMEOUT_MS });
}

/** Where the give-backs of one message to one consumer are counted (beside the delivery ids, which start `dlv_`). */
const unspentKey = (key: string) => `unspent.${key}`;
/** The last attempt of one message to one consumer that was opened (see {@link Latest}). */
const latestKey = (key: string) => `latest.${key}`;
/** Compare-and-set rounds of a pointer write (each lost round means another delivery wrote). */
const CLAIM_ROUNDS = 5;

/**
 * A message's pointer to its last attempt opened: its delivery id and JetStream's delivery count
 * (a count, not the attempt number: give-backs count too). Written by compare-and-set, so an
 * attempt of a lower count than one already started learns it is stale.
 */
export interface Latest {
  id: string;
  count: number;
  revision: number;
}

/** A pointer as written by a node of the release before counts (a bare delivery id) has count 0: it never makes an attempt stale. */
function decodeLatest(value: string): { id: string; count: number } {
  if (!value.startsWith('{')) return { id: value, count: 0 };
  const v = JSON.parse(value) as { id?: unknown; count?: unknown };
  return { id: String(v.id), count: typeof v.count === 'number' ? v.count : 0 };
}

/**
 * A message's key for {@link AckMap.giveBack}: its consumer, that consumer's incarnation, and the
 * stream sequence (what JetStream counts deliveries of).
 */
export const messageKey = (msg: JsMsg, instance: string): string =>
  `${msg.info.stream}.${msg.info.consumer}.${instance || '0'}.${msg.info.streamSequence}`;

/**
 * The ack map (KV `<prefix>_acks`, TTL 2 days): delivery id → `AckEntry`. Every change is a
 * compare-and-set on the entry's revision (the bucket's `update` is `withSafeUpdate`'s, which holds
 * on a cluster), so of two nodes settling one attempt (a callback and the request's own answer, or
 * two callbacks) exactly one wins; the other sees what won.
 */
export function createAckMap(kv: KV) {
  const decode = (value: Uint8Array) => JSON.parse(Buffer.from(value).toString('utf8')) as AckEntry;
  /** Attempts this node is sending under ack mode auto, until their answer is decided (a 202 opens the entry). */
  const beingSent = new Map<string, Promise<void>>();
  async function open(deliveryId: string, entry: AckEntry): Promise<number | undefined> {
    try {
      return await kv.create(deliveryId, JSON.stringify(entry));
    } catch (err) {
      if (isWrongLastSequence(err)) return undefined;
      throw err;
    }
  }
  async function latest(key: string): Promise<Latest | undefined> {
    const got = await kv.get(latestKey(key));
    if (!got || got.operation !== 'PUT' || got.value.length === 0) return undefined;
    return { ...decodeLatest(Buffer.from(got.value).toString('utf8')), revision: got.revision };
  }
  return {
    /**
     * Marks an auto-mode attempt as being sent by this node; call the function returned once its
     * answer is decided (its entry opened, or not to be).
     */
    sending(deliveryId: string): () => void {
      let done!: () => void;
      beingSent.set(deliveryId, new Promise<void>((resolve) => (done = resolve)));
      return () => {
        beingSent.delete(deliveryId);
        done();
      };
    },
    /** Resolves when the attempt, if this node is sending it, has its answer decided; undefined when it is not. */
    decided: (deliveryId: string): Promise<void> | undefined => beingSent.get(deliveryId),
    /**
     * Creates the entry of a new attempt; its revision, or undefined when the id was taken first: a
     * redelivery closed this attempt before its entry was written (see `preempt`).
     */
    open,
    /**
     * Writes a closed entry under the id of an attempt whose entry is not there yet (its node wrote
     * the message's pointer first, or is between the two writes): its own create then fails and it
     * learns it is stale. False when the entry was written first (read it again).
     */
    async preempt(deliveryId: string, entry: AckEntry): Promise<boolean> {
      return (await open(deliveryId, entry)) !== undefined;
    },
    /** The message's pointer to its last attempt opened (see {@link Latest}), with its revision; undefined when there is none. */
    latest,
    /**
     * Points the message `key` at this attempt (delivery `count`) by compare-and-set against `seen`
     * (the pointer as read, or undefined: none), so that the message's next delivery finds it. When
     * another write came first, the pointer is read again: one of a later delivery makes this attempt
     * `stale` (its message belongs to that delivery); one of an earlier one (a node that stalled before
     * it wrote) is passed to `closeFirst` and the write tried again, unless closing it ended the message
     * (a callback had settled it, or its lapsed lease was the last attempt): `closeFirst` then answers
     * false and the attempt is `ended`, not sent.
     */
    async claim(
      key: string,
      count: number,
      deliveryId: string,
      seen: Latest | undefined,
      closeFirst: (earlier: Latest) => Promise<boolean>,
    ): Promise<'claimed' | 'stale' | 'ended'> {
      let current = seen;
      for (let round = 0; round < CLAIM_ROUNDS; round++) {
        if (current !== undefined && current.count > count) return 'stale';
        if (current !== undefined && current.id === deliveryId) return 'claimed';
        const value = JSON.stringify({ id: deliveryId, count });
        try {
          if (current === undefined) await kv.create(latestKey(key), value);
          else await kv.update(latestKey(key), value, current.revision);
          return 'claimed';
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
        }
        current = await latest(key);
        if (current !== undefined && current.count <= count && current.id !== deliveryId && !(await closeFirst(current))) return 'ended';
      }
      throw new Error(`the pointer of message ${key} kept changing; the message is left to be redelivered`);
    },
    async get(deliveryId: string): Promise<{ entry: AckEntry; revision: number } | undefined> {
      const got = await kv.get(deliveryId);
      if (!got || got.operation !== 'PUT' || got.value.length === 0) return undefined;
      return { entry: decode(got.value), revision: got.revision };
    },
    /**
     * A message given back unsent (its node stopped while its request waited, or held it paused):
     * JetStream counts the give-back as a delivery, so it is noted here, to be taken off the attempt
     * number (the delivery count) when the message comes again. Best effort: unnoted, the event goes
     * one attempt number higher, as after a crash.
     */
    async giveBack(key: string): Promise<void> {
      const got = await kv.get(unspentKey(key));
      const count = got && got.operation === 'PUT' ? Number(Buffer.from(got.value).toString('utf8')) || 0 : 0;
      await kv.put(unspentKey(key), String(count + 1));
    },
    /** Deliveries of the message that were give-backs, not attempts (see `giveBack`). */
    async unspent(key: string): Promise<number> {
      const got = await kv.get(unspentKey(key));
      if (!got || got.operation !== 'PUT') return 0;
      const n = Number(Buffer.from(got.value).toString('utf8'));
      return Number.isSafeInteger(n) && n > 0 ? n : 0;
    },
    /** Replaces the entry if it is still at `revision`; the new revision, or undefined when another write came first. */
    async swap(deliveryId: string, entry: AckEntry, revision: number): Promise<number | undefined> {
      try {
        return await kv.update(deliveryId, JSON.stringify(entry), revision);
      } catch (err) {
        if (isWrongLastSequence(err)) return undefined;
        throw err;
      }
    },
  };
}
export type AckMap = ReturnType<typeof createAckMap>;
