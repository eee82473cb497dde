import fs from 'node:fs';
import Database from 'better-sqlite3';
import path from 'node:path';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { openStoreAt } from '../../helpers/log-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/**
 * `index.db` damaged at rest (a storage probe wrote garbage into it, or cut it short, between a clean
 * stop and the next start). It is derived from the log, so it must never be trusted damaged: it was,
 * and re-sent events answered 202 and were stored twice, reads answered 500, or the start was refused.
 */

afterAll(cleanupTmpDirs);

const EVENTS = 400;
const ev = (i: number): CloudEvent => ({
  attributes: { specversion: '1.0', id: `e${i}`, source: '/index-damage', type: 't' },
  data: { kind: 'json', value: { i, pad: 'x'.repeat(40) } },
});

async function storeEvents(dir: string, count = EVENTS): Promise<void> {
  const s = openStoreAt(dir, { partitions: 2 });
  try {
    for (let i = 0; i < count; i += 50) await s.store.append(Array.from({ length: Math.min(50, count - i) }, (_, k) => ev(i + k)));
  } finally {
    await s.close();
  }
}

const damages: [string, (file: string) => void][] = [
  [
    'garbage over a page',
    (file) => {
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.alloc(4096, 0xab), 0, 4096, 2 * 4096);
      fs.closeSync(fd);
    },
  ],
  ['cut to half its size', (file) => fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2))],
  ['cut inside its header', (file) => fs.truncateSync(file, 50)],
];

describe.each(damages)('index.db with %s', (_name, damage) => {
  it('is set aside and rebuilt from the log: every event is read, and none is stored twice', async () => {
    const dir = tmpDir();
    await storeEvents(dir);
    const file = path.join(dir, 'index.db');
    expect(fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0).toBe(0); // all of it in index.db
    damage(file);

    const s = openStoreAt(dir, { partitions: 2 });
    try {
      const read = [0, 1].flatMap((p) => s.store.read(p, 0, EVENTS).events.map((e) => String(e.event.attributes.id)));
      expect(read.sort()).toEqual(Array.from({ length: EVENTS }, (_, i) => `e${i}`).sort());
      const again = await s.store.append([ev(7), ev(EVENTS - 1)]);
      expect(again.map((r) => r.duplicate)).toEqual([true, true]);
      expect(s.store.lookup('/index-damage', 'e123')).toBeDefined();
      expect(fs.readdirSync(dir).some((f) => /^index\.db\.corrupt-\d+$/.test(f))).toBe(true);
    } finally {
      await s.close();
    }
  });
});

const FEW = 20;

describe('index.db damaged where quick_check does not look (an index that disagrees with its table)', () => {
  /** Changes one key of `idempotency_by_stored_at` in place, keeping its order: quick_check passes, integrity_check does not. */
  function disagree(file: string): void {
    const db = new Database(file);
    const root = (db.prepare("SELECT rootpage FROM sqlite_master WHERE name = 'idempotency_by_stored_at'").get() as { rootpage: number })
      .rootpage;
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    db.close();
    const bytes = fs.readFileSync(file);
    const page = bytes.subarray((root - 1) * pageSize, root * pageSize);
    // A small index is one page, its root; the last cell (the newest stored_at) is its source and id after its stored_at.
    const at = page.indexOf(Buffer.from(`/index-damagee${FEW - 1}`));
    expect(at).toBeGreaterThan(8);
    expect(page[at - 1]).toBeLessThan(0xff);
    page[at - 1]! += 1; // the low byte of that stored_at: one more, still the last in order
    fs.writeFileSync(file, bytes);
    const check = new Database(file, { readonly: true });
    expect(check.pragma('quick_check', { simple: true })).toBe('ok');
    expect(check.pragma('integrity_check', { simple: true })).not.toBe('ok');
    check.close();
  }

  it('stops ingest with a 503 once the background check finds it, and the next start rebuilds it', async () => {
    const dir = tmpDir();
    await storeEvents(dir, FEW);
    disagree(path.join(dir, 'index.db'));

    let s = openStoreAt(dir, { partitions: 2 });
    try {
      await waitUntil(() => s.store.health().writable === false);
      expect(s.store.health()).toMatchObject({ writable: false, reason: expect.stringContaining('index.db is damaged') });
      // Was: the damage went unseen, so a lookup missing an event stored let a resend be stored twice.
      await expect(s.store.append([ev(FEW)])).rejects.toMatchObject({ code: 'unavailable' });
    } finally {
      await s.close();
    }
    expect(fs.existsSync(path.join(dir, 'index.db.damaged'))).toBe(true);

    s = openStoreAt(dir, { partitions: 2 });
    try {
      expect(fs.readdirSync(dir).some((f) => /^index\.db\.corrupt-\d+$/.test(f))).toBe(true);
      expect(fs.existsSync(path.join(dir, 'index.db.damaged'))).toBe(false);
      expect((await s.store.append([ev(3), ev(FEW)])).map((r) => r.duplicate)).toEqual([true, false]);
      await new Promise((r) => setTimeout(r, 300)); // the rebuilt index's own check finds nothing
      expect(s.store.health().writable).toBe(true);
    } finally {
      await s.close();
    }
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
