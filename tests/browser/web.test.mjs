// The demo page (web/) in headless Chromium on WebGPU, served as scripts/demo.sh serves it: its
// streamed answer must equal the native CLI's greedy text, the heat map must show the engine's
// mining weights, and stop / bad image / bad URL / offline reload must each behave.
import fs from 'node:fs';
import path from 'node:path';
import { Suite, assert, assertEq, buildSite, launch, mgm, newPage, serve, OUT, ROOT } from './harness.mjs';
import { demoCsp } from '../../scripts/serve.mjs';

const IMAGE = path.join(ROOT, 'tests/fixtures/images/landscape.png');
const PROMPT = 'Describe the image.';
const site = buildSite(path.join(OUT, 'site'));
const want = JSON.parse(mgm(['generate', '--model', path.join(site, 'models/demo'), '--image', IMAGE, '--prompt', PROMPT, '--max-new-tokens', '16', '--json', '--backend', 'cpu']));
const notImage = path.join(OUT, 'not-an-image.png');
fs.writeFileSync(notImage, 'this is text, not a picture');
const shots = path.join(ROOT, 'out/screenshots');
fs.mkdirSync(shots, { recursive: true });

// Served as scripts/demo.sh serves it, with the demo's Content-Security-Policy.
const server = await serve(site, { csp: demoCsp() });
const browser = await launch();
const page = await newPage(await browser.newContext());
const s = new Suite('demo page (headless Chromium, WebGPU)');

const text = (sel) => page.locator(sel).last().textContent();
const waitReady = () => page.waitForFunction(() => document.body.dataset.state === 'ready' && /^Ready/.test(document.getElementById('load-status').textContent), null, { timeout: 120_000 });
const idle = () => page.waitForFunction(() => !window.mgmPage.busy && (window.mgmPage.history.at(-1)?.role === 'assistant' || !document.getElementById('error').hidden), null, { timeout: 300_000 });
async function ask(prompt, files = [], maxTokens = 16) {
  await page.evaluate((n) => {
    const t = document.getElementById('temperature');
    t.value = '0';
    t.dispatchEvent(new Event('input'));
    document.getElementById('max-tokens').value = String(n);
  }, maxTokens);
  if (files.length) await page.setInputFiles('#image-input', files);
  await page.fill('#prompt', prompt);
  await page.click('#send');
  await page.waitForFunction(() => window.mgmPage.busy || !document.getElementById('error').hidden);
}

await page.addInitScript(() => {
  window.cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
});
await page.goto(`${server.url}/`);

await s.test('the page reports WebGPU and loads the demo bundle with progress', async () => {
  await page.waitForFunction(() => document.getElementById('support-summary').textContent !== 'checking…');
  assert(/random text/.test(await text('#model-note')), 'the page must say the demo answers are random');
  await page.click('#load');
  await page.waitForSelector('#progress-box:not([hidden])');
  await waitReady();
  assert(/stored in the browser/.test(await text('#cache-text')), await text('#cache-text'));
});

await s.test('an answer about an attached image streams the native CLI greedy text', async () => {
  await ask(PROMPT, [IMAGE]);
  await idle();
  assertEq(await text('#messages li.assistant .text'), want.text, 'answer text');
  assertEq(await page.evaluate(() => window.mgmPage.last.ids), want.ids, 'answer ids');
  assert(/tok\/s/.test(await text('#messages li.assistant .stats')), 'no speed shown');
});

await s.test('the heat map is drawn from the engine mining weights', async () => {
  const r = await page.evaluate(() => {
    const m = window.mgmPage.last.images[0];
    const canvas = document.querySelector('#messages li.assistant:last-child canvas.heat');
    const grid = Math.round(Math.sqrt(m.tokens));
    const s = m.window;
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    // Every high-res pixel's alpha is its weight relative to the strongest in its window.
    let wrong = 0;
    for (let t = 0; t < m.tokens; t++) {
      const row = m.attention.subarray(t * s * s, (t + 1) * s * s);
      const max = Math.max(...row);
      for (let k = 0; k < s * s; k++) {
        const alpha = px[((Math.floor(t / grid) * s + Math.floor(k / s)) * canvas.width + (t % grid) * s + (k % s)) * 4 + 3];
        if (Math.abs(alpha - 153 * (row[k] / max)) > 1) wrong++;
      }
    }
    return { wrong, tokens: m.tokens, width: canvas.width, side: grid * s, sum: m.attention.subarray(0, s * s).reduce((a, b) => a + b, 0) };
  });
  assertEq(r.width, r.side, 'canvas size');
  assert(Math.abs(r.sum - 1) < 1e-4, `attention row sums to ${r.sum}`);
  assertEq(r.wrong, 0, `pixels not shaded by the engine's weight (of ${r.tokens} windows)`);
  await page.screenshot({ path: path.join(shots, 'web-after-answer.png'), fullPage: true });
});

await s.test('regenerate replaces the last answer (greedy: with the same text)', async () => {
  const before = await page.locator('#messages li').count();
  await page.click('#regenerate');
  await page.waitForFunction(() => window.mgmPage.busy);
  await idle();
  assertEq(await page.locator('#messages li').count(), before, 'messages after regenerate');
  assertEq(await text('#messages li.assistant .text'), want.text, 'regenerated text');
});

await s.test('stop ends an answer mid-way and the page keeps working', async () => {
  await ask('Tell me more.', [], 200);
  // Clicked from inside the page as soon as the first text shows: the tiny model writes 200
  // tokens in about a second, less than Playwright's own click takes to check the button.
  await page.waitForFunction(() => {
    if (!(document.querySelector('#messages li.assistant:last-child .text')?.textContent.length > 0)) return false;
    document.getElementById('stop').click();
    return true;
  });
  await idle();
  assertEq(await page.evaluate(() => window.mgmPage.last.finish_reason), 'abort', 'finish reason');
  assert(/^Stopped\./.test(await text('#messages li.assistant .stats')), await text('#messages li.assistant .stats'));
  await page.click('#clear');
  await ask(PROMPT, [IMAGE]);
  await idle();
  assertEq(await text('#messages li.assistant .text'), want.text, 'answer after stop and clear');
});

await s.test('a bad image shows its message, keeps the question, and the page still answers', async () => {
  await page.click('#clear');
  await ask(PROMPT, [notImage]);
  await idle();
  assert(/That image could not be used: image 1: not an image/.test(await text('#error')), await text('#error'));
  assertEq(await page.inputValue('#prompt'), PROMPT, 'question kept');
  assertEq(await page.locator('#attachments figure').count(), 1, 'attachment kept');
  await page.click('#attachments button');
  await ask(PROMPT, [IMAGE]);
  await idle();
  assertEq(await text('#messages li.assistant .text'), want.text, 'answer after the bad image');
});

await s.test('a bundle URL that 404s shows its message and the page can load again', async () => {
  const good = await page.inputValue('#bundle-url');
  await page.fill('#bundle-url', `${server.url}/models/nope/`);
  await page.click('#load');
  await page.waitForFunction(() => !document.getElementById('error').hidden, null, { timeout: 60_000 });
  assert(/Download failed: .*manifest\.json: HTTP 404/.test(await text('#error')), await text('#error'));
  await page.fill('#bundle-url', good);
  await page.click('#load');
  await waitReady();
});

await s.test('images attach by drag and drop and by paste, and can be removed', async () => {
  const counts = await page.evaluate(async () => {
    const png = await (await fetch('bench.png')).blob();
    const files = () => {
      const dt = new DataTransfer();
      dt.items.add(new File([png], 'dropped.png', { type: 'image/png' }));
      return dt;
    };
    const count = () => document.querySelectorAll('#attachments figure').length;
    const before = count();
    document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', { dataTransfer: files(), bubbles: true, cancelable: true }));
    const dropped = count();
    document.getElementById('prompt').dispatchEvent(new ClipboardEvent('paste', { clipboardData: files(), bubbles: true, cancelable: true }));
    const pasted = count();
    document.querySelector('#attachments button').click();
    document.querySelector('#attachments button').click();
    return [before, dropped, pasted, count()];
  });
  assertEq(counts, [0, 1, 2, 0], 'attachments before, after drop, after paste, after removing both');
});

await s.test('with the storage quota full, the page answers uncached and says so', async () => {
  const cdp = await page.context().newCDPSession(page);
  await page.evaluate(() => caches.delete('mgm-web-v1'));
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url, quotaSize: 1024 });
  const status = (re) => page.waitForFunction((r) => document.body.dataset.state === 'ready' && new RegExp(r).test(document.getElementById('load-status').textContent), re.source, { timeout: 120_000 });
  try {
    await page.click('#load');
    await status(/Not saved for offline use/);
    assert(/storage for this site is full/.test(await text('#load-status')), await text('#load-status'));
    await page.click('#clear');
    await ask(PROMPT, [IMAGE]);
    await idle();
    assertEq(await text('#messages li.assistant .text'), want.text, 'answer');
  } finally {
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url });
    // Loaded again with room, so the offline test below finds it cached.
    await page.click('#load');
    await status(/^Ready.*downloaded(?!.*Not saved)/);
  }
});

await s.test('the page runs under its Content-Security-Policy, which blocks other origins', async () => {
  const csp = (await fetch(`${server.url}/`)).headers.get('content-security-policy');
  assert(/default-src 'none'/.test(csp) && /connect-src 'self'/.test(csp), csp);
  const other = await serve(ROOT, { cors: true });
  try {
    const r = await page.evaluate((u) => fetch(`${u}/README.md`).then(() => 'fetched', () => 'blocked'), other.url);
    assertEq(r, 'blocked', 'fetch from another origin');
  } finally {
    await other.close();
  }
  const violations = await page.evaluate(() => window.cspViolations);
  assert(violations.length === 1 && violations[0].startsWith('connect-src'), `violations: ${JSON.stringify(violations)}`);
});

await s.test('with the server stopped, a reload loads the cached model and answers', async () => {
  await page.evaluate(() => navigator.serviceWorker.ready);
  await server.close();
  await page.reload();
  await waitReady();
  assert(/from the browser cache/.test(await text('#load-status')), await text('#load-status'));
  await ask(PROMPT, [IMAGE]);
  await idle();
  assertEq(await text('#messages li.assistant .text'), want.text, 'offline answer');
});

await browser.close();
s.finish();
