import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from 'nats';
import type { Logger } from 'pino';
import { AbortGroup } from '../../delivery/http-sender';

/** A pull waits at most this long for messages: bounds how long `stop` and a pause take to be seen. */
const FETCH_EXPIRES_MS = 1000;
/** Pause after a failed pull (consumer missing, cluster unreachable) before the next one. */
const RETRY_PAUSE_MS = 500;
/** How often an inactive (paused, validating) puller looks again. */
const IDLE_MS = 250;

/**
 * The life cycle of a puller, as data: `pulling` fetches while its subscription is active,
 * `draining` has stopped fetching and lets open attempts end, `stopped` is final. Inputs with no
 * cell change nothing (a second `stop`).
 */
export type PullerState = 'pulling' | 'draining' | 'stopped';
type PullerInput = 'stop' | 'drained';
export const PULLER: Readonly<Record<PullerState, Partial<Record<PullerInput, PullerState>>>> = {
  pulling: { stop: 'draining' },
  draining: { drained: 'stopped' },
  stopped: {},
};

export interface PullerDeps {
  js: JetStreamClient;
  stream: string;
  consumer: string;
  /** Attempts this puller may have open at once (the consumer's max_ack_pending). */
  capacity: () => number;
  /** Whether to pull now (the subscription is active). */
  active: () => boolean;
  handle: (msg: JsMsg, group: AbortGroup) => Promise<void>;
  /** A pull failed (the consumer may have been deleted by a seek or a delete on another node): re-bind or recreate. */
  onPullError: (err: unknown) => Promise<void>;
  log: Logger;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/**
 * Pulls one durable consumer in a loop, bounded batches (`capacity` minus open attempts), each
 * message handed to `handle`. Several nodes pull the same consumer: JetStream gives each message to
 * one of them, and with `max_ack_pending` 1 holds the next until it is settled.
 */
export function createPuller(deps: PullerDeps) {
  let state: PullerState = 'pulling';
  const group = new AbortGroup();
  const open = new Set<Promise<void>>();
  let consumer: Consumer | undefined;
  let batch: ConsumerMessages | undefined;

  const move = (input: PullerInput) => {
    state = PULLER[state][input] ?? state;
  };

  function track(msg: JsMsg): void {
    const p = deps
      .handle(msg, group)
      .catch((err: unknown) =>
        deps.log.error({ err, stream: deps.stream, consumer: deps.consumer }, 'delivery attempt failed; JetStream redelivers it'),
      )
      .finally(() => open.delete(p));
    open.add(p);
  }

  async function pullOnce(room: number): Promise<void> {
    consumer ??= await deps.js.consumers.get(deps.stream, deps.consumer);
    batch = await consumer.fetch({ max_messages: room, expires: FETCH_EXPIRES_MS });
    for await (const msg of batch) {
      // Stopping: the message stays unacked; JetStream gives it to another node after ack_wait.
      if (state !== 'pulling') break;
      // Paused (here or, through the subscriptions bucket, on another node) while the fetch was open:
      // nothing more is sent. The message goes back at once, to be pulled again after the resume; this
      // counts as one of its deliveries, as JetStream counts them.
      if (!deps.active()) {
        msg.nak(IDLE_MS);
        batch.stop();
        continue;
      }
      track(msg);
    }
    batch = undefined;
  }

  async function loop(): Promise<void> {
    while (state === 'pulling') {
      const room = deps.capacity() - open.size;
      if (!deps.active()) await sleep(IDLE_MS);
      else if (room <= 0) await Promise.race([...open, sleep(FETCH_EXPIRES_MS)]);
      else {
        try {
          await pullOnce(room);
        } catch (err) {
          consumer = undefined;
          if (state !== 'pulling') break;
          await deps.onPullError(err).catch(() => undefined);
          await sleep(RETRY_PAUSE_MS);
        }
      }
    }
  }
  const done = loop();

  return {
    get state(): PullerState {
      return state;
    },
    /**
     * Stops pulling; open attempts get until `graceMs` to end, then their requests are aborted
     * (their messages stay unacked: JetStream redelivers them after ack_wait).
     */
    async stop(graceMs: number): Promise<void> {
      if (state !== 'pulling') return;
      move('stop');
      batch?.stop();
      await done;
      if (open.size > 0) await Promise.race([Promise.all(open), sleep(graceMs)]);
      group.abort();
      await Promise.all(open);
      move('drained');
    },
  };
}
export type Puller = ReturnType<typeof createPuller>;
