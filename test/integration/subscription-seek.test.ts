import request from 'supertest';
import { webhookIdOf } from '../../src/delivery/request';
import { getSubscription, publishOfType, requestsForSubscription, useDeliveryFixture, waitForLagZero } from '../helpers/delivery';
import { waitFor, type ReceivedRequest } from '../helpers/receiver';

/**
 * Seek (issue 12 §2): `POST /subscriptions/{id}/seek` with `to`, `time` or `offsets`. A replay has
 * new webhook-ids and starts a new previous-offset chain; pending attempts of skipped events are
 * dropped (not dead-lettered); offsets outside a partition's range are 400.
 */

const { gw, receiver } = useDeliveryFixture({ HERALD_PARTITIONS: '4' });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const header = (q: ReceivedRequest, name: string) => q.headers[name] as string | undefined;

async function subscribe(type: string, delivery: Record<string, unknown> = {}): Promise<string> {
  const res = await request(gw.url)
    .post('/subscriptions')
    .send({ sink: receiver.url, filters: [{ exact: { type } }], delivery })
    .expect(201);
  return res.body.id;
}

const seek = (id: string, body: unknown) =>
  request(gw.url)
    .post(`/subscriptions/${id}/seek`)
    .send(body as object);

afterEach(() => receiver.setResponder(() => ({ status: 204 })));

describe('seek by time', () => {
  it('redelivers the events stored at or after the time, in order, with new webhook-ids and no previous offset on the first', async () => {
    const type = 'seek.time';
    const id = await subscribe(type);
    const before = await publishOfType(gw.url, '/seek', type, ['a0', 'a1']);
    await sleep(5);
    const time = new Date().toISOString();
    await sleep(5);
    const after = await publishOfType(gw.url, '/seek', type, ['b0', 'b1', 'b2']);
    await waitFor(() => requestsForSubscription(receiver, id).length === 5, { what: 'first deliveries' });
    await waitForLagZero(gw.url, id);
    const first = requestsForSubscription(receiver, id).map((q) => ({ ceId: header(q, 'ce-id'), webhookId: header(q, 'webhook-id') }));

    const res = await seek(id, { time }).expect(200);
    expect(res.body).toMatchObject({ id, state: 'active' });
    const partition = after[0]!.partition;
    expect(res.body.stats.partitions[partition].committedOffset).toBe(after[0]!.offset);

    await waitFor(() => requestsForSubscription(receiver, id).length === 8, { what: 'the replay' });
    const replay = requestsForSubscription(receiver, id).slice(5);
    expect(replay.map((q) => header(q, 'ce-id'))).toEqual(['b0', 'b1', 'b2']);
    expect(replay.map((q) => Number(header(q, 'herald-offset')))).toEqual(after.map((a) => a.offset));
    // A new chain: the first carries no previous offset, the others the offset before them.
    expect(replay.map((q) => header(q, 'herald-previous-offset'))).toEqual([undefined, String(after[0]!.offset), String(after[1]!.offset)]);
    for (const q of replay) {
      const original = first.find((f) => f.ceId === header(q, 'ce-id'))!;
      expect(header(q, 'webhook-id')).not.toBe(original.webhookId);
      expect(header(q, 'webhook-id')).toBe(webhookIdOf(id, partition, Number(header(q, 'herald-offset')), 1));
    }
    // Before any seek the ids were those of generation 0, as they always were.
    expect(first[0]!.webhookId).toBe(webhookIdOf(id, before[0]!.partition, before[0]!.offset));
    await waitForLagZero(gw.url, id);
    expect(requestsForSubscription(receiver, id)).toHaveLength(8);
  });

  it('to earliest replays every matching event; a time after every event moves to the heads', async () => {
    const type = 'seek.earliest';
    const id = await subscribe(type);
    await publishOfType(gw.url, '/seek', type, ['e0', 'e1']);
    await waitFor(() => requestsForSubscription(receiver, id).length === 2);
    await seek(id, { to: 'earliest' }).expect(200);
    await waitFor(() => requestsForSubscription(receiver, id).length === 4, { what: 'the replay' });
    expect(requestsForSubscription(receiver, id).map((q) => header(q, 'ce-id'))).toEqual(['e0', 'e1', 'e0', 'e1']);

    const future = await seek(id, { time: new Date(Date.now() + 60_000).toISOString() }).expect(200);
    for (const p of future.body.stats.partitions) expect(p.committedOffset).toBe(p.headOffset);
  });
});

describe('seek forward', () => {
  it('to latest drops pending attempts of skipped events (not dead-lettered), aborts the open request and goes on with new events', async () => {
    const type = 'seek.latest';
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    receiver.setResponder(async (q) => {
      if (header(q, 'ce-id') === 'l0') await held; // never answered while the test runs
      return { status: 204 };
    });
    const id = await subscribe(type, { retry: { initialDelayMs: 60_000 } });
    const stored = await publishOfType(gw.url, '/seek', type, ['l0', 'l1', 'l2']);
    await waitFor(() => requestsForSubscription(receiver, id, 'l0').length === 1);
    const partition = stored[0]!.partition;
    expect((await getSubscription(gw.url, id)).stats.partitions[partition]).toMatchObject({ inFlight: 1, lag: 3 });

    const res = await seek(id, { to: 'latest' }).expect(200);
    expect(res.body.stats.partitions[partition]).toMatchObject({ inFlight: 0, lag: 0, committedOffset: stored[2]!.offset + 1 });
    expect(res.body.stats.deadLetters).toBe(0);

    // The partition is not blocked by the request still open at the receiver: a new event goes out at once.
    const next = await publishOfType(gw.url, '/seek', type, ['l3']);
    await waitFor(() => requestsForSubscription(receiver, id, 'l3').length === 1, { what: 'the next event' });
    const sent = requestsForSubscription(receiver, id, 'l3')[0]!;
    expect(header(sent, 'herald-previous-offset')).toBeUndefined();
    expect(header(sent, 'webhook-id')).toBe(webhookIdOf(id, partition, next[0]!.offset, 1));
    await waitForLagZero(gw.url, id);
    expect(requestsForSubscription(receiver, id).map((q) => header(q, 'ce-id'))).toEqual(['l0', 'l3']);
    expect((await getSubscription(gw.url, id)).stats.deadLetters).toBe(0);
    // The attempt log says why the open request ended (probe: "the subscription was deleted or the gateway is stopping").
    const aborted = await waitFor(async () => {
      const { attempts } = (await request(gw.url).get(`/subscriptions/${id}/attempts`).expect(200)).body;
      return (attempts as { offset: number; partition: number; error: string | null }[]).find(
        (a) => a.partition === partition && a.offset === stored[0]!.offset && a.error !== null,
      );
    });
    expect(aborted).toMatchObject({ status: null, outcome: 'stale', error: 'aborted: a seek moved its partition' });
    release();
  });
});

describe('seek by offsets', () => {
  it('restarts only the named partitions at the given offsets', async () => {
    const type = 'seek.offsets';
    const id = await subscribe(type);
    const stored = await publishOfType(gw.url, '/seek', type, ['o0', 'o1', 'o2']);
    await waitFor(() => requestsForSubscription(receiver, id).length === 3);
    await waitForLagZero(gw.url, id);
    const partition = stored[0]!.partition;
    const before = (await getSubscription(gw.url, id)).stats.partitions;

    const res = await seek(id, { offsets: { [String(partition)]: stored[1]!.offset } }).expect(200);
    for (const p of res.body.stats.partitions) {
      expect(p.committedOffset).toBe(p.partition === partition ? stored[1]!.offset : before[p.partition].committedOffset);
    }
    await waitFor(() => requestsForSubscription(receiver, id).length === 5, { what: 'the replay' });
    const replay = requestsForSubscription(receiver, id).slice(3);
    expect(replay.map((q) => header(q, 'ce-id'))).toEqual(['o1', 'o2']);
    expect(header(replay[0]!, 'herald-previous-offset')).toBeUndefined();
    expect(header(replay[1]!, 'herald-previous-offset')).toBe(String(stored[1]!.offset));

    // A second seek is a new generation: new ids again.
    await seek(id, { offsets: { [String(partition)]: stored[2]!.offset } }).expect(200);
    await waitFor(() => requestsForSubscription(receiver, id).length === 6, { what: 'the second replay' });
    const again = requestsForSubscription(receiver, id)[5]!;
    expect(header(again, 'ce-id')).toBe('o2');
    expect(header(again, 'webhook-id')).toBe(webhookIdOf(id, partition, stored[2]!.offset, 2));
  });
});

describe('refusals', () => {
  it.each([
    ['no form', {}],
    ['two forms', { to: 'latest', time: '2026-12-01T10:00:00Z' }],
    ['an unknown position', { to: 'middle' }],
    ['a time that is not RFC 3339', { time: 'yesterday' }],
    ['a time without an offset', { time: '2026-12-01T10:00:00' }],
    ['no partitions', { offsets: {} }],
    ['an unknown partition', { offsets: { '4': 0 } }],
    ['a partition that is not a number', { offsets: { first: 0 } }],
    ['a negative offset', { offsets: { '0': -1 } }],
    ['an offset past the head', { offsets: { '0': 1_000_000 } }],
    ['an unknown field', { to: 'latest', colour: 'blue' }],
  ])('answers 400 for %s', async (_name, body) => {
    const id = await subscribe('seek.refused');
    const before = await getSubscription(gw.url, id);
    const res = await seek(id, body).expect(400);
    expect(res.body).toMatchObject({ code: 'invalid_request' });
    expect((await getSubscription(gw.url, id)).stats.partitions).toEqual(before.stats.partitions);
    await request(gw.url).delete(`/subscriptions/${id}`).expect(204);
  });

  it('accepts the head itself as an offset, and answers 404 for an unknown subscription', async () => {
    const id = await subscribe('seek.head');
    const heads = (await getSubscription(gw.url, id)).stats.partitions.map((p: { headOffset: number }) => p.headOffset);
    await seek(id, { offsets: { '0': heads[0] } }).expect(200);
    await seek('00000000-0000-0000-0000-000000000000', { to: 'latest' }).expect(404);
  });
});
