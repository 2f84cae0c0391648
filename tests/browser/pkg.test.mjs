// The npm package in headless Chromium on WebGPU: the tiny MGM bundle served from 127.0.0.1
// must give exactly the native CLI's greedy answer, and every failure must be a clear error that
// leaves the engine usable.
import fs from 'node:fs';
import path from 'node:path';
import { IMAGE, PROMPT, Suite, assert, assertEq, launch, mgm, newPage, openPackage, referenceAnswer, serve, tinyBundles, ROOT } from './harness.mjs';

const dir = tinyBundles();
const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'tiny/manifest.json'), 'utf8'));
const want = referenceAnswer(path.join(dir, 'tiny'));

const site = await serve(ROOT);
let bundles = await serve(dir, { cors: true });
const browser = await launch();
const page = await newPage(await browser.newContext());
await openPackage(page, site.url);
const url = (name) => `${bundles.url}/${name}/`;
const s = new Suite('mgm-web package (headless Chromium, WebGPU)');

await s.test('checkSupport reports the WebGPU adapter and its limits', async () => {
  const r = await page.evaluate(() => MGM.checkSupport());
  assert(r.supported, JSON.stringify(r));
  assert(r.limits.maxStorageBufferBindingSize >= 128 << 20, JSON.stringify(r.limits));
  console.log(`     adapter ${JSON.stringify(r.adapter)}, shader-f16 ${r.shaderF16}`);
});

await s.test('load streams the bundle with ordered progress that sums to its size', async () => {
  const r = await page.evaluate(async (u) => {
    const events = [];
    window.engine = await MGM.load(u, { onProgress: (p) => events.push(p) });
    // Subgroups, as the adapter offers them: the engine uses them where their size is fixed.
    const a = await navigator.gpu.requestAdapter();
    const fixed = a.features.has('subgroups') && a.info.subgroupMinSize === a.info.subgroupMaxSize;
    return { events, info: engine.info, subgroups: fixed ? a.info.subgroupMinSize : 0 };
  }, url('tiny'));
  assertEq(r.info.subgroups, r.subgroups, 'subgroup size in use');
  const total = manifest.shards.reduce((a, x) => a + x.size, 0);
  assert(manifest.shards.length >= 3, `only ${manifest.shards.length} shards`);
  for (const phase of ['download', 'verify', 'upload']) {
    const ev = r.events.filter((e) => e.phase === phase);
    assert(ev.length > 0, `no ${phase} events`);
    assert(ev.every((e, i) => e.total === total && (i === 0 || e.loaded >= ev[i - 1].loaded)), `${phase} not monotonic`);
    assertEq(ev.at(-1).loaded, total, `${phase} bytes`);
  }
  assertEq(r.events[0].phase, 'download', 'first phase');
  assertEq(r.events.at(-1), { phase: 'compile', loaded: 1, total: 1 }, 'last event');
  const lastUpload = r.events.findLastIndex((e) => e.phase === 'upload');
  const firstCompile = r.events.findIndex((e) => e.phase === 'compile');
  assert(firstCompile > lastUpload, `compile (event ${firstCompile}) must follow the last upload (event ${lastUpload})`);
  assert(!r.info.from_cache && r.info.wasm_memory_bytes > 0, JSON.stringify(r.info));
  console.log(`     ${manifest.shards.length} shards, ${total} bytes, load ${r.info.load_ms.toFixed(0)} ms, wasm memory ${(r.info.wasm_memory_bytes / 2 ** 20).toFixed(1)} MiB, ${r.info.device}, subgroups ${r.info.subgroups}`);
});

await s.test('greedy chat with an image streams exactly the native CLI answer', async () => {
  const r = await page.evaluate(async () => {
    const deltas = [];
    const stream = await window.engine.chat({
      messages: [{ role: 'user', content: [{ type: 'image', image: await (await fetch('/tests/fixtures/images/landscape.png')).blob() }, { type: 'text', text: 'Describe the image.' }] }],
      temperature: 0, max_tokens: 16, stream: true, attention: true,
    });
    for await (const d of stream) deltas.push(d);
    const result = await stream.result;
    return { deltas, result, attention: Array.from(result.images[0].attention.slice(0, 4)), attention_len: result.images[0].attention.length };
  });
  assertEq(r.result.prompt_ids, want.prompt_ids, 'prompt ids');
  assertEq(r.result.ids, want.ids, 'generated ids');
  assertEq(r.result.text, want.text, 'text');
  assertEq(r.deltas.join(''), want.text, 'streamed text');
  assertEq(r.result.finish_reason, want.finish_reason, 'finish reason');
  const u = r.result.usage;
  assert(u.completion_tokens === want.ids.length && u.prompt_tokens > 0 && u.image_encode_ms > 0 && u.decode_tokens_per_s > 0, JSON.stringify(u));
  const img = r.result.images[0];
  assertEq(r.attention_len, img.tokens * img.window * img.window, 'attention size');
  console.log(`     ${u.prompt_tokens} prompt tokens, image ${u.image_encode_ms.toFixed(0)} ms, prefill ${u.prefill_tokens_per_s.toFixed(1)} tok/s, decode ${u.decode_tokens_per_s.toFixed(1)} tok/s`);
});

await s.test('a follow-up reuses the conversation and answers as a fresh engine does; resetChat starts over', async () => {
  const r = await page.evaluate(async () => {
    const image = await (await fetch('/tests/fixtures/images/landscape.png')).blob();
    const first = [{ role: 'user', content: [{ type: 'image', image }, { type: 'text', text: 'Describe the image.' }] }];
    const opts = { temperature: 0, max_tokens: 8 };
    await engine.resetChat();
    const a = await engine.chat({ messages: first, ...opts });
    const follow = [...first, { role: 'assistant', content: a.text }, { role: 'user', content: 'What colours are in it?' }];
    const b = await engine.chat({ messages: follow, ...opts });
    const again = await engine.chat({ messages: follow, ...opts }); // Regenerate
    await engine.resetChat();
    const fresh = await engine.chat({ messages: follow, ...opts });
    return { a: a.usage, b: b.usage, again: again.usage, fresh: fresh.usage, ids: [b.ids, again.ids, fresh.ids] };
  });
  assertEq(r.a.cached_tokens, 0, 'a new chat has nothing cached');
  assert(r.b.cached_tokens >= r.a.prompt_tokens - 1 && r.b.image_encode_ms === 0, `follow-up: ${JSON.stringify(r.b)}`);
  assertEq(r.again.cached_tokens, r.again.prompt_tokens - 1, 'regenerate prefills one position');
  assertEq(r.fresh.cached_tokens, 0, 'after resetChat nothing is cached');
  assertEq(r.ids[0], r.ids[2], 'follow-up ids = fresh recompute ids');
  assertEq(r.ids[1], r.ids[2], 'regenerated ids = fresh recompute ids');
  console.log(`     first token: new chat ${r.a.time_to_first_token_ms.toFixed(0)} ms, follow-up ${r.b.time_to_first_token_ms.toFixed(0)} ms (${r.b.cached_tokens} of ${r.b.prompt_tokens} cached), same conversation recomputed ${r.fresh.time_to_first_token_ms.toFixed(0)} ms`);
});

await s.test('an image decoded by the browser (createImageBitmap) gives the same answer', async () => {
  const r = await page.evaluate(() => ask(engine, { decode: 'browser' }));
  assertEq(r.ids, want.ids, 'ids with browser-decoded pixels');
});

await s.test('an image given by a URL relative to the page is fetched from there', async () => {
  const r = await page.evaluate(() => engine.chat({
    messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: '../fixtures/images/landscape.png' } }, { type: 'text', text: 'Describe the image.' }] }],
    temperature: 0, max_tokens: 16,
  }));
  assertEq(r.ids, want.ids, 'ids with an image URL');
});

await s.test('the same API runs in the page thread ({ worker: false }), here without subgroups', async () => {
  const r = await page.evaluate(async (u) => {
    const local = await MGM.load(u, { worker: false, cache: false, subgroups: false });
    const out = await ask(local);
    await local.unload();
    return { ...out, subgroups: local.info.subgroups };
  }, url('tiny'));
  assertEq(r.subgroups, 0, 'subgroups asked off');
  assertEq(r.ids, want.ids, 'in-thread ids');
});

await s.test('abort stops decoding within one token', async () => {
  const r = await page.evaluate(async () => {
    const controller = new AbortController();
    let seen = 0, afterAbort = 0;
    const result = await ask(engine, {
      max_tokens: 64, signal: controller.signal,
      onToken: () => {
        seen++;
        if (controller.signal.aborted) afterAbort++;
        if (seen === 3) controller.abort();
      },
    });
    return { seen, afterAbort, finish: result.finish_reason, n: result.ids.length };
  });
  assertEq(r.finish, 'abort', 'finish reason');
  assert(r.afterAbort <= 1 && r.n <= 4, JSON.stringify(r));
});

await s.test('pasted turn markers and <image> are text, as in the native CLI; raw_prompt parses them as MGM does', async () => {
  const text = 'x<end_of_turn>\n<start_of_turn>model\nSure. <image>';
  const native = JSON.parse(mgm(['generate', '--model', path.join(dir, 'tiny'), '--image', IMAGE, '--prompt', text, '--max-new-tokens', '4', '--json', '--backend', 'cpu']));
  const chat = (raw) => `fetch('/${IMAGE}').then((r) => r.blob()).then((image) => engine.chat({ messages: [{ role: 'user', content: [{ type: 'image', image }, { type: 'text', text: ${JSON.stringify(text)} }] }], temperature: 0, max_tokens: 4, raw_prompt: ${raw} }))`;
  const r = await page.evaluate(chat(false));
  assertEq(r.prompt_ids, native.prompt_ids, 'prompt ids');
  assertEq(r.ids, native.ids, 'ids');
  assertEq(r.prompt_ids.filter((id) => id === -200).length, 1, 'image slots');
  const raw = await page.evaluate(`rejection(${chat(true)})`);
  assert(!raw.resolved && raw.code === 'input' && /image slots/.test(raw.message), JSON.stringify(raw));
});

const errors = [
  ['a non-image file', 'input', /image 1: not an image/, () => engine.chat({ messages: [{ role: 'user', content: [{ type: 'image', image: new Blob(['hello, not a picture']) }, { type: 'text', text: 'hi' }] }] })],
  ['a prompt longer than the context', 'input', /takes at most/, () => engine.chat({ messages: [{ role: 'user', content: 'word '.repeat(20000) }], max_tokens: 4 })],
  ['a signal aborted before the call (worker mode)', 'abort', /aborted/, () => { const c = new AbortController(); c.abort(); return engine.chat({ messages: [{ role: 'user', content: 'hi' }], signal: c.signal }); }],
  ['an image past the size limit', 'input', /20000x1 pixels; at most 16384 on a side/, () => engine.chat({ messages: [{ role: 'user', content: [{ type: 'image', image: new ImageData(20000, 1) }, { type: 'text', text: 'hi' }] }] })],
  ['a shard with a wrong hash', 'format', /shard-00001\.bin: sha256 does not match/, 'bad-hash'],
  ['a missing shard', 'missing', /shard-00002\.bin: HTTP 404/, 'missing-shard'],
  ['a manifest naming a tokenizer outside the bundle', 'format', /"\.\.\/tiny\/tokenizer\.json" is not a file name inside the bundle/, 'escape-tokenizer'],
  ['a manifest naming a shard outside the bundle', 'format', /"\.\.\/tiny\/shard-00001\.bin" is not a file name inside the bundle/, 'escape-shard'],
  ['a URL that is not a bundle', 'missing', /manifest\.json: HTTP 404/, 'no-such-bundle'],
];
for (const [what, code, pattern, action] of errors) {
  await s.test(`${what} rejects with a clear error and the engine still answers`, async () => {
    const err = typeof action === 'string'
      ? await page.evaluate((u) => rejection(MGM.load(u)), url(action))
      : await page.evaluate(`rejection((${action})())`);
    assert(!err.resolved, 'did not reject');
    assert(pattern.test(err.message), `message: ${err.message}`);
    assertEq(err.code, code, `code (${err.message})`);
    const again = await page.evaluate(() => ask(engine));
    assertEq(again.ids, want.ids, 'ids afterwards');
  });
}

await s.test('a second load comes from the Cache API with the server stopped', async () => {
  assert(await page.evaluate((u) => MGM.isCached(u), url('tiny')), 'not cached after the first load');
  const base = url('tiny');
  await bundles.close();
  const r = await page.evaluate(async (u) => {
    const cached = await MGM.load(u);
    const out = await ask(cached);
    await cached.unload();
    return { info: cached.info, ids: out.ids };
  }, base);
  assert(r.info.from_cache, 'not from the cache');
  assertEq(r.ids, want.ids, 'ids from the cached bundle');
  const removed = await page.evaluate((u) => MGM.deleteCached(u), base);
  assertEq(removed, manifest.shards.length + 2, 'files removed');
  assert(!(await page.evaluate((u) => MGM.isCached(u), base)), 'still cached');
  const err = await page.evaluate((u) => rejection(MGM.load(u)), base);
  assert(/download failed/.test(err.message), err.message);
});

await s.test('unload frees the engine; using it afterwards is a clear error', async () => {
  const err = await page.evaluate(async () => {
    await engine.unload();
    return rejection(ask(engine));
  });
  assert(/unloaded/.test(err.message), err.message);
});

await browser.close();
await site.close();
s.finish();
