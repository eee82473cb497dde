// Crash and signal tests run the built gateway as a child process, and the console test opens the built
// console (dist/console) in a browser: build both once per run, as `npm run build` does.
const { execFileSync } = require('node:child_process');
const path = require('node:path');

module.exports = async () => {
  const root = path.resolve(__dirname, '..');
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build-console.mjs')], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
};
