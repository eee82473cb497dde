import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import type { CloudEvent } from '../../../src/cloudevents/event';
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
const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', syscall: 'write' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('turns writable again by a probe write once the file system takes one, without any request, and takes the next event at the next offset', async () => {
  const dir = tmpDir();
  const s = openStoreAt(dir, { writeProbeIntervalMs: 50 });
  try {
    await s.store.append([ev('a0')]);
    jest.spyOn(fs, 'write').mockImplementationOnce(((...args: unknown[]) => {
      process.nextTick(args[args.length - 1] as (e: Error) => void, enospc());
    }) as unknown as typeof fs.write);
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
  const s = openStoreAt(tmpDir(), { log, writeProbeIntervalMs: 60_000 });
  try {
    jest.spyOn(fs, 'write').mockImplementation(((...args: unknown[]) => {
      process.nextTick(args[args.length - 1] as (e: Error) => void, enospc());
    }) as unknown as typeof fs.write);
    for (let i = 0; i < 20; i++) await expect(s.store.append([ev(`refused-${i}`)])).rejects.toMatchObject({ code: 'unavailable' });
    expect(lines.filter((l) => l.msg === 'log write failed')).toHaveLength(1);
  } finally {
    jest.restoreAllMocks();
    await s.close();
  }
});
