import pino from 'pino';
import { createDispatcher, type Dispatcher } from '../../../src/delivery/dispatcher';
import type { HttpSender, Outgoing, SendResult } from '../../../src/delivery/http-sender';
import { openDatabase, type Db } from '../../../src/store/db';
import { createSubscriptionSchema } from '../../../src/subscriptions/schema';
import { seekSchema } from '../../../src/subscriptions/seek-schema';
import { createSubscriptionsService } from '../../../src/subscriptions/service';
import { createSqliteSubscriptionStore } from '../../../src/store/subscriptions-store';
import type { EventStore, ReadPage, StoredEvent } from '../../../src/wal/event-store';
import { waitFor } from '../../helpers/receiver';

/**
 * Retention (issue text: "a subscription whose unfinished events are deleted moves past them and
 * counts them"): the dispatcher and its workers against a store whose first offsets move, through
 * the subscriptions service as the API uses it.
 */

/** An in-memory store whose test can delete a partition's oldest events (`retire`), as retention would. */
function retiringStore(partitions: number) {
  const logs: StoredEvent[][] = Array.from({ length: partitions }, () => []);
  const firsts = new Array<number>(partitions).fill(0);
  const appendListeners = new Set<(p: ReadonlySet<number>) => void>();
  const retireListeners = new Set<(firsts: readonly number[]) => void>();
  const store: EventStore = {
    partitions,
    append: () => Promise.reject(new Error('not used')),
    read(partition, from, limit): ReadPage {
      const log = logs[partition]!;
      return { events: log.slice(Math.max(from, firsts[partition]!), Math.max(from, firsts[partition]!) + limit) };
    },
    lookup: () => undefined,
    heads: () => logs.map((l) => l.length),
    firstOffsets: () => [...firsts],
    health: () => ({ writable: true }),
    onAppend(listener) {
      appendListeners.add(listener);
      return () => appendListeners.delete(listener);
    },
    onRetire(listener) {
      retireListeners.add(listener);
      return () => retireListeners.delete(listener);
    },
    close: () => Promise.resolve(),
  };
  return {
    store,
    publish(partition: number, count: number, storedAt = Date.now()): void {
      const log = logs[partition]!;
      for (let i = 0; i < count; i++) {
        const offset = log.length;
        log.push({
          partition,
          offset,
          storedAt,
          event: { attributes: { specversion: '1.0', id: `e${partition}-${offset}`, source: '/t', type: 't' }, data: { kind: 'none' } },
        });
      }
      for (const l of appendListeners) l(new Set([partition]));
    },
    /** Deletes every offset below `first`; `notify: false` is a deletion while no gateway runs. */
    retire(partition: number, first: number, opts: { notify?: boolean } = {}): void {
      firsts[partition] = first;
      if (opts.notify !== false) for (const l of retireListeners) l([...firsts]);
    },
  };
}

type Answer = SendResult | Promise<SendResult>;

/** A sender answering as `respond` says, recording each request's partition and offset. */
function fakeSender(respond: (req: { partition: number; offset: number }) => Answer) {
  const sent: { partition: number; offset: number; previousOffset?: string }[] = [];
  const sender = {
    send: (_sink: string, build: () => Outgoing | undefined) => {
      const request = build();
      if (!request) return Promise.resolve({ status: null, withdrawn: true });
      const { headers } = request;
      const req = { partition: Number(headers['herald-partition']), offset: Number(headers['herald-offset']) };
      sent.push({ ...req, previousOffset: headers['herald-previous-offset'] });
      return Promise.resolve(respond(req));
    },
    probe: () => Promise.resolve({ status: 200 }),
    close: () => Promise.resolve(),
  } as unknown as HttpSender;
  return { sender, sent };
}

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}
const WARN = 40;
const ERROR = 50;
const EXPIRED_MSG = 'retention deleted events this subscription had not finished; it moved past them';

function gateway(db: Db, store: EventStore, sender: HttpSender, opts: { enabled?: boolean } = {}) {
  const lines: LogLine[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  const dispatcher: Dispatcher = createDispatcher({ store, db, log, sender, ackUrlBase: () => 'http://gw', enabled: opts.enabled });
  const service = createSubscriptionsService({
    records: createSqliteSubscriptionStore({ db, initOffsets: dispatcher.initOffsets }),
    store,
    delivery: dispatcher,
    log,
  });
  void service.startAll();
  // Bodies go through the API's schemas first, as the router sends them.
  const subscriptions = {
    ...service,
    create: (body: unknown) => service.create(createSubscriptionSchema.parse(body)),
    seek: (id: string, body: unknown) => service.seek(id, seekSchema.parse(body)),
  };
  return {
    dispatcher,
    subscriptions,
    expiredLines: () => lines.filter((l) => l.msg === EXPIRED_MSG),
    errorLines: () => lines.filter((l) => l.level >= ERROR),
    close: () => dispatcher.close({ deadline: Date.now() }),
  };
}

// What `GET /subscriptions/{id}` shows as `stats.partitions` (the in-process dispatcher answers at once).
const partitionStats = (gw: ReturnType<typeof gateway>, id: string) => gw.dispatcher.stats(id).partitions;

describe('retention expiry', () => {
  let db: Db;
  const open: ReturnType<typeof gateway>[] = [];
  const start = (...args: Parameters<typeof gateway>) => {
    const gw = gateway(...args);
    open.push(gw);
    return gw;
  };
  beforeEach(() => {
    db = openDatabase(':memory:');
  });
  afterEach(async () => {
    for (const gw of open.splice(0)) await gw.close();
    db.close();
  });

  it('moves a subscription that stays behind past deleted events, counts them, logs once per deletion (the partitions named), keeps the count across a restart', async () => {
    const s = retiringStore(2);
    const { sender, sent } = fakeSender(() => ({ status: 503 }));
    let gw = start(db, s.store, sender);
    const { id } = await gw.subscriptions.create({ sink: 'http://receiver.test/hook', startAt: 'earliest' });
    s.publish(0, 10);
    s.publish(1, 4);
    // Ordering per partition: offset 0 of each partition is tried, answered 503 and waits to retry.
    await waitFor(() => sent.length >= 2 && partitionStats(gw, id).every((p) => p.inFlight === 1), { what: 'first attempts' });

    s.retire(0, 6);
    expect(partitionStats(gw, id)).toEqual([
      expect.objectContaining({ partition: 0, committedOffset: 6, headOffset: 10, lag: 4, expired: 6, inFlight: 0 }),
      expect.objectContaining({ partition: 1, committedOffset: 0, headOffset: 4, lag: 4, expired: 0, inFlight: 1 }),
    ]);
    expect(gw.expiredLines()).toEqual([expect.objectContaining({ level: WARN, subscription: id, expired: 6, partitions: { 0: 6 } })]);
    // Delivery goes on from the first offset kept; its previous offset names the last deleted one, so the
    // receiver (which never had offset 5) sees the gap (retention probe: no header, like a first delivery).
    await waitFor(() => sent.find((r) => r.partition === 0 && r.offset === 6), { what: 'offset 6 tried' });
    expect(sent.filter((r) => r.partition === 0 && r.offset > 0 && r.offset < 6)).toEqual([]);
    expect(sent.find((r) => r.partition === 0 && r.offset === 6)?.previousOffset).toBe('5');

    // Nothing more below the first offset: nothing is counted or logged again.
    s.retire(0, 6);
    s.retire(1, 0);
    expect(gw.expiredLines()).toHaveLength(1);

    // A second deletion adds to the total.
    s.retire(0, 8);
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 8, expired: 8, lag: 2 });
    expect(gw.expiredLines().map((l) => l.expired)).toEqual([6, 2]);

    await gw.close();
    open.splice(0);
    gw = start(db, s.store, sender);
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 8, expired: 8 });
    expect(gw.expiredLines()).toEqual([]);
  });

  it('does not count offsets the subscription already finished (ordering none)', async () => {
    const s = retiringStore(1);
    // Even offsets are delivered, odd ones wait to retry.
    const { sender, sent } = fakeSender(({ offset }) => ({ status: offset % 2 === 0 ? 204 : 503 }));
    const gw = start(db, s.store, sender);
    const { id } = await gw.subscriptions.create({
      sink: 'http://receiver.test/hook',
      startAt: 'earliest',
      delivery: { ordering: 'none' },
    });
    s.publish(0, 10);
    await waitFor(() => sent.length >= 10 && partitionStats(gw, id)[0]!.inFlight === 5, { what: 'every offset tried once' });
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 1, expired: 0 });

    // [1, 6) holds 1, 3, 5 unfinished and 2, 4 delivered; 6 was delivered too, so committed goes on to 7.
    s.retire(0, 6);
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 7, expired: 3, lag: 3, inFlight: 2 });
    expect(gw.expiredLines()).toEqual([expect.objectContaining({ subscription: id, expired: 3, partitions: { 0: 3 } })]);
  });

  it('lets a request still open for an expired offset finish by itself without moving the position', async () => {
    const s = retiringStore(1);
    let answer!: (r: SendResult) => void;
    const { sender, sent } = fakeSender(() => new Promise<SendResult>((resolve) => (answer = resolve)));
    const gw = start(db, s.store, sender);
    const { id } = await gw.subscriptions.create({ sink: 'http://receiver.test/hook', startAt: 'earliest' });
    s.publish(0, 5);
    await waitFor(() => sent.length === 1, { what: 'offset 0 sent' });

    s.retire(0, 3);
    // Still open: it keeps its place (ordering per partition holds the partition until it ends).
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 3, expired: 3, inFlight: 1 });
    answer({ status: 204 });
    await waitFor(() => sent.length === 2, { what: 'offset 3 sent' });
    expect(sent[1]).toMatchObject({ offset: 3 });
    // Delivered after all: no longer counted expired (retention probe: delivered + expired passed the head).
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 3, expired: 2, inFlight: 1 });
    answer({ status: 204 });
    await waitFor(() => partitionStats(gw, id)[0]!.committedOffset === 4, { what: 'offset 3 finished' });
    // Written as it fell: a restart does not put the old count back (re-probe: the row kept the larger one).
    await gw.close();
    expect(partitionStats(start(db, s.store, sender), id)[0]).toMatchObject({ committedOffset: 4, expired: 2 });
  });

  it('ends a redelivery whose event retention deleted at its next attempt, sending nothing more: its dead letter comes back (retention probe: re-sent from memory)', async () => {
    const s = retiringStore(1);
    let held: ((r: SendResult) => void) | undefined;
    let holding = false;
    const { sender, sent } = fakeSender(() => (holding ? new Promise<SendResult>((resolve) => (held = resolve)) : { status: 500 }));
    const gw = start(db, s.store, sender);
    const { id } = await gw.subscriptions.create({
      sink: 'http://receiver.test/hook',
      startAt: 'earliest',
      delivery: { retry: { maxAttempts: 2, initialDelayMs: 10, maxDelayMs: 10, jitter: 0 } },
    });
    s.publish(0, 2);
    const deadLetters = async () => (await gw.subscriptions.deadLetters(id, { limit: 10, after: 0 })).deadLetters;
    await waitFor(async () => (await deadLetters()).length === 2, { what: 'two dead letters' });
    expect(sent).toHaveLength(4);
    holding = true; // the redelivery's first attempt waits for its answer
    const first = (await deadLetters()).find((d) => d.offset === 0)!;
    expect(await gw.subscriptions.redeliver(id, [first.id])).toBe(1);
    await waitFor(() => sent.length === 5, { what: 'the redelivery sent' });
    s.retire(0, 1); // offset 0 deleted while its redelivery is open
    holding = false;
    held!({ status: 500 }); // its next attempt comes due in 10 ms
    await waitFor(async () => (await deadLetters()).some((d) => d.offset === 0), { what: 'the dead letter back' });
    await new Promise((r) => setTimeout(r, 100));
    expect(sent).toHaveLength(5);
  });

  it('expires paused subscriptions and subscriptions under delivery off alike', async () => {
    const s = retiringStore(1);
    const { sender, sent } = fakeSender(() => ({ status: 204 }));
    const gw = start(db, s.store, sender);
    const { id } = await gw.subscriptions.create({ sink: 'http://receiver.test/hook', startAt: 'earliest' });
    await gw.subscriptions.pause(id);
    const off = start(db, s.store, sender, { enabled: false });
    s.publish(0, 5);
    s.retire(0, 2);
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 2, expired: 2, lag: 3 });
    expect(gw.expiredLines()).toEqual([expect.objectContaining({ subscription: id, expired: 2, partitions: { 0: 2 } })]);
    // The second dispatcher (delivery off) started the same subscription from its saved offsets.
    expect(off.expiredLines()).toEqual([expect.objectContaining({ subscription: id, expired: 2, partitions: { 0: 2 } })]);
    expect(sent).toEqual([]);
    await gw.subscriptions.resume(id);
    await waitFor(() => partitionStats(gw, id)[0]!.committedOffset === 5, { what: 'caught up' });
    expect(sent.map((r) => r.offset)).toEqual([2, 3, 4]);
  });

  it('moves a cursor that restored work left behind past deleted events without an error line: they were deleted, not lost (chaos run: "events missing from the log" at error level, fsync always)', async () => {
    const s = retiringStore(1);
    const ids = new Map<number, string>();
    // Offset 0 is answered 202 (awaiting its ack), 1 to 3 are delivered: finished above committed (ordering none).
    const sender = {
      send: (_sink: string, build: () => Outgoing | undefined) => {
        const request = build();
        if (!request) return Promise.resolve({ status: null, withdrawn: true });
        const offset = Number(request.headers['herald-offset']);
        ids.set(offset, String(request.headers['herald-delivery-id']));
        return Promise.resolve({ status: offset === 0 ? 202 : 204 });
      },
      probe: () => Promise.resolve({ status: 200 }),
      close: () => Promise.resolve(),
    } as unknown as HttpSender;
    let gw = start(db, s.store, sender);
    const { id } = await gw.subscriptions.create({
      sink: 'http://receiver.test/hook',
      startAt: 'earliest',
      delivery: { ordering: 'none', ackDeadlineMs: 600_000 },
    });
    s.publish(0, 4);
    await waitFor(() => ids.size === 4 && partitionStats(gw, id)[0]!.inFlight === 1, { what: 'every offset tried once' });
    await gw.subscriptions.pause(id);
    await gw.close();
    open.splice(0);

    // After the restart, paused: the cursor starts at committed (0) and does not move; the ack of 0 moves
    // committed past the restored finished offsets, to 4, ahead of the cursor. Then retention deletes 0 and 1.
    gw = start(db, s.store, sender);
    await waitFor(() => partitionStats(gw, id)[0]!.inFlight === 1, { what: 'restored' });
    expect(gw.dispatcher.callback(ids.get(0)!, 'ack')).toMatchObject({ status: 'acked' });
    await waitFor(() => partitionStats(gw, id)[0]!.committedOffset === 4, { what: 'acked' });
    s.retire(0, 2);
    s.publish(0, 1);
    await gw.subscriptions.resume(id);
    await waitFor(() => partitionStats(gw, id)[0]!.committedOffset === 5, { what: 'offset 4 delivered' });
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 5, expired: 0, lag: 0 });
    expect(gw.errorLines()).toEqual([]);
  });

  it('at start, expires what was deleted while the gateway was down (or before the expiry was saved)', async () => {
    const s = retiringStore(1);
    const { sender } = fakeSender(() => ({ status: 503 }));
    let gw = start(db, s.store, sender);
    const { id } = await gw.subscriptions.create({ sink: 'http://receiver.test/hook', startAt: 'earliest' });
    await gw.subscriptions.pause(id);
    s.publish(0, 7);
    await gw.close();
    open.splice(0);

    s.retire(0, 5, { notify: false });
    gw = start(db, s.store, sender);
    expect(partitionStats(gw, id)[0]).toMatchObject({ committedOffset: 5, expired: 5, lag: 2 });
    expect(gw.expiredLines()).toEqual([expect.objectContaining({ subscription: id, expired: 5, partitions: { 0: 5 } })]);
  });

  it('starts a new earliest subscription, and seeks, at the first offset without counting anything expired', async () => {
    const s = retiringStore(2);
    const { sender } = fakeSender(() => ({ status: 503 }));
    s.publish(0, 10, 1_000);
    s.publish(1, 3, 1_000);
    s.retire(0, 4);
    s.retire(1, 3);
    const gw = start(db, s.store, sender);
    const created = await gw.subscriptions.create({ sink: 'http://receiver.test/hook', startAt: 'earliest' });
    await gw.subscriptions.pause(created.id);
    expect(created.stats!.partitions).toEqual([
      expect.objectContaining({ committedOffset: 4, lag: 6, expired: 0 }),
      expect.objectContaining({ committedOffset: 3, lag: 0, expired: 0 }),
    ]);

    await gw.subscriptions.seek(created.id, { to: 'latest' });
    expect((await gw.subscriptions.seek(created.id, { to: 'earliest' })).stats!.partitions.map((p) => p.committedOffset)).toEqual([4, 3]);
    await gw.subscriptions.seek(created.id, { to: 'latest' });
    expect((await gw.subscriptions.seek(created.id, { offsets: { '0': 1 } })).stats!.partitions.map((p) => p.committedOffset)).toEqual([
      4, 3,
    ]);
    await gw.subscriptions.seek(created.id, { to: 'latest' });
    const byTime = await gw.subscriptions.seek(created.id, { time: new Date(0).toISOString() });
    expect(byTime.stats!.partitions.map((p) => [p.committedOffset, p.expired])).toEqual([
      [4, 0],
      [3, 0],
    ]);
    expect(gw.expiredLines()).toEqual([]);
  });
});
