// The engine host: fetches and caches a bundle, feeds its shards to the wasm engine, runs chats.
// It runs in a Web Worker (worker.js) or in the page; index.js talks to either the same way.
import init, { Loading, deviceLost, wasmMemoryBytes } from '../wasm/mgm.js';

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

/// How downloads ride out a bad connection (each overridable in `MGM.load`'s options).
export const NETWORK = {
  retries: 4, // attempts after the first, for a dropped connection, HTTP 5xx/408/429, a stall
  retryDelay: 500, // ms before the first retry; doubles each time (with jitter)
  stallTimeout: 30_000, // ms without a byte before an attempt is given up and retried
};

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), reject(mgmError('aborted', 'abort'))), { once: true });
  });

/// One bundle file, from the cache when it has it, else downloaded; failures that may pass
/// (see NETWORK) are retried with backoff. `onBytes` sees each byte once, however many attempts.
async function fetchFile(url, { cache, signal, onBytes, expect, net = NETWORK }) {
  const name = url.slice(url.lastIndexOf('/') + 1);
  const hit = cache && (await cache.match(url));
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    onBytes?.(bytes.length);
    return { bytes, url, cached: true };
  }
  let counted = 0;
  const progress = (n) => n > counted && (onBytes?.(n - counted), (counted = n));
  for (let attempt = 0; ; attempt++) {
    try {
      return { bytes: await download(url, name, { signal, expect, stallTimeout: net.stallTimeout, progress }), url, cached: false };
    } catch (e) {
      checkAbort(signal);
      if (!e.transient || attempt >= net.retries) {
        if (attempt) e.message += ` (gave up after ${attempt + 1} attempts)`;
        throw e;
      }
      await sleep(net.retryDelay * 2 ** attempt * (0.75 + 0.5 * Math.random()), signal);
    }
  }
}

/// One attempt at downloading a file; errors say whether another attempt may succeed.
async function download(url, name, { signal, expect, stallTimeout, progress }) {
  const fail = (message, code, transient) => Object.assign(mgmError(`download failed: ${name}: ${message}`, code), { transient });
  const stall = new AbortController();
  let timer;
  const arm = () => (clearTimeout(timer), (timer = setTimeout(() => stall.abort(), stallTimeout)));
  const both = signal ? AbortSignal.any([signal, stall.signal]) : stall.signal;
  const broken = (e) => (stall.signal.aborted ? fail(`no data for ${stallTimeout / 1000} s`, 'network', true) : fail(e.message, 'network', true));
  arm();
  try {
    let resp;
    try {
      resp = await fetch(url, { signal: both, cache: 'no-store' });
    } catch (e) {
      checkAbort(signal);
      throw stall.signal.aborted ? broken(e) : fail(`${e.message} (is the server reachable, and does it allow this origin?)`, 'network', true);
    }
    if (!resp.ok) {
      const transient = resp.status >= 500 || resp.status === 408 || resp.status === 429;
      throw fail(`HTTP ${resp.status} ${resp.statusText}`.trim(), resp.status === 404 ? 'missing' : 'network', transient);
    }
    let buf = new Uint8Array(expect || Number(resp.headers.get('content-length')) || 1 << 20);
    let n = 0;
    const reader = resp.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        arm();
        if (n + value.length > buf.length) {
          const grown = new Uint8Array(Math.max(2 * buf.length, n + value.length));
          grown.set(buf.subarray(0, n));
          buf = grown;
        }
        buf.set(value, n);
        n += value.length;
        progress(n);
      }
    } catch (e) {
      checkAbort(signal);
      throw broken(e);
    }
    // A connection closed early can end a body without an error.
    if (expect && n < expect) throw fail(`the connection closed after ${n} of ${expect} bytes`, 'network', true);
    return buf.subarray(0, n);
  } finally {
    clearTimeout(timer);
  }
}

/// The Cache API as a load uses it: reads always; writes until the first failure (a full quota:
/// the model still runs, uncached, and `error` says why). An aborted load takes back what it wrote.
class BundleCache {
  constructor(cache) {
    this.cache = cache;
    this.error = null;
    this.written = [];
  }
  match(url) {
    return this.cache.match(url).catch(() => undefined);
  }
  delete(url) {
    return this.cache.delete(url).catch(() => false);
  }
  async put(url, bytes) {
    if (this.error) return;
    try {
      await this.cache.put(url, new Response(bytes));
      this.written.push(url);
    } catch (e) {
      this.error = `${e.name}: ${e.message}`;
      // A bundle cached in part does not load offline; free its space for other sites.
      await this.takeBack();
    }
  }
  async takeBack() {
    await Promise.all(this.written.splice(0).map((u) => this.delete(u)));
  }
}

/// A shard's size and sha256 against the manifest, with WebCrypto (native code, and no copy
/// into wasm memory). WebGPU needs a secure context, which WebCrypto needs too.
async function verifyShard(shard, bytes) {
  if (bytes.length !== shard.size) throw mgmError(`shard ${shard.file}: ${bytes.length} bytes, expected ${shard.size} (truncated or wrong file)`, 'format');
  const hex = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
  if (hex !== shard.sha256) throw mgmError(`shard ${shard.file}: sha256 does not match the manifest (corrupted download?)`, 'format');
}

/// `integrity` (SRI form: "sha256-BASE64", several allowed) against the manifest's bytes.
async function checkIntegrity(bytes, integrity) {
  const algos = { sha256: 'SHA-256', sha384: 'SHA-384', sha512: 'SHA-512' };
  const wanted = integrity.trim().split(/\s+/).map((h) => h.match(/^(sha256|sha384|sha512)-([A-Za-z0-9+/]+={0,2})$/));
  if (!wanted.length || wanted.some((m) => !m)) throw mgmError(`integrity ${JSON.stringify(integrity)}: expected "sha256-<base64>" (or sha384/sha512)`, 'input');
  for (const [, algo, want] of wanted) {
    const got = btoa(String.fromCharCode(...new Uint8Array(await crypto.subtle.digest(algos[algo], bytes))));
    if (got === want) return true;
  }
  return false;
}

/// Runs `open` (which creates the engine's WebGPU device, once per page or worker) so that the
/// device has the adapter's `subgroups` feature when `wanted`: wgpu 30, under the engine, never
/// asks for it (its WebGPU feature table lacks it), and the matrix kernels share values through
/// subgroups where their size is fixed (SwiftShader: 4 lanes). The next device request in this
/// realm, which is the engine's, gets the feature added; nothing else changes.
async function askingSubgroups(wanted, open) {
  const proto = globalThis.GPUAdapter?.prototype;
  const original = proto?.requestDevice;
  if (!wanted || !original) return open();
  proto.requestDevice = function (desc = {}) {
    proto.requestDevice = original;
    if (!this.features.has('subgroups')) return original.call(this, desc);
    return original.call(this, { ...desc, requiredFeatures: [...(desc.requiredFeatures ?? []), 'subgroups'] });
  };
  try {
    return await open();
  } finally {
    proto.requestDevice = original;
  }
}

/// Loads the bundle at `url`: manifest and tokenizer first (checked before any shard moves),
/// then shards, three downloads at a time, each verified and uploaded to the GPU as it lands.
/// A shard enters the cache only once verified; an aborted load removes what it cached, a
/// failed one keeps its verified shards (the next load fetches only the rest).
export async function loadBundle(url, { onProgress, signal, cache: useCache = true, integrity, subgroups = true, ...net } = {}) {
  const t0 = performance.now();
  net = { ...NETWORK, ...Object.fromEntries(Object.entries(net).filter(([k, v]) => k in NETWORK && v != null)) };
  await initWasm();
  const base = bundleBase(url);
  const opened = await openCache(useCache);
  const cache = opened && new BundleCache(opened);
  const emit = (p) => onProgress?.(p);
  let manifestFile = await fetchFile(base + 'manifest.json', { cache, signal, net });
  if (integrity && !(await checkIntegrity(manifestFile.bytes, integrity))) {
    // A cached manifest may be an older version of the bundle: ask the server once.
    if (manifestFile.cached) manifestFile = await fetchFile(base + 'manifest.json', { cache: null, signal, net });
    if (!manifestFile.cached && !(await checkIntegrity(manifestFile.bytes, integrity))) {
      throw mgmError(`${base}manifest.json does not match the integrity ${integrity}: the bundle was changed or is not the one expected`, 'mismatch');
    }
  }
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
  const tokenizerFile = await fetchFile(base + tokenizerName, { cache, signal, net });
  const loading = await askingSubgroups(subgroups, () => Loading.open(manifestFile.bytes, tokenizerFile.bytes));
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
  // Each shard's parts, as (tensor, part) indices into the manifest: a verified shard is handed
  // to the engine part by part, so wasm memory holds one part at a time, never a shard.
  const partsOf = shards.map(() => []);
  manifest.tensors.forEach((t, ti) => t.parts.forEach((p, k) => partsOf[p.shard].push([ti, k, p])));
  // Where the time goes (summed over shards; downloads overlap them): WebCrypto, then wasm + GPU.
  const spent = { verify_ms: 0, upload_ms: 0 };
  const upload = async (i, bytes) => {
    const t1 = performance.now();
    await verifyShard(shards[i], bytes);
    const t2 = performance.now();
    for (const [t, k, p] of partsOf[i]) loading.addPart(t, k, bytes.subarray(p.offset, p.offset + p.length));
    spent.verify_ms += t2 - t1;
    spent.upload_ms += performance.now() - t2;
  };
  const apply = async (i) => {
    const shard = shards[i];
    const url = base + shard.file;
    let f = await fetchFile(url, { cache, signal, net, expect: shard.size, onBytes: (n) => failed || step('download', n, shard.file) });
    if (failed) return;
    try {
      await upload(i, f.bytes);
    } catch (e) {
      if (!f.cached) throw e;
      // A cached copy that no longer verifies: drop it and download once more.
      await cache.delete(url);
      f = await fetchFile(url, { cache: null, signal, net, expect: shard.size });
      await upload(i, f.bytes);
    }
    if (f.cached) fromCache += shard.size;
    step('verify', shard.size, shard.file);
    step('upload', shard.size, shard.file);
    if (cache && !f.cached) await cache.put(url, f.bytes);
  };
  let next = 0;
  // A lane never throws: every lane has settled (no cache write in flight) before a failure or
  // an abort is handled below, so taking the cache writes back cannot miss one.
  const lane = async () => {
    while (!failed && next < shards.length) {
      try {
        checkAbort(signal);
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
    const shardsMs = performance.now() - t0;
    const shardsMemory = wasmMemoryBytes();
    emit({ phase: 'compile', loaded: 0, total: 1 });
    engine = loading.finish();
    await engine.warmup();
    emit({ phase: 'compile', loaded: 1, total: 1 });
    if (cache && !manifestFile.cached) {
      await cache.put(tokenizerFile.url, tokenizerFile.bytes);
      await cache.put(manifestFile.url, manifestFile.bytes);
    }
    const info = {
      url: base,
      ...JSON.parse(engine.info()),
      preset: manifest.preset,
      generation: manifest.generation,
      bytes: total,
      from_cache: fromCache === total && total > 0,
      cached: !!cache && !cache.error,
      cache_error: cache ? cache.error : useCache ? 'the Cache API is not available here' : null,
      load_ms: performance.now() - t0,
      shards_ms: shardsMs,
      ...spent,
      compile_ms: performance.now() - t0 - shardsMs,
      wasm_memory_bytes: wasmMemoryBytes(),
      wasm_memory_before_shards_bytes: openMemory,
      wasm_memory_after_shards_bytes: shardsMemory,
    };
    return new EngineCore(engine, info);
  } catch (e) {
    failed ??= e;
    if (e.code === 'abort') await cache?.takeBack();
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
    result.device_memory_bytes = JSON.parse(this.engine.memory()).in_use;
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
    this.lost = null;
  }

  async call(type, payload, onEvent, signal) {
    await initWasm();
    // A lost GPU device fails what comes after, some calls by never answering: each call races it.
    this.lost ??= deviceLost().then((why) => {
      throw Object.assign(mgmError(`${why}. Load the model again (in-page engines: reload the page).`, 'device'), { fatal: true });
    });
    this.lost.catch(() => {});
    try {
      return await Promise.race([this.dispatch(type, payload, onEvent, signal), this.lost]);
    } catch (e) {
      if (e.fatal) this.core = null;
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
