import { AckPolicy, connect, type JsMsg, type NatsConnection } from 'nats';
import type { AbortGroup } from '../../src/delivery/http-sender';
import { createPuller, type Puller, type PullerDeps } from '../../src/jetstream/delivery/puller';
import pino from 'pino';
import { createLogger } from '../../src/logger';
import { describeWithNats, startNatsCluster, uniquePrefix, waitUntil, type NatsCluster } from '../helpers/nats-cluster';

/**
 * The puller of one JetStream consumer against a real nats-server: no delivery JetStream counts may
 * be dropped on the client (each one spends an attempt, and waits out `ack_wait` before it is sent
 * again), whether it lands as a pull ends while the event loop is busy or while the subscription is
 * paused.
 */

const ACK_WAIT_MS = 10_000;

interface Seen {
  at: number;
  deliveryCount: number;
}

describeWithNats('the JetStream puller', () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;
  const pullers: Puller[] = [];
  const prefix = uniquePrefix('puller');
  let n = 0;

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 1 });
    nc = await connect({ servers: cluster.urls });
  }, 60_000);

  afterAll(async () => {
    for (const p of pullers) await p.stop(0);
    await nc?.close();
    await cluster?.stop();
  }, 30_000);

  /** A stream with `count` messages and an explicit-ack consumer allowing `maxAckPending` unacked. */
  async function messages(count: number, maxAckPending = 1, ackWaitMs = ACK_WAIT_MS): Promise<{ stream: string; consumer: string }> {
    const stream = `${prefix}_${++n}`;
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
    const ack_wait = ackWaitMs * 1e6;
    await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit, ack_wait, max_ack_pending: maxAckPending });
    for (let i = 0; i < count; i++) await nc.jetstream().publish(`${stream}.x`, `m${i}`);
    return { stream, consumer: 'c' };
  }

  /** A puller of `target` (capacity 1, always active unless told), stopped after the file. */
  function start(
    target: { stream: string; consumer: string },
    handle: (msg: JsMsg, group: AbortGroup) => void | Promise<void>,
    active: () => boolean = () => true,
    more: Partial<Pick<PullerDeps, 'capacity' | 'onPullError' | 'leaseMs' | 'closing' | 'log'>> = {},
  ) {
    const puller = createPuller({
      js: nc.jetstream(),
      ...target,
      capacity: () => 1,
      active,
      leaseMs: () => ACK_WAIT_MS,
      closing: () => false,
      handle: async (msg, group) => handle(msg, group),
      giveBack: async (msg, delayMs) => msg.nak(delayMs),
      onPullError: async () => undefined,
      log: createLogger('silent'),
      ...more,
    });
    pullers.push(puller);
    return puller;
  }

  /** Resolves once a pull request of `target`'s consumer waits at the server. */
  const pullOpen = async (target: { stream: string; consumer: string }) => {
    const jsm = await nc.jetstreamManager();
    await waitUntil(
      'a pull open at the server',
      async () => (await jsm.consumers.info(target.stream, target.consumer)).num_waiting > 0,
      5000,
      20,
    );
  };

  /** A handler that records each delivery (time since `t0`, delivery count) in `seen` and acks it. */
  const acking = (seen: Seen[], t0: number) => (msg: JsMsg) => {
    seen.push({ at: Date.now() - t0, deliveryCount: msg.info.deliveryCount });
    msg.ack();
  };

  const busyFor = (ms: number) => {
    const end = Date.now() + ms;
    while (Date.now() < end);
  };

  it('hands on every delivery JetStream sends as a redelivery lands on a pull expiring while the loop is busy', async () => {
    // The nak's delay ends as a pull request opened just after it expires at the server (1 s for a
    // loop of `fetch`es, 2 s for a consume session's pulls), while the loop is busy from before
    // until after the client's own timers. A `fetch` then dropped the message after JetStream had
    // counted it (about half the runs): it came back only after ack_wait, as attempt 3.
    // A second connection sees every delivery the server sends to the session's inbox: each one it
    // saw must reach the handler. (nats-server 2.9.10 itself sometimes counts the redelivery without
    // sending it, then sends the message again as delivery 1 after the ack: see PULL_EXPIRES_MS in
    // puller.ts. The puller cannot see that delivery, so the test compares with what was sent.)
    const sniffer = await connect({ servers: cluster.urls });
    try {
      for (const delay of [...Array<number>(8).fill(1000), ...Array<number>(3).fill(2000)]) {
        const seen: Seen[] = [];
        const sent: Seen[] = [];
        const t0 = Date.now();
        const target = await messages(1);
        const acks = `$JS.ACK.${target.stream}.`;
        const sniff = sniffer.subscribe('_INBOX.>', {
          callback: (_err, m) => {
            if (m.reply?.startsWith(acks)) sent.push({ at: Date.now() - t0, deliveryCount: Number(m.reply.split('.')[4]) });
          },
        });
        await sniffer.flush();
        const handle = (msg: JsMsg) => {
          seen.push({ at: Date.now() - t0, deliveryCount: msg.info.deliveryCount });
          if (msg.info.deliveryCount > 1) return msg.ack();
          msg.nak(delay);
          setTimeout(() => busyFor(400), delay - 100);
        };
        const puller = start(target, handle);
        await waitUntil('a second delivery', () => seen.length >= 2, ACK_WAIT_MS + 5000, 20);
        // A delivery sent just now may still be on its way to the puller; and under load the sniffer may see
        // one later than the puller did (it counts from when the sniffer saw the second, at least).
        await new Promise((r) => setTimeout(r, 300));
        await waitUntil('the sniffer saw two deliveries', () => sent.length >= 2, 5000, 20);
        const cutoff = Math.max(Date.now() - t0 - 300, sent[1]!.at);
        await puller.stop(0);
        sniff.unsubscribe();
        const counts = (list: Seen[]) => list.map((x) => x.deliveryCount);
        const sentBefore = counts(sent.filter((x) => x.at <= cutoff));
        expect(sentBefore.length).toBeGreaterThanOrEqual(2);
        expect({ delay, handled: counts(seen).slice(0, sentBefore.length) }).toEqual({ delay, handled: sentBefore });
      }
    } finally {
      await sniffer.close();
    }
  }, 90_000);

  it('pulls nothing while paused and delivers a message published meanwhile at once after the resume, as attempt 1', async () => {
    let active = false;
    const seen: Seen[] = [];
    const target = await messages(0);
    const t0 = Date.now();
    start(target, acking(seen, t0), () => active);
    // Active for a moment (a pull is open at the server), then paused before the message exists.
    active = true;
    await new Promise((r) => setTimeout(r, 500));
    active = false;
    await new Promise((r) => setTimeout(r, 600));
    await nc.jetstream().publish(`${target.stream}.x`, 'while paused');
    await new Promise((r) => setTimeout(r, 2500));
    expect(seen).toEqual([]);
    const resumedAt = Date.now() - t0;
    active = true;
    await waitUntil('the delivery after the resume', () => seen.length >= 1, ACK_WAIT_MS + 5000, 20);
    expect(seen[0]!.deliveryCount).toBe(1);
    expect(seen[0]!.at - resumedAt).toBeLessThan(ACK_WAIT_MS / 2);
  }, 30_000);

  it('keeps a message that arrives as the pause lands, unsent and its lease renewed, and sends it after the resume as the same delivery', async () => {
    // Given back at once, it counted as a delivery without a request: with maxAttempts 1, two pauses
    // catching one event dead-lettered it unsent. Its lease here is 2 s; the pause lasts 5 s.
    let active = true;
    const seen: Seen[] = [];
    const target = await messages(0, 1, 2000);
    const t0 = Date.now();
    start(target, acking(seen, t0), () => active, { leaseMs: () => 2000 });
    const jsm = await nc.jetstreamManager();
    await pullOpen(target);
    active = false;
    await nc.jetstream().publish(`${target.stream}.x`, 'as the pause lands');
    await new Promise((r) => setTimeout(r, 5000));
    expect(seen).toEqual([]);
    const info = await jsm.consumers.info(target.stream, target.consumer);
    expect({ delivered: info.delivered.consumer_seq, redelivered: info.num_redelivered }).toEqual({ delivered: 1, redelivered: 0 });
    active = true;
    await waitUntil('the delivery after the resume', () => seen.length >= 1, 5000, 20);
    await new Promise((r) => setTimeout(r, 500));
    expect(seen.map((x) => x.deliveryCount)).toEqual([1]); // was: [2], the give-back counted
  }, 30_000);

  it('renews what a pause holds at once when the lease is shortened (a PATCH), so it is still sent once, as delivery 1', async () => {
    let active = true;
    let leaseMs = 30_000;
    const seen: Seen[] = [];
    const target = await messages(0, 1, 30_000); // renewed every 10 s while held
    const t0 = Date.now();
    const puller = start(target, acking(seen, t0), () => active, { leaseMs: () => leaseMs });
    const jsm = await nc.jetstreamManager();
    await pullOpen(target);
    active = false;
    await nc.jetstream().publish(`${target.stream}.x`, 'held through a shorter lease');
    await waitUntil(
      'the message held',
      async () => (await jsm.consumers.info(target.stream, target.consumer)).num_ack_pending === 1,
      5000,
      20,
    );
    // What the subscription does on a PATCH that shortens ack_wait: the puller first, then the consumer.
    leaseMs = 2000;
    puller.renewHeld();
    const info = await jsm.consumers.info(target.stream, target.consumer);
    await jsm.consumers.update(target.stream, target.consumer, { ...info.config, ack_wait: 2000 * 1e6 });
    await new Promise((r) => setTimeout(r, 4500)); // two of the new ack_waits
    active = true;
    await waitUntil('the delivery after the resume', () => seen.length >= 1, 5000, 20);
    await new Promise((r) => setTimeout(r, 700));
    expect(seen.map((x) => x.deliveryCount)).toEqual([1]); // was: [1, 2], JetStream's copy expired meanwhile
  }, 30_000);

  it('gives back, for another node to send, a message that arrives as its node begins to shut down', async () => {
    // Held like a pause's (its lease renewed), it would wait for as long as the close takes (the node's
    // HTTP server may wait 10 s). Given back, another node has it within the 2 s lease at the latest
    // (nats-server 2.9.10 may count the give-back's redelivery without sending it while no pull is
    // open: then it comes when the lease runs out).
    let closing = false;
    const seen: Seen[] = [];
    const target = await messages(0, 1, 2000);
    const t0 = Date.now();
    start(target, acking(seen, t0), () => !closing, { closing: () => closing, leaseMs: () => 2000 });
    await pullOpen(target);
    closing = true;
    await nc.jetstream().publish(`${target.stream}.x`, 'as the close begins');
    await new Promise((r) => setTimeout(r, 300));
    start(target, acking(seen, t0), undefined, { leaseMs: () => 2000 }); // the other node
    await waitUntil('the other node sends it', () => seen.length >= 1, 4000, 20);
    expect(seen[0]!.deliveryCount).toBeGreaterThanOrEqual(2);
  }, 30_000);

  it('sends back at once, not after ack_wait, a redelivery on its way as a pause ends the session while the loop is busy', async () => {
    // The nak's delay ends just after the pause, and the loop is busy across both: ending the
    // session unsubscribed its inbox while the server was sending to it.
    for (let run = 0; run < 4; run++) {
      let active = true;
      let resumedAt = 0;
      const seen: Seen[] = [];
      const t0 = Date.now();
      const puller = start(
        await messages(1),
        (msg) => {
          seen.push({ at: Date.now() - t0, deliveryCount: msg.info.deliveryCount });
          if (msg.info.deliveryCount > 1) return msg.ack();
          msg.nak(1000);
          setTimeout(
            () =>
              setImmediate(() => {
                active = false;
                busyFor(400);
                setTimeout(() => {
                  active = true;
                  resumedAt = Date.now() - t0;
                }, 600);
              }),
            900,
          );
        },
        () => active,
      );
      await waitUntil('a delivery after the resume', () => seen.length >= 2, ACK_WAIT_MS + 5000, 20);
      await puller.stop(0);
      expect(resumedAt).toBeGreaterThan(0);
      expect(seen[1]!.at - resumedAt).toBeLessThan(ACK_WAIT_MS / 2);
    }
  }, 90_000);

  it('pulls in batches of a new capacity once it changes (maxInFlight or ordering changed)', async () => {
    const target = await messages(200, 8);
    const batches: number[] = [];
    const requests = nc.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${target.stream}.${target.consumer}`, {
      callback: (_err, m) => batches.push((m.json() as { batch: number }).batch),
    });
    let capacity = 1;
    let handled = 0;
    const handle = async (msg: JsMsg) => {
      handled++;
      await new Promise((r) => setTimeout(r, 20));
      msg.ack();
    };
    const puller = start(target, handle, undefined, { capacity: () => capacity });
    await waitUntil('some deliveries', () => handled >= 3, 10_000, 20);
    expect(Math.max(...batches)).toBe(1);
    capacity = 8;
    await waitUntil('a pull for 8', () => batches.includes(8), 5_000, 20);
    await waitUntil('every message', () => handled >= 200, 20_000, 20);
    requests.unsubscribe();
    await puller.stop(0);
  }, 40_000);

  it('stops within its grace while an attempt does not end and the next messages wait at the server', async () => {
    const target = await messages(3, 1);
    let started = 0;
    // An attempt that ends only when the stop aborts it.
    const puller = start(target, (_msg, group) => {
      started++;
      return new Promise<void>((resolve) => {
        const poll = setInterval(() => group.aborted && (clearInterval(poll), resolve()), 20);
      });
    });
    await waitUntil('the first attempt', () => started === 1, 10_000, 20);
    await new Promise((r) => setTimeout(r, 300)); // max_ack_pending 1: the next messages are not handed out
    const t = Date.now();
    await puller.stop(200);
    expect(Date.now() - t).toBeLessThan(1500);
    expect(started).toBe(1);
    expect(puller.state).toBe('stopped');
  }, 30_000);

  it('keeps a healthy idle session past the session watch limit, and one with an attempt open for longer, without replacing it', async () => {
    // The watch replaces a session showing no pull for 10 s; an idle one shows a pull expiry and a new
    // pull every 2 s, as does one whose max_ack_pending is full. A misfire would restart sessions
    // every 10 s (each end of a session opens nats-server 2.9.10's redelivery window once).
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const idle = await messages(0);
    const seen: string[] = [];
    start(
      idle,
      (msg) => void (seen.push(msg.string()), msg.ack()),
      () => true,
      { log },
    );
    const holding = await messages(2);
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    start(
      holding,
      async (msg) => {
        await held; // the first attempt stays open past the limit: max_ack_pending (1) is full meanwhile
        msg.ack();
      },
      () => true,
      { log },
    );
    // Past the limit, and past the watch's next look (every 250 ms) after it.
    await new Promise((r) => setTimeout(r, 11_000));
    release();
    await nc.jetstream().publish(`${idle.stream}.x`, 'late');
    await waitUntil('the late message', () => seen.includes('late'), 5000, 20);
    expect(lines.filter((l) => l.includes('starting a new one'))).toEqual([]);
  }, 30_000);

  it('pulls nothing when stopped at once after it starts (while it looks its consumer up)', async () => {
    const target = await messages(8, 8);
    let handled = 0;
    const puller = start(target, () => void handled++, undefined, { capacity: () => 8 });
    await puller.stop(0);
    await new Promise((r) => setTimeout(r, 500));
    const info = await (await nc.jetstreamManager()).consumers.info(target.stream, target.consumer);
    expect({ handled, delivered: info.delivered.consumer_seq, ackPending: info.num_ack_pending }).toEqual({
      handled: 0,
      delivered: 0,
      ackPending: 0,
    });
  }, 30_000);

  it('ends its pull with an error when the consumer is deleted, for the subscription to repair', async () => {
    const target = await messages(1);
    const errors: unknown[] = [];
    const puller = start(target, (msg) => msg.ack(), undefined, { onPullError: async (err) => void errors.push(err) });
    await new Promise((r) => setTimeout(r, 500));
    await (await nc.jetstreamManager()).consumers.delete(target.stream, target.consumer);
    await waitUntil('the pull error', () => errors.length > 0, 10_000, 20);
    expect(puller.state).toBe('pulling');
  }, 30_000);

  it('sends at once what it pulled under none when ordering becomes partition: after the consumer changed, each message goes alone', async () => {
    // Two nodes' pullers on one consumer. A PATCH from none to partition reaches a node (its capacity
    // becomes 1) before the consumer's update reaches the server: meanwhile JetStream still hands out
    // up to 8. A node held those back behind its own open attempt and sent them after the update,
    // while the other node's were still open: two events of one partition in flight, out of order.
    const target = await messages(40, 8);
    let capacity = 8;
    const spans: { seq: number; start: number; end: number }[] = [];
    const handle = async (msg: JsMsg) => {
      const start = Date.now();
      await new Promise((r) => setTimeout(r, msg.seq % 3 === 0 ? 600 : 150));
      spans.push({ seq: msg.seq, start, end: Date.now() });
      msg.ack();
    };
    start(target, handle, undefined, { capacity: () => capacity });
    start(target, handle, undefined, { capacity: () => capacity });
    await waitUntil('deliveries under none', () => spans.length >= 4, 10_000, 10);
    capacity = 1;
    await new Promise((r) => setTimeout(r, 400)); // acks meanwhile let the server hand out more
    const jsm = await nc.jetstreamManager();
    const info = await jsm.consumers.info(target.stream, target.consumer);
    await jsm.consumers.update(target.stream, target.consumer, { ...info.config, max_ack_pending: 1 });
    const changedAt = Date.now();
    await waitUntil('every message', () => new Set(spans.map((s) => s.seq)).size === 40, 60_000, 20);
    const after = spans.filter((s) => s.start >= changedAt);
    expect(after.length).toBeGreaterThan(0);
    const overlapping = after.flatMap((s) =>
      spans.filter((o) => o !== s && o.start < s.end && s.start < o.end).map((o) => ({ started: s.seq, alsoOpen: o.seq })),
    );
    expect(overlapping).toEqual([]);
  }, 90_000);
});

describeWithNats('the JetStream puller on a 3-server cluster', () => {
  let cluster: NatsCluster;
  let nc: NatsConnection;
  let puller: Puller | undefined;

  beforeAll(async () => {
    cluster = await startNatsCluster({ size: 3 });
    nc = await connect({ servers: cluster.urls });
  }, 60_000);

  afterAll(async () => {
    await puller?.stop(0);
    await nc?.close();
    await cluster?.stop();
  }, 30_000);

  it("pulls again within seconds when the consumer's leader is SIGKILLed", async () => {
    const stream = `${uniquePrefix('pullha')}_s`;
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], num_replicas: 3 });
    await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit, ack_wait: 30e9, max_ack_pending: 1 });
    const seen: string[] = [];
    puller = createPuller({
      js: nc.jetstream(),
      stream,
      consumer: 'c',
      capacity: () => 1,
      active: () => true,
      leaseMs: () => 30_000,
      closing: () => false,
      handle: async (msg) => {
        seen.push(msg.string());
        msg.ack();
      },
      giveBack: async (msg, delayMs) => msg.nak(delayMs),
      onPullError: async () => undefined,
      log: createLogger('silent'),
    });
    await nc.jetstream().publish(`${stream}.x`, 'before');
    await waitUntil('the first message', () => seen.length === 1, 10_000, 20);
    await new Promise((r) => setTimeout(r, 300)); // the next pull is open at the leader
    const leader = (await jsm.consumers.info(stream, 'c')).cluster?.leader;
    const victim = cluster.nodes.findIndex((n) => n.name === leader);
    expect(victim).toBeGreaterThanOrEqual(0);
    await cluster.kill(victim);
    await waitUntil('a new consumer leader', async () => Boolean((await jsm.consumers.info(stream, 'c')).cluster?.leader), 20_000, 100);
    // The stream's leader may be elected again too: a publish answered 503 meanwhile is sent again.
    await waitUntil('the publish after the kill', async () => Boolean(await nc.jetstream().publish(`${stream}.x`, 'after')), 20_000, 100);
    const publishedAt = Date.now();
    await waitUntil('the message published after the kill', () => seen.length === 2, 60_000, 50);
    // On missed heartbeats nats.js looks the consumer up; a look that fails waits about one pull
    // expiry before the next (see PULL_EXPIRES_MS in puller.ts).
    expect(Date.now() - publishedAt).toBeLessThan(10_000);
    expect(seen).toEqual(['before', 'after']);
    await cluster.restart(victim);
  }, 120_000);
});
