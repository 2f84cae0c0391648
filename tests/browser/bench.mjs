// The browser benchmark, driven headless: for each bundle, the bench page's figures next to the
// native CLI's on the same bundle, same image and prompt (the baseline, run in the same command).
//   node tests/browser/bench.mjs [BUNDLE_DIR...] [--tokens N] [--passes N] [--no-image] [--native-backend cpu|wgpu]
//                                [--no-subgroups]
// Without a bundle it benchmarks the tiny demo bundle. The last of --passes runs is reported (the
// first compiles kernels); the native baseline runs once, as a user would run the CLI.
// --no-subgroups first runs the page on an engine loaded without subgroup operations (a row of its own).
// --profile runs the engine on the page thread and prints where that thread spent the last pass
// (functions by self time, from Chromium's sampling profiler; wasm function names need a build
// that keeps them: scripts/build-pkg.sh --names).
import fs from 'node:fs';
import path from 'node:path';
import { buildSite, launch, mgm, newPage, serve, OUT } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i < 0 ? dflt : args.splice(i, 2)[1];
};
const tokens = Number(opt('--tokens', '32'));
const nativeBackend = opt('--native-backend', 'cpu');
const passes = Number(opt('--passes', '2'));
const flag = (name) => args.includes(name) && !!args.splice(args.indexOf(name), 1);
const noImage = flag('--no-image');
const withoutSubgroups = flag('--no-subgroups');
const profile = flag('--profile');
const site = buildSite(path.join(OUT, 'bench-site'));
const bundles = args.length ? args.map((a) => path.resolve(a)) : [path.join(site, 'models/demo')];
for (const [k, b] of bundles.entries()) if (k > 0 || args.length) fs.symlinkSync(b, path.join(site, 'models', `bench-${k}`));

const server = await serve(site);
const browser = await launch();
const context = await browser.newContext();
const page = await newPage(context);
page.on('console', (m) => m.text().startsWith('bench:') && console.log(`     ${m.text()}`));
const cdp = profile ? await context.newCDPSession(page) : null;
if (profile) {
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  await page.exposeFunction('__beforeLastPass', () => cdp.send('Profiler.start'));
}
const rows = [];

/// The page thread's busiest functions (self time) in a CPU profile.
function printProfile({ nodes, samples, timeDeltas }) {
  const byId = new Map(nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map();
  let total = 0;
  samples.forEach((id, i) => {
    const c = byId.get(id);
    const key = `${c.functionName || '(anonymous)'} ${c.url.split('/').pop()}`;
    self.set(key, (self.get(key) ?? 0) + timeDeltas[i] / 1e3);
    total += timeDeltas[i] / 1e3;
  });
  console.log(`     profile of the last pass, page thread, ${total.toFixed(0)} ms sampled:`);
  for (const [k, ms] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 20)) console.log(`     ${ms.toFixed(1).padStart(9)} ms  ${k.slice(0, 140)}`);
}
for (const [k, dir] of bundles.entries()) {
  const name = args.length ? `bench-${k}` : 'demo';
  const open = async (query) => {
    await page.goto(`${server.url}/bench.html?bundle=models/${name}/&tokens=${tokens}&passes=${passes}${noImage ? '&image=none' : ''}${profile ? '&worker=0' : ''}${query}`);
    const r = await page.evaluate(() => window.__bench);
    if (r.error) throw new Error(`${dir}: ${r.error}`);
    if (profile) printProfile((await cdp.send('Profiler.stop')).profile);
    return r;
  };
  const without = withoutSubgroups ? await open('&subgroups=0') : null;
  const r = await open('');
  const png = path.join(site, 'bench.png');
  const t0 = Date.now();
  const image = noImage ? [] : ['--image', png];
  const native = JSON.parse(mgm(['generate', '--model', dir, ...image, '--prompt', 'Describe the image in detail.', '--max-new-tokens', String(tokens), '--json', '--backend', nativeBackend]));
  rows.push({ dir, r, without, native, native_wall_s: (Date.now() - t0) / 1e3 });
}
await browser.close();
await server.close();

const adapter = rows[0]?.r.adapter;
console.log(`browser: headless Chromium, WebGPU adapter ${adapter?.vendor} ${adapter?.architecture}${adapter?.fallback ? ' (software)' : ''}, pass ${passes} of ${passes}; native baseline: mgm generate --backend ${nativeBackend}; ${noImage ? 'text only' : 'one image'}, ${tokens} new tokens`);
console.log('| bundle | preset | MiB | run | load s | shards s (vs native load) | compile s | wasm MiB, shards in | wasm MiB, peak | image encode ms | prompt tokens | prefill tok/s | vs native | decode tok/s | vs native | first token, 1st question ms | 2nd question ms | follow-up ms |');
console.log('| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
const f = (v, d = 2) => (v == null || Number.isNaN(v) ? '' : v.toFixed(d));
const ratio = (a, b) => (a == null ? '' : `${f(a / b)}x`);
for (const { dir, r: last, without, native: n } of rows) {
  const t = n.usage;
  const name = path.basename(dir);
  const size = `${name} | ${last.preset} | ${f(last.bytes / 2 ** 20, 1)}`;
  console.log(`| ${size} | native ${nativeBackend} | ${f(t.load_ms / 1e3)} | | | | | ${f(t.image_encode_ms, 0)} | ${Math.round((t.prefill_tokens_per_s * t.prefill_ms) / 1e3)} | ${f(t.prefill_tokens_per_s)} | 1.00x | ${f(t.decode_tokens_per_s)} | 1.00x | ${f(t.image_encode_ms + t.prefill_ms, 0)} | | |`);
  for (const r of [without, last].filter(Boolean)) {
    const follow = r.follow_ttft_ms == null ? '' : `${f(r.follow_ttft_ms, 0)} (${ratio(r.follow_ttft_ms, r.last_ttft_ms)}, ${r.follow_cached} cached)`;
    console.log(`| ${size} | browser, subgroups ${r.subgroups} | ${f(r.load_s)} | ${f(r.shards_s)} (${ratio(r.shards_s, t.load_ms / 1e3)}) | ${f(r.compile_s)} | ${f(r.shards_memory_mib, 1)} | ${f(r.wasm_memory_mib, 1)} | ${f(r.image_encode_ms, 0)} | ${r.prompt_tokens ?? ''} | ${f(r.prefill_tokens_per_s)} | ${ratio(r.prefill_tokens_per_s, t.prefill_tokens_per_s)} | ${f(r.decode_tokens_per_s)} | ${ratio(r.decode_tokens_per_s, t.decode_tokens_per_s)} | ${f(r.first_ttft_ms, 0)} | ${passes > 1 ? f(r.last_ttft_ms, 0) : ''} | ${follow} |`);
  }
}
