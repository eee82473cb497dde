import fs from 'node:fs';
import path from 'node:path';
import { configTable } from '../../src/config';

const readme = fs.readFileSync(path.resolve(__dirname, '..', '..', 'README.md'), 'utf8');

describe('README', () => {
  it('carries the configuration table generated from the config schema', () => {
    expect(readme).toContain(configTable());
  });

  it('keeps the two-command quick start', () => {
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm test');
  });
});
