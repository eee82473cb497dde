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
});
