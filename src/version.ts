import fs from 'node:fs';
import path from 'node:path';

/** From package.json, two levels up from both `src/` (ts-jest) and `dist/` (build): one source of truth. */
export const HERALD_VERSION: string = (
  JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', 'package.json'), 'utf8')) as { version: string }
).version;
