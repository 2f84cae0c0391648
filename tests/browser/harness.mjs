// Shared by the browser tests and the browser benchmark: a static server, Debian's Chromium with
// WebGPU on its CPU adapter (SwiftShader), the native CLI for reference answers, and a reporter.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { serve } from '../../scripts/serve.mjs';

export const ROOT = path.resolve(import.meta.dirname, '../..');
export const OUT = path.join(ROOT, 'target/browser-tests');

export { serve };

export const MGM_BIN = process.env.MGM_BIN ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(ROOT, 'target'), 'debug/mgm');

/// Runs the native CLI; its stdout.
export function mgm(args) {
  const r = spawnSync(MGM_BIN, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`mgm ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error}`);
  return r.stdout;
}

// MGM_JS_FLAGS passes flags to V8 (e.g. --no-liftoff: every wasm function optimised from the start).
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-quic', '--enable-unsafe-webgpu', ...(process.env.MGM_JS_FLAGS ? [`--js-flags=${process.env.MGM_JS_FLAGS}`] : []),
];

export function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

/// A page that logs its errors to our output, prefixed.
export async function newPage(context) {
  const page = await context.newPage();
  page.on('console', (m) => (m.type() === 'error' || process.env.MGM_BROWSER_LOG) && console.log(`     [page ${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => console.log(`     [page error] ${e.message}`));
  return page;
}

export class Suite {
  constructor(name) {
    this.name = name;
    this.passed = 0;
    this.failed = 0;
    console.log(`# ${name}`);
  }
  async test(name, fn) {
    const t0 = Date.now();
    try {
      await fn();
      this.passed++;
      console.log(`ok   ${name} (${((Date.now() - t0) / 1e3).toFixed(1)} s)`);
    } catch (e) {
      this.failed++;
      console.log(`FAIL ${name}\n     ${String(e.stack ?? e).split('\n').slice(0, 6).join('\n     ')}`);
    }
  }
  finish() {
    console.log(`${this.name}: ${this.passed} passed, ${this.failed} failed`);
    if (this.failed) process.exitCode = 1;
  }
}

export function assert(cond, message) {
  if (!cond) throw new Error(message);
}

export function assertEq(got, want, what) {
  const [g, w] = [JSON.stringify(got), JSON.stringify(want)];
  if (g !== w) throw new Error(`${what}:\n       got  ${g.slice(0, 400)}\n       want ${w.slice(0, 400)}`);
}

/// Assembles the demo site (scripts/site.sh) into `dir`, with its default (tiny) bundle.
export function buildSite(dir) {
  const r = spawnSync(path.join(ROOT, 'scripts/site.sh'), [dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`scripts/site.sh failed: ${r.stderr}`);
  return dir;
}

/// The tiny MGM fixture as a bundle in small shards (so downloads run in parallel), plus broken
/// copies; returns their directory.
export function tinyBundles() {
  const dir = path.join(OUT, 'bundles');
  fs.rmSync(dir, { recursive: true, force: true });
  mgm(['convert', '--model', 'tests/fixtures/mgm_tiny', '--out', path.join(dir, 'tiny'), '--shard-mib', '0.1']);
  fs.cpSync(path.join(dir, 'tiny'), path.join(dir, 'bad-hash'), { recursive: true });
  const shard = path.join(dir, 'bad-hash', 'shard-00001.bin');
  const bytes = fs.readFileSync(shard);
  bytes[100] ^= 0xff;
  fs.writeFileSync(shard, bytes);
  fs.cpSync(path.join(dir, 'tiny'), path.join(dir, 'missing-shard'), { recursive: true });
  fs.rmSync(path.join(dir, 'missing-shard', 'shard-00002.bin'));
  // Manifests naming files outside their bundle: the tokenizer (checked in JS) and a shard
  // (checked by the engine).
  for (const [name, edit] of [['escape-tokenizer', (m) => { m.tokenizer = '../tiny/tokenizer.json'; }], ['escape-shard', (m) => { m.shards[1].file = '../tiny/shard-00001.bin'; }]]) {
    fs.cpSync(path.join(dir, 'tiny'), path.join(dir, name), { recursive: true });
    const file = path.join(dir, name, 'manifest.json');
    const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
    edit(manifest);
    fs.writeFileSync(file, JSON.stringify(manifest));
  }
  return dir;
}

/// The question every browser test asks about the tiny model, and the native CLI's answer to it.
export const IMAGE = 'tests/fixtures/images/landscape.png';
export const PROMPT = 'Describe the image.';
export function referenceAnswer(bundle) {
  return JSON.parse(mgm(['generate', '--model', bundle, '--image', IMAGE, '--prompt', PROMPT, '--max-new-tokens', '16', '--json', '--backend', 'cpu']));
}

/// Opens the package in `page` (served from `siteUrl`, the repository root): `MGM`, `ask(engine)`
/// (the question above, greedy) and `rejection(promise)` (an error as plain data) on window.
export async function openPackage(page, siteUrl) {
  await page.goto(`${siteUrl}/tests/browser/blank.html`);
  await page.evaluate(async () => {
    window.MGM = (await import('/pkg/src/index.js')).MGM;
    window.ask = (engine, extra = {}) =>
      fetch('/tests/fixtures/images/landscape.png').then((r) => r.blob()).then((image) =>
        engine.chat({
          messages: [{ role: 'user', content: [{ type: 'image', image }, { type: 'text', text: 'Describe the image.' }] }],
          temperature: 0, max_tokens: 16, ...extra,
        }));
    window.rejection = (p) => p.then(() => ({ resolved: true }), (e) => ({ message: e.message, code: e.code, name: e.name, fatal: !!e.fatal }));
    window.cachedFiles = async (base) => (await (await caches.open('mgm-web-v1')).keys()).filter((k) => k.url.startsWith(base)).length;
  });
}
