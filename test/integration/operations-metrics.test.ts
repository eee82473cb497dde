import parsePrometheus from 'parse-prometheus-text-format';
import request from 'supertest';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

type Families = ReturnType<typeof parsePrometheus> & { text: string };

/** Scrapes `/metrics` and parses it with an independent Prometheus text parser. */
async function scrape(url: string): Promise<Families> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return Object.assign(parsePrometheus(text), { text });
}

/**
 * The value of one series (counter or gauge), or a histogram's count; 0 when the series is absent.
 * The parser drops the labels of labelled histograms, so their `_count` line is read from the text.
 */
function value(families: Families, name: string, labels: Record<string, string> = {}): number {
  const family = families.find((f) => f.name === name);
  if (!family) throw new Error(`no metric ${name}`);
  if (family.type === 'HISTOGRAM') {
    const line = families.text
      .split('\n')
      .find((l) => l.startsWith(`${name}_count`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  }
  const sample = family.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return sample ? Number(sample.value) : 0;
}

const binary = (id: string) => ({
  'ce-specversion': '1.0',
  'ce-id': id,
  'ce-source': '/metrics',
  'ce-type': 'metrics.t',
  'content-type': 'application/json',
});
const event = (id: string) => ({ specversion: '1.0', id, source: '/metrics', type: 'metrics.t', data: {} });

describe('GET /metrics', () => {
  let gw: TestGateway;
  let ok: Receiver;
  let failing: Receiver;
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
    ok = await startReceiver(() => ({ status: 204 }));
    failing = await startReceiver(() => ({ status: 500 }));
  });
  afterAll(async () => {
    await ok.close();
    await failing.close();
    await gw.close();
  });

  it('counts ingest by mode, duplicates, rejections, groups and fsyncs, and shows the log and partition heads', async () => {
    const before = await scrape(gw.url);
    for (const id of ['b1', 'b2', 'b3']) expect((await postEventsRaw(gw.url, binary(id), '{}')).status).toBe(202);
    expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(event('s1')))).status).toBe(202);
    const batch = JSON.stringify([event('k1'), event('k2')]);
    expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents-batch+json' }, batch)).status).toBe(202);
    expect((await postEventsRaw(gw.url, binary('b1'), '{}')).status).toBe(200);
    expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, '{')).status).toBe(400);

    const after = await scrape(gw.url);
    const delta = (name: string, labels?: Record<string, string>) => value(after, name, labels) - value(before, name, labels);
    expect(delta('herald_events_ingested_total', { mode: 'binary' })).toBe(3);
    expect(delta('herald_events_ingested_total', { mode: 'structured' })).toBe(1);
    expect(delta('herald_events_ingested_total', { mode: 'batch' })).toBe(2);
    expect(delta('herald_events_duplicate_total')).toBe(1);
    expect(delta('herald_ingest_rejected_total', { code: 'invalid_event' })).toBe(1);
    expect(delta('herald_ingest_request_duration_seconds')).toBe(7);
    expect(delta('herald_wal_group_events')).toBeGreaterThanOrEqual(5);
    expect(delta('herald_wal_fsync_duration_seconds')).toBeGreaterThanOrEqual(5);
    expect(value(after, 'herald_log_bytes')).toBeGreaterThan(0);
    expect(value(after, 'herald_log_segments')).toBe(1);
    const heads = (await request(gw.url).get('/partitions').expect(200)).body.partitions as { partition: number; headOffset: number }[];
    for (const { partition, headOffset } of heads)
      expect(value(after, 'herald_partition_head_offset', { partition: String(partition) })).toBe(headOffset);
    // prom-client's process and Node metrics, under Herald's prefix.
    expect(after.some((f) => f.name === 'herald_process_cpu_seconds_total')).toBe(true);
  });

  it('follows a subscription: deliveries, retries, dead letters, lag, state, filter errors; forgets it when deleted', async () => {
    const good = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: ok.url, filters: [{ exact: { type: 'sub.good' } }] })
        .expect(201)
    ).body;
    const bad = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: failing.url, filters: [{ exact: { type: 'sub.bad' } }], delivery: { retry: { maxAttempts: 2, initialDelayMs: 10 } } })
        .expect(201)
    ).body;
    const concat = `CONCAT(${Array.from({ length: 200 }, () => 'big').join(', ')}) = 'z'`;
    const budget = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: ok.url, filters: [{ sql: concat }] })
        .expect(201)
    ).body;
    await request(gw.url).post(`/subscriptions/${budget.id}/pause`).expect(200);

    const post = (id: string, type: string, extra: Record<string, unknown> = {}) =>
      postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify({ ...event(id), type, ...extra }));
    for (const id of ['g1', 'g2']) expect((await post(id, 'sub.good')).status).toBe(202);
    expect((await post('x1', 'sub.bad')).status).toBe(202);
    await waitFor(() => ok.requests.length === 2 || undefined, { what: 'two deliveries' });
    await waitFor(async () => (await request(gw.url).get(`/subscriptions/${bad.id}`)).body.stats.deadLetters === 1 || undefined, {
      what: 'a dead letter',
    });
    await waitFor(
      async () =>
        value(await scrape(gw.url), 'herald_deliveries_total', { subscription: good.id, outcome: 'delivered' }) === 2 || undefined,
      {
        what: 'delivered counted',
      },
    );

    const m = await scrape(gw.url);
    // Two attempts: the first is retried, the second dead-letters the event (it was counted `retry` too: delivery probe).
    expect(value(m, 'herald_deliveries_total', { subscription: bad.id, outcome: 'retry' })).toBe(1);
    expect(value(m, 'herald_deliveries_total', { subscription: bad.id, outcome: 'dead_letter' })).toBe(1);
    expect(value(m, 'herald_delivery_duration_seconds', { subscription: good.id })).toBe(2);
    expect(value(m, 'herald_publish_to_delivery_seconds', { subscription: good.id })).toBe(2);
    expect(value(m, 'herald_dead_letters', { subscription: bad.id })).toBe(1);
    expect(value(m, 'herald_dead_letters', { subscription: good.id })).toBe(0);
    const lag = m.find((f) => f.name === 'herald_subscription_lag_events')!.metrics.filter((s) => s.labels?.subscription === good.id);
    expect(lag.length).toBe(4);
    expect(lag.every((s) => Number(s.value) === 0)).toBe(true);
    expect(value(m, 'herald_subscription_state', { subscription: good.id, state: 'active' })).toBe(1);
    expect(value(m, 'herald_subscription_state', { subscription: budget.id, state: 'paused' })).toBe(1);
    expect(value(m, 'herald_subscription_state', { subscription: budget.id, state: 'active' })).toBe(0);
    expect(value(m, 'herald_subscription_in_flight', { subscription: good.id })).toBe(0);
    expect(value(m, 'herald_subscription_oldest_pending_age_seconds', { subscription: good.id })).toBe(0);
    // The paused subscription's lag grows with every event it has not seen: the three posted since it was made.
    const pausedLag = m
      .find((f) => f.name === 'herald_subscription_lag_events')!
      .metrics.filter((s) => s.labels?.subscription === budget.id);
    expect(pausedLag.reduce((n, s) => n + Number(s.value), 0)).toBe(3);

    // A filter that runs out of its work budget counts as an error (and as no match).
    await request(gw.url).post(`/subscriptions/${budget.id}/resume`).expect(200);
    expect((await post('big1', 'sub.big', { big: 'x'.repeat(20_000) })).status).toBe(202);
    await waitFor(async () => value(await scrape(gw.url), 'herald_filter_errors_total', { subscription: budget.id }) === 1 || undefined, {
      what: 'a filter error counted',
    });

    await request(gw.url).delete(`/subscriptions/${bad.id}`).expect(204);
    const gone = await scrape(gw.url);
    expect(gone.text).not.toContain(bad.id);
  });
});

describe('GET /metrics: series an alert reads, and ages', () => {
  let gw: TestGateway;
  let receiver: Receiver;
  let status = 400;
  beforeAll(async () => {
    gw = await startTestGateway({ HERALD_PARTITIONS: '1' });
    receiver = await startReceiver(() => ({ status }));
  });
  afterAll(async () => {
    await receiver.close();
    await gw.close();
  });
  /** Whether the series is there at all (`value` reads an absent one as 0). */
  const present = (families: Families, name: string, labels: Record<string, string>) =>
    families.find((f) => f.name === name)?.metrics.some((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)) === true;

  it("has every counter series at 0 from the start: ingest's modes and codes, and a new subscription's outcomes, filter errors and auto-disables (metrics probe: first seen at 1, which rate() reads as no increase)", async () => {
    const start = await scrape(gw.url);
    for (const mode of ['binary', 'structured', 'batch']) expect(present(start, 'herald_events_ingested_total', { mode })).toBe(true);
    for (const code of ['invalid_event', 'unavailable', 'storage_full', 'payload_too_large'])
      expect(present(start, 'herald_ingest_rejected_total', { code })).toBe(true);
    expect(value(start, 'herald_ingest_rejected_total', { code: 'storage_full' })).toBe(0);

    const sub = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body;
    await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
    const m = await scrape(gw.url);
    for (const outcome of ['delivered', 'retry', 'dead_letter', 'timeout', 'acked', 'nacked', 'rejected', 'lease_expired', 'gone']) {
      expect(present(m, 'herald_deliveries_total', { subscription: sub.id, outcome })).toBe(true);
      expect(value(m, 'herald_deliveries_total', { subscription: sub.id, outcome })).toBe(0);
    }
    expect(present(m, 'herald_filter_errors_total', { subscription: sub.id })).toBe(true);
    expect(present(m, 'herald_subscription_auto_disabled_total', { subscription: sub.id })).toBe(true);
    expect(m.find((f) => f.name === 'herald_deliveries_total')!.type).toBe('COUNTER');
    expect(m.find((f) => f.name === 'herald_filter_errors_total')!.type).toBe('COUNTER');

    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
    expect((await scrape(gw.url)).text).not.toContain(sub.id);
  });

  it('counts a redelivery of a dead letter that keeps failing in the oldest pending age (metrics probe: 0 while it retried)', async () => {
    status = 400;
    const sub = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: receiver.url, delivery: { retry: { maxAttempts: 100, initialDelayMs: 200, maxDelayMs: 200 } } })
        .expect(201)
    ).body;
    expect((await postEventsRaw(gw.url, { 'content-type': 'application/cloudevents+json' }, JSON.stringify(event('aged')))).status).toBe(
      202,
    );
    const storedAt = Date.now();
    await waitFor(async () => (await request(gw.url).get(`/subscriptions/${sub.id}`)).body.stats.deadLetters === 1 || undefined, {
      what: 'a dead letter',
    });
    status = 500;
    await request(gw.url).post(`/subscriptions/${sub.id}/dead-letters/redeliver`).send({}).expect(202);
    await new Promise((r) => setTimeout(r, 1200));
    const stats = (await request(gw.url).get(`/subscriptions/${sub.id}`).expect(200)).body.stats;
    expect(stats.partitions[0].inFlight).toBe(1);
    expect(stats.partitions[0].lag).toBe(0);
    expect(stats.partitions[0].oldestPendingAgeMs).toBeGreaterThanOrEqual(1000);
    expect(stats.partitions[0].oldestPendingAgeMs).toBeLessThanOrEqual(Date.now() - storedAt + 1000);
    expect(value(await scrape(gw.url), 'herald_subscription_oldest_pending_age_seconds', { subscription: sub.id })).toBeGreaterThanOrEqual(
      1,
    );
    await request(gw.url).delete(`/subscriptions/${sub.id}`).expect(204);
  });
});

describe('GET /metrics on many partitions', () => {
  it("writes a subscription's lag and expired series only for partitions that have held an event (metrics probe: 4,096 partitions × 100 subscriptions, 86 MB a scrape)", async () => {
    const gw = await startTestGateway({ HERALD_PARTITIONS: '64' });
    const receiver = await startReceiver(() => ({ status: 204 }));
    try {
      const sub = (await request(gw.url).post('/subscriptions').send({ sink: receiver.url }).expect(201)).body;
      await request(gw.url).post(`/subscriptions/${sub.id}/pause`).expect(200);
      const partitionsOf = (m: Families, name: string) =>
        (m.find((f) => f.name === name)?.metrics ?? [])
          .filter((s) => s.labels?.subscription === sub.id)
          .map((s) => Number(s.labels!.partition));
      const used = async () =>
        ((await request(gw.url).get('/partitions').expect(200)).body.partitions as { partition: number; headOffset: number }[])
          .filter((p) => p.headOffset > 0)
          .map((p) => p.partition);

      expect(partitionsOf(await scrape(gw.url), 'herald_subscription_lag_events')).toEqual([]);
      for (const key of ['a', 'b', 'c']) {
        const res = await postEventsRaw(gw.url, { ...binary(`many-${key}`), 'ce-partitionkey': key }, '{}');
        expect(res.status).toBe(202);
      }
      const withEvents = await used();
      expect(withEvents.length).toBeGreaterThan(0);
      expect(withEvents.length).toBeLessThanOrEqual(3);
      const m = await scrape(gw.url);
      expect(partitionsOf(m, 'herald_subscription_lag_events').sort((a, b) => a - b)).toEqual(withEvents);
      expect(partitionsOf(m, 'herald_subscription_expired_events').sort((a, b) => a - b)).toEqual(withEvents);
      const lagged = withEvents.map((partition) =>
        value(m, 'herald_subscription_lag_events', { subscription: sub.id, partition: String(partition) }),
      );
      expect(lagged.reduce((a, b) => a + b, 0)).toBe(3);
      await request(gw.url).post(`/subscriptions/${sub.id}/resume`).expect(200);
      await waitFor(() => receiver.requests.length >= 3 || undefined, { timeoutMs: 10_000 });
      await waitFor(async () => {
        const after = await scrape(gw.url);
        const lags = withEvents.map((partition) =>
          value(after, 'herald_subscription_lag_events', { subscription: sub.id, partition: String(partition) }),
        );
        return (
          (lags.every((l) => l === 0) && partitionsOf(after, 'herald_subscription_lag_events').length === withEvents.length) || undefined
        );
      });
    } finally {
      await receiver.close();
      await gw.close();
    }
  });
});

describe('GET /metrics with API keys', () => {
  it('needs the read scope', async () => {
    const gw = await startTestGateway({ HERALD_API_KEYS: 'r:read-secret:read,p:pub-secret:publish' });
    try {
      expect((await fetch(`${gw.url}/metrics`)).status).toBe(401);
      expect((await fetch(`${gw.url}/metrics`, { headers: { authorization: 'Bearer pub-secret' } })).status).toBe(403);
      const ok = await fetch(`${gw.url}/metrics`, { headers: { authorization: 'Bearer read-secret' } });
      expect(ok.status).toBe(200);
      // A publish refused for its key is a rejected and an answered POST /events too (metrics probe: the
      // duration's count left out 401s and 403s, so rejected ÷ answered went past 100 %).
      expect((await fetch(`${gw.url}/events`, { method: 'POST', headers: { authorization: 'Bearer read-secret' } })).status).toBe(403);
      expect((await fetch(`${gw.url}/events`, { method: 'POST' })).status).toBe(401);
      const text = await (await fetch(`${gw.url}/metrics`, { headers: { authorization: 'Bearer read-secret' } })).text();
      expect(text).toMatch(/^herald_ingest_rejected_total\{code="forbidden"\} 1$/m);
      expect(text).toMatch(/^herald_ingest_rejected_total\{code="unauthorized"\} 1$/m);
      expect(text).toMatch(/^herald_ingest_request_duration_seconds_count 2$/m);
      expect(await ok.text()).toContain('herald_events_ingested_total');
    } finally {
      await gw.close();
    }
  });
});
