import {
  eventKey,
  lookupEvents,
  postBatch,
  postBinary,
  readAllEvents,
  useChildGateways,
  type AppendResultBody,
  type ChildGateway,
  type ReadEvent,
} from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const PRODUCERS = 8;
const KILL_AFTER_ACKS = 400;
const MAX_REQUESTS_PER_PRODUCER = 500;
const BATCH_SIZE = 5;
/** A bound, not an expectation: producers stop here even if the kill never came. */
const PRODUCE_FOR_AT_MOST_MS = 30_000;

const spawnChildGateway = useChildGateways();
const start = (dataDir: string): Promise<ChildGateway> =>
  spawnChildGateway({ HERALD_DATA_DIR: dataDir, HERALD_FSYNC: 'always', HERALD_PARTITIONS: '4' });

/** Each event's data is its own id, so a read-back can be checked against what was sent. */
const dataOf = (id: string) => ({ id });

interface ProducerRun {
  acked: AppendResultBody[];
  /** Any HTTP answer other than 202: there should be none, only connection errors once the gateway dies. */
  unexpected: string[];
}

/**
 * Eight producers send binary events and batches with unique ids and record
 * every 202. The producer whose ack crosses the threshold SIGKILLs the gateway
 * while the others still have requests in flight.
 */
async function produceUntilKilled(gw: ChildGateway): Promise<ProducerRun> {
  const run: ProducerRun = { acked: [], unexpected: [] };
  const deadline = Date.now() + PRODUCE_FOR_AT_MOST_MS;
  let killed = false;
  const kill = () => {
    if (killed) return;
    killed = true;
    gw.child.kill('SIGKILL');
  };
  const producer = async (p: number) => {
    const source = `/crash/producer-${p}`;
    for (let i = 0; i < MAX_REQUESTS_PER_PRODUCER && Date.now() < deadline; i++) {
      let res;
      try {
        if (i % 3 === 2) {
          res = await postBatch(
            gw.url,
            Array.from({ length: BATCH_SIZE }, (_, j) => ({ source, id: `${i}-${j}`, data: dataOf(`${i}-${j}`) })),
          );
        } else {
          res = await postBinary(gw.url, { source, id: `${i}`, data: dataOf(`${i}`) });
        }
      } catch {
        return; // the gateway is gone: this request may or may not have been stored
      }
      if (res.status !== 202) {
        run.unexpected.push(`${res.status} ${JSON.stringify(res.body)}`);
        continue;
      }
      run.acked.push(...(res.body.results as AppendResultBody[]));
      if (run.acked.length >= KILL_AFTER_ACKS) kill();
    }
  };
  await Promise.all(Array.from({ length: PRODUCERS }, (_, p) => producer(p)));
  kill(); // bounded by count and time: never leave it running
  await gw.exited;
  return run;
}

function countByKey(events: ReadEvent[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const e of events) counts.set(eventKey(e.event), (counts.get(eventKey(e.event)) ?? 0) + 1);
  return counts;
}

describe('crash safety (SIGKILL with HERALD_FSYNC=always)', () => {
  it('keeps every acknowledged event exactly once after a SIGKILL in the middle of concurrent ingest', async () => {
    const dataDir = tmpDir();
    const first = await start(dataDir);
    const { acked, unexpected } = await produceUntilKilled(first);
    expect(unexpected).toEqual([]);
    expect(await first.exited).toBe('SIGKILL');
    expect(acked.length).toBeGreaterThan(0);
    expect(acked.every((r) => !r.duplicate)).toBe(true);

    const second = await start(dataDir);

    // Each acknowledged event is readable by source+id, where the ack said it was stored.
    for (const { ev: r, ...found } of await lookupEvents(second.url, acked)) {
      expect(found.status).toBe(200);
      expect(found.body).toMatchObject({
        partition: r.partition,
        offset: r.offset,
        event: { source: r.source, id: r.id, data: dataOf(r.id) },
      });
    }

    // Exactly once: no source+id appears twice anywhere in the log, and offsets have no gaps.
    const all = await readAllEvents(second.url);
    const counts = countByKey(all);
    for (const r of acked) expect(counts.get(eventKey(r))).toBe(1);
    expect([...counts.values()].filter((n) => n !== 1)).toEqual([]);
    const byPartition = new Map<number, number[]>();
    for (const e of all) byPartition.set(e.partition, [...(byPartition.get(e.partition) ?? []), e.offset]);
    for (const offsets of byPartition.values()) expect(offsets).toEqual(offsets.map((_, i) => i));
    for (const e of all) expect(e.event.data).toEqual(dataOf(e.event.id));

    // Re-sending acknowledged events is answered as a duplicate with the original place.
    for (let i = 0; i < acked.length; i += 50) {
      const chunk = acked.slice(i, i + 50);
      const res = await postBatch(
        second.url,
        chunk.map((r) => ({ source: r.source, id: r.id, data: dataOf(r.id) })),
      );
      expect(res.status).toBe(200);
      expect(res.body.results).toEqual(chunk.map((r) => ({ ...r, duplicate: true })));
    }
    for (const r of acked.slice(0, 10)) {
      const res = await postBinary(second.url, { source: r.source, id: r.id, data: dataOf(r.id) });
      expect(res.status).toBe(200);
      expect(res.body.results).toEqual([{ ...r, duplicate: true }]);
    }
    expect((await readAllEvents(second.url)).length).toBe(all.length);

    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });

  it('answers a resend after a SIGKILL restart as a duplicate with the original offsets', async () => {
    const dataDir = tmpDir();
    const first = await start(dataDir);
    const sent = [];
    for (let i = 0; i < 5; i++) {
      const res = await postBinary(first.url, { source: '/crash/idem', id: `k${i}` });
      expect(res.status).toBe(202);
      sent.push(...(res.body.results as AppendResultBody[]));
    }
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');

    const second = await start(dataDir);
    for (const r of sent) {
      const res = await postBinary(second.url, { source: r.source, id: r.id });
      expect(res.status).toBe(200);
      expect(res.body.results).toEqual([{ ...r, duplicate: true }]);
    }
    const fresh = await postBinary(second.url, { source: '/crash/idem', id: 'k-new' });
    expect(fresh.status).toBe(202);
    expect(fresh.body.results[0].duplicate).toBe(false);
  });
});
