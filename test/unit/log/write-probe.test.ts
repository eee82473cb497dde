import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import type { CloudEvent } from '../../../src/cloudevents/event';
import { enospc, refuseWrites } from '../../helpers/disk-faults';
import { openStoreAt } from '../../helpers/log-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/**
 * A log that failed a write is unready until a write succeeds. A balancer that follows /readyz sends
 * nothing meanwhile, so the log tries a write of its own beside the segments (storage probe: 15 s after
 * the disk was freed, /readyz still said "log write failed: ENOSPC", and would have for good).
 * Faults are injected at the fs boundary; the log and its files are real.
 */

afterAll(cleanupTmpDirs);
afterEach(() => jest.restoreAllMocks());

const ev = (id: string): CloudEvent => ({
  attributes: { specversion: '1.0', id, source: '/probe', type: 'probe.t' },
  data: { kind: 'json', value: { id } },
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('turns writable again by a probe write once the file system takes one, without any request, and takes the next event at the next offset', async () => {
  const dir = tmpDir();
  const s = openStoreAt(dir, { writeProbeFirstMs: 50 });
  try {
    await s.store.append([ev('a0')]);
    refuseWrites({ once: true });
    // The disk is still full for the probe: it opens its file and is refused.
    const opened = jest.spyOn(fs.promises, 'open').mockRejectedValue(enospc());
    await expect(s.store.append([ev('refused')])).rejects.toMatchObject({ code: 'unavailable' });

    await sleep(300);
    expect(opened.mock.calls.length).toBeGreaterThan(1); // it keeps trying
    expect(s.store.health()).toEqual({ writable: false, reason: 'log write failed: ENOSPC' });

    opened.mockRestore(); // space was freed
    for (let i = 0; i < 100 && !s.store.health().writable; i++) await sleep(20);
    expect(s.store.health()).toEqual({ writable: true });
    expect(fs.readdirSync(path.join(dir, 'wal'))).not.toContain('.write-probe'); // deleted after its sync

    await s.store.append([ev('a1')]);
    expect(s.store.read(0, 0, 10).events.map((e) => [e.offset, e.event.attributes.id])).toEqual([
      [0, 'a0'],
      [1, 'a1'],
    ]);
  } finally {
    await s.close();
  }
});

it('logs one error line when the log turns unwritable, not one per refused write', async () => {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const s = openStoreAt(tmpDir(), { log, writeProbeFirstMs: 60_000 });
  try {
    refuseWrites();
    for (let i = 0; i < 20; i++) await expect(s.store.append([ev(`refused-${i}`)])).rejects.toMatchObject({ code: 'unavailable' });
    expect(lines.filter((l) => l.msg === 'log write failed')).toHaveLength(1);
  } finally {
    jest.restoreAllMocks();
    await s.close();
  }
});

it('waits twice as long for each probe that said writable while writes still failed (re-probe: /readyz flapped every 5 s)', async () => {
  const dir = tmpDir();
  const s = openStoreAt(dir, { writeProbeFirstMs: 100 });
  try {
    refuseWrites({ under: path.join(dir, 'wal', '') });
    // A balancer that follows readiness: a request only while the log says writable, each one refused.
    await s.store.append([ev('first')]).catch(() => undefined);
    let turns = 0;
    const deadline = Date.now() + 1600;
    while (Date.now() < deadline) {
      if (s.store.health().writable) {
        turns++;
        await s.store.append([ev(`x-${turns}`)]).catch(() => undefined);
      }
      await sleep(5);
    }
    // Probes after 100 ms, then 200, 400 and 800 ms: at most four turns to ready in 1.6 s (every 100 ms would be 15).
    expect(turns).toBeGreaterThanOrEqual(2);
    expect(turns).toBeLessThanOrEqual(4);
  } finally {
    jest.restoreAllMocks();
    await s.close();
  }
});

/** A store whose log refused a 300 KB event (its writes refused until `disk.free()`); probes every 50 ms. */
async function refusedBig() {
  const dir = tmpDir();
  const s = openStoreAt(dir, { writeProbeFirstMs: 50 });
  const disk = refuseWrites({ under: path.join(dir, 'wal', '') });
  const big = { ...ev('big'), data: { kind: 'json' as const, value: 'x'.repeat(300_000) } };
  await expect(s.store.append([big])).rejects.toMatchObject({ code: 'unavailable' });
  return { s, disk, big };
}

it('does not call the log writable while the file system has less room than the write it refused', async () => {
  const { s, disk, big } = await refusedBig();
  try {
    // 200 KiB free: room for the probe's 64 KiB, not for the 300 KB event.
    const statfs = jest.spyOn(fs.promises, 'statfs').mockResolvedValue({ bavail: 50, bsize: 4096, blocks: 1_000_000 } as fs.StatsFs);
    await sleep(300);
    expect(statfs).toHaveBeenCalled();
    expect(s.store.health().writable).toBe(false);
    statfs.mockRestore(); // space freed
    disk.free();
    for (let i = 0; i < 100 && !s.store.health().writable; i++) await sleep(20);
    expect(s.store.health().writable).toBe(true);
    await s.store.append([big]);
  } finally {
    jest.restoreAllMocks();
    await s.close();
  }
});

it('calls the log writable again once half the file system is free, when the write it refused was larger (disk probe: a joined group larger than the disk kept /readyz 503 for good)', async () => {
  const { s, disk } = await refusedBig();
  try {
    disk.free();
    // A 400 KiB file system, 280 KiB of it free: never room for the 300 KB refused, room for half the disk and the probe.
    jest.spyOn(fs.promises, 'statfs').mockResolvedValue({ bavail: 70, bsize: 4096, blocks: 100 } as fs.StatsFs);
    for (let i = 0; i < 100 && !s.store.health().writable; i++) await sleep(20);
    expect(s.store.health().writable).toBe(true);
  } finally {
    jest.restoreAllMocks();
    await s.close();
  }
});

it('counts the failures left unlogged on the line that says the log is writable again, not on the next failure', async () => {
  const lines: { msg: string; failuresSinceLastLine?: number }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const dir = tmpDir();
  const s = openStoreAt(dir, { log, writeProbeFirstMs: 60_000 });
  try {
    const disk = refuseWrites({ under: path.join(dir, 'wal', '') });
    for (let i = 0; i < 5; i++) await s.store.append([ev(`a-${i}`)]).catch(() => undefined);
    disk.free();
    await s.store.append([ev('ok')]);
    jest.restoreAllMocks();
    refuseWrites({ under: path.join(dir, 'wal', '') });
    await s.store.append([ev('b')]).catch(() => undefined);
    const said = lines.filter((l) => /log (write failed|is writable again)/.test(l.msg)).map((l) => [l.msg, l.failuresSinceLastLine]);
    expect(said).toEqual([
      ['log write failed', undefined],
      ['log is writable again', 4],
      ['log write failed', undefined],
    ]);
  } finally {
    jest.restoreAllMocks();
    await s.close();
  }
});
