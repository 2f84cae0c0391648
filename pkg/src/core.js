// The engine host: fetches and caches a bundle, feeds its shards to the wasm engine, runs chats.
// It runs in a Web Worker (worker.js) or in the page; index.js talks to either the same way.
import init, { Loading, wasmMemoryBytes } from '../wasm/mgm.js';

export const CACHE_NAME = 'mgm-web-v1';
const PARALLEL_DOWNLOADS = 3;

let wasmReady = null;
function initWasm() {
  wasmReady ??= init();
  return wasmReady;
}

export function mgmError(message, code) {
  const e = new Error(message);
  e.name = code === 'abort' ? 'AbortError' : 'MgmError';
  e.code = code;
  return e;
}

function checkAbort(signal) {
  if (signal?.aborted) throw mgmError('aborted', 'abort');
}

/// The bundle directory's URL, ending in '/'; `.../manifest.json` works too.
export function bundleBase(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.pathname.endsWith('/manifest.json')) u.pathname = u.pathname.slice(0, -'manifest.json'.length);
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  u.search = '';
  u.hash = '';
  return u.href;
}

async function openCache(enabled) {
  if (!enabled || !globalThis.caches) return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // opaque origins and some private modes have no Cache API: just download
  }
}

/// One bundle file, from the cache when it has it, else from the network (counted by `onBytes`).
async function fetchFile(url, { cache, signal, onBytes, expect }) {
  const name = url.slice(url.lastIndexOf('/') + 1);
  const hit = cache && (await cache.match(url));
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    onBytes?.(bytes.length);
    return { bytes, url, cached: true };
  }
  let resp;
  try {
    resp = await fetch(url, { signal, cache: 'no-store' });
  } catch (e) {
    checkAbort(signal);
    throw mgmError(`download failed: ${name}: ${e.message} (is the server reachable, and does it allow this origin?)`, 'network');
  }
  if (!resp.ok) {
    throw mgmError(`download failed: ${name}: HTTP ${resp.status} ${resp.statusText}`.trim(), resp.status === 404 ? 'missing' : 'network');
  }
  let buf = new Uint8Array(expect || Number(resp.headers.get('content-length')) || 1 << 20);
  let n = 0;
  const reader = resp.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (n + value.length > buf.length) {
        const grown = new Uint8Array(Math.max(2 * buf.length, n + value.length));
        grown.set(buf.subarray(0, n));
        buf = grown;
      }
      buf.set(value, n);
      n += value.length;
      onBytes?.(value.length);
    }
  } catch (e) {
    checkAbort(signal);
    throw mgmError(`download failed: ${name}: ${e.message}`, 'network');
  }
  return { bytes: buf.subarray(0, n), url, cached: false };
}

/// Loads the bundle at `url`: manifest and tokenizer first (checked before any shard moves),
/// then shards, three downloads at a time, each verified and uploaded to the GPU as it lands.
export async function loadBundle(url, { onProgress, signal, cache: useCache = true } = {}) {
  const t0 = performance.now();
  await initWasm();
  const base = bundleBase(url);
  const cache = await openCache(useCache);
  const emit = (p) => onProgress?.(p);
  const manifestFile = await fetchFile(base + 'manifest.json', { cache, signal });
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(manifestFile.bytes));
  } catch {
    throw mgmError(`${base}manifest.json is not JSON: is this the URL of an mgm bundle?`, 'format');
  }
  // The engine checks every name the manifest gives (shards too) before they are fetched; the
  // tokenizer is fetched before the engine sees the manifest, so its name is checked here.
  const tokenizerName = manifest.tokenizer ?? 'tokenizer.json';
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(tokenizerName)) {
    throw mgmError(`manifest.json: ${JSON.stringify(tokenizerName)} is not a file name inside the bundle`, 'format');
  }
  const tokenizerFile = await fetchFile(base + tokenizerName, { cache, signal });
  const loading = await Loading.open(manifestFile.bytes, tokenizerFile.bytes);
  const openMemory = wasmMemoryBytes(); // the tokenizer and manifest, before any shard
  const shards = manifest.shards;
  const total = shards.reduce((s, x) => s + x.size, 0);
  const done = { download: 0, verify: 0, upload: 0 };
  let fromCache = 0;
  let failed = null;
  const step = (phase, bytes, file) => {
    done[phase] += bytes;
    emit({ phase, loaded: done[phase], total, file });
  };
  const apply = async (i) => {
    const shard = shards[i];
    const url = base + shard.file;
    let f = await fetchFile(url, { cache, signal, expect: shard.size, onBytes: (n) => failed || step('download', n, shard.file) });
    if (failed) return;
    try {
      loading.addShard(i, f.bytes);
    } catch (e) {
      if (!f.cached) throw e;
      // A cached copy that no longer verifies: drop it and download once more.
      await cache.delete(url);
      f = await fetchFile(url, { cache: null, signal, expect: shard.size });
      loading.addShard(i, f.bytes);
    }
    if (f.cached) fromCache += shard.size;
    step('verify', shard.size, shard.file);
    step('upload', shard.size, shard.file);
    if (cache && !f.cached) await cache.put(url, new Response(f.bytes));
  };
  let next = 0;
  const lane = async () => {
    while (!failed && next < shards.length) {
      checkAbort(signal);
      try {
        await apply(next++);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  let engine = null;
  try {
    await Promise.all(Array.from({ length: PARALLEL_DOWNLOADS }, lane));
    if (failed) throw failed;
    checkAbort(signal);
    emit({ phase: 'compile', loaded: 0, total: 1 });
    engine = loading.finish();
    await engine.warmup();
    emit({ phase: 'compile', loaded: 1, total: 1 });
    if (cache && !manifestFile.cached) {
      await cache.put(tokenizerFile.url, new Response(tokenizerFile.bytes));
      await cache.put(manifestFile.url, new Response(manifestFile.bytes));
    }
    const info = {
      url: base,
      ...JSON.parse(engine.info()),
      preset: manifest.preset,
      generation: manifest.generation,
      bytes: total,
      from_cache: fromCache === total && total > 0,
      load_ms: performance.now() - t0,
      wasm_memory_bytes: wasmMemoryBytes(),
      wasm_memory_before_shards_bytes: openMemory,
    };
    return new EngineCore(engine, info);
  } catch (e) {
    failed ??= e;
    // Whatever was uploaded goes with the object that holds it.
    if (engine) engine.free();
    else loading.free();
    throw e;
  }
}

/// An image as the wasm engine takes it: file bytes (decoded by the `image` crate, as natively)
/// or RGBA pixels (decoded by the browser).
async function toEngineImage(img, decode) {
  if (typeof img === 'string') {
    const resp = await fetch(img).catch((e) => {
      throw mgmError(`cannot fetch the image ${img.slice(0, 80)}: ${e.message}`, 'input');
    });
    if (!resp.ok) throw mgmError(`cannot fetch the image ${img.slice(0, 80)}: HTTP ${resp.status}`, 'input');
    img = await resp.blob();
  }
  if (img instanceof ArrayBuffer || ArrayBuffer.isView(img)) {
    const bytes = img instanceof ArrayBuffer ? new Uint8Array(img) : new Uint8Array(img.buffer, img.byteOffset, img.byteLength);
    if (decode !== 'browser') return bytes;
    img = new Blob([bytes]);
  }
  if (typeof Blob !== 'undefined' && img instanceof Blob) {
    if (decode !== 'browser') return new Uint8Array(await img.arrayBuffer());
    img = await createImageBitmap(img, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' }).catch(() => {
      throw mgmError('not an image: the browser cannot decode it', 'input');
    });
  }
  if (typeof ImageBitmap !== 'undefined' && img instanceof ImageBitmap) {
    const canvas = new OffscreenCanvas(img.width, img.height);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    img = ctx.getImageData(0, 0, img.width, img.height);
  }
  if (img && typeof img.width === 'number' && img.data) {
    return { width: img.width, height: img.height, data: new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.byteLength) };
  }
  throw mgmError('unsupported image: pass a Blob, File, ImageBitmap, ImageData, bytes, or a URL', 'input');
}

/// OpenAI-style messages -> `[role, text]` turns and the images in order. A system message is
/// put in front of the first user message (Gemma has no system role).
async function toTurns(messages, decode) {
  if (!Array.isArray(messages) || messages.length === 0) throw mgmError('messages must be a non-empty array', 'input');
  const turns = [];
  const images = [];
  let system = '';
  for (const m of messages) {
    const parts = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : m.content ?? [];
    let text = '';
    for (const p of parts) {
      if (p.type === 'text') text += p.text;
      else if (p.type === 'image_url') images.push(await toEngineImage(p.image_url?.url ?? p.image_url, decode));
      else if (p.type === 'image') images.push(await toEngineImage(p.image, decode));
      else throw mgmError(`unknown content part type ${JSON.stringify(p.type)}`, 'input');
    }
    if (m.role === 'system') system += text + '\n\n';
    else if (m.role === 'user' || m.role === 'assistant') turns.push([m.role, text]);
    else throw mgmError(`unknown message role ${JSON.stringify(m.role)}`, 'input');
  }
  const first = turns.findIndex((t) => t[0] === 'user');
  if (system && first >= 0) turns[first][1] = system + turns[first][1];
  return { turns, images };
}

export class EngineCore {
  constructor(engine, info) {
    this.engine = engine;
    this.info = info;
  }

  /// Runs one chat; `onToken(text, id)` sees each token.
  async chat(params, onToken) {
    if (!this.engine) throw mgmError('the model was unloaded; load it again', 'input');
    const { turns, images } = await toTurns(params.messages, params.decode);
    const d = this.info.generation ?? {};
    const request = {
      turns,
      image_prompt: !!params.image_prompt,
      temperature: params.temperature ?? d.temperature ?? 0,
      top_p: params.top_p ?? d.top_p ?? 1,
      top_k: params.top_k ?? d.top_k ?? 0,
      max_tokens: params.max_tokens ?? d.max_new_tokens ?? 512,
      seed: params.seed ?? Math.floor(Math.random() * 2 ** 32),
      attention: !!params.attention,
      raw_prompt: !!params.raw_prompt,
    };
    const signal = params.signal;
    checkAbort(signal);
    const result = await this.engine.chat(JSON.stringify(request), images, (text, id) => {
      if (signal?.aborted) return false;
      onToken?.(text, id);
      return true;
    });
    result.usage.total_tokens = result.usage.prompt_tokens + result.usage.completion_tokens;
    result.wasm_memory_bytes = wasmMemoryBytes();
    return result;
  }

  unload() {
    this.engine?.free();
    this.engine = null;
  }
}

/// One engine behind a message-shaped interface: the worker forwards messages to it, in-page use
/// calls it directly. `onEvent` gets progress and token events.
export class Host {
  constructor() {
    this.core = null;
  }

  async call(type, payload, onEvent, signal) {
    try {
      return await this.dispatch(type, payload, onEvent, signal);
    } catch (e) {
      if (!(e instanceof WebAssembly.RuntimeError)) throw e;
      // A trap leaves the wasm instance unusable: drop the engine and say what to do.
      this.core = null;
      const err = mgmError(`the engine stopped (${e.message}); this is often the GPU running out of memory. Load the model again (in-page engines: reload the page); if it keeps happening, please report it.`, 'device');
      err.fatal = true;
      throw err;
    }
  }

  async dispatch(type, payload, onEvent, signal) {
    switch (type) {
      case 'load': {
        this.core?.unload();
        this.core = null;
        this.core = await loadBundle(payload.url, { ...payload.options, signal, onProgress: (progress) => onEvent({ type: 'progress', progress }) });
        return this.core.info;
      }
      case 'chat':
        if (!this.core) throw mgmError('no model is loaded', 'input');
        return this.core.chat({ ...payload, signal }, (text, token) => onEvent({ type: 'token', text, token }));
      case 'reset':
        if (!this.core) throw mgmError('no model is loaded', 'input');
        this.core.engine.reset();
        return null;
      case 'unload':
        this.core?.unload();
        this.core = null;
        return null;
      default:
        throw mgmError(`unknown request ${type}`, 'input');
    }
  }
}
