import { connect } from 'nats';
import type { JetStreamGateway } from '../../src/jetstream-gateway';
import { StartupError } from '../../src/errors';
import { encodeEventMessage } from '../../src/jetstream/codec';
import { idempotencyKey } from '../../src/jetstream/names';
import { getJson, lookupEvent, lookupEvents, readAllEvents, startJetStreamTestGateway } from '../helpers/gateway';
import { startReceiver, type Receiver } from '../helpers/receiver';
import { describeWithNats, startNatsCluster, uniquePrefix, waitUntil, type NatsCluster } from '../helpers/nats-cluster';

/**
 * The JetStream engine on a real three-server cluster with two Herald nodes (A and B, one prefix):
 * idempotency across nodes, start-up refusals, and faults — a
 * server SIGKILLed under load, two of three servers down. Tests run in order and share the cluster.
 */

const PARTITIONS = 4;
/** Every fetch is bounded: a request the gateway never answers fails the test instead of hanging it. */
const REQUEST_TIMEOUT_MS = 30_000;

interface Reply {
  status: number;
  retryAfter: string | null;
  body: any;
}

async function publish(url: string, source: string, id: string): Promise<Reply> {
  const res = await fetch(`${url}/events`, {
    method: 'POST',
    headers: {
      'ce-specversion': '1.0',
      'ce-id': id,
      'ce-source': source,
      'ce-type': 'com.example.cluster',
      'content-type': 'application/json',
    },
    body: JSON.stringify({ id }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() };
}

const readyz = async (url: string) => (await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })).status;
const readyzBody = async (url: string) =>
  (await (await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })).json()) as {
    status: string;
    checks: Record<string, string>;
  };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describeWithNats('the jetstream engine on a 3-server cluster with two Herald nodes', () => {
  let cluster: NatsCluster;
  let a: JetStreamGateway;
  let b: JetStreamGateway;
  const prefix = uniquePrefix('cluster');
  const env = { HERALD_PARTITIONS: String(PARTITIONS), HERALD_NATS_PREFIX: prefix };

  beforeAll(async () => {
    cluster = await startNatsCluster();
    a = await startJetStreamTestGateway(cluster.serversEnv, env);
    b = await startJetStreamTestGateway(cluster.serversEnv, env);
  }, 120_000);

  const receivers: Receiver[] = [];

  afterAll(async () => {
    for (const r of receivers) await r.close();
    await a?.close();
    await b?.close();
    await cluster?.stop();
  }, 60_000);

  it('answers a duplicate sent through node B with the partition and offset node A stored it at', async () => {
    const first = await publish(a.url, '/cross-node', 'x-1');
    expect(first.status).toBe(202);
    const again = await publish(b.url, '/cross-node', 'x-1');
    expect(again.status).toBe(200);
    expect(again.body.results).toEqual([{ ...first.body.results[0], duplicate: true }]);
    const found = await lookupEvent(b.url, { source: '/cross-node', id: 'x-1' });
    expect(found.body).toMatchObject({
      partition: first.body.results[0].partition,
      offset: first.body.results[0].offset,
      event: { id: 'x-1' },
    });
    expect((await getJson(`${b.url}/partitions`)).body).toEqual((await getJson(`${a.url}/partitions`)).body);
  });

  it('stores an event sent to both nodes at once exactly once', async () => {
    const replies = await Promise.all([a, b, a, b].map((gw) => publish(gw.url, '/cross-node', 'x-2')));
    const results = replies.map((r) => r.body.results[0]);
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    for (const r of results) expect([r.partition, r.offset]).toEqual([results[0].partition, results[0].offset]);
  });

  describe('a retry after a node crashed between the steps of an append (see src/jetstream/appender.ts)', () => {
    const crashed = (id: string) => ({
      attributes: { specversion: '1.0', id, source: '/crash', type: 't' },
      data: { kind: 'none' as const },
    });

    it('completes a claim left before the publish: the event is stored once, as new, in the claimed partition', async () => {
      const kv = await a.store.connection.jetstream().views.kv(`${prefix}_idem`);
      await kv.create(idempotencyKey('/crash', 'c-1'), JSON.stringify({ p: 2 }));
      expect((await lookupEvent(a.url, { source: '/crash', id: 'c-1' })).status).toBe(404);
      const retry = await publish(b.url, '/crash', 'c-1');
      expect(retry.status).toBe(202);
      expect(retry.body.results[0]).toMatchObject({ partition: 2, duplicate: false });
      expect((await lookupEvent(a.url, { source: '/crash', id: 'c-1' })).body.offset).toBe(retry.body.results[0].offset);
    });

    it('answers a retry of an event published but not settled as a duplicate of it, storing nothing', async () => {
      const js = a.store.connection.jetstream();
      const kv = await js.views.kv(`${prefix}_idem`);
      const key = idempotencyKey('/crash', 'c-2');
      await kv.create(key, JSON.stringify({ p: 1 }));
      const ack = await js.publish(`${prefix}.p.1`, encodeEventMessage(crashed('c-2')), { msgID: key });
      expect((await lookupEvent(a.url, { source: '/crash', id: 'c-2' })).status).toBe(404); // never acknowledged
      const heads = (await getJson(`${a.url}/partitions`)).body;
      const retry = await publish(b.url, '/crash', 'c-2');
      expect([retry.status, retry.body.results[0]]).toEqual([
        200,
        { id: 'c-2', source: '/crash', partition: 1, offset: ack.seq - 1, duplicate: true },
      ]);
      expect((await getJson(`${a.url}/partitions`)).body).toEqual(heads);
      expect((await lookupEvent(a.url, { source: '/crash', id: 'c-2' })).body.offset).toBe(ack.seq - 1);
    });
  });

  it('refuses to start a node whose partition count or replicas differ from the streams it finds', async () => {
    await expect(startJetStreamTestGateway(cluster.serversEnv, { ...env, HERALD_PARTITIONS: '5' })).rejects.toThrow(StartupError);
    await expect(startJetStreamTestGateway(cluster.serversEnv, { ...env, HERALD_PARTITIONS: '5' })).rejects.toThrow(
      /created with 4 partitions, but HERALD_PARTITIONS=5/,
    );
    await expect(startJetStreamTestGateway(cluster.serversEnv, { ...env, HERALD_NATS_REPLICAS: '1' })).rejects.toThrow(
      /HERALD_NATS_REPLICAS=1/,
    );
  });

  it('refuses writes on running nodes while a partition stream is cut below HERALD_NATS_REPLICAS, and takes them again once restored (JetStream probe: 2xx for events on one server)', async () => {
    await waitUntil('node A ready', async () => (await readyz(a.url)) === 200, 90_000, 500);
    const nc = await connect({ servers: cluster.urls });
    try {
      const jsm = await nc.jetstreamManager();
      const stream = `${prefix}_p0`;
      const { config } = await jsm.streams.info(stream);
      await jsm.streams.update(stream, { ...config, num_replicas: 1 });
      try {
        // Each node sees it at its own next probe (every second).
        for (const node of [a, b]) await waitUntil('the node unready', async () => (await readyz(node.url)) === 503, 30_000, 250);
        // While the server shrinks the stream, a probe may see its replicas out of date first ("1 current of 3
        // replicas"): unready too, for another reason (a CI run under load read that one). Then the cut itself.
        const says = `stream ${stream} has 1 replicas, but HERALD_NATS_REPLICAS=3`;
        const logCheck = async () => ((await (await fetch(`${a.url}/readyz`)).json()) as { checks: Record<string, string> }).checks.log;
        await waitUntil('readiness naming the cut', async () => (await logCheck())?.includes(says) === true, 30_000, 250);
        expect((await publish(b.url, '/replicas', 'r-1')).status).toBe(503);
      } finally {
        await jsm.streams.update(stream, { ...config, num_replicas: 3 });
      }
      await waitUntil('node A ready again', async () => (await readyz(a.url)) === 200, 90_000, 500);
      await waitUntil(
        'a publish answered 2xx',
        async () => [200, 202].includes((await publish(b.url, '/replicas', 'r-1')).status),
        60_000,
        500,
      );
    } finally {
      await nc.close();
    }
  }, 200_000);

  it("never shortens the cluster's idempotency window: a node configured shorter keeps it (a resend would be stored twice), a longer one lengthens it", async () => {
    const jsm = await a.store.connection.jetstreamManager();
    const windowMs = async () => (await jsm.streams.info(`KV_${prefix}_idem`)).config.max_age / 1e6;
    expect(await windowMs()).toBe(7 * 86_400_000);
    const shorter = await startJetStreamTestGateway(cluster.serversEnv, { ...env, HERALD_IDEMPOTENCY_WINDOW: '30000' });
    await shorter.close();
    expect(await windowMs()).toBe(7 * 86_400_000); // was 30,000: every node's records then expired after 30 s
    const longer = await startJetStreamTestGateway(cluster.serversEnv, { ...env, HERALD_IDEMPOTENCY_WINDOW: '8d' });
    await longer.close();
    expect(await windowMs()).toBe(8 * 86_400_000);
  });

  it('keeps every event answered 2xx, once, and delivers it, when the leader of a partition stream is SIGKILLed during a publish load', async () => {
    // A subscription (created through A, delivered by both nodes) receives the load while the server dies.
    const receiver = await startReceiver();
    receivers.push(receiver);
    const created = await fetch(`${a.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        sink: receiver.url,
        filters: [{ exact: { source: '/load' } }],
        // ack_wait 6 s (was the defaults' 31 s): an event whose ack was lost with the killed server comes again
        // an ack_wait after it, which was most of this test's time.
        delivery: { ordering: 'none', maxInFlight: 16, timeoutMs: 5000, ackDeadlineMs: 5000 },
      }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    expect(created.status).toBe(201);
    const jsm = await a.store.connection.jetstreamManager();
    const leader = (await jsm.streams.info(`${prefix}_p0`)).cluster?.leader;
    const victim = cluster.nodes.findIndex((n) => n.name === leader);
    expect(victim).toBeGreaterThanOrEqual(0);

    // However it ends, the killed server comes back (the next test needs all three) and no loop runs on.
    let stopped = false;
    let killed: Promise<void> | undefined;
    let loops: Promise<void>[] = [];
    try {
      const LOOPS = 10;
      const PER_LOOP = 200;
      const acknowledged = new Map<string, { partition: number; offset: number }>();
      const statuses: Record<number, number> = {};
      let answered = 0;
      const loop = async (l: number) => {
        for (let i = 0; i < PER_LOOP && !stopped; i++) {
          const id = `load-${l}-${i}`;
          const deadline = Date.now() + 60_000;
          // A producer's loop: retry on 503 (after Retry-After, shortened here) until the event is acknowledged.
          while (!stopped) {
            const url = l % 2 === 0 ? a.url : b.url;
            const res = await publish(url, '/load', id);
            statuses[res.status] = (statuses[res.status] ?? 0) + 1;
            if (res.status === 200 || res.status === 202) {
              acknowledged.set(id, { partition: res.body.results[0].partition, offset: res.body.results[0].offset });
              break;
            }
            expect([id, res.status, res.body.code, res.retryAfter]).toEqual([id, 503, 'unavailable', '1']);
            if (Date.now() > deadline) {
              // Say why: the last refusal and what the node's readiness reports (a flaky run is otherwise mute).
              const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) }).then((r) => r.text());
              // And the servers' own words: a rare run saw the stream without a leader for 60 s (CI, a loaded machine).
              const servers = cluster.nodes.map((n) => `--- ${n.name} (running: ${n.running()})\n${n.output().slice(-4000)}`).join('\n');
              throw new Error(
                `event ${id} was not acknowledged within 60 s: last answer ${JSON.stringify(res.body)}; /readyz ${ready}\n${servers}`,
              );
            }
            await sleep(100);
          }
          if (++answered === 300) killed = cluster.kill(victim);
        }
      };
      loops = Array.from({ length: LOOPS }, (_, l) => loop(l));
      await Promise.all(loops);
      await killed;
      expect(cluster.nodes[victim]!.running()).toBe(false);
      expect(acknowledged.size).toBe(LOOPS * PER_LOOP);
      expect(Object.keys(statuses).filter((s) => !['200', '202', '503'].includes(s))).toEqual([]);

      // Every acknowledged event is found by source+id where its answer said, through either node…
      const asked = [...acknowledged].map(([id, at]) => ({ source: '/load', id, at }));
      for (const { ev, status, body } of await lookupEvents(a.url, asked)) {
        expect([ev.id, status, body.partition, body.offset]).toEqual([ev.id, 200, ev.at.partition, ev.at.offset]);
      }
      // …and the partitions hold each of them exactly once.
      const counts = new Map<string, number>();
      for (const e of await readAllEvents(b.url)) if (e.event.source === '/load') counts.set(e.event.id, (counts.get(e.event.id) ?? 0) + 1);
      expect([...acknowledged.keys()].filter((id) => counts.get(id) !== 1)).toEqual([]);
      expect(counts.size).toBe(acknowledged.size);

      // …and delivered, at least once each (a redelivery after an ack lost with the server is allowed).
      const delivered = () => new Set(receiver.requests.map((r) => r.headers['ce-id']));
      await waitUntil(
        'every acknowledged event delivered',
        () => [...acknowledged.keys()].every((id) => delivered().has(id)),
        120_000,
        250,
      );
      expect([...delivered()].filter((id) => !acknowledged.has(String(id)))).toEqual([]);
    } finally {
      stopped = true;
      await Promise.allSettled(loops);
      await killed;
      if (!cluster.nodes[victim]!.running()) await cluster.restart(victim);
    }
  }, 400_000);

  it('answers /readyz and POST /events 503 with Retry-After while two of three servers are down, and 200/2xx once one returns', async () => {
    await waitUntil('node A ready with all three servers up', async () => (await readyz(a.url)) === 200, 90_000, 500);
    const created = await fetch(`${a.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: 'http://127.0.0.1:9/outage', filters: [{ exact: { source: '/outage-attempts' } }] }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    expect(created.status).toBe(201);
    const sub = (await created.json()) as { id: string };
    // One event its sink refuses: the subscription's attempt log has a row (a replica's direct get finds it).
    expect((await publish(a.url, '/outage-attempts', 'refused-by-sink')).status).toBe(202);
    const attemptsOf = (url: string) => fetch(`${url}/subscriptions/${sub.id}/attempts`, { signal: AbortSignal.timeout(15_000) });
    await waitUntil(
      'an attempt logged',
      async () => ((await (await attemptsOf(b.url)).json()) as { attempts: unknown[] }).attempts.length > 0,
      30_000,
      250,
    );
    await cluster.kill(1);
    await cluster.kill(2);
    await waitUntil('node A unready', async () => (await readyz(a.url)) === 503, 30_000, 250);
    // Was: 200 with no dead letters for as long as the outage lasted, the "none" of the one replica left.
    // (The survivor may keep a stale leader and current replicas for a few seconds, as readiness sees.)
    await waitUntil(
      'the dead-letter list answers 503',
      async () =>
        (await fetch(`${b.url}/subscriptions/${sub.id}/dead-letters`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })).status === 503,
      30_000,
      500,
    );
    // Was: no answer for as long as the outage lasted (its ordered consumer waited for a leader; probe).
    const attempts = await attemptsOf(b.url);
    expect([attempts.status, attempts.headers.get('retry-after')]).toEqual([503, '1']);
    // Unready for good: node A's lost connection marks it down at once, but the survivor it reconnects to
    // reports its stale leadership (replicas "current") for a few seconds more.
    await waitUntil('node A unready as the survivor sees it', async () => (await readyzBody(a.url)).status === 'unavailable', 30_000, 250);
    const body = await readyzBody(a.url);
    expect(body.status).toBe('unavailable');
    expect(body.checks.log).not.toBe('ok');
    expect(Object.keys(body.checks)).toEqual(['log']);

    // A scrape still answers, with what it has (was: a 503 after 5 s, every series gone): the log is not writable.
    const scrape = await fetch(`${a.url}/metrics`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    expect(scrape.status).toBe(200);
    const metrics = await scrape.text();
    expect(metrics).toMatch(/^herald_log_writable 0$/m);
    expect(metrics).toContain(`herald_subscription_state{subscription="${sub.id}",state="active"} 1`);

    const refused = await publish(a.url, '/outage', 'o-1');
    expect([refused.status, refused.body.code, refused.retryAfter]).toEqual([503, 'unavailable', '1']);
    const refusedB = await publish(b.url, '/outage', 'o-1');
    expect(refusedB.status).toBe(503);

    await cluster.restart(1);
    await waitUntil('node A ready again', async () => (await readyz(a.url)) === 200, 90_000, 500);
    let accepted: Reply | undefined;
    await waitUntil(
      'a publish answered 2xx',
      async () => {
        accepted = await publish(a.url, '/outage', 'o-1');
        return accepted.status === 202 || accepted.status === 200;
      },
      30_000,
      500,
    );
    // Node B may still answer 503 (Retry-After) for a moment while its reads find the re-formed cluster; then it finds it.
    let found: Awaited<ReturnType<typeof lookupEvent>> | undefined;
    await waitUntil(
      'node B answers the lookup',
      async () => {
        found = await lookupEvent(b.url, { source: '/outage', id: 'o-1' });
        return found.status !== 503;
      },
      30_000,
      500,
    );
    expect([found!.status, found!.body.offset]).toEqual([200, accepted!.body.results[0].offset]);
    await cluster.restart(2);
  }, 300_000);
});
