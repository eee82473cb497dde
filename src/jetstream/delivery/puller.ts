import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg, Subscription } from 'nats';
import type { Logger } from 'pino';
import { AbortGroup, LOCAL_FAILURE_RETRY_MS } from '../../delivery/http-sender';
import { createSessionWatch, isRefusedPull, isSignOfLife } from './session-watch';

/**
 * Each pull request the consumer keeps open at the server lasts this long; its idle heartbeats come
 * at half of it, and two missed ones (a consumer leader that moved or died) re-pull. Pulls are
 * re-issued by nats.js on one inbox that lives as long as the session. A loop of `fetch`es closed an
 * inbox per second: a delivery that came due as one closed, with the event loop busy, was counted by
 * JetStream but never received, and waited out `ack_wait` with one of its attempts spent.
 *
 * Short, because when a look at a consumer whose heartbeats stopped fails (its leader is being
 * elected), nats.js waits about one expiry (jittered: 1–3 s here, 15–45 s for 30 s pulls) before the
 * next look and pull. The price: nats-server up to at least 2.10.0 (Debian's is 2.9.10) mishandles
 * a redelivery (a retry's `-NAK` delay, an `ack_wait` running out) that comes due in the millisecond
 * after the only waiting pull expired and before the server swept it (`loopAndGatherMsgs`, "We will
 * redo this one"): it counts the delivery without sending it (the attempt waits out `ack_wait`) and
 * steps the consumer's stream sequence back, so the message delivered last is sent again as
 * delivery 1. Each expiry of an idle consumer's pull opens that window once.
 */
const PULL_EXPIRES_MS = 2000;
/** Pause after a failed pull (consumer missing, cluster unreachable) before the next one. */
const RETRY_PAUSE_MS = 500;
/** How often an inactive (paused, validating) puller looks again. */
const IDLE_MS = 250;
/** The shortest interval between two renewals of a held message's lease. */
const MIN_RENEW_MS = 1000;
/** A session that shows nothing for five pull expiries, or has pulls refused in a loop, is replaced (see `session-watch.ts`). */
const SESSION_LIMITS = { silentMs: 5 * PULL_EXPIRES_MS, refusedPerSecond: 50 };
/** How long a replaced session may take to drain before it is stopped outright. */
const SESSION_DRAIN_MS = 2000;

/**
 * The life cycle of a puller, as data: `pulling` pulls while its subscription is active,
 * `draining` has stopped pulling and lets open attempts end, `stopped` is final. Inputs with no
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
  /** The consumer's `ack_wait` (ms): a message held through a pause has its lease renewed well within it. */
  leaseMs: () => number;
  /** This node is shutting down (`active` is false too): what arrives is given back, not held. */
  closing: () => boolean;
  /** Sends one message; `withdrawn` when its request never left (paused or stopping while it waited for a connection). */
  handle: (msg: JsMsg, group: AbortGroup, instance: string) => Promise<'withdrawn' | 'later' | void>;
  /**
   * Gives a message back unsent for another node (`-NAK` after IDLE_MS), noting first that this
   * delivery was no attempt (see `AckMap.giveBack`); resolves once it is given back.
   */
  giveBack: (msg: JsMsg, delayMs: number, instance: string) => Promise<void>;
  /** A pull failed (the consumer may have been deleted by a seek or a delete on another node): re-bind or recreate. */
  onPullError: (err: unknown) => Promise<void>;
  log: Logger;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());

/**
 * Ends a consume session that the subscription no longer wants (paused, or a new capacity) without
 * dropping what is on the way: the server may send to the session's inbox until it has processed
 * the UNSUB. So the inbox's subscription is drained (UNSUB, then a flush): everything sent before
 * the server heard of it still reaches the session, whose loop yields it (a pause sends it back at
 * once, a new capacity handles it), and only then does the session end. `stop()` alone unsubscribes
 * at once and drops those messages: JetStream counted them and holds them until ack_wait. nats.js
 * keeps the subscription on the session object (and ends the session when it is drained).
 */
function endSession(messages: ConsumerMessages): void {
  const sub = (messages as ConsumerMessages & { sub?: Subscription }).sub;
  if (!sub || sub.isClosed() || sub.isDraining()) return void messages.stop();
  sub.drain().then(
    () => messages.stop(),
    () => messages.stop(),
  );
}

/** Feeds a session's status events to its watch until the session ends. */
async function watchStatus(messages: ConsumerMessages, health: ReturnType<typeof createSessionWatch>): Promise<void> {
  try {
    for await (const s of await messages.status()) {
      if (isSignOfLife(s.type)) health.life(Date.now());
      else if (isRefusedPull(s.type, s.data)) health.refused(Date.now());
    }
  } catch {
    // The session ended: nothing more to watch.
  }
}

/**
 * Pulls one durable consumer while its subscription is active: a consume session (nats.js keeps at
 * most `capacity` messages requested, on one inbox), each message handed to `handle` as it arrives.
 * Several nodes pull the same consumer: JetStream gives each message to one of them, never more than
 * `max_ack_pending` unsettled at once, so with 1 it holds the next until the last is settled.
 */
export function createPuller(deps: PullerDeps) {
  let state: PullerState = 'pulling';
  const group = new AbortGroup();
  const open = new Set<Promise<void>>();
  let consumer: Consumer | undefined;
  let session: ConsumerMessages | undefined;

  const move = (input: PullerInput) => {
    state = PULLER[state][input] ?? state;
  };

  /**
   * Which incarnation of the consumer delivered each message (its creation time, digits only): a
   * consumer deleted and made again under the same name counts deliveries from 1 again, so what was
   * noted of the old one's must not apply to the new one's.
   */
  const instances = new WeakMap<JsMsg, string>();
  let instance = '';

  function track(msg: JsMsg): void {
    const p = deps
      .handle(msg, group, instances.get(msg) ?? instance)
      .then((outcome) => (outcome === 'withdrawn' ? keepUnsent(msg) : outcome === 'later' ? sendLater(msg) : undefined))
      .catch((err: unknown) =>
        deps.log.error({ err, stream: deps.stream, consumer: deps.consumer }, 'delivery attempt failed; JetStream redelivers it'),
      )
      .finally(() => open.delete(p));
    open.add(p);
  }

  const capacityNow = () => Math.max(1, deps.capacity());

  /** Messages that arrived as the subscription paused, each with the timer that renews its lease. */
  const held = new Map<JsMsg, NodeJS.Timeout>();

  /**
   * Keeps a message that arrived while the subscription is paused, unsent, its lease renewed (`+WPI`)
   * until the resume sends it. Given back instead (`-NAK`), it counted as one of its deliveries without
   * a request: repeated pauses dead-lettered events never sent (`max_attempts`, a hostile probe with
   * `maxAttempts` 1), and every give-back was one more redelivery for nats-server 2.9.10's defect (see
   * PULL_EXPIRES_MS) to replay out of order.
   */
  function hold(msg: JsMsg): void {
    renewLater(msg);
  }
  /** Each renewal reads the lease again: a PATCH during the pause may shorten it (see `renewHeld` too). */
  const renewLater = (msg: JsMsg) =>
    held.set(msg, setTimeout(() => renewHeldNow(msg), Math.max(MIN_RENEW_MS, Math.floor(deps.leaseMs() / 3))).unref());
  function renewHeldNow(msg: JsMsg): void {
    if (!held.has(msg)) return;
    clearTimeout(held.get(msg));
    msg.working();
    renewLater(msg);
  }

  /**
   * A message whose request never left: held like one that arrived paused (its delivery count is not
   * spent on nothing), given back when stopping, sent again when the subscription is active again.
   */
  function keepUnsent(msg: JsMsg): Promise<void> | undefined {
    if (state !== 'pulling' || deps.closing()) return giveBack(msg);
    if (!deps.active()) hold(msg);
    else track(msg);
    return undefined;
  }

  /** When this node first failed to send a message for want of descriptors (see `sendLater`). */
  const keptSince = new WeakMap<JsMsg, number>();

  /**
   * A message this node could not send (out of descriptors): held, its lease renewed, and sent again after
   * LOCAL_FAILURE_RETRY_MS, or at the next session or resume, whichever comes first (a stop gives it back).
   * Kept for a whole lease, it is given back (unspent) for any node to take: a starved node must not hold a
   * partition for the whole cluster for as long as its starvation lasts (re-probe).
   */
  function sendLater(msg: JsMsg): undefined {
    if (!keptSince.has(msg)) keptSince.set(msg, performance.now());
    hold(msg);
    setTimeout(() => {
      const timer = held.get(msg);
      if (timer === undefined) return; // sent or given back meanwhile
      clearTimeout(timer);
      held.delete(msg);
      if (performance.now() - (keptSince.get(msg) ?? 0) >= deps.leaseMs()) return void giveBack(msg);
      // The hold renews only after a third of the lease, which this wait never reaches: renewed here, or a
      // node starved longer than ack_wait let JetStream redeliver it, spending an attempt (dead-lettered).
      msg.working();
      void keepUnsent(msg);
    }, LOCAL_FAILURE_RETRY_MS).unref();
    return undefined;
  }

  /** Given back unsent; the stop waits for it (the give-back is noted before the connection closes). */
  function giveBack(msg: JsMsg): Promise<void> {
    const p = deps
      .giveBack(msg, IDLE_MS, instances.get(msg) ?? instance)
      .catch((err: unknown) => deps.log.warn({ err, stream: deps.stream, consumer: deps.consumer }, 'could not give a message back'))
      .finally(() => open.delete(p));
    open.add(p);
    return p;
  }

  /** Sends what a pause held (the resume), or gives it back (a stop: another node sends it after IDLE_MS). */
  function releaseHeld(send: boolean): void {
    for (const [msg, timer] of held) {
      clearTimeout(timer);
      if (send) track(msg);
      else void giveBack(msg);
    }
    held.clear();
  }

  /** One pull session: consumes while the subscription is active; ends on a pause, a stop or a failed consumer (thrown). */
  async function consumeWhileActive(): Promise<void> {
    if (!consumer) {
      consumer = await deps.js.consumers.get(deps.stream, deps.consumer);
      instance = (await consumer.info(true)).created.replace(/[^0-9]/g, '');
    }
    // Stopped or paused while the consumer was looked up: no session (its pull would go unanswered).
    if (state !== 'pulling' || !deps.active()) return;
    releaseHeld(true);
    const capacity = capacityNow();
    const messages = await consumer.consume({
      max_messages: capacity,
      expires: PULL_EXPIRES_MS,
      // A consumer deleted by a seek or a delete (on any node) ends the session, for `onPullError` to repair.
      abort_on_missing_resource: true,
    });
    session = messages;
    // Stopped while the session opened (its first pull goes out only once it is iterated).
    if (state !== 'pulling') return void messages.stop();
    // Paused with nothing arriving, or a new capacity (a changed `maxInFlight` or ordering, for the
    // next session's pulls): ends within IDLE_MS. (A stop ends the session itself, at once: what is on
    // the way stays unacked, and JetStream redelivers it to another node.)
    let ending = false;
    const end = () => {
      if (!ending) endSession(messages);
      ending = true;
    };
    const health = createSessionWatch(Date.now(), SESSION_LIMITS);
    void watchStatus(messages, health);
    const watch = setInterval(() => {
      if (!deps.active() || capacityNow() !== capacity) return end();
      const verdict = health.verdict(Date.now());
      if (verdict === 'ok' || ending) return;
      deps.log.warn(
        { stream: deps.stream, consumer: deps.consumer, verdict },
        verdict === 'silent' ? 'pull session shows no pulls: starting a new one' : 'pull session re-pulls in a loop: starting a new one',
      );
      // Drained, so that what the server sends as it comes back still reaches this session; stopped
      // regardless after SESSION_DRAIN_MS, since a session in this state may never finish a drain.
      end();
      setTimeout(() => messages.stop(), SESSION_DRAIN_MS).unref();
    }, IDLE_MS).unref();
    try {
      // Each message is sent as it arrives: JetStream's max_ack_pending is what bounds the attempts open
      // across nodes. Held back here behind this node's own attempts, a message handed out under `none`
      // (a PATCH to `partition` seen before the consumer's update reached the server) went out after the
      // update, beside other nodes' open attempts: two events of one partition in flight, out of order.
      for await (const msg of messages) {
        instances.set(msg, instance);
        health.life(Date.now());
        // Stopping: the message stays unacked; JetStream gives it to another node after ack_wait.
        if (state !== 'pulling') break;
        // Paused (here or, through the subscriptions bucket, on another node) while pulling: nothing
        // more is sent. The message stays here unsent until the resume (see `hold`).
        if (!deps.active()) {
          // Closing: given back at once for another node to send, not held for as long as the close takes.
          if (deps.closing()) void giveBack(msg);
          else hold(msg);
          end();
          continue;
        }
        track(msg);
      }
    } finally {
      clearInterval(watch);
      session = undefined;
    }
  }

  async function loop(): Promise<void> {
    while (state === 'pulling') {
      if (!deps.active()) await sleep(IDLE_MS);
      else {
        try {
          await consumeWhileActive();
          // Ended by itself while still active (a pause and resume between two looks): not a hot loop.
          if (state === 'pulling' && deps.active()) await sleep(IDLE_MS);
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
    /** The lease is about to be shortened (a PATCH): what a pause holds is renewed now, then on the new schedule. */
    renewHeld(): void {
      for (const msg of [...held.keys()]) renewHeldNow(msg);
    },
    /**
     * Stops pulling; open attempts get until `graceMs` to end, then their requests are aborted
     * (their messages stay unacked: JetStream redelivers them after ack_wait). With a `reason`, the
     * attempt log records each aborted attempt with it.
     */
    async stop(graceMs: number, reason?: string): Promise<void> {
      if (state !== 'pulling') return;
      move('stop');
      session?.stop();
      releaseHeld(false);
      await done;
      if (open.size > 0) await Promise.race([Promise.all(open), sleep(graceMs)]);
      group.abort(reason);
      await Promise.all(open);
      move('drained');
    },
  };
}
export type Puller = ReturnType<typeof createPuller>;
