import fs from 'node:fs';
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

async function storeEvents(dir: string): Promise<void> {
  const s = openStoreAt(dir, { partitions: 2 });
  try {
    for (let i = 0; i < EVENTS; i += 50) await s.store.append(Array.from({ length: 50 }, (_, k) => ev(i + k)));
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
