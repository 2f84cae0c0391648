// A static file server for the demo and the browser tests (no dependencies):
//   node scripts/serve.mjs DIR [PORT] [--allow ORIGIN ...]
// serves DIR on http://127.0.0.1:PORT (default 8080) with the demo's Content-Security-Policy:
// scripts, styles, workers and connections only from the site itself and each ORIGIN given (a
// bundle on another server).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm',
  '.json': 'application/json', '.css': 'text/css', '.png': 'image/png', '.jpg': 'image/jpeg', '.svg': 'image/svg+xml',
  '.webmanifest': 'application/manifest+json', '.bin': 'application/octet-stream', '.txt': 'text/plain',
};

/// The demo page's policy: its own origin, plus `origins` for fetching bundles. Images may be
/// blob:/data: URLs (attachments, thumbnails); wasm needs 'wasm-unsafe-eval' to compile.
export function demoCsp(origins = []) {
  const connect = ["'self'", 'blob:', 'data:', ...origins].join(' ');
  return [
    "default-src 'none'", "script-src 'self' 'wasm-unsafe-eval'", "style-src 'self'", "img-src 'self' blob: data:",
    `connect-src ${connect}`, "worker-src 'self'", "manifest-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  ].join('; ');
}

/// Serves `root` on 127.0.0.1 (`port` 0 picks a free one); `cors` lets pages of another origin
/// fetch (a bundle on a CDN); `csp` is sent as the Content-Security-Policy. Tests inject faults
/// with `fault(path, n)` (n: the request's number for that path) returning null or one of
/// { status } (an error reply), { dropAfter } (bytes, then the connection is cut), { stallAfter }
/// (bytes, then nothing). Resolves to { url, close, hits } (hits: requests per path).
export async function serve(root, { port = 0, cors = false, csp = null, fault = null } = {}) {
  root = path.resolve(root);
  const sockets = new Set();
  const hits = new Map();
  const server = http.createServer((req, res) => {
    const pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = path.join(root, pathname);
    if (!file.startsWith(root)) return res.writeHead(403).end();
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    const headers = { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' };
    if (cors) headers['access-control-allow-origin'] = '*';
    if (csp) headers['content-security-policy'] = csp;
    hits.set(pathname, (hits.get(pathname) ?? 0) + 1);
    const f = fault?.(pathname, hits.get(pathname));
    if (f?.status) return res.writeHead(f.status, headers).end('injected fault');
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return res.writeHead(404, headers).end('not found');
      res.writeHead(200, { ...headers, 'content-length': st.size });
      const cut = f?.dropAfter ?? f?.stallAfter;
      if (cut == null) return fs.createReadStream(file).pipe(res);
      const part = fs.createReadStream(file, { start: 0, end: Math.max(0, Math.min(cut, st.size) - 1) });
      part.on('end', () => f.dropAfter != null && res.socket?.destroy());
      part.pipe(res, { end: false });
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
  const close = () => new Promise((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  });
  return { url: `http://127.0.0.1:${server.address().port}`, close, hits };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const allow = args.flatMap((a, i) => (args[i - 1] === '--allow' ? [new URL(a).origin] : []));
  const [dir, port = '8080'] = args.filter((a, i) => a !== '--allow' && args[i - 1] !== '--allow');
  if (!dir) {
    console.error('usage: node scripts/serve.mjs DIR [PORT] [--allow ORIGIN ...]');
    process.exit(2);
  }
  const { url } = await serve(dir, { port: Number(port), csp: demoCsp(allow) });
  console.log(`serving ${dir} at ${url}/ (Ctrl-C stops)`);
}
