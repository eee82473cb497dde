import { runHerald } from '../helpers/cli';
import { useTestGateways } from '../helpers/gateway';
import { useReceivers, waitFor, type ReceivedRequest } from '../helpers/receiver';
import { api } from '../helpers/http';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * A dead letter's redelivery survives a restart wherever it stands (a hostile probe's findings): while it
 * waits for a concurrency slot, and after a seek back replayed the same offset in the partition. Before,
 * the dead letter was consumed and nothing was left of it in either case: neither listed nor redelivered.
 * Real gateway (in-process), real SQLite, a real receiver on 127.0.0.1.
 */

const gateways = useTestGateways({ HERALD_PARTITIONS: '1', HERALD_SINK_ALLOW_PRIVATE: 'true' });
const startReceiver = useReceivers();
afterAll(cleanupTmpDirs);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const idOf = (r: ReceivedRequest) => String(r.headers['ce-id']);
const isRedelivery = (r: ReceivedRequest) => r.headers['herald-redelivery'] === 'true';
const gateway = (dataDir: string, env: Record<string, string> = {}) => gateways.start({ HERALD_DATA_DIR: dataDir, ...env });
const stop = gateways.stop;

async function publish(url: string, id: string, data: unknown = { id }): Promise<void> {
  const res = await fetch(`${url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents+json' },
    body: JSON.stringify({ specversion: '1.0', id, source: '/redrive', type: 'redrive.t', data }),
  });
  expect(res.status).toBeLessThan(300);
}

const deadLetters = async (url: string, subId: string): Promise<unknown[]> =>
  (await api(url, 'GET', `/subscriptions/${subId}/dead-letters`)).body.deadLetters;

/** Publishes padding past HERALD_MAX_LOG_BYTES (128 KiB, 64 KiB segments) until retention deletes the first segment. */
async function padUntilRetentionDeletes(url: string): Promise<void> {
  const pad = 'x'.repeat(1024);
  for (let i = 0; i < 300; i++) await publish(url, `pad${i}`, { pad });
  await waitFor(async () => ((await api(url, 'GET', '/partitions')).body.partitions[0].firstOffset ?? 0) > 0, {
    what: 'retention deleted the first segment',
    timeoutMs: 20_000,
    intervalMs: 100,
  });
}

/**
 * Event `victim` dead-lettered (400) on a small log; `meanwhile` runs, then padding makes retention
 * delete the segment holding it.
 */
async function deadLetterWhoseEventRetentionDeletes(meanwhile: (url: string, subId: string) => Promise<void> = async () => {}) {
  const rcv = await startReceiver((req) => ({ status: idOf(req) === 'victim' ? 400 : 204 }));
  const gw = await gateway(tmpDir(), { HERALD_SEGMENT_BYTES: '65536', HERALD_MAX_LOG_BYTES: '131072' });
  const subId = (await api(gw.url, 'POST', '/subscriptions', { sink: rcv.url })).body.id as string;
  await publish(gw.url, 'victim');
  await waitFor(async () => (await deadLetters(gw.url, subId)).length === 1, { what: 'the dead letter' });
  await meanwhile(gw.url, subId);
  await padUntilRetentionDeletes(gw.url);
  return { url: gw.url, subId, victimRequests: () => rcv.requests.filter((r) => idOf(r) === 'victim') };
}

describe('a redelivery of a dead letter across a restart', () => {
  it('waiting for a free slot: it is still owed after a graceful restart (listed, or redelivered)', async () => {
    const dir = tmpDir();
    let holdMs = 0;
    let url = '';
    const rcv = await startReceiver(async (req) => {
      if (idOf(req) === 'bad' && !isRedelivery(req)) return { status: 400 };
      if (idOf(req) === 'slow') {
        // Acknowledged by callback first, then its HTTP answer is held: the one slot (maxInFlight 1) stays taken.
        const ack = await fetch(`${url}/deliveries/${String(req.headers['herald-delivery-id'])}/ack`, { method: 'POST' });
        expect(ack.status).toBe(200);
        return { status: 204, delayMs: holdMs };
      }
      return { status: 204 };
    });
    let gw = await gateway(dir, { HERALD_SHUTDOWN_TIMEOUT_MS: '500' });
    url = gw.url;
    const sub = await api(gw.url, 'POST', '/subscriptions', { sink: rcv.url, delivery: { maxInFlight: 1 } });
    expect(sub.status).toBe(201);
    const subId = sub.body.id as string;
    await publish(gw.url, 'bad');
    await waitFor(async () => (await deadLetters(gw.url, subId)).length === 1, { what: 'the dead letter' });
    holdMs = 5000;
    await publish(gw.url, 'slow');
    await waitFor(() => rcv.requests.some((r) => idOf(r) === 'slow'), { what: 'slow sent' });
    await sleep(100);
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/dead-letters/redeliver`, {})).status).toBe(202);
    // The state the test is about: the dead letter consumed (no longer listed), its redelivery waiting for the slot.
    await waitFor(async () => (await deadLetters(gw.url, subId)).length === 0, { what: 'the dead letter consumed' });
    expect(rcv.requests.filter((r) => idOf(r) === 'bad' && isRedelivery(r))).toEqual([]);
    await stop(gw);

    holdMs = 0;
    gw = await gateway(dir);
    url = gw.url;
    const redelivered = await waitFor(
      async () => rcv.requests.some((r) => idOf(r) === 'bad' && isRedelivery(r)) || (await deadLetters(gw.url, subId)).length > 0,
      { what: 'the dead letter, listed or redelivered', timeoutMs: 5000 },
    );
    expect(redelivered).toBe(true);
  });

  it('after a seek back replayed the same offset and a seek forward dropped the replay: the redelivery is retried', async () => {
    const dir = tmpDir();
    const rcv = await startReceiver(async (req) => {
      if (idOf(req) !== 'x') return { status: 204 };
      if (isRedelivery(req)) return { status: 202 }; // accepted, never acknowledged: retried when its lease runs out
      const own = rcv.requests.filter((r) => idOf(r) === 'x' && !isRedelivery(r)).length;
      if (own === 1) return { status: 400 }; // the first delivery: dead-lettered
      return { status: 204, delayMs: 3000 }; // the replay after the seek back: held, aborted by the next seek
    });
    let gw = await gateway(dir);
    const sub = await api(gw.url, 'POST', '/subscriptions', {
      sink: rcv.url,
      delivery: { ackDeadlineMs: 3000, retry: { maxAttempts: 3, initialDelayMs: 100, maxDelayMs: 200, multiplier: 2, jitter: 0 } },
    });
    const subId = sub.body.id as string;
    await publish(gw.url, 'x');
    await waitFor(async () => (await deadLetters(gw.url, subId)).length === 1, { what: 'the dead letter' });
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/dead-letters/redeliver`, {})).status).toBe(202);
    await waitFor(() => rcv.requests.some(isRedelivery), { what: 'the redelivery sent' });
    await waitFor(async () => (await deadLetters(gw.url, subId)).length === 0, { what: 'the dead letter consumed' });
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/seek`, { to: 'earliest' })).status).toBe(200);
    await waitFor(() => rcv.requests.filter((r) => idOf(r) === 'x').length === 3, { what: 'the replay of x sent' });
    await sleep(200); // the replay's row is written beside the redelivery's (over it, before)
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/seek`, { to: 'latest' })).status).toBe(200);
    await sleep(200);
    await stop(gw);

    const before = rcv.requests.length;
    gw = await gateway(dir);
    // The redelivery's lease (3 s) runs out: it is made again (and dead-lettered again after maxAttempts).
    const owed = await waitFor(async () => rcv.requests.slice(before).some(isRedelivery) || (await deadLetters(gw.url, subId)).length > 0, {
      what: 'the redelivery, retried or dead-lettered again',
      timeoutMs: 8000,
      intervalMs: 100,
    });
    expect(owed).toBe(true);
  });

  it('whose event retention deleted: nothing to send, so it stays listed instead of vanishing', async () => {
    const { url, subId, victimRequests } = await deadLetterWhoseEventRetentionDeletes();
    // `herald dead-letters redeliver --all` says that it redelivered none of the one listed (probe: exit 0, not a word).
    expect(await runHerald(['dead-letters', 'redeliver', subId, '--all', '--url', url])).toEqual({
      code: 1,
      stdout: `redelivering 0 dead letters of subscription ${subId}\n`,
      stderr: expect.stringMatching(/^herald: 1 of the 1 dead letters found was not redelivered \(an event retention has deleted/),
    });
    expect((await api(url, 'POST', `/subscriptions/${subId}/dead-letters/redeliver`, {})).status).toBe(202);
    await sleep(500);
    expect(await deadLetters(url, subId)).toHaveLength(1);
    expect(victimRequests()).toHaveLength(1);
  });

  it('queued (the subscription paused) when retention deletes its event: it stays listed when the queue runs', async () => {
    const { url, subId, victimRequests } = await deadLetterWhoseEventRetentionDeletes(async (u, id) => {
      expect((await api(u, 'POST', `/subscriptions/${id}/pause`)).status).toBe(200);
      expect((await api(u, 'POST', `/subscriptions/${id}/dead-letters/redeliver`, {})).body).toEqual({ redelivering: 1 });
    });
    expect((await api(url, 'POST', `/subscriptions/${subId}/resume`)).status).toBe(200);
    await waitFor(async () => (await api(url, 'GET', `/subscriptions/${subId}`)).body.stats.partitions[0].lag === 0, { what: 'lag 0' });
    await sleep(300);
    expect(await deadLetters(url, subId)).toHaveLength(1);
    expect(victimRequests()).toHaveLength(1);
  });
});

describe('a redelivery of a dead letter restored after a restart, when retention deletes its event', () => {
  it('ends with its dead letter listed again instead of vanishing', async () => {
    const rcv = await startReceiver((req) => ({ status: idOf(req) !== 'victim' ? 204 : isRedelivery(req) ? 503 : 400 }));
    const dir = tmpDir();
    const env = { HERALD_SEGMENT_BYTES: '65536', HERALD_MAX_LOG_BYTES: '131072' };
    const first = await gateway(dir, env);
    const retry = { initialDelayMs: 500, maxDelayMs: 500 };
    const subId = (await api(first.url, 'POST', '/subscriptions', { sink: rcv.url, delivery: { retry } })).body.id as string;
    await publish(first.url, 'victim');
    await waitFor(async () => (await deadLetters(first.url, subId)).length === 1, { what: 'the dead letter' });
    expect((await api(first.url, 'POST', `/subscriptions/${subId}/dead-letters/redeliver`, {})).body).toEqual({ redelivering: 1 });
    await waitFor(() => rcv.requests.filter(isRedelivery).length === 1, { what: 'its first attempt, answered 503' });
    expect((await api(first.url, 'POST', `/subscriptions/${subId}/pause`)).status).toBe(200); // its retry waits
    await stop(first);

    const gw = await gateway(dir, env); // the redelivery restored, its event not read yet
    await padUntilRetentionDeletes(gw.url);
    expect(await deadLetters(gw.url, subId)).toEqual([]); // consumed while it is redelivered
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/resume`)).status).toBe(200);
    const [dead] = await waitFor(
      async () => {
        const rows = (await deadLetters(gw.url, subId)) as { offset: number; event: unknown }[];
        return rows.length === 1 ? rows : undefined;
      },
      { what: 'the dead letter back' },
    );
    expect(dead).toMatchObject({ offset: 0, event: null });
    expect(rcv.requests.filter(isRedelivery)).toHaveLength(1);
    // Listed again, it is counted dead-lettered again, as herald_dead_letters counts it (metrics probe: it was not).
    const counted = new RegExp(`herald_deliveries_total\\{subscription="${subId}",outcome="dead_letter"\\} 1\\n`);
    await waitFor(async () => counted.test(await (await fetch(`${gw.url}/metrics`)).text()) || undefined, { what: 'dead_letter counted' });
  });
});

describe('a redelivery of a dead letter still queued when the dead letter is deleted', () => {
  it('is not sent: the operator deleted it', async () => {
    const rcv = await startReceiver((req) => ({ status: idOf(req) === 'victim' && !isRedelivery(req) ? 400 : 204 }));
    const gw = await gateway(tmpDir());
    const subId = (await api(gw.url, 'POST', '/subscriptions', { sink: rcv.url })).body.id as string;
    await publish(gw.url, 'victim');
    const [dead] = await waitFor(
      async () => {
        const rows = (await deadLetters(gw.url, subId)) as { id: string }[];
        return rows.length === 1 ? rows : undefined;
      },
      { what: 'the dead letter' },
    );
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/pause`)).status).toBe(200);
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/dead-letters/redeliver`, {})).body).toEqual({ redelivering: 1 });
    expect((await api(gw.url, 'DELETE', `/subscriptions/${subId}/dead-letters/${dead!.id}`)).status).toBe(204);
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/resume`)).status).toBe(200);
    await sleep(1000);
    expect(rcv.requests.filter(isRedelivery)).toEqual([]);
    expect((await api(gw.url, 'GET', `/subscriptions/${subId}`)).body.stats.deadLetters).toBe(0);
  });
});

describe('a redelivery of a dead letter and a seek of its partition', () => {
  /**
   * An event dead-lettered (400), its redelivery answered 503 (retried every `retryMs`), then a seek of its
   * partition to the latest event: the redelivery's retries follow.
   */
  async function redeliveryThenSeek(dataDir: string, retryMs: number) {
    const rcv = await startReceiver((req) => ({ status: isRedelivery(req) ? 503 : 400 }));
    const gw = await gateway(dataDir);
    const retry = { maxAttempts: 5, initialDelayMs: retryMs, maxDelayMs: retryMs, multiplier: 1, jitter: 0 };
    const subId = (await api(gw.url, 'POST', '/subscriptions', { sink: rcv.url, delivery: { retry } })).body.id as string;
    await publish(gw.url, 'e');
    await waitFor(async () => (await deadLetters(gw.url, subId)).length === 1, { what: 'the dead letter' });
    await api(gw.url, 'POST', `/subscriptions/${subId}/dead-letters/redeliver`, {});
    await waitFor(() => rcv.requests.filter(isRedelivery).length === 1, { what: 'its first attempt' });
    expect((await api(gw.url, 'POST', `/subscriptions/${subId}/seek`, { to: 'latest' })).status).toBe(200);
    return { gw, redeliveries: () => rcv.requests.filter(isRedelivery) };
  }

  it('keeps its webhook-id across its retries: a seek leaves redeliveries alone', async () => {
    const { redeliveries } = await redeliveryThenSeek(tmpDir(), 1000);
    await waitFor(() => redeliveries().length === 2, { what: 'its retry', timeoutMs: 10_000 });
    const [first, retried] = redeliveries();
    expect(retried!.headers['herald-attempt']).toBe('2');
    expect(retried!.headers['webhook-id']).toBe(first!.headers['webhook-id']);
  });

  it('keeps its webhook-id across a seek and then a restart (was: the retry after the restart took the seek generation)', async () => {
    const dir = tmpDir();
    const { gw, redeliveries } = await redeliveryThenSeek(dir, 1500);
    await stop(gw);
    await gateway(dir);
    await waitFor(() => redeliveries().length >= 2, { what: 'its retry after the restart', timeoutMs: 10_000 });
    const [first, retried] = redeliveries();
    expect(retried!.headers['herald-attempt']).toBe('2');
    expect(retried!.headers['webhook-id']).toBe(first!.headers['webhook-id']);
  });
});
