// Builds the web console (console/, Preact + TSX) into dist/console/: index.html, assets/app.js, assets/app.css.
// Bundled and minified by esbuild from npm packages only: nothing is loaded from a CDN, no fonts are fetched.
// Each file is written to a temporary name and renamed, so a gateway serving dist/console never reads half a file.
// Part of `npm run build`; esbuild does not type-check: `npm run typecheck:console` (in `npm run lint`) does.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const source = path.join(root, 'console');
const out = path.join(root, 'dist', 'console');

const result = await esbuild.build({
  entryPoints: [
    { in: path.join(source, 'main.tsx'), out: 'app' },
    { in: path.join(source, 'styles.css'), out: 'app' },
  ],
  outdir: path.join(out, 'assets'),
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022', 'chrome110', 'firefox110', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  tsconfig: path.join(source, 'tsconfig.json'),
  // Only what console/ imports from node_modules goes in; a URL import would fail the build rather than load at run time.
  platform: 'browser',
  legalComments: 'eof',
  logLevel: 'warning',
  write: false,
});

fs.mkdirSync(path.join(out, 'assets'), { recursive: true });
const files = [
  ...result.outputFiles.map((f) => ({ path: f.path, contents: f.contents })),
  { path: path.join(out, 'index.html'), contents: fs.readFileSync(path.join(source, 'index.html')) },
];
for (const file of files) {
  const temporary = `${file.path}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, file.contents);
  fs.renameSync(temporary, file.path);
}
const sizes = files.map((f) => `${path.relative(root, f.path)} ${(f.contents.length / 1024).toFixed(1)} KiB`);
console.log(`console built: ${sizes.join(', ')}`);
