/**
 * End to end: a producer embeds a well-formed Herald frame in binary-mode event data, then a power
 * cut tears the log inside that event while SQLite's last commit is not yet durable. The gateway
 * must cut the torn tail and start, and never index the forged frame (which would replace an
 * acknowledged event), with or without HERALD_RECOVERY=skip-corrupt.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LEGACY_FRAME_KEY, encodeRecord } from '../../src/wal/record';
import { lookupEvent, getJson, segmentFiles, startTestGateway } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const DB_FILES = ['herald.db', 'herald.db-wal', 'herald.db-shm'];
function copyDb(from: string, to: string): void {
  fs.mkdirSync(to, { recursive: true });
  for (const f of DB_FILES) {
    fs.rmSync(path.join(to, f), { force: true });
    if (fs.existsSync(path.join(from, f))) fs.copyFileSync(path.join(from, f), path.join(to, f));
  }
}

async function postHonest(url: string, id: string): Promise<{ partition: number; offset: number }> {
  const res = await fetch(`${url}/events`, {
    method: 'POST',
    headers: {
      'ce-specversion': '1.0',
      'ce-id': id,
      'ce-source': '/honest',
      'ce-type': 'payment.made',
      'content-type': 'application/json',
    },
    body: JSON.stringify({ amount: 100, to: 'alice' }),
  });
  expect(res.status).toBe(202);
  return ((await res.json()) as { results: { partition: number; offset: number }[] }).results[0]!;
}

describe('a frame forged in binary event data', () => {
  it('is never indexed as a record, and a torn write of its carrier does not stop the gateway', async () => {
    const dataDir = tmpDir();
    const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1', HERALD_FSYNC: 'interval' };
    let gw = await startTestGateway(env);
    const victim = await postHonest(gw.url, 'h0');
    await postHonest(gw.url, 'h1');
    expect(victim).toMatchObject({ partition: 0, offset: 0 });
    await gw.close();
    const before = tmpDir();
    copyDb(dataDir, before); // SQLite as it was on disk before the hostile event's commit

    gw = await startTestGateway(env);
    const forged = encodeRecord(
      {
        partition: 0,
        offset: 0, // the victim's offset
        storedAt: Date.now(),
        event: {
          attributes: { specversion: '1.0', id: 'h0-forged', source: '/attacker', type: 'payment.made' },
          data: { kind: 'json', value: { amount: 1_000_000, to: 'mallory' } },
        },
      },
      LEGACY_FRAME_KEY,
    ); // the producer has no key: an unkeyed frame is the best it can forge
    const body = Buffer.concat([Buffer.alloc(2048, 0x20), forged, Buffer.alloc(64 * 1024, 0x20)]);
    const res = await fetch(`${gw.url}/events`, {
      method: 'POST',
      headers: {
        'ce-specversion': '1.0',
        'ce-id': 'carrier',
        'ce-source': '/attacker',
        'ce-type': 'blob',
        'content-type': 'application/octet-stream',
      },
      body,
    });
    expect(res.status).toBe(202);
    await gw.close();

    // Power cut: the carrier record was only partly written, and SQLite's commit of it was not durable.
    const seg = segmentFiles(dataDir)[0]!;
    const carrierStart = fs.readFileSync(seg).indexOf(Buffer.from('"carrier"')); // inside its attributes
    expect(carrierStart).toBeGreaterThan(0);
    fs.truncateSync(seg, fs.statSync(seg).size - 32 * 1024);
    copyDb(before, dataDir);

    // A torn tail must be cut and the gateway must start (issue 8 §3: "torn tail ... cut it, as today").
    let started: Awaited<ReturnType<typeof startTestGateway>> | undefined;
    let refusal: unknown;
    try {
      started = await startTestGateway(env);
    } catch (err) {
      refusal = err;
    }
    if (!started) {
      // Were it refused, an operator would follow the message (the assertion below says it must not be):
      started = await startTestGateway({ ...env, HERALD_RECOVERY: 'skip-corrupt' });
    }
    try {
      const page = await getJson(`${started.url}/partitions/0/events?from=0&limit=10`);
      const atVictim = page.body.events.find((e: { offset: number }) => e.offset === 0);
      const lookup = await lookupEvent(started.url, { source: '/honest', id: 'h0' });
      const forgedLookup = await lookupEvent(started.url, { source: '/attacker', id: 'h0-forged' });
      // Offset 0 holds the honest event, /honest h0 answers with its own payload, and /attacker h0-forged (never POSTed) is not found.
      expect({
        refused: refusal !== undefined,
        offset0: atVictim?.event?.source,
        lookupSource: lookup.body?.event?.source ?? lookup.body?.source,
        forged: forgedLookup.status,
      }).toEqual({
        refused: false,
        offset0: '/honest',
        lookupSource: '/honest',
        forged: 404,
      });
    } finally {
      await started.close();
    }
  }, 60_000);
});
