// Long use, measured: one engine in headless Chromium answers N chats in a row (default 200),
// each a new conversation with an image (the fixture images in turn, so encoded images and KV
// caches come and go), every fifth with a follow-up. Prints wasm memory, GPU pool memory and
// time per chat at points along the way: flat memory and time mean nothing leaks or slows down.
//   node tests/browser/soak.mjs [--chats N] [--bundle DIR]
import fs from 'node:fs';
import path from 'node:path';
import { launch, newPage, openPackage, serve, tinyBundles, ROOT } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const chats = Number(opt('--chats', '200'));
const bundle = path.resolve(opt('--bundle', path.join(tinyBundles(), 'tiny')));
const images = ['landscape.png', 'portrait.png', 'photo.jpg', 'palette.png', 'alpha.png'].map((f) => `/tests/fixtures/images/${f}`);

const site = await serve(ROOT);
const bundles = await serve(path.dirname(bundle), { cors: true });
const browser = await launch();
const page = await newPage(await browser.newContext());
await openPackage(page, site.url);
const t0 = Date.now();
const rows = await page.evaluate(async ({ url, chats, images }) => {
  const engine = await MGM.load(url);
  const blobs = await Promise.all(images.map((u) => fetch(u).then((r) => r.blob())));
  const rows = [];
  for (let i = 0; i < chats; i++) {
    const messages = [{ role: 'user', content: [{ type: 'image', image: blobs[i % blobs.length] }, { type: 'text', text: `Question ${i}: what is in this picture?` }] }];
    const start = performance.now();
    let r = await engine.chat({ messages, temperature: 0.7, seed: i, max_tokens: 8 });
    if (i % 5 === 4) {
      messages.push({ role: 'assistant', content: r.text }, { role: 'user', content: 'And the colours?' });
      r = await engine.chat({ messages, temperature: 0.7, seed: i, max_tokens: 8 });
    }
    rows.push({ ms: performance.now() - start, wasm: r.wasm_memory_bytes, device: r.device_memory_bytes });
  }
  await engine.unload();
  return rows;
}, { url: `${bundles.url}/${path.basename(bundle)}/`, chats, images });
await browser.close();
await bundles.close();
await site.close();

const mib = (b) => (b == null ? '' : (b / 2 ** 20).toFixed(1));
const marks = [1, 10, 50, 100, 150, 200, 500, 1000].filter((n) => n <= chats);
if (marks.at(-1) !== chats) marks.push(chats);
console.log(`soak: ${chats} chats with an image (every fifth with a follow-up), ${path.basename(bundle)} bundle, headless Chromium WebGPU; ${((Date.now() - t0) / 1e3).toFixed(0)} s in all`);
console.log('| after chat | wasm memory MiB | GPU pool in use MiB | ms per chat (mean of the last 10) | vs chats 1-10 |');
console.log('| ---: | ---: | ---: | ---: | ---: |');
const mean = (a) => a.reduce((s, x) => s + x, 0) / a.length;
const first = mean(rows.slice(0, 10).map((r) => r.ms));
for (const n of marks) {
  const r = rows[n - 1];
  const last10 = mean(rows.slice(Math.max(0, n - 10), n).map((x) => x.ms));
  console.log(`| ${n} | ${mib(r.wasm)} | ${mib(r.device)} | ${last10.toFixed(0)} | ${(last10 / first).toFixed(2)}x |`);
}
fs.mkdirSync(path.join(ROOT, 'target/browser-tests'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'target/browser-tests/soak.json'), JSON.stringify(rows));
