// mgm-web: Mini-Gemini (MGM-2B) in the browser on WebGPU.
//
//   const engine = await MGM.load(bundleUrl, { onProgress });
//   for await (const text of engine.chat({ messages, stream: true })) ...
//
// The engine runs in a Web Worker by default (the page never freezes); { worker: false } runs it
// in the calling thread behind the same API.
import { CACHE_NAME, Host, bundleBase, mgmError } from './core.js';

let nextId = 1;

/// Posts requests to a worker-hosted engine and routes its events back.
class WorkerBackend {
  constructor() {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.pending = new Map();
    this.worker.onmessage = ({ data: m }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.type === 'done' || m.type === 'error') {
        this.pending.delete(m.id);
        if (m.type === 'done') p.resolve(m.value);
        else p.reject(Object.assign(new Error(m.error.message), { name: m.error.name, code: m.error.code, fatal: m.error.fatal }));
        // After a trap the worker's wasm is unusable: it goes, and later calls say so.
        if (m.error?.fatal) this.fail(m.error.message);
      } else p.onEvent(m);
    };
    this.worker.onerror = (e) => this.fail(`the engine's worker failed: ${e.message ?? 'unknown error'}`);
  }

  fail(reason) {
    this.dead = reason;
    this.worker.terminate();
    for (const p of this.pending.values()) p.reject(mgmError(reason, 'device'));
    this.pending.clear();
  }

  call(type, payload, onEvent, signal) {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      if (this.dead) return reject(mgmError(`${this.dead} (load the model again)`, 'device'));
      // As in the calling thread: a signal aborted before the call never starts it.
      if (signal?.aborted) return reject(mgmError('aborted', 'abort'));
      this.pending.set(id, { resolve, reject, onEvent });
      signal?.addEventListener('abort', () => this.worker.postMessage({ type: 'abort', target: id }), { once: true });
      this.worker.postMessage({ id, type, payload });
    });
  }

  terminate() {
    this.worker.terminate();
  }
}

/// The same interface in the calling thread.
class LocalBackend {
  async call(type, payload, onEvent, signal) {
    this.host ??= new Host();
    return this.host.call(type, payload, onEvent, signal);
  }
  terminate() {}
}

/// Page-side image objects a worker cannot receive become ImageBitmaps, and relative URLs are
/// resolved against the page (a worker would resolve them against its own script).
async function portable(messages) {
  const absolute = (u) => (typeof u === 'string' && globalThis.location ? new URL(u, location.href).href : u);
  const convert = async (img) =>
    typeof HTMLImageElement !== 'undefined' && (img instanceof HTMLImageElement || img instanceof HTMLCanvasElement || img instanceof HTMLVideoElement)
      ? createImageBitmap(img)
      : absolute(img);
  const part = async (p) => {
    if (p.type === 'image') return { ...p, image: await convert(p.image) };
    if (p.type === 'image_url') return { ...p, image_url: { url: absolute(p.image_url?.url ?? p.image_url) } };
    return p;
  };
  return Promise.all(messages.map(async (m) => (Array.isArray(m.content) ? { ...m, content: await Promise.all(m.content.map(part)) } : m)));
}

/// Text deltas as an async iterable; `result` resolves to the whole reply.
class ChatStream {
  constructor() {
    this.queue = [];
    this.wake = null;
    this.ended = false;
  }
  push(text) {
    this.queue.push(text);
    this.wake?.();
  }
  end() {
    this.ended = true;
    this.wake?.();
  }
  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this.queue.length) yield this.queue.shift();
      else if (this.ended) break;
      else await new Promise((r) => (this.wake = r));
    }
    await this.result; // surfaces the error when the chat failed
  }
}

export class Engine {
  constructor(backend, info) {
    this.backend = backend;
    /** Device, model sizes, preset, load time, wasm memory, whether it came from the cache. */
    this.info = info;
  }

  /**
   * One chat turn. `stream: true` returns an async iterable of text deltas with a `result`
   * promise; otherwise a promise of the result.
   */
  chat(params) {
    const { stream, signal, onToken, onImagePrompt, ...rest } = params;
    const out = new ChatStream();
    const run = (async () => {
      if (!this.backend) throw mgmError('this engine was unloaded; load the model again', 'input');
      const messages = await portable(rest.messages ?? []);
      const result = await this.backend.call('chat', { ...rest, messages }, (e) => {
        if (e.type !== 'token') return;
        onToken?.(e.text, e.token);
        if (e.text) out.push(e.text);
      }, signal);
      if (result.image_prompt != null) onImagePrompt?.(result.image_prompt);
      return result;
    })();
    out.result = run;
    run.then(() => out.end(), () => out.end());
    if (stream) return out;
    return run;
  }

  /**
   * Starts a new conversation: drops the KV cache and the encoded images kept from earlier
   * chats. (Not needed for correctness: a chat whose messages do not start like the previous
   * one recomputes from where they differ. It frees their memory at once.)
   */
  async resetChat() {
    if (!this.backend) throw mgmError('this engine was unloaded; load the model again', 'input');
    await this.backend.call('reset', null, () => {});
  }

  /** Frees the GPU memory and the worker. */
  async unload() {
    const backend = this.backend;
    this.backend = null;
    await backend?.call('unload', null, () => {}).catch(() => {});
    backend?.terminate();
  }
}

export const MGM = {
  /** Whether this browser can run the engine, and on what. Never throws. */
  async checkSupport() {
    if (typeof navigator === 'undefined' || !navigator.gpu) {
      return { supported: false, reason: 'This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge or Safari, or enable WebGPU.' };
    }
    let adapter = null;
    try {
      adapter = await navigator.gpu.requestAdapter();
    } catch (e) {
      return { supported: false, reason: `WebGPU failed to start: ${e.message}` };
    }
    if (!adapter) return { supported: false, reason: 'WebGPU is present but no GPU adapter is available (blocked GPU, or WebGPU disabled by the browser).' };
    const info = adapter.info ?? {};
    return {
      supported: true,
      adapter: { vendor: info.vendor ?? '', architecture: info.architecture ?? '', device: info.device ?? '', description: info.description ?? '', fallback: !!(info.isFallbackAdapter ?? adapter.isFallbackAdapter) },
      limits: { maxBufferSize: adapter.limits.maxBufferSize, maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize },
      shaderF16: adapter.features.has('shader-f16'),
    };
  },

  /**
   * Loads a bundle (the directory URL holding manifest.json). Progress events:
   * { phase: 'download' | 'verify' | 'upload' | 'compile', loaded, total, file }.
   * Options: `cache` (default true), `integrity` ("sha256-<base64>" of manifest.json),
   * `retries`, `retryDelay`, `stallTimeout` (ms) for downloads, `worker` (default true).
   */
  async load(url, { onProgress, signal, worker = true, ...options } = {}) {
    const backend = worker && typeof Worker !== 'undefined' ? new WorkerBackend() : new LocalBackend();
    try {
      const info = await backend.call('load', { url, options }, (e) => e.type === 'progress' && onProgress?.(e.progress), signal);
      return new Engine(backend, info);
    } catch (e) {
      backend.terminate();
      throw e;
    }
  },

  /** Whether every file of the bundle at `url` is in the Cache API. */
  async isCached(url) {
    if (!globalThis.caches) return false;
    const base = bundleBase(url);
    const cache = await caches.open(CACHE_NAME);
    const hit = await cache.match(base + 'manifest.json');
    if (!hit) return false;
    const manifest = await hit.json();
    const files = [manifest.tokenizer ?? 'tokenizer.json', ...manifest.shards.map((s) => s.file)];
    for (const f of files) if (!(await cache.match(base + f))) return false;
    return true;
  },

  /** Removes the bundle at `url` from the cache; resolves to the number of files removed. */
  async deleteCached(url) {
    if (!globalThis.caches) return 0;
    const base = bundleBase(url);
    const cache = await caches.open(CACHE_NAME);
    let n = 0;
    for (const req of await cache.keys()) if (req.url.startsWith(base) && (await cache.delete(req))) n++;
    return n;
  },
};

export default MGM;
