#!/usr/bin/env node
// The `herald` command (package.json "bin"): runs the compiled CLI in dist/. In a fresh checkout
// (npm install, no build yet) it runs `npm run build` first, once, with a note on stderr; the
// build's own output goes to stderr too, so stdout stays the command's (--json stays parseable).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const entry = path.join(root, 'dist', 'cli', 'main.js');

if (!fs.existsSync(entry)) {
  process.stderr.write('herald: dist/ is not built yet in ' + root + '; building it first (npm run build)…\n');
  const { spawnSync } = require('node:child_process');
  const windows = process.platform === 'win32';
  const build = spawnSync(windows ? 'npm.cmd' : 'npm', ['run', '--silent', 'build'], {
    cwd: root,
    stdio: ['ignore', 2, 2],
    shell: windows,
  });
  if (build.status !== 0 || !fs.existsSync(entry)) {
    const why = build.error ? build.error.message : 'see above';
    process.stderr.write('herald: the build failed (' + why + '); run npm install, then npm run build, in ' + root + '\n');
    process.exit(1);
  }
}

require(entry).main();
