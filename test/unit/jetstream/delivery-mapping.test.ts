import { finishedPast, finishedThrough, markedOffset, previousFrom } from '../../../src/jetstream/delivery/positions';
import { AckPolicy, DeliverPolicy, nanos } from 'nats';
import { transition, type AttemptPolicy, type AttemptState } from '../../../src/delivery/attempt-machine';
import {
  ACK_WAIT_MARGIN_MS,
  ackWaitMs,
  needsUpdate,
  partitionConsumerConfig,
  redriveConsumerConfig,
  startOf,
} from '../../../src/jetstream/delivery/consumer-config';
import { deliveryNames, idToken } from '../../../src/jetstream/delivery/names';
import { jsActionOf, leaseEnd, stateOfEntry, type AckEntry } from '../../../src/jetstream/delivery/outcome';
import { seekStarts } from '../../../src/jetstream/delivery/seek-starts';
import { deliverySchema } from '../../../src/subscriptions/schema';

const delivery = deliverySchema.parse({});

describe('a subscription record → its JetStream consumers', () => {
  it('orders per partition with one unacknowledged message, and leases for the request and the ack deadline', () => {
    const config = partitionConsumerConfig('p_d_x_g0', delivery, { kind: 'all' });
    expect(config).toEqual({
      durable_name: 'p_d_x_g0',
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(30_000 + ACK_WAIT_MARGIN_MS),
      max_deliver: -1,
      max_ack_pending: 1,
    });
    expect(config).not.toHaveProperty('num_replicas'); // a consumer has its stream's replicas
  });

  it('lets ordering none run maxInFlight at once', () => {
    const config = partitionConsumerConfig('c', { ...delivery, ordering: 'none', maxInFlight: 7 }, { kind: 'all' });
    expect(config.max_ack_pending).toBe(7);
  });

  it.each([
    [{ timeoutMs: 10_000, ackDeadlineMs: 30_000 }, 31_000],
    [{ timeoutMs: 60_000, ackDeadlineMs: 1000 }, 61_000],
    [{ timeoutMs: 1000, ackDeadlineMs: 1000 }, 2000],
  ])('derives ack_wait from %j', (options, expected) => {
    expect(ackWaitMs(options)).toBe(expected);
  });

  it('leaves max_deliver unlimited whatever the retry policy: Herald bounds attempts, JetStream would drop at its cap', () => {
    for (const maxAttempts of [1, 3, 100]) {
      const config = partitionConsumerConfig('c', { ...delivery, retry: { ...delivery.retry, maxAttempts } }, { kind: 'all' });
      expect(config.max_deliver).toBe(-1);
    }
  });

  it('starts earliest at everything stored and latest at the subscription creation time, the same on every node', () => {
    expect(startOf({ startAt: 'earliest', createdAt: 5 })).toEqual({ kind: 'all' });
    expect(startOf({ startAt: 'latest', createdAt: Date.UTC(2026, 0, 1) })).toEqual({ kind: 'time', ms: Date.UTC(2026, 0, 1) });
    expect(partitionConsumerConfig('c', delivery, { kind: 'time', ms: Date.UTC(2026, 0, 1) })).toMatchObject({
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: '2026-01-01T00:00:00.000Z',
    });
    expect(partitionConsumerConfig('c', delivery, { kind: 'seq', seq: 0 })).toMatchObject({
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: 1,
    });
  });

  it('filters the redrive queue on the subscription subject and runs redeliveries in parallel', () => {
    expect(redriveConsumerConfig('rd', 'p.redrive.x', { ...delivery, maxInFlight: 4 })).toMatchObject({
      filter_subject: 'p.redrive.x',
      deliver_policy: DeliverPolicy.All,
      max_ack_pending: 4,
    });
  });

  it('updates a consumer only when a lease setting changed', () => {
    const a = partitionConsumerConfig('c', delivery, { kind: 'all' });
    expect(needsUpdate(a, { ...a })).toBe(false);
    expect(needsUpdate(a, partitionConsumerConfig('c', { ...delivery, timeoutMs: 50_000 }, { kind: 'all' }))).toBe(true);
    expect(needsUpdate(a, partitionConsumerConfig('c', { ...delivery, ordering: 'none' }, { kind: 'all' }))).toBe(true);
  });
});

describe('delivery names', () => {
  it('keeps UUID subscription ids and hashes anything a consumer name or subject cannot hold', () => {
    const n = deliveryNames('hx');
    const uuid = '0b6f5e1a-6a2c-4a8e-9a43-2d3c6a1f0e11';
    expect(n.consumer(uuid, 2)).toBe(`hx_d_${uuid}_g2`);
    expect(n.deadSubject(uuid)).toBe(`hx.dead.${uuid}`);
    expect(n.positionKey(uuid, 3, 1)).toBe(`${uuid}.3.1`);
    expect(idToken('a.b*c')).toMatch(/^h[0-9a-f]{32}$/);
    expect(idToken('a.b*c')).not.toBe(idToken('a.b*d'));
  });
  it("reads a partition consumer's name back (token, generation), and nothing else", () => {
    const n = deliveryNames('hx');
    const uuid = '0b6f5e1a-6a2c-4a8e-9a43-2d3c6a1f0e11';
    expect(n.parseConsumer(n.consumer(uuid, 12))).toEqual({ token: uuid, generation: 12 });
    const hashed = idToken('a.b*c');
    expect(n.parseConsumer(n.consumer('a.b*c', 0))).toEqual({ token: hashed, generation: 0 });
    expect(n.parseConsumer('hx_d_with_g_inside_g3')).toEqual({ token: 'with_g_inside', generation: 3 });
    for (const other of [n.redriveConsumer(uuid), `hy_d_${uuid}_g1`, `hx_d_${uuid}_g01`, `hx_d_${uuid}`, 'hx_d__g1', 'probe'])
      expect([other, n.parseConsumer(other)]).toEqual([other, undefined]);
  });
});

describe('an attempt machine step → what is done to the JetStream message', () => {
  const policy: AttemptPolicy = { retry: { ...delivery.retry, maxAttempts: 3, jitter: 0 }, ackDeadlineMs: 1000, ackMode: 'auto' };
  const ctx = { now: 1000, policy, random: () => 0.5 };
  const sending = (attempt = 1, ackMode = policy.ackMode): AttemptState => ({
    phase: 'sending',
    attempt,
    deliveryId: 'dlv_x',
    lastStatus: null,
    lastError: null,
    leaseFloor: null,
    sentUnder: { ackMode, ackDeadlineMs: policy.ackDeadlineMs },
  });
  const answer = (status: number | null, extra: Record<string, unknown> = {}) =>
    jsActionOf(transition(sending(), { kind: 'answer', attemptId: 'dlv_x', status, ...extra }, ctx), ctx.now);

  it.each<[number | null, Record<string, unknown>, unknown]>([
    [200, {}, { kind: 'ack' }],
    [204, {}, { kind: 'ack' }],
    [202, {}, { kind: 'hold', leaseUntil: 2000 }],
    [500, {}, { kind: 'retry', delayMs: delivery.retry.initialDelayMs }],
    [503, { retryAfter: '3' }, { kind: 'retry', delayMs: 3000 }],
    [500, { retryAfter: '3' }, { kind: 'retry', delayMs: delivery.retry.initialDelayMs }],
    [null, { error: 'ECONNREFUSED' }, { kind: 'retry', delayMs: delivery.retry.initialDelayMs }],
    [410, {}, { kind: 'gone' }],
    [400, {}, { kind: 'deadLetter', reason: 'rejected_status' }],
    [301, {}, { kind: 'deadLetter', reason: 'rejected_status' }],
    [null, { sinkNotAllowed: true, error: 'refused' }, { kind: 'deadLetter', reason: 'sink_not_allowed' }],
  ])('answer %p %j → %j', (status, extra, expected) => {
    expect(answer(status, extra)).toEqual(expected);
  });

  it('dead-letters a failed last attempt', () => {
    const step = transition(sending(3), { kind: 'answer', attemptId: 'dlv_x', status: 500 }, ctx);
    expect(jsActionOf(step, ctx.now)).toEqual({ kind: 'deadLetter', reason: 'max_attempts' });
  });

  it('holds any 2xx under manual ack mode', () => {
    const manual = { ...ctx, policy: { ...policy, ackMode: 'manual' as const } };
    expect(jsActionOf(transition(sending(1, 'manual'), { kind: 'answer', attemptId: 'dlv_x', status: 200 }, manual), 1000)).toEqual({
      kind: 'hold',
      leaseUntil: 2000,
    });
  });

  const entry = (state: AckEntry['state']): AckEntry => ({
    reply: '$JS.ACK.x',
    subscriptionId: 's',
    partition: 0,
    offset: 4,
    generation: 0,
    redrive: false,
    attempt: 1,
    state,
    leaseUntil: 5000,
    leaseFloor: null,
    lastStatus: 202,
    lastError: null,
    policy,
    ackWaitMs: 2000,
  });

  it('maps callbacks on an awaiting attempt: ack, nack with delay, reject, extend; a settled entry has no state', () => {
    const awaiting = stateOfEntry('dlv_x', entry('awaiting_ack'))!;
    expect(awaiting).toMatchObject({ phase: 'awaiting_ack', leaseUntil: 5000 });
    const run = (input: Parameters<typeof transition>[1]) => jsActionOf(transition(awaiting, input, ctx), ctx.now);
    expect(run({ kind: 'ack', attemptId: 'dlv_x' })).toEqual({ kind: 'ack' });
    expect(run({ kind: 'nack', attemptId: 'dlv_x', delayMs: 700 })).toEqual({ kind: 'retry', delayMs: 700 });
    expect(run({ kind: 'reject', attemptId: 'dlv_x' })).toEqual({ kind: 'deadLetter', reason: 'receiver_rejected' });
    expect(run({ kind: 'extend', attemptId: 'dlv_x', ms: 10_000 })).toEqual({ kind: 'extended', until: 11_000 });
    expect(run({ kind: 'ack', attemptId: 'dlv_other' })).toEqual({ kind: 'none' });
    expect(stateOfEntry('dlv_x', entry('acked'))).toBeNull();
    expect(stateOfEntry('dlv_x', entry('sending'))).toMatchObject({ phase: 'sending' });
  });

  it("holds an entry's message to its lease: awaiting, its lease; still sending, an extend's floor; settled, nothing", () => {
    expect(leaseEnd(entry('awaiting_ack'))).toBe(5000);
    expect(leaseEnd(entry('sending'))).toBe(0);
    expect(leaseEnd({ ...entry('sending'), leaseFloor: 9000 })).toBe(9000);
    for (const settled of ['acked', 'nacked', 'rejected', 'expired', 'failed', 'superseded'] as const)
      expect(leaseEnd({ ...entry(settled), leaseFloor: 9000 })).toBe(0);
  });
});

describe('seek targets → where each moved partition starts', () => {
  const bounds = [
    { first: 0, head: 10 },
    { first: 3, head: 5 },
  ];
  it('moves every partition for earliest, latest and a time', () => {
    expect(seekStarts({ to: 'earliest' }, bounds)).toEqual([
      { partition: 0, start: { kind: 'all' } },
      { partition: 1, start: { kind: 'all' } },
    ]);
    expect(seekStarts({ to: 'latest' }, bounds)).toEqual([
      { partition: 0, start: { kind: 'seq', seq: 11 } },
      { partition: 1, start: { kind: 'seq', seq: 6 } },
    ]);
    expect(seekStarts({ time: 42 }, bounds).map((m) => m.start)).toEqual([
      { kind: 'time', ms: 42 },
      { kind: 'time', ms: 42 },
    ]);
  });
  it('moves only the named partitions for offsets (offset + 1 is the sequence; below the first means the first)', () => {
    expect(seekStarts({ offsets: { '1': 0 } }, bounds)).toEqual([{ partition: 1, start: { kind: 'seq', seq: 4 } }]);
    expect(seekStarts({ offsets: { '0': 10 } }, bounds)).toEqual([{ partition: 0, start: { kind: 'seq', seq: 11 } }]);
  });
  it('refuses a partition that does not exist and an offset past the head, naming each', () => {
    expect(() => seekStarts({ offsets: { '2': 0, '0': 11 } }, bounds)).toThrow(
      /offsets\.0: offset 11 is past partition 0's head: offsets 0 to 10 can be sought.*|offsets\.2: there is no partition 2/,
    );
    try {
      seekStarts({ offsets: { '2': 0, '0': 11 } }, bounds);
    } catch (err) {
      expect((err as { code: string; details: unknown[] }).code).toBe('invalid_request');
      expect((err as { details: unknown[] }).details).toHaveLength(2);
    }
  });
});

describe('the previous offset from the positions record', () => {
  it('is the marked offset below the event', () => {
    expect(previousFrom('16', 17)).toBe(16);
    expect(previousFrom('12 9', 17)).toBe(12);
  });
  it('is what the event was first sent with when the event itself was marked and not acked (a node died between the two)', () => {
    expect(previousFrom('17 16', 17)).toBe(16);
    expect(previousFrom('17', 17)).toBeNull(); // it was the first since the start or a seek
  });
  it('is none for a record above the event or one that does not parse', () => {
    expect(previousFrom('20 19', 17)).toBeNull();
    expect(previousFrom('x', 17)).toBeNull();
    expect(previousFrom('17 x', 17)).toBeNull();
    expect(previousFrom('', 17)).toBeNull(); // was 0
  });
});

describe('the last finished offset from the positions record', () => {
  it('is the marked offset, with or without the previous one beside it; none when it does not parse', () => {
    expect(markedOffset('16')).toBe(16);
    expect(markedOffset('17 16')).toBe(17);
    expect(markedOffset('0')).toBe(0);
    for (const bad of ['', 'x', '-1', '1.5', ' 3']) expect([bad, markedOffset(bad)]).toEqual([bad, undefined]);
  });
  it('says every offset below is finished only when marked under ordering partition (" p")', () => {
    expect(finishedThrough('17 16 p')).toBe(17);
    expect(finishedThrough('17 - p')).toBe(17);
    expect(finishedThrough('17 16')).toBeUndefined(); // ordering none, or an earlier version
    expect(finishedThrough('17')).toBeUndefined();
    expect(finishedThrough('x - p')).toBeUndefined();
    // The previous offset reads the same with the flag.
    expect(previousFrom('17 - p', 18)).toBe(17);
    expect(previousFrom('17 - p', 17)).toBeNull();
    expect(previousFrom('17 16 p', 17)).toBe(16);
  });
  it('tells a message another node delivered and went past (a stalled node held it): below the mark, under " p" only', () => {
    expect(finishedPast('370 369 p', 290)).toBe(true);
    expect(finishedPast('370 369 p', 369)).toBe(true);
    // The marked offset itself may be unacknowledged (its node died between mark and ack): sent again.
    expect(finishedPast('370 369 p', 370)).toBe(false);
    expect(finishedPast('370 369 p', 371)).toBe(false);
    expect(finishedPast('370 369', 290)).toBe(false); // ordering none: earlier offsets may still wait for a retry
    expect(finishedPast(undefined, 290)).toBe(false);
  });
});
