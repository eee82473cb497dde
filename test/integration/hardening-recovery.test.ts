import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import {
  getJson,
  killIfRunning,
  lookupEvent,
  partitionHeads,
  postBinary,
  runGatewayUntilExit,
  segmentFiles,
  spawnGateway,
  startTestGateway,
  recordEnds,
  type AppendResultBody,
  type ChildGateway,
} from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';
import { FRAME_HEADER_BYTES } from '../../src/wal/record';

afterAll(cleanupTmpDirs);

let child: ChildGateway | undefined;
let second: ChildGateway | undefined;
let receiver: Receiver | undefined;
afterEach(async () => {
  await killIfRunning(child);
  await killIfRunning(second);
  await receiver?.close();
  receiver = undefined;
});

/** The refusal is one line on stderr, prefixed like every other start-up message. */
function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^herald: /);
  return lines[0]!;
}

/** Publishes `n` binary events with one partition key, so they share a partition and its offsets. */
async function publishKeyed(url: string, key: string, prefix: string, n: number, padBytes = 200): Promise<AppendResultBody[]> {
  const out: AppendResultBody[] = [];
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${url}/events`, {
      method: 'POST',
      headers: {
        'ce-specversion': '1.0',
        'ce-id': `${prefix}${i}`,
        'ce-source': '/hard',
        'ce-type': 'hard.t',
        'ce-partitionkey': key,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ i, pad: 'x'.repeat(padBytes) }),
    });
    expect(res.status).toBe(202);
    out.push(...((await res.json()) as { results: AppendResultBody[] }).results);
  }
  return out;
}

describe('two gateways on one data dir', () => {
  it('refuses the second one (exit 2, one line naming the dir and the holder PID); a SIGKILLed holder leaves no lock behind', async () => {
    const dataDir = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir });
    expect((await postBinary(child.url, { source: '/lock', id: 'a' })).status).toBe(202);

    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
    expect(refused.code).toBe(2);
    const line = oneLine(refused.stderr);
    expect(line).toContain(path.resolve(dataDir));
    expect(line).toContain(`PID ${child.child.pid}`);
    expect(refused.stdout).not.toMatch(/herald listening/);
    // The refused process touched nothing: the first one still serves.
    expect((await postBinary(child.url, { source: '/lock', id: 'b' })).status).toBe(202);

    child.child.kill('SIGKILL');
    await child.exited;
    second = await spawnGateway({ HERALD_DATA_DIR: dataDir });
    expect((await lookupEvent(second.url, { source: '/lock', id: 'b' })).status).toBe(200);
  });

  it('refuses the second one when the lock file was removed under the first (was: both ran, one offset given twice, an acknowledged event lost)', async () => {
    const dataDir = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir });
    expect((await postBinary(child.url, { source: '/lock', id: 'a1' })).status).toBe(202);
    fs.rmSync(path.join(dataDir, 'herald.lock'));
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
    expect(refused.code).toBe(2);
    expect(oneLine(refused.stderr)).toContain(`PID ${child.child.pid} has its herald.db open, and herald.lock does not lock it`);
    expect(fs.readFileSync(path.join(dataDir, 'herald.pid'), 'utf8').trim()).toBe(String(child.child.pid));
    // herald.pid removed too: the start finds the holder among every process (its lock file was not there).
    fs.rmSync(path.join(dataDir, 'herald.lock'), { force: true });
    fs.rmSync(path.join(dataDir, 'herald.pid'));
    const refusedAgain = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
    expect(refusedAgain.code).toBe(2);
    expect(oneLine(refusedAgain.stderr)).toContain(`PID ${child.child.pid} has its herald.db open`);
    // And again (storage probe): the refused start left no lock file of its own to be taken for the holder's.
    const refusedThird = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
    expect(refusedThird.code).toBe(2);
    expect(oneLine(refusedThird.stderr)).toContain(`PID ${child.child.pid} has its herald.db open`);
    expect((await postBinary(child.url, { source: '/lock', id: 'a2' })).status).toBe(202);
    // Once it is gone, its PID file names no live holder: the next gateway starts and has both events.
    child.child.kill('SIGKILL');
    await child.exited;
    second = await spawnGateway({ HERALD_DATA_DIR: dataDir });
    for (const id of ['a1', 'a2']) expect((await lookupEvent(second.url, { source: '/lock', id })).status).toBe(200);
  });

  it('starts when herald.pid names a live process that has a file of the data dir open but not its herald.db (a reused PID)', async () => {
    const dataDir = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir });
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // Another program, reading herald.json, stands where the PID file points.
    const reader = spawn('tail', ['-f', path.join(dataDir, 'herald.json')], { stdio: 'ignore' });
    try {
      fs.writeFileSync(path.join(dataDir, 'herald.pid'), `${reader.pid}\n`);
      fs.rmSync(path.join(dataDir, 'herald.lock'), { force: true });
      second = await spawnGateway({ HERALD_DATA_DIR: dataDir });
      expect((await postBinary(second.url, { source: '/lock', id: 'after-reuse' })).status).toBe(202);
    } finally {
      reader.kill('SIGKILL');
    }
  });

  it('refuses a herald.lock or wal/herald.lock that is a symbolic link (start-up probe: SQLite wrote its journal beside the target, /dev/null-journal as root)', async () => {
    const target = path.join(tmpDir(), 'elsewhere');
    fs.writeFileSync(target, '');
    for (const lock of ['herald.lock', path.join('wal', 'herald.lock')]) {
      const dataDir = tmpDir();
      fs.mkdirSync(path.join(dataDir, 'wal'));
      fs.symlinkSync(target, path.join(dataDir, lock));
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
      expect(refused.code).toBe(2);
      expect(oneLine(refused.stderr)).toBe(
        `herald: ${path.join(dataDir, lock)} is a symbolic link; a lock file must be a plain file in its directory: remove the link`,
      );
      expect(fs.existsSync(`${target}-journal`)).toBe(false);
    }
  });

  it('refuses a second gateway in the same process too', async () => {
    const gw = await startTestGateway();
    try {
      await expect(startTestGateway({ HERALD_DATA_DIR: gw.dataDir })).rejects.toThrow(/in use by another Herald process/);
      expect((await postBinary(gw.url, { source: '/lock', id: 'same' })).status).toBe(202);
    } finally {
      await gw.close();
    }
    const again = await startTestGateway({ HERALD_DATA_DIR: gw.dataDir });
    await again.close();
  });

  it('refuses a gateway whose wal/ is a link to the log of a running gateway’s data dir, both new (was: both ran on one log)', async () => {
    const first = tmpDir();
    const other = tmpDir();
    fs.mkdirSync(path.join(first, 'wal'));
    fs.symlinkSync(path.join(first, 'wal'), path.join(other, 'wal'));
    child = await spawnGateway({ HERALD_DATA_DIR: first });
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: other });
    expect(refused.code).toBe(2);
    const line = oneLine(refused.stderr);
    expect(line).toContain(`the log dir ${fs.realpathSync(path.join(first, 'wal'))}`);
    expect(line).toContain('is wal/ linked from another data dir?');
    // The refused start changed nothing the first one uses.
    expect((await postBinary(child.url, { source: '/lock', id: 'linked' })).status).toBe(202);
    expect(fs.readFileSync(path.join(first, 'herald.pid'), 'utf8').trim()).toBe(String(child.child.pid));
  });

  it('names a wal/ link whose target is missing, and starts once it is there (re-probe: "EEXIST: file already exists, mkdir")', async () => {
    const dataDir = tmpDir();
    const target = path.join(tmpDir(), 'not-mounted');
    fs.symlinkSync(target, path.join(dataDir, 'wal'));
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
    expect(refused.code).toBe(2);
    expect(oneLine(refused.stderr)).toContain(`wal is a link to ${target}, which does not exist: mount the disk it is on, or create it`);
    fs.mkdirSync(target);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir });
    expect((await postBinary(child.url, { source: '/lock', id: 'linked-new' })).status).toBe(202);
    expect(fs.readdirSync(target).some((f) => f.endsWith('.seg'))).toBe(true);
  });

  it('refuses it too when wal/herald.lock was removed under the running gateway (re-probe: both ran on one log)', async () => {
    const first = tmpDir();
    const other = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: first });
    expect((await postBinary(child.url, { source: '/lock', id: 'before-rm' })).status).toBe(202);
    fs.symlinkSync(path.join(first, 'wal'), path.join(other, 'wal'));
    fs.rmSync(path.join(first, 'wal', 'herald.lock'));
    for (let i = 0; i < 2; i++) {
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: other });
      expect(refused.code).toBe(2);
      expect(oneLine(refused.stderr)).toContain(`(PID ${child.child.pid} has its segments open, and wal/herald.lock does not lock it`);
    }
    expect((await postBinary(child.url, { source: '/lock', id: 'after-rm' })).status).toBe(202);
    // A process that only reads a segment (a log shipper, `tail -f`) is no holder (re-probe: a restore refused for it).
    child.child.kill('SIGTERM');
    await child.exited;
    const segment = fs.readdirSync(path.join(first, 'wal')).find((f) => f.endsWith('.seg'))!;
    const reader = spawn('tail', ['-f', path.join(first, 'wal', segment)], { stdio: 'ignore' });
    try {
      expect(fs.existsSync(path.join(first, 'wal', 'herald.lock'))).toBe(false); // this start makes it: the scan runs
      child = await spawnGateway({ HERALD_DATA_DIR: first });
      expect((await lookupEvent(child.url, { source: '/lock', id: 'after-rm' })).status).toBe(200);
    } finally {
      reader.kill('SIGKILL');
    }
  });
});

describe('a lost herald.db', () => {
  it.each(['a flipped header byte', 'a page of zeros'])(
    'refuses a herald.db with %s, naming it (crash probe: started, said ready, and failed its writes)',
    async (damage) => {
      const dataDir = tmpDir();
      child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
      for (let i = 0; i < 3; i++)
        await request(child.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/never', startAt: 'earliest' }).expect(201);
      child.child.kill('SIGTERM');
      expect(await child.exited).toBe(0);
      const dbFile = path.join(dataDir, 'herald.db');
      const bytes = fs.readFileSync(dbFile);
      const pageSize = bytes.readUInt16BE(16);
      // The header's count of bytes reserved at the end of each page; or the last page, a b-tree page of some table or index.
      if (damage === 'a flipped header byte') bytes.writeUInt8(bytes.readUInt8(20) ^ 0x10, 20);
      else bytes.fill(0, bytes.length - pageSize);
      fs.writeFileSync(dbFile, bytes);
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
      expect(refused.code).toBe(2);
      expect(oneLine(refused.stderr)).toMatch(/herald\.db is damaged \((SQLITE_(CORRUPT|NOTADB)|DB_CHECK)/);
    },
  );

  it('refuses to start on the log alone (exit 2 naming herald.db) and, with rebuild-events-only, rebuilds events and says subscriptions are gone', async () => {
    const dataDir = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    const acked = [];
    for (let i = 0; i < 10; i++) acked.push(...(await postBinary(child.url, { source: '/lost', id: `e${i}` })).body.results);
    await request(child.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/never', startAt: 'earliest' }).expect(201);
    await request(child.url)
      .post(`/subscriptions/${(await getJson(`${child.url}/subscriptions`)).body.subscriptions[0].id}/pause`)
      .expect(200);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // A herald.db cut to half is named, with what can be done (re-probe: "data dir … is not usable: SQLITE_CORRUPT").
    const dbFile = path.join(dataDir, 'herald.db');
    fs.truncateSync(dbFile, Math.floor(fs.statSync(dbFile).size / 2));
    const cut = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    expect(cut.code).toBe(2);
    expect(oneLine(cut.stderr)).toMatch(
      /herald\.db is damaged \((SQLITE_(CORRUPT|NOTADB)|DB_CHECK).*restore it from a backup, or move it aside and start with HERALD_RECOVERY=rebuild-events-only/,
    );
    for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('herald.db'))) fs.rmSync(path.join(dataDir, f));

    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    expect(refused.code).toBe(2);
    const line = oneLine(refused.stderr);
    expect(line).toContain(path.join(dataDir, 'herald.db'));
    expect(line).toContain('HERALD_RECOVERY=rebuild-events-only');

    // The partition count survives the database: another count is still refused.
    const wrongCount = await runGatewayUntilExit({
      HERALD_DATA_DIR: dataDir,
      HERALD_PARTITIONS: '16',
      HERALD_RECOVERY: 'rebuild-events-only',
    });
    expect(wrongCount.code).toBe(2);
    expect(oneLine(wrongCount.stderr)).toContain('HERALD_PARTITIONS=4');

    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4', HERALD_RECOVERY: 'rebuild-events-only' });
    for (const r of acked) expect((await lookupEvent(child.url, r)).body).toMatchObject({ partition: r.partition, offset: r.offset });
    expect(child.output()).toMatch(/"level":50[^\n]*subscriptions, their offsets and dead letters were not recoverable/);
    // From now on the rebuilt database is this data dir's: a plain restart needs no permission.
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    expect((await postBinary(child.url, { source: '/lost', id: 'e0' })).status).toBe(200);
  });
});

describe('a lost log tail', () => {
  it('never reuses an offset: new events continue past what was delivered, and a lagging subscription skips the gap', async () => {
    receiver = await startReceiver();
    const gw = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_FSYNC: 'interval' });
    const before = await publishKeyed(gw.url, 'k', 'a', 10);
    const partition = before[0]!.partition;
    expect(before.map((r) => r.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const fast = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: `${receiver.url}/fast`, startAt: 'earliest' })
        .expect(201)
    ).body;
    const slow = (
      await request(gw.url)
        .post('/subscriptions')
        .send({ sink: `${receiver.url}/slow`, startAt: 'earliest' })
        .expect(201)
    ).body;
    await request(gw.url).post(`/subscriptions/${slow.id}/pause`).expect(200);
    await waitFor(() => receiver!.requests.filter((q) => q.url.endsWith('/fast')).length === 10 || undefined, { what: '10 deliveries' });
    await waitFor(
      async () =>
        (await getJson(`${gw.url}/subscriptions/${fast.id}`)).body.stats.partitions[partition].committedOffset === 10 || undefined,
      {
        what: 'committed offset 10',
      },
    );
    await gw.close();

    // A power cut lost the last 3 records (possible under HERALD_FSYNC=interval): cut them from the log.
    const file = segmentFiles(gw.dataDir).at(-1)!;
    const ends = recordEnds(file);
    fs.truncateSync(file, ends[6]!);

    const again = await startTestGateway({ HERALD_PARTITIONS: '2', HERALD_FSYNC: 'interval', HERALD_DATA_DIR: gw.dataDir });
    try {
      expect((await partitionHeads(again.url))[partition]).toBe(10);
      const after = await publishKeyed(again.url, 'k', 'b', 2);
      expect(after.map((r) => r.offset)).toEqual([10, 11]);
      // The fast subscription gets the new events; a receiver deduplicating on webhook-id would not drop them.
      await waitFor(() => receiver!.requests.filter((q) => q.url.endsWith('/fast')).length === 12 || undefined, {
        what: 'new events delivered',
      });
      const fastOffsets = receiver.requests.filter((q) => q.url.endsWith('/fast')).map((q) => Number(q.headers['herald-offset']));
      expect(fastOffsets.slice(10)).toEqual([10, 11]);
      expect(new Set(receiver.requests.filter((q) => q.url.endsWith('/fast')).map((q) => q.headers['webhook-id'])).size).toBe(12);

      // The paused one resumes from offset 0: it gets 0..6 and 10..11 and never waits for 7..9.
      await request(again.url).post(`/subscriptions/${slow.id}/resume`).expect(200);
      await waitFor(() => receiver!.requests.filter((q) => q.url.endsWith('/slow')).length === 9 || undefined, {
        what: 'slow subscription past the gap',
      });
      const slowOffsets = receiver.requests.filter((q) => q.url.endsWith('/slow')).map((q) => Number(q.headers['herald-offset']));
      expect(slowOffsets).toEqual([0, 1, 2, 3, 4, 5, 6, 10, 11]);
      const sub = (await getJson(`${again.url}/subscriptions/${slow.id}`)).body;
      await waitFor(
        async () => (await getJson(`${again.url}/subscriptions/${slow.id}`)).body.stats.partitions[partition].lag === 0 || undefined,
        { what: 'lag 0' },
      );
      expect(sub.state).toBe('active');

      // A reader of the partition sees the gap and goes on.
      const page = (await getJson(`${again.url}/partitions/${partition}/events?from=0&limit=100`)).body;
      expect(page.events.map((e: { offset: number }) => e.offset)).toEqual([0, 1, 2, 3, 4, 5, 6, 10, 11]);
      expect(page.nextOffset).toBe(12);
      const inGap = (await getJson(`${again.url}/partitions/${partition}/events?from=7&limit=2`)).body;
      expect(inGap.events.map((e: { offset: number }) => e.offset)).toEqual([10, 11]);
    } finally {
      await again.close();
    }
  });
});

describe('corruption in the middle of the log', () => {
  async function storeAndStop(env: Record<string, string>, padBytes?: number): Promise<{ dataDir: string; acked: AppendResultBody[] }> {
    const dataDir = tmpDir();
    child = await spawnGateway({ ...env, HERALD_DATA_DIR: dataDir });
    const acked = await publishKeyed(child.url, 'mid', 'm', 60, padBytes);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    return { dataDir, acked };
  }

  function flipBit(file: string, at: number): void {
    const fd = fs.openSync(file, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0]! ^= 0x10;
    fs.writeSync(fd, b, 0, 1, at);
    fs.closeSync(fd);
  }

  it('refuses to start (exit 2: segment, byte, records that follow) without touching the log; skip-corrupt keeps every intact record', async () => {
    const { dataDir, acked } = await storeAndStop({ HERALD_PARTITIONS: '2' });
    const file = segmentFiles(dataDir).at(-1)!;
    const ends = recordEnds(file);
    const damaged = ends.findIndex((end) => end > 2000); // the record holding byte 2,000
    flipBit(file, 2000);
    const bytes = fs.readFileSync(file);

    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(refused.code).toBe(2);
    const line = oneLine(refused.stderr);
    expect(line).toContain(file);
    expect(line).toContain(`at byte ${ends[damaged - 1]}`);
    expect(line).toContain(`${ends.length - damaged - 1} intact record(s) follow`);
    expect(line).toContain('HERALD_RECOVERY=skip-corrupt');
    expect(fs.readFileSync(file).equals(bytes)).toBe(true);

    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_RECOVERY: 'skip-corrupt' });
    expect(child.output()).toMatch(/"level":50[^\n]*set unreadable bytes aside/);
    for (const [i, r] of acked.entries()) {
      const found = await lookupEvent(child.url, r);
      if (i === damaged) expect(found.status).toBe(404);
      else expect(found.body).toMatchObject({ partition: r.partition, offset: r.offset });
    }
    const side = fs.readdirSync(path.dirname(file)).filter((f) => f.startsWith(`${path.basename(file)}.corrupt-`));
    expect(side).toHaveLength(1);
    expect(fs.statSync(path.join(path.dirname(file), side[0]!)).size).toBe(ends[damaged]! - ends[damaged - 1]!);
    // New events continue after the old head; the damaged offset stays a gap.
    const more = await publishKeyed(child.url, 'mid', 'n', 1);
    expect(more[0]!.offset).toBe(60);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // The padding written over the bad bytes is a valid frame: a plain restart needs no permission.
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect((await lookupEvent(child.url, more[0]!)).status).toBe(200);
  });

  it('leaves a dead letter whose record recovery set aside listed as it was when it is redelivered (API probe: it came back under a new id, its error gone)', async () => {
    receiver = await startReceiver(() => ({ status: 400 }));
    const dataDir = tmpDir();
    const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' };
    child = await spawnGateway(env);
    const created = await fetch(`${child.url}/subscriptions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sink: receiver.url, startAt: 'earliest' }),
    });
    const sub = (await created.json()) as { id: string };
    await publishKeyed(child.url, 'k', 'd', 3);
    const dead = await waitFor(async () => {
      const rows = (await getJson(`${child!.url}/subscriptions/${sub.id}/dead-letters`)).body.deadLetters;
      return rows.length === 3
        ? (rows as { id: string; offset: number; reason: string; lastStatus: number; lastError: string }[])
        : undefined;
    });
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    const file = segmentFiles(dataDir).at(-1)!;
    const ends = recordEnds(file);
    flipBit(file, ends[0]! + 100); // inside the second record
    child = await spawnGateway({ ...env, HERALD_RECOVERY: 'skip-corrupt' });
    const before = (await getJson(`${child.url}/subscriptions/${sub.id}/dead-letters`)).body.deadLetters;
    expect(before[1]).toMatchObject({ id: dead[1]!.id, offset: 1, event: null });

    receiver.setResponder(() => ({ status: 204 }));
    const redelivered = await fetch(`${child.url}/subscriptions/${sub.id}/dead-letters/redeliver`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ids: [dead[1]!.id] }),
    });
    expect(redelivered.status).toBe(202);
    await waitFor(() => /dead letter not redelivered: its event is no longer in the log/.test(child!.output()), { what: 'the warn line' });
    const after = (await getJson(`${child.url}/subscriptions/${sub.id}/dead-letters`)).body.deadLetters;
    expect(after).toEqual(before);
    expect(receiver.requests.filter((q) => q.headers['herald-redelivery'] === 'true')).toHaveLength(0);
  });

  it('refuses a log missing a middle segment under fsync=always (was: started, forgot the events for good, stored resends again); skip-corrupt goes on', async () => {
    const { dataDir, acked } = await storeAndStop({ HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: String(64 * 1024) }, 3000);
    const files = segmentFiles(dataDir);
    expect(files.length).toBeGreaterThan(2);
    fs.renameSync(files[1]!, `${files[1]}.moved`); // an operator's slip, a broken copy
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(refused.code).toBe(2);
    const line = oneLine(refused.stderr);
    expect(line).toMatch(/the log is missing \d+ bytes: .* and the next segment, \d+\.seg, starts at/);
    expect(line).toContain('Restore the missing segment');
    // Nothing was forgotten: with the file back, every event is there.
    fs.renameSync(`${files[1]}.moved`, files[1]!);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    for (const r of acked) expect((await lookupEvent(child.url, r)).status).toBe(200);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // Gone for good, the operator may go on without it.
    fs.rmSync(files[1]!);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_RECOVERY: 'skip-corrupt' });
    expect(child.output()).toMatch(/"level":50[^\n]*segment lost its tail/);
    const found = await Promise.all(acked.map(async (r) => (await lookupEvent(child!.url, r)).status));
    expect(found.filter((status) => status === 200).length).toBeGreaterThan(0);
    expect(found.filter((status) => status === 404).length).toBeGreaterThan(0);
  });

  it('refuses a log whose newest segment is gone or cut short under fsync=always (storage probe: was started, its acknowledged events forgotten); skip-corrupt goes on', async () => {
    const { dataDir, acked } = await storeAndStop({ HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: String(64 * 1024) }, 3000);
    const files = segmentFiles(dataDir);
    expect(files.length).toBeGreaterThan(2);
    const newest = files.at(-1)!;
    fs.renameSync(newest, `${newest}.moved`);
    const gone = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(gone.code).toBe(2);
    expect(oneLine(gone.stderr)).toMatch(/ends at byte \d+, but it held acknowledged events up to byte \d+ .*: under HERALD_FSYNC=always/);
    fs.renameSync(`${newest}.moved`, newest);
    const whole = fs.readFileSync(newest);
    fs.truncateSync(newest, Math.floor(whole.length / 2) + 7); // inside a record
    const cut = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(cut.code).toBe(2);
    expect(oneLine(cut.stderr)).toContain('a segment file was lost, cut short or damaged at its end');
    expect(fs.statSync(newest).size).toBe(Math.floor(whole.length / 2) + 7); // the half record was not cut as a torn tail
    // Nothing was forgotten: with the file whole again, every event is there.
    fs.writeFileSync(newest, whole);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    for (const r of acked) expect((await lookupEvent(child.url, r)).status).toBe(200);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // Gone for good, the operator may go on without it.
    fs.rmSync(newest);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_RECOVERY: 'skip-corrupt' });
    const found = await Promise.all(acked.map(async (r) => (await lookupEvent(child!.url, r)).status));
    expect(found.filter((status) => status === 404).length).toBeGreaterThan(0);
  });

  /**
   * Events stored by a run that is then killed: the last one a second after the others, so that the synced
   * mark (raised at most once a second, written behind the answers) covers it.
   */
  async function storeAndKill(env: Record<string, string>): Promise<{ dataDir: string; acked: AppendResultBody[] }> {
    const dataDir = tmpDir();
    child = await spawnGateway({ ...env, HERALD_DATA_DIR: dataDir });
    const acked = await publishKeyed(child.url, 'mid', 'm', 60, 3000);
    await new Promise((r) => setTimeout(r, 1100));
    acked.push(...(await publishKeyed(child.url, 'mid', 'late', 1, 3000)));
    await new Promise((r) => setTimeout(r, 300)); // the mark's write, which the answer does not wait for
    child.child.kill('SIGKILL');
    await child.exited;
    return { dataDir, acked };
  }

  it.each([
    ['cut at a record boundary', 'a clean stop'],
    ['its last record damaged', 'a clean stop'],
    ['cut at a record boundary', 'a SIGKILL'],
  ])(
    'refuses a newest segment %s under fsync=always with index.db lost too, after %s (crash probe and re-probe: started without the acknowledged events)',
    async (damage, stop) => {
      const env = { HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: String(64 * 1024) };
      const { dataDir, acked } = stop === 'a SIGKILL' ? await storeAndKill(env) : await storeAndStop(env, 3000);
      const newest = segmentFiles(dataDir).at(-1)!;
      const whole = fs.readFileSync(newest);
      // The newest segment's last record starts after the one before it: found by walking the length fields.
      const starts: number[] = [];
      for (let at = 0; at + 4 <= whole.length;) {
        starts.push(at);
        at += whole.readUInt32LE(at) + FRAME_HEADER_BYTES;
      }
      const last = starts.at(-1)!;
      if (damage === 'cut at a record boundary') fs.truncateSync(newest, last);
      else
        fs.writeFileSync(
          newest,
          Buffer.concat([
            whole.subarray(0, whole.length - 3),
            Buffer.from([whole[whole.length - 3]! ^ 0xff]),
            whole.subarray(whole.length - 2),
          ]),
        );
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(dataDir, `index.db${suffix}`), { force: true });
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
      expect(refused.code).toBe(2);
      expect(oneLine(refused.stderr)).toMatch(
        /it held acknowledged events up to byte \d+ \(its index, or wal\/offsets.reserved, says so\)/,
      );
      // Nothing was changed: with the segment whole again, every event is there.
      fs.writeFileSync(newest, whole);
      child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
      for (const r of acked) expect((await lookupEvent(child.url, r)).status).toBe(200);
    },
  );

  it('refuses segments that overlap or repeat records the log has (storage probe: was started, events served twice or read as corrupt)', async () => {
    const { dataDir, acked } = await storeAndStop({ HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: String(64 * 1024) }, 3000);
    const files = segmentFiles(dataDir);
    expect(files.length).toBeGreaterThan(2);
    const name = (base: number) => path.join(path.dirname(files[0]!), `${String(base).padStart(20, '0')}.seg`);
    const baseOf = (file: string) => Number(path.basename(file).slice(0, 20));
    // The newest segment renamed to start inside the one before it.
    const newest = files.at(-1)!;
    const inside = name(baseOf(newest) - 100);
    fs.renameSync(newest, inside);
    const overlap = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(overlap.code).toBe(2);
    expect(oneLine(overlap.stderr)).toMatch(/starts at log byte \d+, inside \d+\.seg, which runs to \d+: segments overlap/);
    fs.renameSync(inside, newest);
    // A copy of the oldest segment saved as the next one.
    const next = name(baseOf(newest) + fs.statSync(newest).size);
    fs.copyFileSync(files[0]!, next);
    const copied = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect(copied.code).toBe(2);
    expect(oneLine(copied.stderr)).toMatch(/though that partition was already at offset \d+: a segment holds records the log has already/);
    // Nothing was changed: without the copy, every event is there once.
    fs.rmSync(next);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    for (const r of acked) expect((await lookupEvent(child.url, r)).body).toMatchObject({ partition: r.partition, offset: r.offset });
  });

  it("refuses another data dir's wal/, copied in or linked (storage probe: was taken in, the other's events served for this one's)", async () => {
    const x = await storeAndStop({ HERALD_PARTITIONS: '2' });
    const y = await storeAndStop({ HERALD_PARTITIONS: '2' });
    const yWal = path.join(y.dataDir, 'wal');
    fs.renameSync(yWal, `${yWal}.own`);
    fs.cpSync(path.join(x.dataDir, 'wal'), yWal, { recursive: true });
    const copied = await runGatewayUntilExit({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' });
    expect(copied.code).toBe(2);
    expect(oneLine(copied.stderr)).toMatch(/wal is not this data dir's log/);
    fs.rmSync(yWal, { recursive: true });
    fs.symlinkSync(path.join(x.dataDir, 'wal'), yWal);
    expect((await runGatewayUntilExit({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' })).code).toBe(2);
    // Its own log back, another's herald.db: herald.db is named, not the log (re-probe: the log was blamed).
    fs.rmSync(yWal);
    fs.renameSync(`${yWal}.own`, yWal);
    const yDb = path.join(y.dataDir, 'herald.db');
    fs.renameSync(yDb, `${yDb}.own`);
    fs.copyFileSync(path.join(x.dataDir, 'herald.db'), yDb);
    const foreignDb = await runGatewayUntilExit({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' });
    expect(foreignDb.code).toBe(2);
    expect(oneLine(foreignDb.stderr)).toMatch(/herald\.db belongs to another data dir/);
    fs.rmSync(yDb);
    fs.rmSync(`${yDb}-wal`, { force: true });
    fs.rmSync(`${yDb}-shm`, { force: true });
    fs.renameSync(`${yDb}.own`, yDb);
    // One character of herald.json's id changed: herald.json is named, and index.db is kept (storage probe: herald.db
    // was blamed, whose restore from a backup would lose what it stored since, and index.db was deleted first).
    const json = path.join(y.dataDir, 'herald.json');
    const sound = fs.readFileSync(json, 'utf8');
    const identity = JSON.parse(sound) as { id: string };
    const flipped = identity.id.slice(0, -1) + (identity.id.endsWith('0') ? '1' : '0');
    fs.writeFileSync(json, sound.replace(identity.id, flipped));
    const indexBefore = fs.statSync(path.join(y.dataDir, 'index.db'));
    const damagedJson = await runGatewayUntilExit({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' });
    expect(damagedJson.code).toBe(2);
    expect(oneLine(damagedJson.stderr)).toMatch(/herald\.json names another data dir .* herald\.json is likely damaged/);
    expect(fs.statSync(path.join(y.dataDir, 'index.db'))).toMatchObject({ ino: indexBefore.ino, mtimeMs: indexBefore.mtimeMs });
    fs.writeFileSync(json, sound);
    // Another's herald.db and no herald.json: refused naming herald.db, index.db kept (re-probe: it was rebuilt
    // for the other's id first, then the start was refused saying nothing was changed).
    fs.renameSync(yDb, `${yDb}.own`);
    fs.copyFileSync(path.join(x.dataDir, 'herald.db'), yDb);
    fs.renameSync(json, `${json}.own`);
    const noJson = await runGatewayUntilExit({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' });
    expect(noJson.code).toBe(2);
    expect(oneLine(noJson.stderr)).toMatch(
      /herald\.db belongs to another data dir: it recorded another log than the one in .*, and index\.db names another/,
    );
    expect(fs.statSync(path.join(y.dataDir, 'index.db'))).toMatchObject({ ino: indexBefore.ino, mtimeMs: indexBefore.mtimeMs });
    fs.rmSync(yDb);
    for (const suffix of ['-wal', '-shm']) fs.rmSync(`${yDb}${suffix}`, { force: true });
    fs.renameSync(`${yDb}.own`, yDb);
    fs.renameSync(`${json}.own`, json);
    // Nothing was changed: with its own files, every event of its own is there.
    child = await spawnGateway({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' });
    for (const r of y.acked) expect((await lookupEvent(child.url, r)).body).toMatchObject({ event: { id: r.id }, offset: r.offset });
  });

  it('names the file the others outvote when two of them come from another data dir, and following the message starts it (re-probe)', async () => {
    const x = await storeAndStop({ HERALD_PARTITIONS: '2' });
    const y = await storeAndStop({ HERALD_PARTITIONS: '2' });
    const swap = (name: string) => {
      fs.renameSync(path.join(y.dataDir, name), path.join(y.dataDir, `${name}.own`));
      fs.copyFileSync(path.join(x.dataDir, name), path.join(y.dataDir, name));
    };
    const restore = (name: string) => {
      for (const suffix of ['', '-wal', '-shm']) fs.rmSync(path.join(y.dataDir, name + suffix), { force: true });
      fs.renameSync(path.join(y.dataDir, `${name}.own`), path.join(y.dataDir, name));
    };
    const start = () => runGatewayUntilExit({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' });
    // herald.db and index.db another's: herald.db is named (herald.json was, whose removal then blamed the log).
    swap('herald.db');
    swap('index.db');
    const dbAndIndex = await start();
    expect(dbAndIndex.code).toBe(2);
    expect(oneLine(dbAndIndex.stderr)).toMatch(
      /herald\.db belongs to another data dir: it recorded another log than the one in .*, and herald\.json names another/,
    );
    restore('herald.db');
    restore('index.db');
    // herald.json and index.db another's: herald.json is named (herald.db was, the one that matches the log), and removing it starts.
    swap('herald.json');
    swap('index.db');
    const jsonAndIndex = await start();
    expect(jsonAndIndex.code).toBe(2);
    expect(oneLine(jsonAndIndex.stderr)).toMatch(/herald\.json names another data dir .* than .*herald\.db and .*wal, which agree/);
    fs.rmSync(path.join(y.dataDir, 'herald.json'));
    child = await spawnGateway({ HERALD_DATA_DIR: y.dataDir, HERALD_PARTITIONS: '2' });
    for (const r of y.acked) expect((await lookupEvent(child.url, r)).body).toMatchObject({ event: { id: r.id }, offset: r.offset });
  });

  it('refuses a log whose oldest segment is gone though retention never deleted it, index.db kept or lost (was: started; its events read as corrupt, or as if retention had taken them)', async () => {
    const { dataDir, acked } = await storeAndStop({ HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: String(64 * 1024) }, 3000);
    const files = segmentFiles(dataDir);
    expect(files.length).toBeGreaterThan(2);
    fs.renameSync(files[0]!, `${files[0]}.moved`);
    for (const indexLost of [false, true]) {
      if (indexLost) for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('index.db'))) fs.rmSync(path.join(dataDir, f));
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
      expect(refused.code).toBe(2);
      expect(oneLine(refused.stderr)).toMatch(
        /the log's oldest \d+ bytes are missing: it starts at .*, but retention deleted only up to byte 0/,
      );
    }
    expect(segmentFiles(dataDir)).toEqual(files.slice(1));
    // Put back, every event is there.
    fs.renameSync(`${files[0]}.moved`, files[0]!);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    for (const r of acked) expect((await lookupEvent(child.url, r)).status).toBe(200);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // Gone for good: skip-corrupt goes on from the oldest segment left, saying so, and the next start needs no permission.
    fs.rmSync(files[0]!);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_RECOVERY: 'skip-corrupt' });
    expect(child.output()).toMatch(/"level":50[^\n]*oldest segments are missing/);
    const last = acked.at(-1)!;
    expect((await lookupEvent(child.url, last)).status).toBe(200);
    expect((await lookupEvent(child.url, acked[0]!)).status).toBe(404);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2' });
    expect((await lookupEvent(child.url, last)).status).toBe(200);
  });

  it('with segment 0 damaged and herald.db gone, refuses; with permission keeps every intact record and renames no segment', async () => {
    const { dataDir, acked } = await storeAndStop({ HERALD_PARTITIONS: '2', HERALD_SEGMENT_BYTES: String(64 * 1024) }, 3000);
    const files = segmentFiles(dataDir);
    expect(files.length).toBeGreaterThan(2);
    const [first] = files;
    const ends = recordEnds(first!);
    flipBit(first!, ends[3]! + 40); // inside the fifth record
    // All of SQLite gone (herald.db and the derived index.db): recovery scans the whole log, segment 0 included.
    for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('herald.db') || f.startsWith('index.db')))
      fs.rmSync(path.join(dataDir, f));

    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_RECOVERY: 'rebuild-events-only' });
    expect(refused.code).toBe(2);
    expect(oneLine(refused.stderr)).toContain('corrupt in the middle');
    expect(segmentFiles(dataDir)).toEqual(files);

    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '2', HERALD_RECOVERY: 'skip-corrupt,rebuild-events-only' });
    expect(segmentFiles(dataDir)).toEqual(files);
    let found = 0;
    for (const r of acked) if ((await lookupEvent(child.url, r)).status === 200) found++;
    expect(found).toBe(acked.length - 1);
  });
});
