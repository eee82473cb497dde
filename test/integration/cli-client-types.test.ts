import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * src/client/herald-api.d.ts (the types the CLI's client is written against) is generated from
 * openapi/openapi.yaml and committed: it must be what the generator makes of the contract today.
 */
const ROOT = path.resolve(__dirname, '..', '..');
const COMMITTED = path.join(ROOT, 'src', 'client', 'herald-api.d.ts');
const run = promisify(execFile);

afterAll(cleanupTmpDirs);

describe('the generated API types of src/client', () => {
  it('are up to date with openapi/openapi.yaml', async () => {
    const fresh = path.join(tmpDir(), 'herald-api.d.ts');
    const cli = path.join(path.dirname(require.resolve('openapi-typescript/package.json')), 'bin', 'cli.js');
    await run(process.execPath, [cli, path.join(ROOT, 'openapi', 'openapi.yaml'), '--default-non-nullable', 'false', '-o', fresh], {
      cwd: ROOT,
    });
    if (fs.readFileSync(fresh, 'utf8') !== fs.readFileSync(COMMITTED, 'utf8')) {
      throw new Error(
        'src/client/herald-api.d.ts is out of date with openapi/openapi.yaml: run `npm run generate:api-types`, ' +
          'then check that `npx tsc -p tsconfig.json --noEmit` still passes (src/cli uses these types) and commit the file',
      );
    }
  });
});
