// Keeps the page, the JS and the wasm available offline (the model's shards live in the Cache API
// already, written by the package). Network first, so an online visit always gets the newest files.
const SHELL = 'mgm-web-shell-v1';
const FILES = [
  './', './index.html', './style.css', './app.js', './heatmap.js', './models/index.json',
  './pkg/src/index.js', './pkg/src/core.js', './pkg/src/worker.js', './pkg/wasm/mgm.js', './pkg/wasm/mgm_bg.wasm',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  const shell = event.request.method === 'GET' && url.origin === location.origin && FILES.some((f) => new URL(f, location.href).pathname === url.pathname);
  if (!shell) return; // bundles and everything else: the browser (and the package's cache) handle them
  event.respondWith(
    (async () => {
      const cache = await caches.open(SHELL);
      try {
        const resp = await fetch(event.request);
        if (resp.ok) await cache.put(event.request, resp.clone());
        return resp;
      } catch (e) {
        const hit = await cache.match(event.request, { ignoreSearch: true });
        if (hit) return hit;
        throw e;
      }
    })(),
  );
});
