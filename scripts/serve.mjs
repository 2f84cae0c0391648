// A static file server for the demo and the browser tests (no dependencies):
//   node scripts/serve.mjs DIR [PORT]     serves DIR on http://127.0.0.1:PORT (default 8080)
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm',
  '.json': 'application/json', '.css': 'text/css', '.png': 'image/png', '.jpg': 'image/jpeg', '.svg': 'image/svg+xml',
  '.webmanifest': 'application/manifest+json', '.bin': 'application/octet-stream', '.txt': 'text/plain',
};

/// Serves `root` on 127.0.0.1 (`port` 0 picks a free one); `cors` lets pages of another origin
/// fetch (a bundle on a CDN). Resolves to { url, close }.
export async function serve(root, { port = 0, cors = false } = {}) {
  root = path.resolve(root);
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    let file = path.join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (!file.startsWith(root)) return res.writeHead(403).end();
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    const headers = { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' };
    if (cors) headers['access-control-allow-origin'] = '*';
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return res.writeHead(404, headers).end('not found');
      res.writeHead(200, { ...headers, 'content-length': st.size });
      fs.createReadStream(file).pipe(res);
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
  return { url: `http://127.0.0.1:${server.address().port}`, close };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [dir, port = '8080'] = process.argv.slice(2);
  if (!dir) {
    console.error('usage: node scripts/serve.mjs DIR [PORT]');
    process.exit(2);
  }
  const { url } = await serve(dir, { port: Number(port) });
  console.log(`serving ${dir} at ${url}/ (Ctrl-C stops)`);
}
