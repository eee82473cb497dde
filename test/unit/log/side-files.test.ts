/**
 * skip-corrupt's side file is the only copy of the bytes it set aside. A second incident at the
 * same place (a flip inside the padding frame it wrote, or a power cut while the padding was being
 * written) must write a new side file, never over the first.
 */
import fs from 'node:fs';
import { encodeRecord, type FrameKey } from '../../../src/wal/record';
import { openSegmentLog, type SegmentLog } from '../../../src/wal/segment-log';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);
const open: SegmentLog[] = [];
afterEach(() => {
  for (const log of open.splice(0)) log.close();
});
let key: FrameKey;
function openLog(dir: string): SegmentLog {
  const log = openSegmentLog({ dir, segmentBytes: 1 << 20, durable: true, warn: () => undefined, error: () => undefined });
  open.push(log);
  key = log.key;
  return log;
}
function frame(offset: number): Buffer {
  return encodeRecord(
    {
      partition: 0,
      offset,
      storedAt: 1_700_000_000_000,
      event: {
        attributes: { specversion: '1.0', id: `e${offset}`, source: '/s', type: 't' },
        data: { kind: 'json', value: 'v'.repeat(200) },
      },
    },
    key,
  );
}
function poke(file: string, at: number, byte: number): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from([byte]), 0, 1, at);
  fs.closeSync(fd);
}

it('a second skip-corrupt at the same byte never overwrites the first side file', async () => {
  const dir = tmpDir();
  let log = openLog(dir);
  const frames = [frame(0), frame(1), frame(2)];
  await log.append(
    frames,
    frames.reduce((n, f) => n + f.length, 0),
  );
  const file = log.segmentFiles()[0]!;
  log.close();
  open.splice(0);
  const at = frames[0]!.length;
  poke(file, at + 30, 0x5a); // record 1 is damaged
  const original = fs.readFileSync(file).subarray(at, at + frames[1]!.length);

  log = openLog(dir);
  log.scan(0, () => undefined, { skipCorrupt: true });
  log.close();
  open.splice(0);
  const side = `${file}.corrupt-${at}`;
  expect(fs.readFileSync(side).equals(original)).toBe(true);

  poke(file, at + 100, 0x01); // later, one bit of the padding frame flips
  log = openLog(dir);
  log.scan(0, () => undefined, { skipCorrupt: true });
  const kept = fs
    .readdirSync(dir)
    .filter((f) => f.includes('.corrupt-'))
    .map((f) => fs.readFileSync(`${dir}/${f}`));
  expect(kept.some((b) => b.equals(original))).toBe(true);
});
