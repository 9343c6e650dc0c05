// The web console measured in headless Chromium on this machine, against a hub with the
// full demo city (94,000 channels), each figure beside a baseline taken in the same run:
//   node benches/console/console_bench.mjs [path/to/cityhub]   (default target/bench-fast/cityhub)
// Needs `npm ci` in tests/browser (playwright-core) and Debian's chromium-headless-shell.
// Prints a Markdown table for BENCHMARKS.md.

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const root = new URL('../../', import.meta.url).pathname;
const require = createRequire(join(root, 'tests/browser/package.json'));
const { chromium } = require('playwright-core');

const binary = process.argv[2] || join(root, 'target/bench-fast/cityhub');
const RUNS = 5;
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const round = (value, digits = 0) => Number(value.toFixed(digits));

/** Starts `cityhub serve --demo` on a free port; resolves with its address and admin token. */
function startHub() {
  const dataDir = mkdtempSync(join(tmpdir(), 'cityhub-console-bench-'));
  const hub = spawn(binary, ['--data-dir', dataDir, 'serve', '--demo', '--bind', '127.0.0.1:0',
    '--pg-bind', '', '--flight-bind', ''], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, CITYHUB__LOG__LEVEL: 'warn' } });
  return new Promise((resolve, reject) => {
    let out = '';
    hub.on('exit', (code) => reject(new Error(`the hub exited with ${code}: ${out}`)));
    hub.stdout.on('data', (chunk) => {
      out += chunk;
      const console = /Web console: (http:\/\/[^/\s]+)\/console\//.exec(out);
      const admin = /^\s*admin\s+admin\s+(chub_[0-9a-f]+)/m.exec(out);
      if (console && admin) resolve({ hub, base: console[1], token: admin[1], dataDir });
    });
  });
}

function assetSizes() {
  const folder = join(root, 'server/console');
  let raw = 0;
  let compressed = 0;
  for (const name of readdirSync(folder)) {
    const bytes = readFileSync(join(folder, name));
    raw += bytes.length;
    compressed += gzipSync(bytes, { level: 9 }).length;
  }
  return { raw, compressed };
}

const { hub, base, token, dataDir } = await startHub();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium-headless-shell',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-quic'],
});

/** A page already signed in (the token put in sessionStorage before the console starts). */
async function signedInPage(path) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  await context.addInitScript((value) => sessionStorage.setItem('cityhub.token', value), token);
  const page = await context.newPage();
  await page.goto(`${base}/console/${path}`);
  return { page, context };
}

const firstPaint = (page) => page.evaluate(() => new Promise((resolve) => {
  const read = () => {
    const entry = performance.getEntriesByName('first-contentful-paint')[0];
    if (entry) resolve(entry.startTime); else setTimeout(read, 20);
  };
  read();
}));

const results = [];
try {
  // 1. First paint of the sign-in page and of a signed-in page; baseline: a static page of
  //    the hub (the OpenAPI JSON rendered by the browser) in the same browser.
  const signIn = [];
  const signedIn = [];
  const plain = [];
  for (let i = 0; i < RUNS; i += 1) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/console/`);
    signIn.push(await firstPaint(page));
    await page.goto(`${base}/healthz`);
    plain.push(await firstPaint(page));
    await context.close();
    const opened = await signedInPage('#/catalogue');
    await opened.page.waitForSelector('[data-testid=dataset-list]');
    signedIn.push(await firstPaint(opened.page));
    await opened.context.close();
  }
  results.push(['First contentful paint, sign-in page', `${round(median(signIn))} ms`, `${round(median(plain))} ms (the hub's /healthz text)`, '≤ 1 s']);
  results.push(['First contentful paint, signed in (catalogue)', `${round(median(signedIn))} ms`, `${round(median(plain))} ms`, '≤ 1 s']);

  // 2. The camera map: from navigation to the first drawing of every channel; baseline: the
  //    same SQL fetched by the page without drawing.
  const ready = [];
  const fetchOnly = [];
  let channels = 0;
  for (let i = 0; i < RUNS; i += 1) {
    const { page, context } = await signedInPage('#/map');
    await page.waitForFunction(() => window.cityhubConsole.map?.ready, null, { timeout: 60_000 });
    ready.push(await page.evaluate(() => window.cityhubConsole.map.readyAt));
    channels = await page.evaluate(() => window.cityhubConsole.map.drawnPoints);
    fetchOnly.push(await page.evaluate(async (value) => {
      const started = performance.now();
      const response = await fetch('/api/v1/sql', {
        method: 'POST',
        headers: { Authorization: `Bearer ${value}`, Accept: 'application/x-ndjson', 'Content-Type': 'text/plain' },
        body: 'SELECT id, round(gcj02_longitude, 5) AS x, round(gcj02_latitude, 5) AS y, status, county_code, industry, type_code FROM hub.cameras WHERE gcj02_longitude IS NOT NULL AND gcj02_latitude IS NOT NULL',
      });
      await response.text();
      return performance.now() - started;
    }, token));
    await context.close();
  }
  results.push([`Camera map interactive (${channels.toLocaleString()} channels drawn)`, `${round(median(ready))} ms`,
    `${round(median(fetchOnly))} ms (fetching the same rows, no drawing)`, '≤ 2 s']);

  // 3. Panning: a 2-second drag, clustered (whole city) and zoomed in (single dots); frames
  //    drawn per second and the drawing time per frame; baseline: frames per second of an
  //    empty requestAnimationFrame loop in the same browser.
  const { page, context } = await signedInPage('#/map');
  await page.waitForFunction(() => window.cityhubConsole.map?.ready, null, { timeout: 60_000 });
  const idleFps = await page.evaluate(() => new Promise((resolve) => {
    let frames = 0;
    const started = performance.now();
    const step = () => {
      frames += 1;
      if (performance.now() - started < 2000) requestAnimationFrame(step); else resolve(frames / ((performance.now() - started) / 1000));
    };
    requestAnimationFrame(step);
  }));
  const box = await page.locator('[data-testid=map-canvas]').boundingBox();
  async function pan(label) {
    await page.evaluate(() => { window.cityhubConsole.map.frames.length = 0; });
    const started = Date.now();
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.5);
    await page.mouse.down();
    let step = 0;
    while (Date.now() - started < 2000) {
      step += 1;
      const x = box.x + box.width * (0.3 + 0.4 * Math.abs(Math.sin(step / 40)));
      await page.mouse.move(x, box.y + box.height * 0.5);
    }
    await page.mouse.up();
    const elapsed = (Date.now() - started) / 1000;
    const frames = await page.evaluate(() => [...window.cityhubConsole.map.frames]);
    const sorted = [...frames].sort((a, b) => a - b);
    const p95 = sorted[Math.floor(sorted.length * 0.95)] || 0;
    // The same drag driven from inside the page, one move per animation frame: what the
    // page can draw when input is not the limit (Playwright's moves each cross the
    // DevTools protocol, which caps how many arrive per second).
    const inPage = await page.evaluate(() => new Promise((resolve) => {
      const canvas = document.querySelector('[data-testid=map-canvas]');
      const rect = canvas.getBoundingClientRect();
      const at = (x) => ({ clientX: rect.left + x, clientY: rect.top + rect.height / 2, pointerId: 1, bubbles: true });
      canvas.dispatchEvent(new PointerEvent('pointerdown', at(rect.width * 0.3)));
      const started = performance.now();
      let frames = 0;
      const step = (now) => {
        frames += 1;
        const x = rect.width * (0.3 + 0.4 * Math.abs(Math.sin(frames / 40)));
        canvas.dispatchEvent(new PointerEvent('pointermove', at(x)));
        if (now - started < 2000) requestAnimationFrame(step);
        else {
          canvas.dispatchEvent(new PointerEvent('pointerup', at(x)));
          resolve(frames / ((performance.now() - started) / 1000));
        }
      };
      requestAnimationFrame(step);
    }));
    results.push([`Panning, ${label}`,
      `${round(inPage)} frames/s moved every frame; ${round(frames.length / elapsed)} frames/s with Playwright's mouse (drawing p95 ${round(p95, 1)} ms/frame)`,
      `${round(idleFps)} frames/s (empty animation loop)`, '≥ 30 frames/s']);
  }
  await pan('whole city, clustered');
  // Back to the whole city, then four steps in at the middle (about 3,500 px per degree):
  // single dots, tens of thousands of them in view.
  await page.click('text=全市');
  for (let i = 0; i < 4; i += 1) {
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5);
    await page.mouse.wheel(0, -400);
    await page.waitForTimeout(100);
  }
  await page.waitForFunction(() => !window.cityhubConsole.map.clustered);
  await pan(`zoomed in, ${(await page.evaluate(() => window.cityhubConsole.map.drawnPoints)).toLocaleString()} dots in view`);
  await context.close();

  // 4. A 1M-row query in the workbench: first rows on screen after the first byte; baseline:
  //    the first byte after the query was sent.
  const firstRows = [];
  const firstByte = [];
  const allRows = [];
  for (let i = 0; i < 3; i += 1) {
    const opened = await signedInPage('#/sql');
    await opened.page.waitForSelector('[data-testid=sql-editor]');
    await opened.page.fill('[data-testid=sql-editor]',
      'SELECT v.copy, t.* FROM gongan.traffic_violations t CROSS JOIN (VALUES (1), (2)) AS v(copy)');
    await opened.page.click('[data-testid=run]');
    await opened.page.waitForFunction(() => !window.cityhubConsole.workbench.running, null, { timeout: 120_000 });
    const timings = await opened.page.evaluate(() => ({ ...window.cityhubConsole.workbench.timings, rows: window.cityhubConsole.workbench.rows.length }));
    if (timings.rows !== 1_000_000) throw new Error(`the query gave ${timings.rows} rows`);
    firstRows.push(timings.firstRows - timings.firstByte);
    firstByte.push(timings.firstByte - timings.started);
    allRows.push(await opened.page.evaluate(() => performance.now()) - timings.started);
    await opened.context.close();
  }
  results.push(['1M-row query: first rows on screen after the first byte', `${round(median(firstRows))} ms`,
    `first byte ${round(median(firstByte))} ms after sending; all rows in ${round(median(allRows) / 1000, 1)} s`, '≤ 1 s']);

  const sizes = assetSizes();
  results.push(['Console assets (all files, incl. the county outlines)', `${round(sizes.compressed / 1024)} KB gzip -9`,
    `${round(sizes.raw / 1024)} KB uncompressed`, '≤ 1.5 MB compressed']);
} finally {
  await browser.close();
  hub.kill('SIGTERM');
  rmSync(dataDir, { recursive: true, force: true });
}

console.log('| measure | console | baseline (same run) | target |');
console.log('|---|---|---|---|');
for (const row of results) console.log(`| ${row.join(' | ')} |`);
