import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { publishBatch } from '../helpers/delivery';
import { killIfRunning, spawnGateway, type ChildGateway, type Env } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * Retention does not wait for subscriptions: whole segments go by size (HERALD_MAX_LOG_BYTES, which
 * makes the test deterministic) whether or not a subscription finished their events. One that had
 * not moves past them and counts them as `expired` (its stats), with one warning per deletion.
 */

afterAll(cleanupTmpDirs);

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}
interface PartitionStats {
  partition: number;
  committedOffset: number;
  headOffset: number;
  lag: number;
  inFlight: number;
  expired: number;
}

const WARN = 40;
const EXPIRED_MSG = 'retention deleted events this subscription had not finished; it moved past them';
const EVENTS = 300;
const BATCH = 20;
const PAD = 'x'.repeat(1024);

const lines = (gw: ChildGateway): LogLine[] =>
  gw
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
const expiredLines = (gw: ChildGateway, subscription: string) =>
  lines(gw).filter((l) => l.msg === EXPIRED_MSG && l.subscription === subscription);

const statsOf = async (url: string, id: string): Promise<PartitionStats> => {
  const res = await request(url).get(`/subscriptions/${id}`).expect(200);
  return (res.body.stats.partitions as PartitionStats[])[0]!;
};

/**
 * The first offset partition 0 still stores: `firstOffset` of `GET /partitions` where the gateway
 * shows it, and in any case the offset a read from 0 starts at (a read below the first offset
 * answers from it; the partition is never empty here).
 */
async function firstOffset(url: string): Promise<number> {
  const page = await request(url).get('/partitions/0/events?from=0&limit=1').expect(200);
  const read = (page.body.events as { offset: number }[])[0]?.offset ?? 0;
  const listed = (await request(url).get('/partitions').expect(200)).body.partitions[0] as { firstOffset?: number };
  if (listed.firstOffset !== undefined) expect(listed.firstOffset).toBeGreaterThanOrEqual(read);
  return listed.firstOffset ?? read;
}

describe('retention expires what a subscription had not finished', () => {
  let gw: ChildGateway | undefined;
  let behind: Receiver | undefined;
  let caughtUp: Receiver | undefined;
  afterEach(async () => {
    await killIfRunning(gw);
    await behind?.close();
    await caughtUp?.close();
  });

  it('moves a subscription that stays behind past deleted events, counts them in its stats, logs it, and keeps the count over a restart', async () => {
    behind = await startReceiver(() => ({ status: 503 }));
    caughtUp = await startReceiver(() => ({ status: 204 }));
    const env: Env = {
      HERALD_DATA_DIR: tmpDir(),
      HERALD_PARTITIONS: '1',
      HERALD_SEGMENT_BYTES: '65536',
      // About 1.1 KiB an event: 300 events fill 5 segments, and the oldest go once the log passes 128 KiB.
      HERALD_MAX_LOG_BYTES: '131072',
      HERALD_MIN_FREE_BYTES: '0',
    };
    gw = await spawnGateway(env);

    // Created before the events. The 503 one never finishes anything: ordering per partition holds it
    // at offset 0, retrying far apart (and never dead-lettering it, which would finish it).
    const stuck = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: behind.url, delivery: { retry: { maxAttempts: 1000, initialDelayMs: 60_000, maxDelayMs: 60_000 } } })
        .expect(201)
    ).body.id as string;
    const fine = (await request(gw.url).post('/subscriptions').send({ sink: caughtUp.url }).expect(201)).body.id as string;

    // What the stuck subscription has finished: nothing (its receiver answers every attempt 503).
    const finished = (await statsOf(gw.url, stuck)).committedOffset;
    expect(finished).toBe(0);
    for (let at = 0; at < EVENTS; at += BATCH) {
      const events = Array.from({ length: BATCH }, (_, i) => ({
        specversion: '1.0',
        id: `r${at + i}`,
        source: '/retention',
        type: 'retention.test',
        data: { pad: PAD },
      }));
      await publishBatch(gw.url, events);
      // The 204 subscription stays caught up batch by batch: retention never deletes anything it has not finished.
      await waitFor(async () => (await statsOf(gw!.url, fine)).lag === 0 || undefined, { timeoutMs: 5_000, what: 'caught up' });
    }

    // Retention runs right after the commit that passed the limit (bounded wait).
    const first = await waitFor(
      async () => {
        const at = await firstOffset(gw!.url);
        const stats = await statsOf(gw!.url, stuck);
        // Read on until the stats and the first offset agree (a deletion may land between the two reads).
        return at > 0 && stats.committedOffset === at ? at : undefined;
      },
      { timeoutMs: 5_000, intervalMs: 50, what: 'retention to delete the oldest segments' },
    );

    const stats = await statsOf(gw.url, stuck);
    expect(stats).toMatchObject({ committedOffset: first, headOffset: EVENTS, lag: EVENTS - first, expired: first - finished });
    expect(stats.expired).toBeGreaterThan(0);
    expect(await statsOf(gw.url, fine)).toMatchObject({ committedOffset: EVENTS, lag: 0, expired: 0 });
    // /metrics says so too (retention probe: nothing did, and the lag alert cleared as the events went).
    const metrics = (await request(gw.url).get('/metrics').expect(200)).text;
    expect(metrics).toContain(`herald_subscription_expired_events{subscription="${stuck}",partition="0"} ${stats.expired}\n`);
    expect(metrics).toContain(`herald_subscription_expired_events{subscription="${fine}",partition="0"} 0\n`);

    // One warning per deletion that expired events, naming the subscription, the count and the partition's.
    await waitFor(() => expiredLines(gw!, stuck).reduce((n, l) => n + Number(l.expired), 0) === stats.expired || undefined, {
      what: 'the warning lines',
    });
    const warned = expiredLines(gw, stuck);
    expect(warned.length).toBeGreaterThanOrEqual(1);
    for (const line of warned)
      expect(line).toMatchObject({
        level: WARN,
        subscription: stuck,
        expired: expect.any(Number) as unknown,
        partitions: { 0: line.expired },
      });
    expect(warned.every((l) => Number(l.expired) > 0)).toBe(true);
    expect(expiredLines(gw, fine)).toEqual([]);

    // A graceful restart: the count (and the position) stay, and nothing is counted or logged again.
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    gw = await spawnGateway(env);
    expect(await firstOffset(gw.url)).toBe(first);
    expect(await statsOf(gw.url, stuck)).toMatchObject({ committedOffset: first, lag: EVENTS - first, expired: stats.expired });
    expect(await statsOf(gw.url, fine)).toMatchObject({ expired: 0 });
    expect(expiredLines(gw, stuck)).toEqual([]);
  });

  it('an event awaiting its ack on its last attempt, deleted by a retention a crash interrupted, is counted expired, not dead-lettered', async () => {
    behind = await startReceiver(() => ({ status: 202 })); // accepted, never acked
    const dir = tmpDir();
    const env: Env = { HERALD_DATA_DIR: dir, HERALD_PARTITIONS: '1', HERALD_SEGMENT_BYTES: '65536', HERALD_MIN_FREE_BYTES: '0' };
    gw = await spawnGateway(env);
    // The events first, then the subscription: its one attempt at offset 0 is sent at once, and its lease
    // (3 s) cannot run out while 300 events are still being published (was: 1 s, and a slow machine lost it).
    for (let at = 0; at < EVENTS; at += BATCH)
      await publishBatch(
        gw.url,
        Array.from({ length: BATCH }, (_, i) => ({
          specversion: '1.0',
          id: `d${at + i}`,
          source: '/retention-down',
          type: 't',
          data: { pad: PAD },
        })),
      );
    const id = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: behind.url, startAt: 'earliest', delivery: { ackDeadlineMs: 3000, retry: { maxAttempts: 1 } } })
        .expect(201)
    ).body.id as string;
    await waitFor(() => behind!.requests.length >= 1, { what: 'offset 0 sent' });
    expect(behind.requests[0]!.headers['herald-offset']).toBe('0');
    // The state the test is about, at the stop: offset 0 awaiting its ack on its last attempt, nothing dead-lettered.
    const before = await request(gw.url).get(`/subscriptions/${id}`).expect(200);
    expect([before.body.stats.partitions[0].inFlight, before.body.stats.deadLetters, behind.requests.length]).toEqual([1, 0, 1]);
    gw.child.kill('SIGTERM');
    expect(await gw.exited).toBe(0);
    await new Promise((r) => setTimeout(r, 3500)); // its lease runs out while the gateway is down

    // What a crash right after retention's commit point leaves: index.db's log_start moved to the base of
    // the third segment, the files and rows below it not yet gone. The next start finishes that retention.
    const bases = fs
      .readdirSync(path.join(dir, 'wal'))
      .filter((f) => f.endsWith('.seg'))
      .map((f) => Number(f.slice(0, -4)))
      .sort((a, b) => a - b);
    expect(bases.length).toBeGreaterThanOrEqual(3);
    const indexDb = new Database(path.join(dir, 'index.db'));
    indexDb.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('log_start', ?)").run(String(bases[2]));
    indexDb.close();

    gw = await spawnGateway(env);
    const first = await firstOffset(gw.url);
    expect(first).toBeGreaterThan(0);
    await waitFor(async () => (await statsOf(gw!.url, id)).committedOffset === first || undefined, {
      what: 'moved past the deleted events',
    });
    // Was: offset 0 dead-lettered (max_attempts) for an event no longer stored, and counted one short of expired.
    expect(await statsOf(gw.url, id)).toMatchObject({ committedOffset: first, expired: first });
    expect((await request(gw.url).get(`/subscriptions/${id}/dead-letters`).expect(200)).body.deadLetters).toEqual([]);
    // Delivery goes on from the first event still stored.
    const next = await waitFor(() => behind!.requests[1], { what: 'the next delivery' });
    expect(next.headers['herald-offset']).toBe(String(first));
  });
});
