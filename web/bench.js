// The browser benchmark: ?bundle=URL (default: the site's model) &tokens=N (new tokens, default 32)
// &image=URL (default: bench.png, which scripts/site.sh copies from the test fixtures; `none` for a
// text-only prompt) &passes=N (default 2: the last is reported, the first compiles kernels; 0
// measures the load only) &subgroups=0 (load without subgroup operations) &worker=0 (the engine on
// the page thread). Results land in the table and in window.__bench.
import { MGM } from './pkg/src/index.js';

const params = new URLSearchParams(location.search);
const status = (t) => (document.getElementById('status').textContent = t);

async function run() {
  const models = await fetch('models/index.json').then((r) => r.json()).catch(() => ({}));
  const url = new URL(params.get('bundle') ?? models.default ?? 'models/demo/', location.href).href;
  const tokens = Number(params.get('tokens') ?? 32);
  const support = await MGM.checkSupport();
  if (!support.supported) throw new Error(support.reason);
  status(`loading ${url}`);
  const subgroups = params.get('subgroups') !== '0';
  const engine = await MGM.load(url, { cache: false, subgroups, worker: params.get('worker') !== '0', onProgress: (p) => status(`${p.phase} ${p.loaded} / ${p.total}`) });
  const image = params.get('image') ?? 'bench.png';
  const content = [{ type: 'text', text: 'Describe the image in detail.' }];
  if (image !== 'none') content.unshift({ type: 'image', image });
  const passes = Number(params.get('passes') ?? 2);
  const i = engine.info;
  const [s, mib] = [(ms) => (ms / 1e3).toFixed(1), (b) => (b / 2 ** 20).toFixed(1)];
  console.log(`bench: loaded in ${s(i.load_ms)} s: shards ${s(i.shards_ms)} s (sha256 ${s(i.verify_ms)} s, hand-over ${s(i.upload_ms)} s, summed), compile ${s(i.compile_ms)} s; wasm memory ${mib(i.wasm_memory_before_shards_bytes)} MiB before the first shard, ${mib(i.wasm_memory_after_shards_bytes)} MiB after the last, ${mib(i.wasm_memory_bytes)} MiB after compile`);
  let result;
  const ttft = [];
  const messages = [{ role: 'user', content }];
  for (let pass = 1; pass <= passes; pass++) {
    // tests/browser/bench.mjs --profile starts Chromium's profiler here.
    if (pass === passes) await window.__beforeLastPass?.();
    status(`chat, pass ${pass} of ${passes}`);
    // Each pass is a new conversation: nothing comes from the previous one's cache.
    await engine.resetChat();
    result = await engine.chat({ messages, temperature: 0, max_tokens: tokens });
    ttft.push(result.usage.time_to_first_token_ms);
    console.log(`bench: pass ${pass}: ${JSON.stringify(result.usage)}`);
  }
  // A follow-up question in the same conversation: only its own tokens are prefilled.
  let follow = null;
  if (result) {
    const more = [...messages, { role: 'assistant', content: result.text }, { role: 'user', content: 'What else can you see?' }];
    follow = (await engine.chat({ messages: more, temperature: 0, max_tokens: 1 })).usage;
    console.log(`bench: follow-up: ${JSON.stringify(follow)}`);
  }
  const u = result?.usage ?? {};
  const row = {
    bundle: url, preset: engine.info.preset, bytes: engine.info.bytes, adapter: support.adapter, subgroups: engine.info.subgroups,
    load_s: engine.info.load_ms / 1e3, shards_s: engine.info.shards_ms / 1e3, compile_s: engine.info.compile_ms / 1e3,
    shards_memory_mib: engine.info.wasm_memory_after_shards_bytes / 2 ** 20, wasm_memory_mib: Math.max(engine.info.wasm_memory_bytes, result?.wasm_memory_bytes ?? 0) / 2 ** 20,
    image_encode_ms: u.image_encode_ms, prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens,
    prefill_tokens_per_s: u.prefill_tokens_per_s, decode_tokens_per_s: u.decode_tokens_per_s,
    first_ttft_ms: ttft[0], last_ttft_ms: ttft.at(-1), follow_ttft_ms: follow?.time_to_first_token_ms, follow_cached: follow?.cached_tokens,
  };
  await engine.unload();
  const tr = document.createElement('tr');
  for (const v of [row.load_s, row.wasm_memory_mib, row.image_encode_ms, row.prompt_tokens, row.prefill_tokens_per_s, row.decode_tokens_per_s]) {
    tr.append(Object.assign(document.createElement('td'), { textContent: v == null ? '' : Number.isInteger(v) ? v : v.toFixed(2) }));
  }
  document.querySelector('#results tbody').append(tr);
  document.getElementById('results').hidden = false;
  status('done');
  return row;
}

window.__bench = run().catch((e) => {
  status(`failed: ${e.message}`);
  return { error: e.message };
});
