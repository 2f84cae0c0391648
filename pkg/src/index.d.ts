// Types for mgm-web: Mini-Gemini (MGM-2B) in the browser on WebGPU.

export interface SupportReport {
  supported: boolean;
  /** Why not, in words a user can act on (when `supported` is false). */
  reason?: string;
  adapter?: { vendor: string; architecture: string; device: string; description: string; fallback: boolean };
  limits?: { maxBufferSize: number; maxStorageBufferBindingSize: number };
  shaderF16?: boolean;
}

export interface LoadProgress {
  /** download: bytes arriving (from the network or the cache); verify: sha256 checked;
   *  upload: tensors in GPU memory; compile: the decoder's first run (0 then 1). */
  phase: 'download' | 'verify' | 'upload' | 'compile';
  loaded: number;
  total: number;
  file?: string;
}

export interface LoadOptions {
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /** Keep shards in the Cache API and read them from there next time (default true). */
  cache?: boolean;
  /** Run the engine in a Web Worker (default true). */
  worker?: boolean;
  /**
   * Subresource-Integrity hash(es) of the bundle's manifest.json, e.g. "sha256-<base64>"
   * (sha384/sha512 too, space-separated): the load fails with `mismatch` unless one matches.
   * The manifest holds every shard's sha256, so this pins the whole bundle.
   */
  integrity?: string;
  /** Download retries after a dropped connection, HTTP 5xx/408/429 or a stall (default 4). */
  retries?: number;
  /** Milliseconds before the first retry; doubles each time (default 500). */
  retryDelay?: number;
  /** Milliseconds without a byte before a download attempt is retried (default 30000). */
  stallTimeout?: number;
  /**
   * Ask the adapter for WebGPU's `subgroups` feature, which the matrix kernels use where the
   * subgroup size is fixed (default true). Takes effect where the engine's device is created:
   * each worker has its own; without a worker, the page's first load decides.
   */
  subgroups?: boolean;
}

export interface EngineInfo {
  url: string;
  device: string;
  preset: string;
  vocab_size: number;
  layers: number;
  context: number;
  vision: boolean;
  /** Lanes that share values through subgroup operations in the matrix kernels; 0: none. */
  subgroups: number;
  generation: { temperature: number; top_p: number; top_k: number; max_new_tokens: number };
  bytes: number;
  from_cache: boolean;
  /** Whether the bundle is now in the Cache API (it loads offline next time). */
  cached: boolean;
  /** Why it is not, when caching was asked for: no Cache API, or a write failed (QuotaExceededError). */
  cache_error: string | null;
  /** The whole load: shards_ms (manifest to the last shard on the GPU), then compile_ms. */
  load_ms: number;
  shards_ms: number;
  /** Summed over shards (they overlap downloads): sha256 by WebCrypto; hand-over to wasm + GPU upload. */
  verify_ms: number;
  upload_ms: number;
  /** The `compile` phase: one small request down the whole path, so questions compile no shader. */
  compile_ms: number;
  /** wasm linear memory after loading (it never shrinks: the peak). */
  wasm_memory_bytes: number;
  /** wasm linear memory once the manifest and tokenizer were read, before any shard. */
  wasm_memory_before_shards_bytes: number;
  /** wasm linear memory once every shard is on the GPU: its peak while the bundle streams. */
  wasm_memory_after_shards_bytes: number;
}

/** Encoded image bytes (decoded like the native CLI), a URL or data URL, or browser pixels. */
export type ImageInput = Blob | File | ArrayBuffer | Uint8Array | ImageBitmap | ImageData | HTMLImageElement | HTMLCanvasElement | HTMLVideoElement | string;

export type ContentPart =
  | { type: 'text'; text: string }
  | { type: 'image'; image: ImageInput }
  | { type: 'image_url'; image_url: { url: string } | string };

export interface Message {
  role: 'system' | 'user' | 'assistant';
  content: string | ContentPart[];
}

export interface ChatParams {
  messages: Message[];
  stream?: boolean;
  /** 0 is greedy; defaults come from the bundle (MGM's demo: 0.2). */
  temperature?: number;
  top_p?: number;
  top_k?: number;
  max_tokens?: number;
  seed?: number;
  signal?: AbortSignal;
  /** Ask for a text-to-image prompt (MGM's generation mode, ` <GEN>`). */
  image_prompt?: boolean;
  /** Return each image's patch-info-mining attention (for a heat map). */
  attention?: boolean;
  /**
   * Parse messages as MGM's own code does, for parity checks: special-token strings in them
   * (`<end_of_turn>`) become those tokens and `<image>` an image slot. By default a message is
   * text, so pasted text cannot forge a turn.
   */
  raw_prompt?: boolean;
  /** 'wasm' (default): the image crate decodes file bytes, as natively; 'browser': createImageBitmap. */
  decode?: 'wasm' | 'browser';
  onToken?: (text: string, id: number) => void;
  onImagePrompt?: (prompt: string) => void;
}

export interface ImageMining {
  /** Low-res tokens (a square grid). */
  tokens: number;
  /** Side of each token's high-res window. */
  window: number;
  /** `[tokens, window * window]`, row-major; each row sums to 1. Present with `attention: true`. */
  attention?: Float32Array;
}

export interface ChatResult {
  text: string;
  ids: number[];
  /** The prompt's ids, -200 where an image's tokens go. */
  prompt_ids: number[];
  finish_reason: 'stop' | 'length' | 'abort';
  /** What the model wrote inside <h>...</h>, when asked with `image_prompt`. */
  image_prompt: string | null;
  usage: {
    /** Every position of the prompt (image tokens included). */
    prompt_tokens: number;
    /** Positions of the prompt reused from the conversation's KV cache (not prefilled again). */
    cached_tokens: number;
    /** Image encoding (images not seen before) plus the prefill. */
    time_to_first_token_ms: number;
    completion_tokens: number;
    total_tokens: number;
    image_encode_ms: number;
    prefill_ms: number;
    decode_ms: number;
    prefill_tokens_per_s: number;
    decode_tokens_per_s: number;
  };
  images: ImageMining[];
  wasm_memory_bytes: number;
  /** GPU memory the engine's pool holds after this chat. */
  device_memory_bytes: number | null;
}

export interface ChatStream extends AsyncIterable<string> {
  result: Promise<ChatResult>;
}

export declare class Engine {
  readonly info: EngineInfo;
  chat(params: ChatParams & { stream: true }): ChatStream;
  chat(params: ChatParams & { stream?: false }): Promise<ChatResult>;
  /** Drops the KV cache and images kept between chats (a new conversation). */
  resetChat(): Promise<void>;
  unload(): Promise<void>;
}

/**
 * What went wrong: `input` (a bad image, a prompt that does not fit, a bad option), `format` (a
 * corrupted shard, not a bundle), `missing` (HTTP 404), `mismatch` (a bundle this engine cannot
 * run), `device` (WebGPU failed or was lost: load again), `network`, `abort`, `io`, and `internal`
 * (an error the engine did not classify).
 */
export type MgmErrorCode = 'input' | 'format' | 'missing' | 'mismatch' | 'device' | 'network' | 'abort' | 'io' | 'internal';

export interface MgmError extends Error {
  code: MgmErrorCode;
  /** The engine cannot go on (a trap, a lost GPU device): load the model again. */
  fatal?: boolean;
}

export declare const MGM: {
  checkSupport(): Promise<SupportReport>;
  load(bundleUrl: string, options?: LoadOptions): Promise<Engine>;
  isCached(bundleUrl: string): Promise<boolean>;
  deleteCached(bundleUrl: string): Promise<number>;
};

export default MGM;
