import fs from 'node:fs';
import path from 'node:path';
import { BackupError, copySegments } from '../../../src/backup';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

afterAll(cleanupTmpDirs);

const name = (n: number) => `${String(n * 1000).padStart(20, '0')}.seg`;

describe('backup: copying the log while retention deletes it', () => {
  it('copies every segment, oldest first, as it is', () => {
    const from = tmpDir();
    const to = tmpDir();
    for (const n of [0, 1, 2]) fs.writeFileSync(path.join(from, name(n)), `segment ${n}`);
    expect(copySegments(from, to)).toBe(0);
    expect(fs.readdirSync(to).sort()).toEqual([name(0), name(1), name(2)]);
    expect(fs.readFileSync(path.join(to, name(2)), 'utf8')).toBe('segment 2');
  });

  it('counts segments retention deleted before their turn (oldest first), keeping the copy one run of segments', () => {
    const from = tmpDir();
    const to = tmpDir();
    // Listed, then deleted by retention (oldest first) before they were copied.
    for (const n of [3, 4]) fs.writeFileSync(path.join(from, name(n)), `segment ${n}`);
    expect(copySegments(from, to, [0, 1, 2, 3, 4].map(name))).toBe(3);
    expect(fs.readdirSync(to).sort()).toEqual([name(3), name(4)]);
  });

  it('abandons the backup when a segment goes while older ones remain: that is not retention', () => {
    const from = tmpDir();
    const to = tmpDir();
    for (const n of [0, 1, 3, 4]) fs.writeFileSync(path.join(from, name(n)), `segment ${n}`);
    expect(() => copySegments(from, to, [0, 1, 2, 3, 4].map(name))).toThrow(BackupError);
    expect(() => copySegments(from, to, [0, 1, 2, 3, 4].map(name))).toThrow(/disappeared while older segments remain/);
  });

  it('copies the segments started after the listing when retention deleted every listed one (the newest, rolled, too)', () => {
    const from = tmpDir();
    const to = tmpDir();
    // Listed 0 and 1; retention rolled 1 (starting 2) and deleted 0 and 1 before their turn.
    fs.writeFileSync(path.join(from, name(2)), 'segment 2');
    expect(copySegments(from, to, [0, 1].map(name))).toBe(2);
    expect(fs.readdirSync(to).sort()).toEqual([name(2)]);
  });

  it('copies whole, and keeps, a segment retention deletes while it is being copied', () => {
    const from = tmpDir();
    const to = tmpDir();
    for (const n of [0, 1]) fs.writeFileSync(path.join(from, name(n)), `segment ${n}`);
    const mtime = new Date('2026-01-02T03:04:05Z');
    fs.utimesSync(path.join(from, name(0)), mtime, mtime);
    const read = fs.readSync;
    // Retention deletes segment 0 once the copy has it open (its first read), as a running gateway may.
    const spy = jest.spyOn(fs, 'readSync').mockImplementation((...args: Parameters<typeof fs.readSync>) => {
      const gone = path.join(from, name(0));
      if (fs.existsSync(gone)) fs.rmSync(gone);
      return (read as (...a: Parameters<typeof fs.readSync>) => number)(...args);
    });
    try {
      expect(copySegments(from, to, [0, 1].map(name))).toBe(0);
    } finally {
      spy.mockRestore();
    }
    expect(fs.readdirSync(to).sort()).toEqual([name(0), name(1)]);
    expect(fs.readFileSync(path.join(to, name(0)), 'utf8')).toBe('segment 0');
    expect(fs.statSync(path.join(to, name(0))).mtime.getTime()).toBe(mtime.getTime());
  });
});
