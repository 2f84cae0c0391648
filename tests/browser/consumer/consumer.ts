// A TypeScript user of the package: every documented call, typed as the README shows it. The
// npm test compiles it with `tsc --noEmit --strict` against the installed tarball's index.d.ts;
// the @ts-expect-error lines must fail, so types that were too loose fail the test too.
import MGM, { MGM as Named } from 'mgm-web';
import type { ChatResult, ChatStream, Engine, EngineInfo, ImageInput, ImageMining, LoadProgress, MgmError, MgmErrorCode, SupportReport } from 'mgm-web';

export async function everyCall(file: File, canvas: HTMLCanvasElement, bitmap: ImageBitmap, signal: AbortSignal): Promise<string> {
  const support: SupportReport = await MGM.checkSupport();
  if (!support.supported) return support.reason ?? 'no WebGPU';
  const limit: number | undefined = support.limits?.maxStorageBufferBindingSize;
  const fallback: boolean | undefined = support.adapter?.fallback;

  const engine: Engine = await Named.load('https://example.org/mgm-2b-q4/', {
    onProgress: ({ phase, loaded, total, file }: LoadProgress) => console.log(phase, loaded, total, file, limit, fallback),
    signal,
    cache: true,
    worker: true,
    integrity: 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=',
    retries: 4,
    retryDelay: 500,
    stallTimeout: 30_000,
  });
  const info: EngineInfo = engine.info;
  const cacheNote: string | null = info.cached ? null : info.cache_error;
  console.log(info.device, info.preset, info.bytes, info.load_ms, info.from_cache, info.wasm_memory_bytes, info.generation.temperature, cacheNote);

  const images: ImageInput[] = [file, canvas, bitmap, new Uint8Array(8), new ArrayBuffer(8), new ImageData(1, 1), 'photo.png', 'data:image/png;base64,AAAA'];
  const stream: ChatStream = engine.chat({
    messages: [
      { role: 'system', content: 'Answer briefly.' },
      { role: 'user', content: [{ type: 'image', image: images[0] }, { type: 'image_url', image_url: { url: 'photo.png' } }, { type: 'image_url', image_url: 'photo.png' }, { type: 'text', text: 'What is unusual here?' }] },
    ],
    stream: true,
    temperature: 0.2,
    top_p: 0.7,
    top_k: 40,
    max_tokens: 512,
    seed: 1,
    signal,
    image_prompt: true,
    attention: true,
    raw_prompt: false,
    decode: 'browser',
    onToken: (text: string, id: number) => console.log(text, id),
    onImagePrompt: (prompt: string) => console.log(prompt),
  });
  let text = '';
  for await (const delta of stream) text += delta;
  const result: ChatResult = await stream.result;
  const reason: 'stop' | 'length' | 'abort' = result.finish_reason;
  const u = result.usage;
  console.log(reason, result.ids.length, result.prompt_ids.length, result.image_prompt?.length, u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.total_tokens,
    u.time_to_first_token_ms, u.image_encode_ms, u.prefill_ms, u.decode_ms, u.prefill_tokens_per_s, u.decode_tokens_per_s, result.wasm_memory_bytes, result.device_memory_bytes);
  const mining: ImageMining | undefined = result.images[0];
  const weights: Float32Array | undefined = mining?.attention;
  console.log(mining?.tokens, mining?.window, weights?.length);

  const followUp: ChatResult = await engine.chat({ messages: [{ role: 'user', content: 'And now?' }] });
  await engine.resetChat();
  const cached: boolean = await MGM.isCached('https://example.org/mgm-2b-q4/');
  const removed: number = await MGM.deleteCached('https://example.org/mgm-2b-q4/');
  await engine.unload();
  try {
    await MGM.load('https://example.org/missing/');
  } catch (e) {
    const err = e as MgmError;
    const code: MgmErrorCode = err.code;
    if (code === 'network' || code === 'missing' || err.fatal === true) console.log(err.message);
  }

  // @ts-expect-error: a role the package does not know
  engine.chat({ messages: [{ role: 'robot', content: 'hello' }] });
  // @ts-expect-error: not one of the error codes
  const notACode: MgmErrorCode = 'timeout';
  // @ts-expect-error: with stream: true, chat returns a ChatStream, not a promise
  const notAPromise: Promise<ChatResult> = engine.chat({ messages: [], stream: true });
  // @ts-expect-error: integrity is a string
  await MGM.load('x', { integrity: true });
  console.log(notACode, notAPromise, cached, removed);
  return text + followUp.text;
}
