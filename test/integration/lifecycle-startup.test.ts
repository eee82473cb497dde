import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import {
  killIfRunning,
  lookupEvent,
  postBinary,
  runGatewayUntilExit,
  spawnGateway,
  startTestGateway,
  type AppendResultBody,
  type ChildGateway,
} from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

let child: ChildGateway | undefined;
afterEach(() => killIfRunning(child));

/** The refusal is one line on stderr, prefixed like every other start-up message. */
function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^herald: /);
  return lines[0]!;
}

describe('start-up refusals', () => {
  it('refuses a data dir created with another HERALD_PARTITIONS, naming the variable and the recorded count', async () => {
    const dataDir = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    expect((await postBinary(child.url, { source: '/start', id: 's1' })).status).toBe(202);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);

    // index.db is derived and may be removed; a start that is refused does not make it again (upgrade probe: a
    // refused start had migrated herald.db and made index.db, so the version that made the dir no longer started).
    fs.rmSync(path.join(dataDir, 'index.db'));
    const database = fs.readFileSync(path.join(dataDir, 'herald.db'));
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '8' });
    expect(fs.existsSync(path.join(dataDir, 'index.db'))).toBe(false);
    expect(fs.readFileSync(path.join(dataDir, 'herald.db')).equals(database)).toBe(true);
    expect(refused.code).not.toBe(0);
    expect(typeof refused.code).toBe('number');
    const line = oneLine(refused.stderr);
    expect(line).toContain('HERALD_PARTITIONS');
    expect(line).toMatch(/HERALD_PARTITIONS=4/); // says what to do
    expect(refused.stdout).not.toMatch(/herald listening/);

    // The refusal changed nothing: the original count still starts and still has the event.
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    expect((await postBinary(child.url, { source: '/start', id: 's1' })).status).toBe(200);
  });

  it('refuses when herald.json and herald.db disagree on the partition count, whatever HERALD_PARTITIONS says (was: followed herald.json and rewrote herald.db)', async () => {
    const dataDir = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    expect((await postBinary(child.url, { source: '/start', id: 's1' })).status).toBe(202);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // One flipped bit: "partitions": 4 becomes 5 in herald.json.
    const identityFile = path.join(dataDir, 'herald.json');
    fs.writeFileSync(identityFile, fs.readFileSync(identityFile, 'utf8').replace('"partitions": 4', '"partitions": 5'));
    for (const partitions of ['4', '5']) {
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: partitions });
      expect(refused.code).toBe(2);
      expect(oneLine(refused.stderr)).toMatch(/herald\.json says 5 partitions and .*herald\.db says 4: one of them is damaged/);
    }
    const db = new Database(path.join(dataDir, 'herald.db'), { readonly: true });
    expect(db.prepare("SELECT value FROM meta WHERE key = 'partitions'").pluck().get()).toBe('4');
    db.close();
  });

  it('refuses too few HERALD_PARTITIONS for the log even after herald.db was lost, and rebuilds with the right count', async () => {
    const dataDir = tmpDir();
    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '16' });
    const acked: AppendResultBody[] = [];
    for (let i = 0; i < 40; i++) acked.push(...(await postBinary(child.url, { source: '/lost-db', id: `e${i}` })).body.results);
    expect(Math.max(...acked.map((r) => r.partition))).toBeGreaterThanOrEqual(4);
    child.child.kill('SIGTERM');
    expect(await child.exited).toBe(0);
    // SQLite holds only what the log implies, so an operator may delete it; the log must still guard the count.
    for (const f of fs.readdirSync(dataDir).filter((f) => f.startsWith('herald.db'))) fs.rmSync(path.join(dataDir, f));

    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '4' });
    expect(typeof refused.code).toBe('number');
    expect(refused.code).not.toBe(0);
    expect(oneLine(refused.stderr)).toContain('HERALD_PARTITIONS');

    child = await spawnGateway({ HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '16', HERALD_RECOVERY: 'rebuild-events-only' });
    for (const r of acked) expect((await lookupEvent(child.url, r)).body).toMatchObject({ partition: r.partition, offset: r.offset });
  });

  it.each([
    ['HERALD_FSYNC', 'sometimes'],
    ['HERALD_PARTITIONS', 'lots'],
    ['HERALD_SEGMENT_BYTES', '1024'],
    ['HERALD_IDEMPOTENCY_WINDOW', 'forever'],
  ])('stops start-up on %s=%s with a one-line message naming the variable', async (name, value) => {
    const dataDir = tmpDir();
    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, [name]: value });
    expect(refused.code).not.toBe(0);
    expect(typeof refused.code).toBe('number');
    expect(oneLine(refused.stderr)).toContain(name);
    expect(refused.stdout).not.toMatch(/herald listening/);
  });

  describe('a subscription row in herald.db that Herald did not write (damaged, or edited by hand)', () => {
    /** A data dir with one subscription, then its `column` overwritten with `value`; the original returned. */
    async function damaged(
      column: 'filters' | 'delivery' | 'state',
      value: string,
    ): Promise<{ dataDir: string; id: string; original: string }> {
      const gw = await startTestGateway();
      const created = await fetch(`${gw.url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sink: 'http://127.0.0.1:9/hook', filters: [{ exact: { type: 'com.example.a' } }] }),
      });
      expect(created.status).toBe(201);
      const { id } = (await created.json()) as { id: string };
      await gw.close();
      const db = new Database(path.join(gw.dataDir, 'herald.db'));
      const original = (db.prepare(`SELECT ${column} AS v FROM subscriptions WHERE id = ?`).get(id) as { v: string }).v;
      db.prepare(`UPDATE subscriptions SET ${column} = ? WHERE id = ?`).run(value, id);
      db.close();
      return { dataDir: gw.dataDir, id, original };
    }

    it.each([
      ['filters', '{'],
      ['filters', '{"exact":{"type":"x"}}'],
      ['delivery', 'null'],
      ['state', 'sleeping'],
    ] as const)('refuses to start when its %s column holds %s: one line naming the subscription and the column', async (column, value) => {
      const { dataDir, id } = await damaged(column, value);
      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
      expect(refused.code).toBe(2);
      const line = oneLine(refused.stderr);
      expect(line).toContain(id);
      expect(line).toContain(`${column} column`);
      expect(line).toMatch(/herald\.db/);
      expect(refused.stdout).not.toMatch(/herald listening/);
    });

    it('a refused start in-process lets go of the data dir, its threads and its port: started again once the row is fixed', async () => {
      const { dataDir, id, original } = await damaged('filters', '{');
      await expect(startTestGateway({ HERALD_DATA_DIR: dataDir })).rejects.toThrow(/its filters column is not what Herald writes/);
      // Before, the refused start kept the data dir's lock (and its HTTP server and delivery thread):
      // this start failed with "locked by another process".
      await expect(startTestGateway({ HERALD_DATA_DIR: dataDir })).rejects.toThrow(/its filters column/);
      const db = new Database(path.join(dataDir, 'herald.db'));
      db.prepare('UPDATE subscriptions SET filters = ? WHERE id = ?').run(original, id);
      db.close();
      const gw = await startTestGateway({ HERALD_DATA_DIR: dataDir });
      try {
        const got = await fetch(`${gw.url}/subscriptions/${id}`);
        expect(got.status).toBe(200);
        expect(await got.json()).toMatchObject({ id, filters: [{ exact: { type: 'com.example.a' } }] });
      } finally {
        await gw.close();
      }
    });
  });
});
