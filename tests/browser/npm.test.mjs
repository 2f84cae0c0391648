// The npm package as users take it: `npm pack` in pkg/, the tarball installed into an empty
// project with the network off, a page that imports it by its package name (an import map, as a
// site without a bundler does) answering exactly as the native CLI; and a TypeScript consumer
// calling every documented API, compiled with `tsc --noEmit --strict` against the installed
// index.d.ts (typescript pinned in this directory's lockfile).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Suite, assert, assertEq, launch, newPage, referenceAnswer, serve, tinyBundles, OUT, ROOT } from './harness.mjs';

const s = new Suite('npm package as installed from its tarball');
const project = path.join(OUT, 'npm-consumer');
const run = (cmd, args, cwd) => {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
};

await s.test('npm pack, then npm install --offline of the tarball into an empty project', async () => {
  fs.rmSync(project, { recursive: true, force: true });
  fs.mkdirSync(project, { recursive: true });
  const tarball = path.join(OUT, run('npm', ['pack', '--silent', '--pack-destination', OUT], path.join(ROOT, 'pkg')).trim().split('\n').at(-1));
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  run('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], project);
  const installed = path.join(project, 'node_modules/mgm-web');
  for (const f of ['package.json', 'src/index.js', 'src/index.d.ts', 'src/core.js', 'src/worker.js', 'wasm/mgm.js', 'wasm/mgm_bg.wasm']) {
    assert(fs.existsSync(path.join(installed, f)), `the tarball lacks ${f}`);
  }
  console.log(`     ${path.basename(tarball)}: ${(fs.statSync(tarball).size / 2 ** 20).toFixed(1)} MiB packed`);
});

await s.test('a TypeScript consumer of every documented call compiles with tsc --strict', async () => {
  for (const f of ['consumer.ts', 'tsconfig.json']) fs.copyFileSync(path.join(ROOT, 'tests/browser/consumer', f), path.join(project, f));
  const tsc = path.join(ROOT, 'tests/browser/node_modules/typescript/bin/tsc');
  run(process.execPath, [tsc, '-p', 'tsconfig.json'], project);
  // The check can fail: the same consumer with a wrong call does not compile.
  fs.appendFileSync(path.join(project, 'consumer.ts'), '\nexport const wrong = MGM.load(42);\n');
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8' });
  assert(r.status !== 0 && /consumer\.ts.*Argument of type 'number'/.test(r.stdout), `tsc accepted MGM.load(42):\n${r.stdout}`);
});

await s.test('a page importing the installed package by name answers as the native CLI', async () => {
  const bundles = tinyBundles();
  const want = referenceAnswer(path.join(bundles, 'tiny'));
  fs.writeFileSync(path.join(project, 'index.html'), `<!doctype html>
<script type="importmap">{ "imports": { "mgm-web": "./node_modules/mgm-web/src/index.js" } }</script>
<script type="module">
  import { MGM } from 'mgm-web';
  window.MGM = MGM;
</script>`);
  fs.copyFileSync(path.join(ROOT, 'tests/fixtures/images/landscape.png'), path.join(project, 'landscape.png'));
  const site = await serve(project);
  const bundle = await serve(bundles, { cors: true });
  const browser = await launch();
  try {
    const page = await newPage(await browser.newContext());
    await page.goto(`${site.url}/`);
    await page.waitForFunction(() => window.MGM);
    const r = await page.evaluate(async (u) => {
      const engine = await MGM.load(u);
      const image = await (await fetch('landscape.png')).blob();
      const result = await engine.chat({ messages: [{ role: 'user', content: [{ type: 'image', image }, { type: 'text', text: 'Describe the image.' }] }], temperature: 0, max_tokens: 16 });
      await engine.unload();
      return result;
    }, `${bundle.url}/tiny/`);
    assertEq(r.prompt_ids, want.prompt_ids, 'prompt ids');
    assertEq(r.ids, want.ids, 'generated ids');
  } finally {
    await browser.close();
    await site.close();
    await bundle.close();
  }
});

s.finish();
