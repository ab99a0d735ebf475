// Builds the browser app into dist/ (app.js, app.css), which the quire binary embeds.
// `node build.mjs --check` builds in memory and fails if dist/ differs from the sources: the
// bundle is committed (so running Quire needs no Node), and CI holds it to the sources.
import * as esbuild from 'esbuild';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes('--check');

const result = await esbuild.build({
  entryPoints: [path.join(here, 'src/main.ts'), path.join(here, 'src/app.css')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  outdir: path.join(here, 'dist'),
  entryNames: 'app',
  legalComments: 'none',
  write: false,
  logLevel: 'warning',
});

let stale = [];
for (const file of result.outputFiles) {
  const name = path.basename(file.path);
  const target = path.join(here, 'dist', name);
  if (check) {
    const current = await readFile(target).catch(() => Buffer.alloc(0));
    if (!current.equals(Buffer.from(file.contents))) stale.push(name);
  } else {
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, file.contents);
    console.log(`web/dist/${name}: ${file.contents.length} bytes`);
  }
}
if (stale.length) {
  console.error(`web/dist is stale (${stale.join(', ')}): run \`npm --prefix web run build\` and commit it`);
  process.exit(1);
}
