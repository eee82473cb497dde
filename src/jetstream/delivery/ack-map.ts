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
/** The delivery id of the last attempt of one message to one consumer that was opened to callbacks. */
const latestKey = (key: string) => `latest.${key}`;

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
     * Creates the entry of a new attempt of the message `key` (see {@link messageKey}); its revision.
     * The message's pointer to it is written beside it (the two writes go out together: no round trip
     * more), so that the message's next delivery can find it and close it (`latest`).
     */
    async open(deliveryId: string, entry: AckEntry, key: string): Promise<number> {
      const [revision] = await Promise.all([kv.create(deliveryId, JSON.stringify(entry)), kv.put(latestKey(key), deliveryId)]);
      return revision;
    },
    /** The delivery id of the message's last attempt opened to callbacks (see `open`), if any. */
    async latest(key: string): Promise<string | undefined> {
      const got = await kv.get(latestKey(key));
      if (!got || got.operation !== 'PUT' || got.value.length === 0) return undefined;
      return Buffer.from(got.value).toString('utf8');
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
