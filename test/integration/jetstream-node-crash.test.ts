import { publishBatch } from '../helpers/delivery';
import { useChildGateways, type ChildGateway } from '../helpers/gateway';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type ReceivedRequest, type Receiver } from '../helpers/receiver';

/**
 * Issue 14's fault test for delivery: two Herald nodes (child processes of the built gateway) on a
 * three-server cluster share one subscription; the node that is delivering is SIGKILLed mid-backlog.
 * The other finishes it: every event reaches the receiver, per-partition order holds (each
 * `herald-previous-offset` names the event before it), and an event arrives twice only if an attempt
 * of it was open at the kill (at most one per partition: ordering `partition` holds one at a time).
 */

const PARTITIONS = 4;
const EVENTS = 240;
/** The lease: an attempt the killed node held comes back to the other node after it (+ 1 s). */
const LEASE_MS = 1500;
const WAIT = { timeoutMs: 90_000, intervalMs: 100 };

describeWithNats('two Herald nodes on the jetstream engine, one SIGKILLed while delivering', () => {
  let cluster: NatsCluster;
  let receiver: Receiver;
  const spawn = useChildGateways();

  beforeAll(async () => {
    cluster = await startNatsCluster();
    // Slow enough that the backlog is still being delivered when the kill comes.
    receiver = await startReceiver(() => ({ status: 204, delayMs: 15 }));
  }, 120_000);

  afterAll(async () => {
    await receiver?.close();
    await cluster?.stop();
  }, 60_000);

  it('lets the other node finish the backlog in order, nothing missing, duplicates only of attempts open at the kill', async () => {
    const env = {
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: cluster.serversEnv,
      HERALD_NATS_PREFIX: uniquePrefix('crash'),
      HERALD_PARTITIONS: String(PARTITIONS),
    };
    const nodes: ChildGateway[] = [await spawn(env), await spawn(env)];
    const [a, b] = nodes as [ChildGateway, ChildGateway];

    const created = await fetch(`${a.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        sink: receiver.url,
        filters: [{ exact: { type: 'crash.backlog' } }],
        delivery: { timeoutMs: LEASE_MS, ackDeadlineMs: LEASE_MS, retry: { initialDelayMs: 10, maxDelayMs: 100 } },
      }),
    });
    expect(created.status).toBe(201);
    const sub = ((await created.json()) as { id: string }).id;
    // Both nodes deliver it (B learns of it from the bucket's watch).
    await waitFor(async () => (await fetch(`${b.url}/subscriptions/${sub}`)).status === 200, { ...WAIT, what: 'B knows it' });

    const results = await publishBatch(
      a.url,
      Array.from({ length: EVENTS }, (_, i) => ({
        specversion: '1.0',
        id: `e${i}`,
        source: '/crash',
        type: 'crash.backlog',
        partitionkey: `k${i % 8}`,
        data: { i },
      })),
    );
    const published = new Map<number, number[]>(); // partition → offsets, ascending
    for (const r of results) published.set(r.partition, [...(published.get(r.partition) ?? []), r.offset]);

    const mine = () => receiver.requests.filter((q) => q.headers['herald-subscription-id'] === sub);
    await waitFor(() => mine().length >= EVENTS / 4, { ...WAIT, what: 'a quarter of the backlog delivered' });
    // The node that sent the latest request is delivering: it dies.
    const latest = mine().at(-1)!;
    const victim = nodes.find((n) => String(latest.headers['herald-ack-url']).startsWith(`${n.url}/`))!;
    const survivor = nodes.find((n) => n !== victim)!;
    const atKill = mine().length;
    victim.child.kill('SIGKILL');
    await victim.exited;
    expect(atKill).toBeLessThan(EVENTS); // killed mid-backlog

    const delivered = (q: ReceivedRequest) => `${q.headers['herald-partition']}/${q.headers['herald-offset']}`;
    await waitFor(() => new Set(mine().map(delivered)).size === EVENTS, { ...WAIT, what: 'every event delivered' });
    await waitFor(
      async () => {
        const got = (await (await fetch(`${survivor.url}/subscriptions/${sub}`)).json()) as { stats: { partitions: { lag: number }[] } };
        return got.stats.partitions.every((p) => p.lag === 0);
      },
      { ...WAIT, what: 'lag 0 on the survivor' },
    );

    const requests = mine();
    const duplicates: ReceivedRequest[] = [];
    for (const [partition, offsets] of published) {
      const inPartition = requests.filter((q) => Number(q.headers['herald-partition']) === partition);
      const seen = new Set<number>();
      const firstSeen: number[] = [];
      // Every event's previous-offset is the partition's event before it (all of them match the filter).
      // Compared as one list, so a failure shows the partition's whole sequence: offset, previous, attempt, node.
      const trace = inPartition.map((q) => {
        const offset = Number(q.headers['herald-offset']);
        const node = nodes.findIndex((n) => String(q.headers['herald-ack-url']).startsWith(`${n.url}/`)) === 0 ? 'A' : 'B';
        return {
          offset,
          previous: (q.headers['herald-previous-offset'] as string | undefined) ?? null,
          attempt: q.headers['herald-attempt'],
          node,
        };
      });
      const chained = trace.map((t) => {
        const index = offsets.indexOf(t.offset);
        return { ...t, previous: index > 0 ? String(offsets[index - 1]) : null };
      });
      expect([partition, trace]).toEqual([partition, chained]);
      for (const q of inPartition) {
        const offset = Number(q.headers['herald-offset']);
        if (seen.has(offset)) duplicates.push(q);
        else firstSeen.push(offset);
        seen.add(offset);
      }
      expect([partition, firstSeen]).toEqual([partition, offsets]); // nothing missing, in order
    }
    // A duplicate is a later attempt of an event whose attempt was open at the kill: at most one per partition.
    expect(duplicates.length).toBeLessThanOrEqual(PARTITIONS);
    for (const dup of duplicates) {
      const earlier = requests.filter((q) => delivered(q) === delivered(dup) && q !== dup);
      expect(earlier.length).toBeGreaterThan(0);
      expect(earlier.every((q) => q.headers['webhook-id'] === dup.headers['webhook-id'])).toBe(true);
      expect(Number(dup.headers['herald-attempt'])).toBeGreaterThan(1);
      // Its first attempt was the killed node's, so it was open at the kill. (Which node sent a request is in its ack
      // URL; its arrival order is not evidence: a request sent just before the kill can reach the receiver after it.)
      expect(earlier.some((q) => String(q.headers['herald-ack-url']).startsWith(`${victim.url}/`))).toBe(true);
    }
    const byPartition = new Map<string, number>();
    for (const dup of duplicates)
      byPartition.set(String(dup.headers['herald-partition']), (byPartition.get(String(dup.headers['herald-partition'])) ?? 0) + 1);
    expect([...byPartition.values()].every((n) => n === 1)).toBe(true);
  }, 240_000);
});
