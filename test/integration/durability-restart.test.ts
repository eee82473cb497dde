import fs from 'node:fs';
import path from 'node:path';
import {
  eventKey,
  lookupEvent,
  lookupEvents,
  partitionHeads,
  postBatch,
  postBinary,
  readAllEvents,
  segmentFiles,
  startTestGateway,
  type AppendResultBody,
  type Env,
} from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

async function expectAllReadable(url: string, acked: AppendResultBody[]): Promise<void> {
  for (const { ev: r, ...found } of await lookupEvents(url, acked)) {
    expect(found.status).toBe(200);
    expect(found.body).toMatchObject({ partition: r.partition, offset: r.offset, event: { id: r.id, source: r.source } });
  }
  const all = await readAllEvents(url);
  expect(all.map((e) => eventKey(e.event)).sort()).toEqual(acked.map(eventKey).sort());
}

describe('idempotency across a graceful restart', () => {
  it('answers resent events as duplicates at their original offsets, and stores only the new ones of a mixed batch', async () => {
    const env: Env = { HERALD_PARTITIONS: '4' };
    const gw = await startTestGateway(env);
    const single = await postBinary(gw.url, { source: '/restart', id: 'one' });
    const batch = await postBatch(gw.url, [
      { source: '/restart', id: 'two' },
      { source: '/restart', id: 'three' },
    ]);
    expect([single.status, batch.status]).toEqual([202, 202]);
    const acked: AppendResultBody[] = [...single.body.results, ...batch.body.results];
    await gw.close();

    const again = await startTestGateway({ ...env, HERALD_DATA_DIR: gw.dataDir });
    try {
      const resent = await postBinary(again.url, { source: '/restart', id: 'one' });
      expect(resent.status).toBe(200);
      expect(resent.body.results).toEqual([{ ...acked[0], duplicate: true }]);
      const mixed = await postBatch(again.url, [
        { source: '/restart', id: 'two' },
        { source: '/restart', id: 'four' },
        { source: '/restart', id: 'three' },
      ]);
      expect(mixed.status).toBe(202);
      expect(mixed.body.results.map((r: AppendResultBody) => [r.id, r.duplicate])).toEqual([
        ['two', true],
        ['four', false],
        ['three', true],
      ]);
      expect(mixed.body.results[0]).toEqual({ ...acked[1], duplicate: true });
      expect(mixed.body.results[2]).toEqual({ ...acked[2], duplicate: true });
      await expectAllReadable(again.url, [...acked, mixed.body.results[1]]);
    } finally {
      await again.close();
    }
  });
});

describe('HERALD_IDEMPOTENCY_WINDOW', () => {
  it('answers a resend within the window as a duplicate, and stores it again once the window has passed and been pruned', async () => {
    const gw = await startTestGateway({ HERALD_PARTITIONS: '4', HERALD_IDEMPOTENCY_WINDOW: '1000ms' });
    try {
      const first = await postBinary(gw.url, { source: '/window', id: 'w' });
      expect(first.status).toBe(202);
      expect((await postBinary(gw.url, { source: '/window', id: 'w' })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1100)); // let the window pass (the store's clock is the real one here)
      await (gw.store as unknown as { pruneIdempotency(): Promise<number> }).pruneIdempotency();
      expect((await lookupEvent(gw.url, { source: '/window', id: 'w' })).status).toBe(404);
      const again = await postBinary(gw.url, { source: '/window', id: 'w' });
      expect(again.status).toBe(202);
      expect(again.body.results[0]).toMatchObject({
        duplicate: false,
        partition: first.body.results[0].partition,
        offset: first.body.results[0].offset + 1,
      });
    } finally {
      await gw.close();
    }
  });
});

describe('segment roll', () => {
  it('spreads the log over several segment files and reads every event across them, before and after a restart', async () => {
    const env: Env = { HERALD_PARTITIONS: '4', HERALD_SEGMENT_BYTES: '65536' };
    const gw = await startTestGateway(env);
    const acked: AppendResultBody[] = [];
    const pad = 'p'.repeat(1000);
    for (let b = 0; b < 15; b++) {
      const res = await postBatch(
        gw.url,
        Array.from({ length: 20 }, (_, i) => ({ source: '/roll', id: `${b}-${i}`, data: { pad } })),
      );
      expect(res.status).toBe(202);
      acked.push(...res.body.results);
    }
    for (let i = 0; i < 20; i++) {
      const res = await postBinary(gw.url, { source: '/roll', id: `bin-${i}`, data: { pad } });
      expect(res.status).toBe(202);
      acked.push(...res.body.results);
    }
    const files = segmentFiles(gw.dataDir);
    expect(files.length).toBeGreaterThanOrEqual(4);
    let position = 0;
    for (const file of files) {
      expect(Number(path.basename(file).slice(0, 20))).toBe(position); // named by its global base position
      const size = fs.statSync(file).size;
      expect(size).toBeLessThanOrEqual(65536);
      position += size;
    }
    await expectAllReadable(gw.url, acked);
    const heads = await partitionHeads(gw.url);
    await gw.close();

    const again = await startTestGateway({ ...env, HERALD_DATA_DIR: gw.dataDir });
    try {
      expect(segmentFiles(again.dataDir)).toEqual(files);
      expect(await partitionHeads(again.url)).toEqual(heads);
      await expectAllReadable(again.url, acked);
      const more = await postBinary(again.url, { source: '/roll', id: 'after-restart', data: { pad } });
      expect(more.status).toBe(202);
      expect(more.body.results[0].offset).toBe(heads[more.body.results[0].partition]);
    } finally {
      await again.close();
    }
  });
});

describe.each(['interval', 'never'])('HERALD_FSYNC=%s', (fsync) => {
  it('accepts and stores events, and a graceful close persists them', async () => {
    const env: Env = { HERALD_PARTITIONS: '4', HERALD_FSYNC: fsync, HERALD_FSYNC_INTERVAL_MS: '20' };
    const gw = await startTestGateway(env);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        i % 2 === 0
          ? postBinary(gw.url, { source: `/fsync-${fsync}`, id: `b${i}` })
          : postBatch(gw.url, [
              { source: `/fsync-${fsync}`, id: `a${i}` },
              { source: `/fsync-${fsync}`, id: `c${i}` },
            ]),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(results.map(() => 202));
    const acked: AppendResultBody[] = results.flatMap((r) => r.body.results);
    expect(acked).toHaveLength(15);
    await expectAllReadable(gw.url, acked);
    await gw.close();

    const again = await startTestGateway({ ...env, HERALD_DATA_DIR: gw.dataDir });
    try {
      await expectAllReadable(again.url, acked);
      const resent = await postBinary(again.url, { source: acked[0]!.source, id: acked[0]!.id });
      expect(resent.status).toBe(200);
      expect(resent.body.results).toEqual([{ ...acked[0], duplicate: true }]);
    } finally {
      await again.close();
    }
  });
});
