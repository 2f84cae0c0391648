// The demo page: load a bundle, chat with images, show what patch info mining looked at.
import { MGM } from './pkg/src/index.js';
import { drawMining, drawPhoto } from './heatmap.js';

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...kids);
  return e;
};
const mb = (bytes) => (bytes / 2 ** 20).toFixed(1);

/** The conversation and the engine; exposed for integrators (and tests) as window.mgmPage. */
const state = { engine: null, history: [], attached: [], controller: null, busy: false, last: null };
window.mgmPage = state;

if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('./sw.js').catch((e) => console.warn(`offline support is off: ${e.message}`));
}

/** Plain words for each kind of failure, with what to do next. */
function explain(e) {
  const m = e?.message ?? String(e);
  switch (e?.code) {
    case 'network':
    case 'missing':
      return `Download failed: ${m}\nCheck the bundle URL and your connection, then press Load again.`;
    case 'format':
      return `The model files are damaged or not an mgm bundle: ${m}\nDelete the cached model and load it again, or convert the bundle again.`;
    case 'mismatch':
      return `This bundle does not fit this version of the page: ${m}\nConvert it again with the matching mgm.`;
    case 'device':
      if (/device was lost/.test(m)) return `The GPU was reset or taken away: ${m}\nPress Load to load the model again (it comes from the browser cache).`;
      return `The GPU failed: ${m}\nIt may be out of memory: close other tabs or GPU-heavy apps, or use a q4 bundle, then press Load again.`;
    case 'input':
      return /image/.test(m) ? `That image could not be used: ${m}\nUse a JPEG, PNG, WebP, GIF or BMP file.` : m;
    default:
      return `Something went wrong: ${m}\nReload the page; if it happens again, please report it.`;
  }
}

function showError(e) {
  $('error').textContent = typeof e === 'string' ? e : explain(e);
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function updateButtons() {
  const ready = !!state.engine;
  $('send').disabled = !ready || state.busy;
  $('stop').disabled = !state.busy;
  $('regenerate').disabled = !ready || state.busy || state.history.at(-1)?.role !== 'assistant';
  $('clear').disabled = state.busy;
  document.body.dataset.state = state.busy ? 'answering' : ready ? 'ready' : 'idle';
}

// ---- model panel ----

async function showSupport() {
  const s = await MGM.checkSupport();
  const dl = $('support');
  dl.replaceChildren();
  const row = (k, v) => dl.append(el('dt', { textContent: k }), el('dd', { textContent: v }));
  if (!s.supported) {
    $('support-summary').textContent = 'not available';
    showError(`${s.reason}\nThis page needs WebGPU to run the model.`);
    $('load').disabled = true;
    return false;
  }
  const a = s.adapter;
  $('support-summary').textContent = `${a.vendor || 'GPU'} ${a.architecture}`.trim() + (a.fallback ? ' (software fallback: slow)' : '');
  row('adapter', [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' · ') || 'unnamed');
  row('max buffer', `${mb(s.limits.maxBufferSize)} MB`);
  row('max storage binding', `${mb(s.limits.maxStorageBufferBindingSize)} MB`);
  row('shader-f16', s.shaderF16 ? 'yes' : 'no (not needed)');
  return true;
}

async function refreshCache() {
  const url = $('bundle-url').value.trim();
  const cached = url ? await MGM.isCached(url).catch(() => false) : false;
  $('cache-text').textContent = cached ? 'Cache: this model is stored in the browser (it loads offline).' : 'Cache: this model is not stored yet.';
  $('delete-cache').disabled = !cached;
  return cached;
}

function showProgress(p, t0) {
  $('progress').max = p.total || 1;
  $('progress').value = p.loaded;
  const secs = (performance.now() - t0) / 1e3;
  const rate = p.phase === 'download' && secs > 0 ? ` · ${mb(p.loaded / secs)} MB/s` : '';
  $('progress-text').textContent = p.phase === 'compile' ? 'compiling GPU kernels…' : `${p.phase}: ${mb(p.loaded)} / ${mb(p.total)} MB${rate}`;
}

async function load() {
  clearError();
  const url = $('bundle-url').value.trim();
  const old = state.engine;
  state.engine = null;
  updateButtons();
  await old?.unload();
  $('load').disabled = true;
  $('progress-box').hidden = false;
  $('load-status').textContent = 'Loading…';
  const t0 = performance.now();
  try {
    state.engine = await MGM.load(url, { onProgress: (p) => showProgress(p, t0) });
    const i = state.engine.info;
    $('load-status').textContent = `Ready: ${i.preset} bundle, ${mb(i.bytes)} MB ${i.from_cache ? 'from the browser cache' : 'downloaded'} in ${(i.load_ms / 1e3).toFixed(1)} s.` +
      (i.cache_error ? ` Not saved for offline use (${/Quota/.test(i.cache_error) ? "the browser's storage for this site is full" : i.cache_error}): it downloads again next time.` : '');
  } catch (e) {
    $('load-status').textContent = 'No model loaded.';
    showError(e);
  } finally {
    $('load').disabled = false;
    $('progress-box').hidden = true;
    await refreshCache();
    updateButtons();
  }
}

// ---- images ----

function attach(files) {
  for (const file of files) state.attached.push({ file, url: URL.createObjectURL(file) });
  renderAttachments();
}

function renderAttachments() {
  $('attachments').replaceChildren(
    ...state.attached.map((a, k) => {
      const remove = el('button', { type: 'button', textContent: '×', title: 'Remove' });
      remove.setAttribute('aria-label', `Remove image ${a.file.name || k + 1}`);
      remove.onclick = () => {
        URL.revokeObjectURL(a.url);
        state.attached.splice(k, 1);
        renderAttachments();
      };
      return el('figure', {}, el('img', { src: a.url, alt: a.file.name || `image ${k + 1}` }), remove);
    }),
  );
}

async function drawImageMining(li, images, mining) {
  for (const [k, m] of mining.entries()) {
    const fig = $('mining-template').content.firstElementChild.cloneNode(true);
    const [photo, heat, mode] = [fig.querySelector('.photo'), fig.querySelector('.heat'), fig.querySelector('.mode')];
    heat.setAttribute('role', 'img');
    heat.setAttribute('aria-label', `Mining heat map for image ${k + 1}: ${m.tokens} patches, each over a ${m.window}x${m.window} high-resolution window`);
    mode.onchange = () => drawMining(heat, m, mode.value);
    fig.querySelector('.legend').textContent = ` ${Math.round(Math.sqrt(m.tokens))}×${Math.round(Math.sqrt(m.tokens))} patches, ${m.window}×${m.window} window each; stronger red = more attention.`;
    drawMining(heat, m, 'where');
    li.append(fig);
    try {
      drawPhoto(photo, await createImageBitmap(images[k].file));
    } catch {
      // the engine decoded it; only the browser's preview failed
    }
  }
}

// ---- chat ----

function renderUser(turn) {
  const li = el('li', { className: 'user' });
  if (turn.images.length) li.append(el('div', { className: 'thumbs' }, ...turn.images.map((a) => el('img', { src: a.url, alt: a.file.name || 'image' }))));
  li.append(el('span', { textContent: turn.text }));
  $('messages').append(li);
  return li;
}

function imagePromptCard(prompt) {
  const copy = el('button', { type: 'button', textContent: 'Copy' });
  copy.onclick = () => navigator.clipboard?.writeText(prompt).then(() => (copy.textContent = 'Copied'));
  // A page can plug an image generator in here.
  window.dispatchEvent(new CustomEvent('mgm:image-prompt', { detail: { prompt } }));
  return el('div', { className: 'image-prompt' }, el('strong', { textContent: 'Image prompt: ' }), el('span', { className: 'prompt-text', textContent: prompt }), ' ', copy);
}

async function answer() {
  clearError();
  const turn = state.history.at(-1);
  const li = el('li', { className: 'assistant' });
  const body = el('span', { className: 'text' });
  li.append(body);
  $('messages').append(li);
  state.busy = true;
  state.controller = new AbortController();
  updateButtons();
  let imagePrompt = null;
  try {
    const stream = state.engine.chat({
      messages: state.history.map((m) => ({ role: m.role, content: m.content })),
      stream: true,
      temperature: Number($('temperature').value),
      top_p: Number($('top-p').value),
      max_tokens: Number($('max-tokens').value) || 512,
      image_prompt: $('gen-mode').checked,
      attention: true,
      signal: state.controller.signal,
      onImagePrompt: (p) => (imagePrompt = p),
    });
    for await (const delta of stream) body.textContent += delta;
    const r = await stream.result;
    state.last = r;
    state.history.push({ role: 'assistant', content: r.text, text: r.text, li });
    const u = r.usage;
    // A 'length' finish short of max tokens means the conversation filled the model's context.
    const full = r.finish_reason === 'length' && u.completion_tokens < (Number($('max-tokens').value) || 512);
    const stopped = r.finish_reason === 'abort' ? 'Stopped. ' : full ? "The conversation reached the model's context: press Clear to start a new one. " : '';
    li.append(el('span', { className: 'stats', textContent: `${stopped}${u.completion_tokens} tokens · decode ${u.decode_tokens_per_s.toFixed(1)} tok/s · first token after ${(u.time_to_first_token_ms / 1000).toFixed(1)} s` + (u.cached_tokens ? ` (${u.cached_tokens} of ${u.prompt_tokens} prompt tokens reused)` : '') + (u.image_encode_ms ? ` · images encoded in ${u.image_encode_ms.toFixed(0)} ms` : '') }));
    if (imagePrompt != null) li.append(imagePromptCard(imagePrompt));
    const all = state.history.filter((m) => m.role === 'user').flatMap((m) => m.images);
    const fresh = turn.images.length ? all.length - turn.images.length : all.length;
    await drawImageMining(li, all.slice(fresh), r.images.slice(fresh));
  } catch (e) {
    // Nothing is lost: the question goes back into the box, its images back to the attachments.
    li.remove();
    state.history.pop();
    turn.li.remove();
    $('prompt').value = turn.text;
    state.attached.unshift(...turn.images);
    renderAttachments();
    showError(e);
    // The engine cannot go on (GPU lost, a trap): Load brings it back.
    if (e.fatal) state.engine = null;
  } finally {
    state.busy = false;
    state.controller = null;
    updateButtons();
  }
}

async function send(event) {
  event?.preventDefault();
  if (!state.engine || state.busy) return;
  const text = $('prompt').value.trim();
  if (!text) return showError('Type a message first.');
  const images = state.attached.splice(0);
  renderAttachments();
  const turn = { role: 'user', text, images, content: [...images.map((a) => ({ type: 'image', image: a.file })), { type: 'text', text }] };
  turn.li = renderUser(turn);
  state.history.push(turn);
  $('prompt').value = '';
  await answer();
}

function regenerate() {
  if (state.busy || state.history.at(-1)?.role !== 'assistant') return;
  state.history.pop().li.remove();
  return answer();
}

function clearChat() {
  // The engine keeps the conversation's KV cache and images for follow-ups; a new chat drops them.
  state.engine?.resetChat().catch(() => {});
  state.history = [];
  state.attached = [];
  $('messages').replaceChildren();
  renderAttachments();
  clearError();
  updateButtons();
}

// ---- wiring ----

$('load-form').onsubmit = (e) => {
  e.preventDefault();
  load();
};
$('delete-cache').onclick = async () => {
  const n = await MGM.deleteCached($('bundle-url').value.trim());
  $('load-status').textContent = `Removed ${n} cached files.`;
  refreshCache();
};
$('bundle-url').onchange = refreshCache;
$('ask-form').onsubmit = send;
$('stop').onclick = () => state.controller?.abort();
$('regenerate').onclick = regenerate;
$('clear').onclick = clearChat;
$('image-input').onchange = (e) => {
  attach(e.target.files);
  e.target.value = '';
};
$('prompt').onkeydown = (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) send(e);
};
$('prompt').onpaste = (e) => e.clipboardData?.files.length && attach(e.clipboardData.files);
const zone = $('drop-zone');
zone.ondragover = (e) => {
  e.preventDefault();
  zone.classList.add('dragging');
};
zone.ondragleave = () => zone.classList.remove('dragging');
zone.ondrop = (e) => {
  e.preventDefault();
  zone.classList.remove('dragging');
  attach(e.dataTransfer.files);
};
for (const id of ['temperature', 'top-p']) {
  const show = () => ($(`${id}-value`).textContent = $(id).value);
  $(id).oninput = show;
  show();
}

(async () => {
  updateButtons();
  const models = await fetch('models/index.json').then((r) => r.json()).catch(() => ({}));
  $('bundle-url').value = new URL(models.default ?? 'models/demo/', location.href).href;
  $('model-note').textContent = models.note ?? '';
  if (!(await showSupport())) return;
  // A model already in the browser loads at once (this is what makes an offline visit work).
  if (await refreshCache()) await load();
})();
