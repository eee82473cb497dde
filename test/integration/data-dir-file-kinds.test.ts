import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { postBinary, runGatewayUntilExit, segmentFiles, spawnGateway } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

/**
 * A directory where a data dir's file belongs (start-up probe: herald.db and index.db said "SQLITE_CANTOPEN unable
 * to open database file", herald.json and a segment "EISDIR: illegal operation on a directory", naming no path; the
 * spare of offsets.reserved crashed the start with a stack trace and exit 1) is refused with exit 2 and one line
 * naming it, and left where it is.
 */
describe('a directory in place of a data dir file', () => {
  let stopped: string;

  beforeAll(async () => {
    stopped = tmpDir();
    const gw = await spawnGateway({ HERALD_DATA_DIR: stopped });
    try {
      for (let i = 0; i < 5; i++) expect((await postBinary(gw.url, { source: '/kinds', id: `k${i}` })).status).toBe(202);
    } finally {
      gw.child.kill('SIGTERM');
      expect(await gw.exited).toBe(0);
    }
  });

  const cases: [string, (dataDir: string) => string][] = [
    ['herald.db', (d) => path.join(d, 'herald.db')],
    ['index.db', (d) => path.join(d, 'index.db')],
    ['herald.json', (d) => path.join(d, 'herald.json')],
    ['a segment', (d) => segmentFiles(d)[0]!],
    ['wal/offsets.reserved.spare', (d) => path.join(d, 'wal', 'offsets.reserved.spare')],
  ];

  it.each(cases)('%s: refused with exit 2, naming it, the directory kept', async (name, target) => {
    const dataDir = tmpDir();
    fs.cpSync(stopped, dataDir, { recursive: true });
    const file = target(dataDir);
    expect(fs.statSync(file).isFile()).toBe(true);
    fs.rmSync(file);
    fs.mkdirSync(file);
    fs.writeFileSync(path.join(file, 'not-herald'), 'x');

    const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir });
    expect(refused.code).toBe(2);
    const lines = refused.stderr.split('\n').filter((l) => l.trim() !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(`^herald: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is a directory, not a file: .*Move it away`),
    );
    expect(fs.readFileSync(path.join(file, 'not-herald'), 'utf8')).toBe('x');

    // Moved away, the data dir starts again where it was (index.db rebuilt, the spare made again): k0 is a duplicate.
    if (!['herald.db', 'a segment'].includes(name)) {
      fs.rmSync(file, { recursive: true });
      const again = await spawnGateway({ HERALD_DATA_DIR: dataDir });
      try {
        expect((await postBinary(again.url, { source: '/kinds', id: 'k0' })).status).toBe(200);
      } finally {
        again.child.kill('SIGTERM');
        expect(await again.exited).toBe(0);
      }
    }
  });
});

/**
 * The names Herald writes a file under before renaming it into place: a named pipe at wal/offsets.reserved.tmp hung
 * the start for good (open() of a pipe with no reader, no line logged; re-probe t9fifo), a directory there started
 * "ready" and then answered 503 to every publish under fsync=interval (re-probe t9res).
 */
describe('a non-file at a temporary name Herald writes', () => {
  it.each([
    ['a named pipe', (file: string) => execFileSync('mkfifo', [file])],
    ['a directory', (file: string) => fs.mkdirSync(file)],
  ])(
    '%s at wal/offsets.reserved.tmp: refused with exit 2, naming it',
    async (kind, make) => {
      const dataDir = tmpDir();
      fs.mkdirSync(path.join(dataDir, 'wal'));
      const file = path.join(dataDir, 'wal', 'offsets.reserved.tmp');
      make(file);

      const refused = await runGatewayUntilExit({ HERALD_DATA_DIR: dataDir, HERALD_FSYNC: 'interval' });
      expect(refused.code).toBe(2);
      expect(refused.stderr.trim()).toMatch(
        new RegExp(`^herald: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is ${kind}, not a file: .*Move it away`),
      );
    },
    20_000,
  );
});
