// Faults while loading and running, in headless Chromium against a local server that injects
// them: dropped connections, HTTP 5xx and stalls are retried (verified shards are not fetched
// again), a full storage quota leaves the model running uncached, an aborted load leaves nothing
// in the cache, a lost GPU device is a clear error, two tabs load the same bundle at once, and
// `integrity` pins the manifest. Every load that succeeds must still give the native CLI's answer.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Suite, assert, assertEq, launch, newPage, openPackage, referenceAnswer, serve, tinyBundles, ROOT } from './harness.mjs';

const dir = tinyBundles();
const manifestBytes = fs.readFileSync(path.join(dir, 'tiny/manifest.json'));
const shards = JSON.parse(manifestBytes).shards.map((s) => `/tiny/${s.file}`);
const want = referenceAnswer(path.join(dir, 'tiny'));

// What the bundle server does to each path: plan[path](n) for its n-th request.
let plan = {};
const site = await serve(ROOT);
const bundles = await serve(dir, { cors: true, fault: (p, n) => plan[p]?.(n) ?? null });
const url = `${bundles.url}/tiny/`;
const browser = await launch();
const context = await browser.newContext();
const page = await newPage(context);
await openPackage(page, site.url);
const s = new Suite('faults (headless Chromium, WebGPU)');

/// Clears the cache and the server's counts, sets the plan.
async function fresh(faults = {}) {
  await page.evaluate(() => caches.delete('mgm-web-v1'));
  bundles.hits.clear();
  plan = faults;
}
const hits = (p) => bundles.hits.get(p) ?? 0;
/// Loads (in the page thread unless told otherwise: the page keeps its compiled kernels from one
/// load to the next, so only the first load pays for them), asks, unloads.
async function loadAndAsk(p, options) {
  return p.evaluate(async ([u, o]) => {
    const engine = await MGM.load(u, { worker: false, ...o });
    const r = await ask(engine);
    await engine.unload();
    return { ids: r.ids, info: engine.info };
  }, [url, options]);
}

await s.test('a connection cut mid-shard and an HTTP 503 are retried; other shards are fetched once', async () => {
  await fresh({ [shards[1]]: (n) => (n === 1 ? { dropAfter: 5000 } : null), [shards[2]]: (n) => (n === 1 ? { status: 503 } : null) });
  const r = await loadAndAsk(page, { retryDelay: 50 });
  assertEq(r.ids, want.ids, 'generated ids');
  assertEq(shards.map(hits), shards.map((_, i) => (i === 1 || i === 2 ? 2 : 1)), 'requests per shard');
  assertEq(hits('/tiny/manifest.json'), 1, 'manifest requests');
});

await s.test('a stalled response times out and is retried', async () => {
  await fresh({ [shards[3]]: (n) => (n === 1 ? { stallAfter: 1000 } : null) });
  const t0 = Date.now();
  const r = await loadAndAsk(page, { retryDelay: 50, stallTimeout: 1500 });
  assertEq(r.ids, want.ids, 'generated ids');
  assertEq(hits(shards[3]), 2, 'requests for the stalled shard');
  console.log(`     load + answer with one 1.5 s stall: ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
});

await s.test('a server that keeps failing is a network error after the retries', async () => {
  await fresh({ [shards[0]]: () => ({ status: 500 }) });
  const r = await page.evaluate((u) => rejection(MGM.load(u, { retries: 2, retryDelay: 20 })), url);
  assertEq(r.code, 'network', `code (${r.message})`);
  assert(/HTTP 500/.test(r.message) && /3 attempts/.test(r.message), r.message);
  assertEq(hits(shards[0]), 3, 'requests');
});

await s.test('an HTTP 404 is not retried', async () => {
  await fresh({ [shards[0]]: () => ({ status: 404 }) });
  const r = await page.evaluate((u) => rejection(MGM.load(u, { retryDelay: 20 })), url);
  assertEq(r.code, 'missing', `code (${r.message})`);
  assertEq(hits(shards[0]), 1, 'requests');
});

await s.test('abort during load leaves nothing of the bundle in the cache', async () => {
  // The last shard stalls, so the load is surely under way with other shards cached when aborted.
  await fresh({ [shards.at(-1)]: () => ({ stallAfter: 100 }) });
  const r = await page.evaluate(async (u) => {
    const c = new AbortController();
    const load = rejection(MGM.load(u, { signal: c.signal, stallTimeout: 60_000 }));
    let before = 0;
    while ((before = await cachedFiles(u)) < 2) await new Promise((ok) => setTimeout(ok, 50));
    c.abort();
    return { ...(await load), before, after: await cachedFiles(u), isCached: await MGM.isCached(u) };
  }, url);
  assertEq(r.code, 'abort', `code (${r.message})`);
  assert(r.before >= 2, `only ${r.before} files were cached before the abort`);
  assertEq([r.after, r.isCached], [0, false], 'cache entries after the abort');
});

await s.test('a full storage quota: the model runs uncached and says why', async () => {
  await fresh();
  // Chromium's own quota, cut to 1 kB for this origin: the Cache API throws QuotaExceededError.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: site.url, quotaSize: 1024 });
  try {
    const r = await loadAndAsk(page, { worker: true });
    assertEq(r.ids, want.ids, 'generated ids');
    assert(!r.info.cached && /QuotaExceeded/.test(r.info.cache_error), JSON.stringify([r.info.cached, r.info.cache_error]));
    assertEq(await page.evaluate((u) => cachedFiles(u), url), 0, 'files left in the cache');
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: site.url });
  }
});

await s.test('a lost GPU device is a clear device error; after a reload the model loads and answers', async () => {
  await fresh();
  const p = await newPage(context);
  // In the page thread the test can reach the GPUDevice the engine asked for, and destroy it.
  await p.addInitScript(() => {
    const request = GPUAdapter.prototype.requestDevice;
    GPUAdapter.prototype.requestDevice = async function (...a) {
      window.gpuDevice = await request.apply(this, a);
      return window.gpuDevice;
    };
  });
  await openPackage(p, site.url);
  const r = await p.evaluate(async (u) => {
    const engine = await MGM.load(u, { worker: false });
    window.gpuDevice.destroy();
    return rejection(ask(engine));
  }, url);
  assertEq([r.code, r.fatal], ['device', true], `error (${r.message})`);
  assert(/device was lost/.test(r.message) && /load the model again/i.test(r.message), r.message);
  await openPackage(p, site.url);
  const again = await loadAndAsk(p, { worker: false });
  assertEq(again.ids, want.ids, 'generated ids after reloading');
  await p.close();
});

await s.test('two tabs load the same bundle at once; both answer and the cache ends complete', async () => {
  await fresh();
  const other = await newPage(context);
  await openPackage(other, site.url);
  const [a, b] = await Promise.all([loadAndAsk(page, {}), loadAndAsk(other, {})]);
  assertEq([a.ids, b.ids], [want.ids, want.ids], 'generated ids');
  assert(await page.evaluate((u) => MGM.isCached(u), url), 'the bundle is not cached');
  assert(shards.every((f) => hits(f) <= 2), `requests per shard ${shards.map(hits)}`);
  await other.close();
});

await s.test('integrity pins the manifest: a match loads, a mismatch is refused before any shard', async () => {
  await fresh();
  const sri = (bytes) => `sha256-${crypto.createHash('sha256').update(bytes).digest('base64')}`;
  const good = sri(manifestBytes);
  const r = await loadAndAsk(page, { integrity: `sha384-${'A'.repeat(64)} ${good}` });
  assertEq(r.ids, want.ids, 'generated ids');
  await fresh();
  const bad = await page.evaluate((u) => rejection(MGM.load(u, { integrity: 'sha256-' + btoa('x'.repeat(32)) })), url);
  assertEq(bad.code, 'mismatch', `code (${bad.message})`);
  assert(shards.every((f) => hits(f) === 0), 'a shard was fetched');
  const malformed = await page.evaluate((u) => rejection(MGM.load(u, { integrity: 'md5-abc' })), url);
  assertEq(malformed.code, 'input', `code (${malformed.message})`);
});

await browser.close();
await bundles.close();
await site.close();
s.finish();
