/**
 * `herald backup` of a data dir a gateway is writing, and `herald restore` of it: every event
 * acknowledged before the backup began is in the restore at its offset, subscriptions come back,
 * retries pending at the backup keep their webhook-id, and new deliveries of the restored gateway
 * do not reuse the ids the backed-up one may have sent after the backup.
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { backupDataDir, restoreDataDir } from '../../src/backup';
import { webhookIdOf } from '../../src/delivery/request';
import { enospc, mountTmpfs } from '../helpers/disk-faults';
import { runHerald } from '../helpers/cli';
import {
  lookupEvent,
  lookupEvents,
  postBatch,
  runGatewayUntilExit,
  segmentFiles,
  useChildGateways,
  type AppendResultBody,
  type TestEvent,
} from '../helpers/gateway';
import { useReceivers, waitFor } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const spawnGateway = useChildGateways();
const startReceiver = useReceivers();
const env = (dataDir: string) => ({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4', HERALD_SEGMENT_BYTES: '65536' });
/** A bound on the producer, not an expectation: it stops at the first of these. */
const MAX_BATCHES = 400;
const PRODUCE_FOR_AT_MOST_MS = 20_000;

const event = (id: string, type = 'com.example.backup'): TestEvent => ({ id, source: '/backup', type, data: { id, pad: 'x'.repeat(200) } });

/** A gateway on `source` storing 1,500 events (ids prefixed `prefix`) until retention has deleted its oldest segment. */
async function storeUntilRetention(source: string, prefix: string) {
  const gw = await spawnGateway({ ...env(source), HERALD_MAX_LOG_BYTES: '256KiB' });
  const acked: AppendResultBody[] = [];
  for (let b = 0; b < 150; b++)
    acked.push(
      ...((
        await postBatch(
          gw.url,
          Array.from({ length: 10 }, (_, i) => event(`${prefix}-${b}-${i}`)),
        )
      ).body.results as AppendResultBody[]),
    );
  await waitFor(async () => !fs.readdirSync(path.join(source, 'wal')).includes('00000000000000000000.seg'), {
    what: 'retention to delete the oldest segment',
  });
  return { gw, acked };
}

/** A data dir of `batches` × 10 events (ids prefixed `prefix`) over several 64 KiB segments, its gateway stopped. */
async function storedAndStopped(prefix: string, batches = 30): Promise<string> {
  const source = tmpDir();
  const gw = await spawnGateway(env(source));
  for (let b = 0; b < batches; b++)
    await postBatch(
      gw.url,
      Array.from({ length: 10 }, (_, i) => event(`${prefix}-${b}-${i}`)),
    );
  gw.child.kill('SIGTERM');
  await gw.exited;
  return source;
}

/** Where each record of an intact segment file starts (frames: a 4-byte length, a 4-byte checksum, that many bytes). */
function recordStarts(bytes: Buffer): number[] {
  const starts: number[] = [];
  for (let at = 0; at < bytes.length; at += 8 + bytes.readUInt32LE(at)) starts.push(at);
  return starts;
}

/** Cuts a segment file's last record, at a record boundary; returns how many bytes went. */
function dropLastRecord(file: string): number {
  const bytes = fs.readFileSync(file);
  const last = recordStarts(bytes).at(-1)!;
  fs.writeFileSync(file, bytes.subarray(0, last));
  return bytes.length - last;
}

/**
 * A data dir of 300 events whose oldest segment had a bit flipped in its last record (`last`: a start
 * cuts the segment there, a hole before the next one) or in one in its middle (padded over), set
 * aside by a start under skip-corrupt that read the whole log (index.db removed first: a start reads
 * the log from where its index says it indexed).
 */
async function repairedUnderSkipCorrupt(prefix: string, where: 'last' | 'middle', batches = 30) {
  const source = await storedAndStopped(prefix, batches);
  const oldest = segmentFiles(source)[0]!;
  const bytes = fs.readFileSync(oldest);
  const starts = recordStarts(bytes);
  const hit = where === 'last' ? starts.at(-1)! : starts[Math.floor(starts.length / 2)]!;
  bytes[hit + 20]! ^= 0x01;
  fs.writeFileSync(oldest, bytes);
  fs.rmSync(path.join(source, 'index.db'));
  const repaired = await spawnGateway({ ...env(source), HERALD_RECOVERY: 'skip-corrupt' });
  repaired.child.kill('SIGTERM');
  await repaired.exited;
  return { source, oldest, starts };
}

/** Restores `backupDir` into a new dir and finds the event `id` there (delivery off). */
async function expectRestoredWith(backupDir: string, id: string): Promise<void> {
  const restored = path.join(tmpDir(), 'restored');
  expect(await runHerald(['restore', '--data-dir', restored, backupDir])).toMatchObject({ code: 0 });
  const gw = await spawnGateway({ ...env(restored), HERALD_DELIVERY: 'off' });
  expect((await lookupEvent(gw.url, { source: '/backup', id })).status).toBe(200);
  gw.child.kill('SIGTERM');
  await gw.exited;
}

describe('herald backup / herald restore', () => {
  it('copies a data dir under load: every event acknowledged before it began is restored at its offset; the restore gets new webhook-ids but keeps pending ones', async () => {
    const source = tmpDir();
    const receiver = await startReceiver((req) => ({ status: req.headers['ce-type'] === 'com.example.fail' ? 500 : 204 }));
    const gw = await spawnGateway(env(source));
    const sub = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, delivery: { ordering: 'none', retry: { maxAttempts: 1000, initialDelayMs: 50, maxDelayMs: 200 } } })
      .expect(201);
    const subscriptionId = sub.body.id as string;
    // A retry pending across the backup: the restored gateway must send it with the id it had.
    const [failing] = (await postBatch(gw.url, [event('keeps-failing', 'com.example.fail')])).body.results as AppendResultBody[];
    await waitFor(() => receiver.requests.some((r) => r.headers['ce-id'] === 'keeps-failing'), { what: 'the failing event sent' });

    // A producer writing batches until the backup is done (bounded).
    const acked: AppendResultBody[] = [];
    let producing = true;
    const producer = (async () => {
      const deadline = Date.now() + PRODUCE_FOR_AT_MOST_MS;
      for (let b = 0; b < MAX_BATCHES && producing && Date.now() < deadline; b++) {
        const reply = await postBatch(
          gw.url,
          Array.from({ length: 20 }, (_, i) => event(`e-${b}-${i}`)),
        );
        expect(reply.status).toBe(202);
        acked.push(...(reply.body.results as AppendResultBody[]));
      }
    })();
    await waitFor(() => acked.length >= 1000, { timeoutMs: 15_000, what: '1,000 events acknowledged' });
    // Acknowledged before the backup began (was: by time, which dropped a batch acknowledged in its first millisecond).
    const ackedBeforeBackup = acked.length;
    const backupDir = path.join(tmpDir(), 'backup');
    const backup = await runHerald(['backup', '--data-dir', source, backupDir], { timeoutMs: 30_000 });
    producing = false;
    await producer;
    expect(backup).toMatchObject({ code: 0, stderr: '' });
    expect(backup.stdout).toMatch(/^backed up .* to .*: \d+ files, .* in \d+ ms\n$/);
    const manifest = JSON.parse(fs.readFileSync(path.join(backupDir, 'herald-backup.json'), 'utf8'));
    expect(manifest.files.map((f: { path: string }) => f.path)).toEqual(
      expect.arrayContaining(['herald.db', 'herald.json', 'wal/frame.key', 'wal/00000000000000000000.seg']),
    );
    expect(manifest.files.some((f: { path: string }) => f.path.startsWith('index.db'))).toBe(false);
    gw.child.kill('SIGKILL');
    await gw.exited;

    const restored = path.join(tmpDir(), 'restored');
    const restore = await runHerald(['restore', '--data-dir', restored, backupDir], { timeoutMs: 30_000 });
    expect(restore).toMatchObject({ code: 0 });
    const before = receiver.requests.length;
    const again = await spawnGateway(env(restored));

    const mustHave = acked.slice(0, ackedBeforeBackup);
    expect(mustHave.length).toBeGreaterThanOrEqual(1000);
    for (const { ev: result, ...found } of await lookupEvents(again.url, [...mustHave, failing!])) {
      expect({ id: result.id, status: found.status, at: found.body?.partition, offset: found.body?.offset }).toEqual({
        id: result.id,
        status: 200,
        at: result.partition,
        offset: result.offset,
      });
    }
    const subs = await request(again.url).get('/subscriptions').expect(200);
    expect(subs.body.subscriptions.map((s: { id: string; sink: string }) => [s.id, s.sink])).toEqual([[subscriptionId, receiver.url]]);

    // The retry pending at the backup: sent again with the webhook-id it always had.
    const retried = await waitFor(() => receiver.requests.slice(before).find((r) => r.headers['ce-id'] === 'keeps-failing'), {
      what: 'the pending retry sent by the restored gateway',
    });
    const firstSent = receiver.requests.find((r) => r.headers['ce-id'] === 'keeps-failing')!;
    expect(retried.headers['webhook-id']).toBe(firstSent.headers['webhook-id']);
    // A new event: an offset the old gateway may have given another event after the backup, so a new id.
    const [fresh] = (await postBatch(again.url, [event('after-restore')])).body.results as AppendResultBody[];
    const delivered = await waitFor(() => receiver.requests.find((r) => r.headers['ce-id'] === 'after-restore'), {
      what: 'the new event delivered',
    });
    expect(delivered.headers['webhook-id']).toMatch(/^msg_/);
    expect(delivered.headers['webhook-id']).not.toBe(webhookIdOf(subscriptionId, fresh!.partition, fresh!.offset, 0));

    // Events the backed-up gateway delivered after the backup's snapshot are in the restored log and are
    // delivered again: with the ids they had, so a receiver de-duplicating on webhook-id drops them (they
    // were given new ones before). And no id is ever given to two different events.
    const idBefore = new Map(receiver.requests.slice(0, before).map((r) => [r.headers['ce-id'], r.headers['webhook-id']]));
    const redelivered = receiver.requests
      .slice(before)
      .filter((r) => r.headers['ce-id'] !== 'keeps-failing' && idBefore.has(r.headers['ce-id']));
    expect(redelivered.length).toBeGreaterThan(0);
    expect(redelivered.filter((r) => r.headers['webhook-id'] !== idBefore.get(r.headers['ce-id'])).map((r) => r.headers['ce-id'])).toEqual(
      [],
    );
    const eventOfId = new Map<unknown, unknown>();
    for (const r of receiver.requests) {
      expect([r.headers['webhook-id'], eventOfId.get(r.headers['webhook-id']) ?? r.headers['ce-id']]).toEqual([
        r.headers['webhook-id'],
        r.headers['ce-id'],
      ]);
      eventOfId.set(r.headers['webhook-id'], r.headers['ce-id']);
    }
    // A seek is a replay: every event gets a new id again, the backup's too.
    const replayFrom = receiver.requests.length;
    await request(again.url).post(`/subscriptions/${subscriptionId}/seek`).send({ to: 'earliest' }).expect(200);
    const first = await waitFor(() => receiver.requests.slice(replayFrom).find((r) => r.headers['ce-id'] === mustHave[0]!.id), {
      what: 'the replay after a seek',
    });
    expect(idBefore.get(mustHave[0]!.id)).toMatch(/^msg_/);
    expect(first.headers['webhook-id']).not.toBe(idBefore.get(mustHave[0]!.id));
  }, 120_000);

  it('restores a data dir whose oldest segments retention deleted: its log starts past byte 0 and is not taken for a lost segment', async () => {
    const source = tmpDir();
    const { gw, acked } = await storeUntilRetention(source, 'r');
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', '--data-dir', source, backupDir], { timeoutMs: 30_000 })).toMatchObject({ code: 0 });
    gw.child.kill('SIGTERM');
    await gw.exited;
    // The live record's logEnd (past the copied segments after a clean stop) is not carried into the backup.
    expect(JSON.parse(fs.readFileSync(path.join(source, 'wal', 'offsets.reserved'), 'utf8'))).toHaveProperty('logEnd');
    expect(JSON.parse(fs.readFileSync(path.join(backupDir, 'wal', 'offsets.reserved'), 'utf8'))).not.toHaveProperty('logEnd');
    const restored = path.join(tmpDir(), 'restored');
    expect(await runHerald(['restore', '--data-dir', restored, backupDir], { timeoutMs: 30_000 })).toMatchObject({ code: 0 });
    const again = await spawnGateway({ ...env(restored), HERALD_MAX_LOG_BYTES: '256KiB' });
    const last = acked.at(-1)!;
    expect(await lookupEvent(again.url, last)).toMatchObject({ status: 200, body: { partition: last.partition, offset: last.offset } });
    expect((await lookupEvent(again.url, acked[0]!)).status).toBe(404);
  }, 60_000);

  it("restores such a data dir when an older version kept retention's record in index.db alone (upgrade probe: the restore was refused as a lost segment)", async () => {
    const source = tmpDir();
    const { gw, acked } = await storeUntilRetention(source, 'o');
    gw.child.kill('SIGTERM');
    await gw.exited;
    const db = new Database(path.join(source, 'herald.db'));
    db.prepare("DELETE FROM meta WHERE key IN ('retention_floors', 'retention_log_start', 'retention_recorded')").run();
    db.close();
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', '--data-dir', source, backupDir], { timeoutMs: 30_000 })).toMatchObject({ code: 0 });
    const restored = path.join(tmpDir(), 'restored');
    expect(await runHerald(['restore', '--data-dir', restored, backupDir], { timeoutMs: 30_000 })).toMatchObject({ code: 0 });
    const again = await spawnGateway({ ...env(restored), HERALD_MAX_LOG_BYTES: '256KiB' });
    const last = acked.at(-1)!;
    expect(await lookupEvent(again.url, last)).toMatchObject({ status: 200, body: { partition: last.partition, offset: last.offset } });
    const heads = (await request(again.url).get('/partitions').expect(200)).body.partitions as { partition: number; headOffset: number }[];
    for (const { partition, headOffset } of heads)
      expect(headOffset).toBe(Math.max(0, ...acked.filter((a) => a.partition === partition).map((a) => a.offset + 1)));
  }, 60_000);

  it('keeps when each segment was written: a restored gateway deletes what HERALD_RETENTION has run out for (was: kept all for one more period)', async () => {
    const source = tmpDir();
    const gw = await spawnGateway(env(source));
    for (let b = 0; b < 40; b++)
      await postBatch(
        gw.url,
        Array.from({ length: 20 }, (_, i) => event(`old-${b}-${i}`)),
      );
    gw.child.kill('SIGTERM');
    await gw.exited;
    // Stored two days ago, as far as the files say (the gateway is stopped: no write time in memory).
    const wal = path.join(source, 'wal');
    const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
    const segments = fs.readdirSync(wal).filter((f) => f.endsWith('.seg'));
    expect(segments.length).toBeGreaterThanOrEqual(2);
    for (const f of segments) fs.utimesSync(path.join(wal, f), twoDaysAgo, twoDaysAgo);
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', '--data-dir', source, backupDir])).toMatchObject({ code: 0 });
    const restored = path.join(tmpDir(), 'restored');
    expect(await runHerald(['restore', '--data-dir', restored, backupDir])).toMatchObject({ code: 0 });
    const again = await spawnGateway({ ...env(restored), HERALD_RETENTION: '1d' });
    await waitFor(
      async () =>
        ((await request(again.url).get('/partitions').expect(200)).body.partitions as { firstOffset: number }[]).some(
          (p) => p.firstOffset > 0,
        ),
      { what: 'retention to delete the segments of two days ago' },
    );
  }, 60_000);

  it('backs up a data dir whose gateway was killed (SQLite -wal left behind) with every acknowledged event', async () => {
    const source = tmpDir();
    const gw = await spawnGateway(env(source));
    const results = (
      await postBatch(
        gw.url,
        Array.from({ length: 50 }, (_, i) => event(`k-${i}`)),
      )
    ).body.results as AppendResultBody[];
    await request(gw.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/never' }).expect(201);
    gw.child.kill('SIGKILL');
    await gw.exited;
    expect(fs.existsSync(path.join(source, 'herald.db-wal'))).toBe(true);
    // Not into the data dir itself, nor through a link to it (CLI probe: taken, and lost with the dir).
    const link = path.join(tmpDir(), 'link');
    fs.symlinkSync(source, link);
    for (const inside of [path.join(source, 'inside'), path.join(source, 'wal', 'inside'), path.join(link, 'inside')]) {
      const refused = await runHerald(['backup', '--data-dir', source, inside]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/is inside the data dir .*: a backup there is lost with it/);
      expect(fs.existsSync(inside)).toBe(false);
    }
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', '--data-dir', source, backupDir])).toMatchObject({ code: 0, stderr: '' });
    const restored = tmpDir(); // exists and is empty
    expect(await runHerald(['restore', '--data-dir', restored, backupDir])).toMatchObject({ code: 0 });
    const again = await spawnGateway(env(restored));
    for (const result of results) expect((await lookupEvent(again.url, result)).body).toMatchObject({ offset: result.offset });
    expect((await request(again.url).get('/subscriptions').expect(200)).body.subscriptions).toHaveLength(1);
  }, 60_000);

  it("refuses a backup into the directory the data dir's wal/ links to, on another disk (ops probe: taken, among the live segments)", async () => {
    const source = tmpDir();
    const otherDisk = tmpDir();
    fs.mkdirSync(path.join(otherDisk, 'wal'));
    fs.symlinkSync(path.join(otherDisk, 'wal'), path.join(source, 'wal'));
    const gw = await spawnGateway(env(source));
    await postBatch(gw.url, [event('w-1')]);
    const inside = path.join(otherDisk, 'wal', 'backup');
    const refused = await runHerald(['backup', '--data-dir', source, inside]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/is inside the data dir .*: a backup there is lost with it/);
    expect(fs.existsSync(inside)).toBe(false);
    // Beside it on that disk is outside the data dir: taken.
    expect(await runHerald(['backup', '--data-dir', source, path.join(otherDisk, 'backup')])).toMatchObject({ code: 0, stderr: '' });
  }, 60_000);

  it('keeps a data dir it creates, a backup and a restore for its user alone (ops probe: herald.db, secrets and sink credentials in clear, was readable by every local user)', async () => {
    /** Every path under `root` (itself included) whose mode lets its group or others in. */
    const open = (root: string): string[] => {
      const found = fs.statSync(root).mode & 0o077 ? [root] : [];
      if (fs.statSync(root).isDirectory()) for (const name of fs.readdirSync(root)) found.push(...open(path.join(root, name)));
      return found;
    };
    const source = path.join(tmpDir(), 'new-data-dir'); // created by the gateway, under umask 022 here
    const gw = await spawnGateway(env(source));
    await postBatch(gw.url, [event('mode-1')]);
    await request(gw.url).post('/subscriptions').send({ sink: 'http://127.0.0.1:9/never' }).expect(201);
    gw.child.kill('SIGTERM');
    await gw.exited;
    expect(fs.readdirSync(source)).toContain('herald.db');
    expect(open(source)).toEqual([]);
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', '--data-dir', source, backupDir])).toMatchObject({ code: 0 });
    expect(open(backupDir)).toEqual([]);
    const restored = path.join(tmpDir(), 'restored');
    expect(await runHerald(['restore', '--data-dir', restored, backupDir])).toMatchObject({ code: 0 });
    expect(open(restored)).toEqual([]);
  });

  it('refuses to back up a log with damaged bytes, naming the segment (probe: reported whole, and its restore would not start); takes a newest segment cut short', async () => {
    const source = await storedAndStopped('d');
    const wal = path.join(source, 'wal');
    const segments = fs
      .readdirSync(wal)
      .filter((f) => f.endsWith('.seg'))
      .sort();
    expect(segments.length).toBeGreaterThanOrEqual(2);
    // A record cut short at the end of the newest segment, as one being written while it is copied: taken.
    fs.appendFileSync(path.join(wal, segments.at(-1)!), Buffer.from([100, 0, 0, 0, 1, 2]));
    const whole0 = path.join(tmpDir(), 'whole0');
    expect(await runHerald(['backup', '--data-dir', source, whole0])).toMatchObject({ code: 0 });
    // Zeros after it, as a power cut can leave: cut by the start, so taken too (re-probe: refused).
    fs.appendFileSync(path.join(wal, segments.at(-1)!), Buffer.alloc(4096));
    const whole = path.join(tmpDir(), 'whole');
    expect(await runHerald(['backup', '--data-dir', source, whole])).toMatchObject({ code: 0 });
    // One flipped bit inside the oldest segment's first record: refused, and nothing is left at the destination.
    const oldest = path.join(wal, segments[0]!);
    const bytes = fs.readFileSync(oldest);
    bytes[100]! ^= 0x01;
    fs.writeFileSync(oldest, bytes);
    const damaged = path.join(tmpDir(), 'damaged');
    const refused = await runHerald(['backup', '--data-dir', source, damaged]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`the log is damaged: ${segments[0]} at byte`);
    expect(fs.existsSync(damaged)).toBe(false);
  }, 60_000);

  it('refuses to back up a newest segment whose damaged length claims the rest of it, with intact records after (re-probe: taken for a record cut short)', async () => {
    const source = tmpDir();
    const gw = await spawnGateway({ ...env(source), HERALD_PARTITIONS: '1' });
    await postBatch(
      gw.url,
      Array.from({ length: 20 }, (_, i) => event(`l-${i}`)),
    );
    gw.child.kill('SIGTERM');
    await gw.exited;
    const wal = path.join(source, 'wal');
    const newest = path.join(
      wal,
      fs
        .readdirSync(wal)
        .filter((f) => f.endsWith('.seg'))
        .sort()
        .at(-1)!,
    );
    const bytes = fs.readFileSync(newest);
    // Frames are a 4-byte length, a 4-byte checksum and that many bytes: the tenth's length now runs past the end.
    let at = 0;
    for (let i = 0; i < 10; i++) at += 8 + bytes.readUInt32LE(at);
    bytes.writeUInt32LE(bytes.length - at, at);
    fs.writeFileSync(newest, bytes);
    const refused = await runHerald(['backup', '--data-dir', source, path.join(tmpDir(), 'cut')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`at byte ${at} (incomplete record at end of segment)`);
  }, 60_000);

  it('refuses to back up a log with a gap between two segments (re-probe: an older segment cut at a record boundary was backed up, and the restore refused)', async () => {
    const source = await storedAndStopped('g');
    const dropped = dropLastRecord(segmentFiles(source)[0]!); // at a record boundary
    const refused = await runHerald(['backup', '--data-dir', source, path.join(tmpDir(), 'gap')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`the log is missing ${dropped} bytes`);
  }, 60_000);

  it.each([
    ['the last record of its oldest segment (cut: a hole between two segments)', 'last'],
    ['a record in the middle of its oldest segment (padded over)', 'middle'],
  ] as const)(
    'backs up and restores a log whose damage in %s a start under skip-corrupt set aside; still refuses other damage in that segment',
    async (_what, where) => {
      const { source, oldest, starts } = await repairedUnderSkipCorrupt(`k${where}`, where);
      const backupDir = path.join(tmpDir(), 'repaired');
      const taken = await runHerald(['backup', '--data-dir', source, backupDir]);
      expect({ code: taken.code, stderr: taken.stderr }).toEqual({ code: 0, stderr: '' });
      await expectRestoredWith(backupDir, `k${where}-29-9`);

      // Damage elsewhere in the segment that holds the set-aside bytes is still found.
      const again = fs.readFileSync(oldest);
      again[starts[1]! + 20]! ^= 0x01;
      fs.writeFileSync(oldest, again);
      const refused = await runHerald(['backup', '--data-dir', source, path.join(tmpDir(), 'refused')]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`the log is damaged: ${path.basename(oldest)} at byte ${starts[1]}`);
    },
    60_000,
  );

  it('takes a set-aside hole for that gap only: the next segment deleted too is refused by the backup and the start (re-probe: let through, ~65 events gone without a word)', async () => {
    const { source } = await repairedUnderSkipCorrupt('kd', 'last', 80);
    const stored = new Database(path.join(source, 'herald.db'), { readonly: true });
    const holes = JSON.parse((stored.prepare("SELECT value FROM meta WHERE key = 'log_holes'").get() as { value: string }).value);
    stored.close();
    expect(holes).toEqual([[expect.any(Number), expect.any(Number)]]); // where it starts and ends
    const segments = segmentFiles(source);
    expect(segments.length).toBeGreaterThanOrEqual(3);
    fs.rmSync(segments[1]!); // the one right after the hole, with a later one left
    const refused = await runHerald(['backup', '--data-dir', source, path.join(tmpDir(), 'gone')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('the log is missing');
    const start = await runGatewayUntilExit(env(source));
    expect(start.code).toBe(2);
    expect(start.stderr).toMatch(/missing|ends short/);
  }, 60_000);

  it("keeps where bytes were set aside in herald.db: such a log starts again once index.db is lost, and one whose index.db alone knew (a version before) is backed up whole (was: refused as a lost segment's bytes)", async () => {
    const { source } = await repairedUnderSkipCorrupt('kh', 'last');
    // As a version before this one left it: the hole in index.db alone.
    const db = new Database(path.join(source, 'herald.db'));
    db.prepare("DELETE FROM meta WHERE key = 'log_holes'").run();
    db.close();
    const backupDir = path.join(tmpDir(), 'older');
    expect(await runHerald(['backup', '--data-dir', source, backupDir])).toMatchObject({ code: 0 });
    await expectRestoredWith(backupDir, 'kh-29-9');

    // A start with index.db there carries the hole into herald.db; a start without it then needs no skip-corrupt.
    const upgraded = await spawnGateway(env(source));
    upgraded.child.kill('SIGTERM');
    await upgraded.exited;
    fs.rmSync(path.join(source, 'index.db'));
    const rebuilt = await spawnGateway({ ...env(source), HERALD_DELIVERY: 'off' });
    expect((await lookupEvent(rebuilt.url, { source: '/backup', id: 'kh-29-9' })).status).toBe(200);
    rebuilt.child.kill('SIGTERM');
    expect(await rebuilt.exited).toBe(0);
  }, 60_000);

  it('refuses to back up a log whose newest segment lost its last records at a record boundary (was: taken, and its restore started without them)', async () => {
    const source = await storedAndStopped('n');
    dropLastRecord(segmentFiles(source).at(-1)!); // at a record boundary
    const refused = await runHerald(['backup', '--data-dir', source, path.join(tmpDir(), 'short')]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/the log ends at byte \d+, but index\.db holds events up to byte \d+/);
  }, 60_000);

  it('restores into an empty directory reached through a symlink (as into a mount point: staged inside it)', async () => {
    const source = tmpDir();
    const gw = await spawnGateway(env(source));
    const [stored] = (await postBatch(gw.url, [event('linked')])).body.results as AppendResultBody[];
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', '--data-dir', source, backupDir])).toMatchObject({ code: 0 });
    const real = tmpDir();
    const link = path.join(tmpDir(), 'data');
    fs.symlinkSync(real, link);
    // Was: ENOTDIR (the symlink was removed with rmdir to rename a sibling copy over it).
    expect(await runHerald(['restore', '--data-dir', link, backupDir])).toMatchObject({ code: 0 });
    expect(fs.readdirSync(real).sort()).toEqual(['herald.db', 'herald.json', 'wal']);
    const again = await spawnGateway(env(link));
    expect((await lookupEvent(again.url, stored!)).body).toMatchObject({ offset: stored!.offset });
  }, 60_000);

  it('takes a set but empty HERALD_DATA_DIR as the gateway does, as unset: ./data (was: the current directory)', async () => {
    const cwd = tmpDir();
    const gw = await spawnGateway(env(path.join(cwd, 'data')));
    const [stored] = (await postBatch(gw.url, [event('in-data')])).body.results as AppendResultBody[];
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', backupDir], { cwd, env: { HERALD_DATA_DIR: '' } })).toMatchObject({ code: 0 });
    gw.child.kill('SIGTERM');
    await gw.exited;
    const target = tmpDir();
    expect(await runHerald(['restore', backupDir], { cwd: target, env: { HERALD_DATA_DIR: '' } })).toMatchObject({ code: 0 });
    expect(fs.readdirSync(target)).toEqual(['data']);
    const again = await spawnGateway(env(path.join(target, 'data')));
    expect((await lookupEvent(again.url, stored!)).body).toMatchObject({ offset: stored!.offset });
  }, 60_000);

  it('a gateway refuses a data dir a restore did not finish in (was: it started on what had been moved in, reusing offsets)', async () => {
    const dir = tmpDir();
    fs.mkdirSync(path.join(dir, '.restore-4242'));
    const refused = await runGatewayUntilExit(env(dir));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/holds \.restore-4242: a herald restore into it did not finish/);
  });

  it('a gateway refuses a data dir whose log is gone but whose herald.db stored events (was: a new log, the acknowledged offsets handed out again)', async () => {
    const dir = tmpDir();
    const gw = await spawnGateway(env(dir));
    await postBatch(gw.url, [event('before-the-loss')]);
    gw.child.kill('SIGTERM');
    await gw.exited;
    fs.rmSync(path.join(dir, 'wal'), { recursive: true });
    fs.rmSync(path.join(dir, 'index.db'), { force: true });
    const refused = await runGatewayUntilExit(env(dir));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/holds no log, but .*herald\.db shows this data dir stored events/);
    expect(fs.existsSync(path.join(dir, 'wal'))).toBe(false);
  });

  it('names the database a copy could not read, and that SQLite\'s "malformed" is also a failed read (backup probe: an EIO read as corruption)', async () => {
    const source = await storedAndStopped('malformed', 10);
    const db = path.join(source, 'herald.db');
    // A b-tree page past the header scrambled: VACUUM INTO stops on it as it would on a read the disk failed.
    const fd = fs.openSync(db, 'r+');
    const pageSize = 4096;
    const pages = Math.floor(fs.fstatSync(fd).size / pageSize);
    for (let page = 1; page < pages; page++) fs.writeSync(fd, Buffer.alloc(64, 0xa5), 0, 64, page * pageSize);
    fs.closeSync(fd);
    const backupDir = path.join(tmpDir(), 'malformed-backup');
    expect(() => backupDataDir(source, backupDir)).toThrow(
      new RegExp(
        `^could not copy ${db.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(.+, SQLITE_(CORRUPT|NOTADB)\\w*\\); SQLite says so also when the disk fails a read`,
      ),
    );
    expect(fs.existsSync(backupDir)).toBe(false);
  });

  it('refuses to back up past an index.db it cannot read, naming it, rather than drop the check of the copied log against it (re-probe: a failed read left it off)', async () => {
    const source = await storedAndStopped('index-unreadable', 5);
    const index = path.join(source, 'index.db');
    for (const suffix of ['-wal', '-shm']) fs.rmSync(index + suffix, { force: true });
    fs.writeFileSync(index, Buffer.alloc(8192, 0x5a)); // what SQLite makes of a read the disk failed: not a database
    const backupDir = path.join(tmpDir(), 'index-unreadable-backup');
    expect(() => backupDataDir(source, backupDir)).toThrow(
      /^could not read .*index\.db \(.+\), which the copy of the log is checked against: nothing was backed up\. SQLite says "malformed"/,
    );
    expect(fs.existsSync(backupDir)).toBe(false);
  });

  it('says a target file system too small for the copy is full, and leaves nothing there (probe: a bare "disk I/O error" from SQLite)', async () => {
    const source = await storedAndStopped('full', 10);
    const backupDir = path.join(tmpDir(), 'backup');
    backupDataDir(source, backupDir);
    const size = fs
      .readdirSync(backupDir, { recursive: true, withFileTypes: true })
      .reduce((sum, e) => sum + (e.isFile() ? fs.statSync(path.join(e.parentPath, e.name)).size : 0), 0);
    const refusals: string[] = [];
    const step = 4096;
    // From too small for the files to room for all of them: every way a copy can find the disk full
    // (the copy of a file, SQLite's writes to the copied herald.db and its -shm), a few pages apart.
    for (let bytes = size - 24 * step; bytes <= size + 8 * step; bytes += step) {
      const target = mountTmpfs(Math.ceil(bytes / step) * step);
      if (!target) break; // not allowed to mount: the injected ENOSPC below still runs
      try {
        for (const copy of [
          () => restoreDataDir(backupDir, path.join(target.dir, 'd')),
          () => backupDataDir(source, path.join(target.dir, 'b')),
        ]) {
          try {
            copy();
          } catch (err) {
            refusals.push((err as Error).message);
            expect(fs.readdirSync(target.dir)).toEqual([]);
          }
          fs.rmSync(path.join(target.dir, 'd'), { recursive: true, force: true });
          fs.rmSync(path.join(target.dir, 'b'), { recursive: true, force: true });
        }
      } finally {
        target.unmount();
      }
    }
    jest.spyOn(fs, 'writeSync').mockImplementationOnce(() => {
      throw enospc('write');
    });
    const injected = path.join(tmpDir(), 'r');
    expect(() => restoreDataDir(backupDir, injected)).toThrow(/ran out of space \(\d+ bytes free once the failed write let go; ENOSPC/);
    jest.restoreAllMocks();
    expect(fs.existsSync(injected)).toBe(false);
    for (const message of refusals)
      expect(message).toMatch(
        /^the file system holding \S+ ran out of space \(\d+ bytes free once the failed write let go; .+\): nothing was (restored|backed up)/,
      );
    expect(refusals.length).toBeGreaterThan(0);
  }, 60_000);

  it('refuses what it cannot do whole, with one line and exit 1', async () => {
    const source = tmpDir();
    const gw = await spawnGateway(env(source));
    await postBatch(gw.url, [event('one')]);
    const taken = tmpDir();
    const backupDir = path.join(tmpDir(), 'backup');
    expect(await runHerald(['backup', '--data-dir', source, backupDir])).toMatchObject({ code: 0 });

    // An empty destination or backup (an unset "$DEST"): a usage error, nothing touched (was: the
    // current directory's neighbours cleaned up as abandoned backups, then a copy beside it).
    const cwd = tmpDir();
    const neighbour = `${cwd}.partial-999999`;
    fs.mkdirSync(neighbour);
    fs.writeFileSync(path.join(neighbour, 'notes.txt'), 'not a backup');
    expect(await runHerald(['backup', '--data-dir', source, ''], { cwd })).toMatchObject({
      code: 2,
      stderr: 'herald: <dest> is empty: give a directory\n',
    });
    expect(fs.readFileSync(path.join(neighbour, 'notes.txt'), 'utf8')).toBe('not a backup');
    expect(await runHerald(['restore', '--data-dir', path.join(tmpDir(), 'r0'), ''], { cwd })).toMatchObject({ code: 2 });
    // Under /proc (was: Node's recursive mkdir looped there for ever, a core at 100 %).
    expect(await runHerald(['backup', '--data-dir', source, '/proc/herald-backup'])).toMatchObject({ code: 1 });
    // An existing destination; a dir that is not a data dir.
    expect(await runHerald(['backup', '--data-dir', source, taken])).toMatchObject({
      code: 1,
      stderr: `herald: ${taken} already exists: a backup goes to a new directory\n`,
    });
    const empty = tmpDir();
    expect((await runHerald(['backup', '--data-dir', empty, path.join(empty, 'b')])).stderr).toMatch(/is not a Herald data dir/);
    // Restoring over the running gateway's data dir, over files, from a damaged or partial backup.
    expect(await runHerald(['restore', '--data-dir', source, backupDir])).toMatchObject({
      code: 1,
      stderr: `herald: ${source} is not empty (stop the gateway first): move it aside, then restore into it\n`,
    });
    const damaged = path.join(tmpDir(), 'damaged');
    fs.cpSync(backupDir, damaged, { recursive: true });
    fs.truncateSync(path.join(damaged, 'wal', '00000000000000000000.seg'), 10);
    const r1 = path.join(tmpDir(), 'r1');
    const damagedRestore = await runHerald(['restore', '--data-dir', r1, damaged]);
    expect(damagedRestore.code).toBe(1);
    expect(damagedRestore.stderr).toMatch(/is damaged: wal\/00000000000000000000\.seg is missing or not the file its manifest gives/);
    // Same size, one byte changed (was restored without a word: only sizes were compared).
    const flipped = path.join(tmpDir(), 'flipped');
    fs.cpSync(backupDir, flipped, { recursive: true });
    const seg = path.join(flipped, 'wal', '00000000000000000000.seg');
    const bytes = fs.readFileSync(seg);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 1, bytes.length - 1);
    fs.writeFileSync(seg, bytes);
    expect((await runHerald(['restore', '--data-dir', path.join(tmpDir(), 'r3'), flipped])).stderr).toMatch(
      /is damaged: wal\/00000000000000000000\.seg is missing or not the file its manifest gives/,
    );
    fs.writeFileSync(path.join(flipped, 'herald-backup.json'), 'null');
    expect(await runHerald(['restore', '--data-dir', path.join(tmpDir(), 'r4'), flipped])).toMatchObject({
      code: 1,
      stderr: `herald: ${path.join(flipped, 'herald-backup.json')} is not a manifest this version of Herald can restore\n`,
    });
    // A format-1 manifest (sizes only, before SHA-256s) is still restored.
    const older = path.join(tmpDir(), 'older');
    fs.cpSync(backupDir, older, { recursive: true });
    const manifest = JSON.parse(fs.readFileSync(path.join(older, 'herald-backup.json'), 'utf8'));
    manifest.format = 1;
    for (const f of manifest.files) delete f.sha256;
    fs.writeFileSync(path.join(older, 'herald-backup.json'), JSON.stringify(manifest));
    expect(await runHerald(['restore', '--data-dir', path.join(tmpDir(), 'r5'), older])).toMatchObject({ code: 0 });
    fs.rmSync(path.join(damaged, 'herald-backup.json'));
    const partial = await runHerald(['restore', '--data-dir', path.join(tmpDir(), 'r2'), damaged]);
    expect(partial).toMatchObject({ code: 1 });
    expect(partial.stderr).toMatch(/is not a whole Herald backup \(it has no herald-backup\.json\)/);
    // Nothing half-restored is left: neither the data dir nor its temp copy.
    expect(fs.readdirSync(path.dirname(r1))).toEqual([]);

    // A newer Herald's backup: said of the backup (was: a message naming the staging copy, already removed,
    // advising to "restore a backup taken before the upgrade": upgrade probe).
    const newer = path.join(tmpDir(), 'newer');
    fs.cpSync(backupDir, newer, { recursive: true });
    const db = new Database(path.join(newer, 'herald.db'));
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, ?, 0)').run('9999_from_the_future.sql');
    db.close();
    const newerManifest = JSON.parse(fs.readFileSync(path.join(newer, 'herald-backup.json'), 'utf8'));
    const dbEntry = newerManifest.files.find((f: { path: string }) => f.path === 'herald.db');
    const dbBytes = fs.readFileSync(path.join(newer, 'herald.db'));
    dbEntry.bytes = dbBytes.length;
    dbEntry.sha256 = createHash('sha256').update(dbBytes).digest('hex');
    fs.writeFileSync(path.join(newer, 'herald-backup.json'), JSON.stringify(newerManifest));
    const r6 = path.join(tmpDir(), 'r6');
    expect(await runHerald(['restore', '--data-dir', r6, newer])).toMatchObject({
      code: 1,
      stderr:
        'herald: the backup was made by a newer Herald (its herald.db has schema migration 9999_from_the_future.sql, which this version does not have): restore it with that version or a newer one\n',
    });
    expect(fs.existsSync(r6) ? fs.readdirSync(r6) : []).toEqual([]);
  }, 60_000);
});
