// The web console in a real browser (Debian's chromium-headless-shell, driven by
// playwright-core) against a real hub with the demo city. Started by `tests/it/console.rs`,
// which runs the hub on port 0 and passes its address and the demo tokens in:
//   CITYHUB_URL       http://127.0.0.1:PORT
//   CITYHUB_TOKENS    JSON: {admin, gongan_producer, zhili_producer, zhili_analyst,
//                     jiaotong_analyst, zhili_dashboard, county_analyst, county_code}
//   SCREENSHOT_DIR    where each test leaves a screenshot (the CI artefacts)
// Run alone: `node --test tests/browser/` with those variables set.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

const BASE = process.env.CITYHUB_URL;
const TOKENS = JSON.parse(process.env.CITYHUB_TOKENS || '{}');
const SHOTS = process.env.SCREENSHOT_DIR || 'target/console-screenshots';
const CHROMIUM = process.env.CHROMIUM
  || ['/usr/bin/chromium-headless-shell', '/usr/bin/chromium'].find((path) => {
    try { readFileSync(path, { flag: 'r' }); return true; } catch { return false; }
  });

let browser;
before(async () => {
  assert.ok(BASE, 'CITYHUB_URL is not set: run this through `cargo test` (tests/it/console.rs)');
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Without the background-networking flags Chromium keeps trying to reach Google on a
    // closed network; the console itself needs nothing but the hub.
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
});
after(async () => { await browser?.close(); });

/** A fresh page that fails the test on any script error or CSP violation. */
async function newPage(t) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // The browser reports every 4xx answer; the tests provoke some on purpose (a wrong token,
    // a bad query) and check that the page shows them.
    if (message.type() === 'error' && !/Failed to load resource: the server responded with a status of 4\d\d/.test(message.text())) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  t.after(async () => {
    await page.screenshot({ path: join(SHOTS, `${t.name.replace(/[^a-z0-9]+/gi, '-')}.png`), fullPage: false });
    await context.close();
    assert.deepEqual(problems, [], 'the page raised errors');
  });
  return page;
}

async function signIn(page, token) {
  await page.goto(`${BASE}/console/`);
  await page.fill('[data-testid=token]', token);
  await page.click('[data-testid=signin]');
  await page.waitForSelector('[data-testid=who]');
}

async function hub(path, token, init = {}) {
  const response = await fetch(`${BASE}/api/v1${path}`, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, ...(init.headers || {}) },
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function sql(token, query) {
  const { status, body } = await hub('/sql', token, { method: 'POST', body: query, headers: { 'Content-Type': 'text/plain' } });
  assert.equal(status, 200, JSON.stringify(body));
  return body;
}

async function runInWorkbench(page, query) {
  await page.fill('[data-testid=sql-editor]', query);
  await page.click('[data-testid=run]');
  await page.waitForFunction(() => !window.cityhubConsole.workbench.running);
}

test('the console speaks both languages with the same words', async () => {
  // Imported as the page imports it: the dictionaries are plain data.
  const { KEYS } = await import('../../server/console/i18n.js');
  assert.deepEqual([...KEYS.en].sort(), [...KEYS.zh].sort());
  assert.ok(KEYS.zh.length > 150);
});

const pageState = (page, path) => page.evaluate((p) => p.split('.').reduce((o, k) => o?.[k], window.cityhubConsole), path);

test('the camera map draws every channel and the offline filter shows the offline ones', { timeout: 120_000 }, async (t) => {
  const page = await newPage(t);
  await signIn(page, TOKENS.admin);
  let total = 0;
  const withPosition = 'FROM hub.cameras WHERE gcj02_longitude IS NOT NULL AND gcj02_latitude IS NOT NULL';
  // Statuses move while the demo platform runs: compare with counts that held still from
  // before the map loaded until after it drew.
  for (let attempt = 1; ; attempt += 1) {
    const [before] = await sql(TOKENS.admin, `SELECT count(*) AS n, sum(CASE WHEN status = 'offline' THEN 1 ELSE 0 END) AS offline ${withPosition}`);
    await page.goto(`${BASE}/console/#/map`);
    await page.reload();
    await page.waitForFunction(() => window.cityhubConsole.map?.ready, null, { timeout: 60_000 });
    const drawn = await pageState(page, 'map.drawnPoints');
    total = await pageState(page, 'map.total');
    await page.selectOption('[data-testid=filter-status]', 'offline');
    await page.waitForFunction((n) => window.cityhubConsole.map.filtered !== n, total);
    await page.waitForTimeout(100);
    const offlineDrawn = await pageState(page, 'map.drawnPoints');
    const [afterwards] = await sql(TOKENS.admin, `SELECT count(*) AS n, sum(CASE WHEN status = 'offline' THEN 1 ELSE 0 END) AS offline ${withPosition}`);
    if (JSON.stringify(before) !== JSON.stringify(afterwards) && attempt < 4) continue;
    assert.ok(before.n > 90_000, `the demo city has ${before.n} channels with a position`);
    assert.equal(total, before.n, 'every channel with a position is loaded');
    assert.equal(drawn, before.n, 'the whole-city view draws every channel');
    assert.ok(before.offline > 0, 'the demo city has offline channels');
    assert.equal(offlineDrawn, before.offline, 'the offline filter draws exactly the offline channels');
    break;
  }
  // Zoomed in, channels are single dots, and a click on one shows the registry's record.
  await page.selectOption('[data-testid=filter-status]', '');
  const box = await page.locator('[data-testid=map-canvas]').boundingBox();
  const target = await page.evaluate(() => {
    const map = window.cityhubConsole.map;
    return { clustered: map.clustered };
  });
  assert.equal(target.clustered, true);
  for (let i = 0; i < 4; i += 1) {
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.45);
    await page.mouse.wheel(0, -400);
    await page.waitForTimeout(150);
  }
  await page.waitForFunction(() => !window.cityhubConsole.map.clustered);
  const dots = await pageState(page, 'map.drawnPoints');
  assert.ok(dots > 0, 'zoomed in, some channels are in view');
  assert.ok(dots < total, 'zoomed in, only the channels in view are drawn');
});

test('each demo role signs in and sees only what its role may do', { timeout: 60_000 }, async (t) => {
  const page = await newPage(t);
  const expected = [
    ['admin', ['sql', 'catalogue', 'map', 'kpi', 'audit'], /admin.*管理员/],
    ['zhili_producer', ['catalogue', 'kpi'], /zhili.*数据提供方/],
    ['jiaotong_analyst', ['sql', 'catalogue', 'map', 'kpi'], /jiaotong.*分析人员/],
    ['zhili_dashboard', ['kpi'], /zhili.*大屏/],
    ['county_analyst', ['sql', 'catalogue', 'map', 'kpi'], /zhili.*分析人员.*(县|区|市)/],
  ];
  for (const [name, pages, who] of expected) {
    await signIn(page, TOKENS[name]);
    assert.match(await page.textContent('[data-testid=who]'), who, name);
    const shown = await page.$$eval('header nav a', (links) => links.map((a) => a.dataset.testid.slice(4)));
    assert.deepEqual(shown, pages, `${name} sees its pages`);
    // The token is in this tab's session only: not in the URL, not kept across tabs.
    assert.ok(!page.url().includes(TOKENS[name]), 'no token in the URL');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('cityhub.token')), TOKENS[name]);
    assert.equal(await page.evaluate(() => JSON.stringify(localStorage).includes('chub_')), false);
    await page.click('[data-testid=signout]');
    await page.waitForSelector('[data-testid=token]');
  }
  // A page the role may not use falls back to its first one.
  await signIn(page, TOKENS.jiaotong_analyst);
  await page.goto(`${BASE}/console/#/catalogue`);
  await page.waitForFunction(() => window.cityhubConsole.route === 'catalogue');
  await page.goto(`${BASE}/console/#/audit`);
  await page.waitForFunction(() => window.cityhubConsole.route === 'sql');
  assert.equal(await page.locator('[data-testid=audit-table]').count(), 0);
  await page.click('[data-testid=signout]');
  await page.fill('[data-testid=token]', 'chub_not_a_real_token');
  await page.click('[data-testid=signin]');
  await page.waitForFunction(() => document.querySelector('[data-testid=signin-message]')?.textContent !== '');
  assert.match(await page.textContent('[data-testid=signin-message]'), /令牌无效/);
  // English on request.
  await page.click('[data-testid=language]');
  await page.waitForSelector('text=Access token');
});

test('a query shows its rows, marks masked columns, points at errors, exports and charts', { timeout: 90_000 }, async (t) => {
  const page = await newPage(t);
  await signIn(page, TOKENS.jiaotong_analyst);
  await page.goto(`${BASE}/console/#/sql`);
  await page.waitForSelector('[data-testid=table-tree] details');
  // Completion offers the caller's own tables after `schema.`.
  await page.fill('[data-testid=sql-editor]', '');
  await page.type('[data-testid=sql-editor]', 'SELECT * FROM gongan.tr');
  await page.waitForSelector('.completion li');
  assert.match(await page.textContent('.completion'), /traffic_violations/);
  await page.keyboard.press('Enter');
  assert.equal(await page.inputValue('[data-testid=sql-editor]'), 'SELECT * FROM gongan.traffic_violations');

  // jiaotong's grant on traffic violations masks plates.
  await runInWorkbench(page, 'SELECT violation_id, plate_no, road FROM gongan.traffic_violations ORDER BY violation_id LIMIT 5');
  const rows = await page.$$('[data-testid=result-rows] .grid-row');
  assert.equal(rows.length, 5);
  const expected = await sql(TOKENS.jiaotong_analyst, 'SELECT violation_id, plate_no, road FROM gongan.traffic_violations ORDER BY violation_id LIMIT 5');
  const firstRow = await rows[0].$$eval('.cell', (cells) => cells.map((c) => c.textContent));
  assert.deepEqual(firstRow, [expected[0].violation_id, expected[0].plate_no, expected[0].road]);
  assert.match(expected[0].plate_no, /\*/, 'the plate is masked by the hub');
  const headClasses = await page.$$eval('.grid-head .cell', (cells) => cells.map((c) => c.className));
  assert.deepEqual(headClasses.map((c) => c.includes('masked-head')), [false, true, false]);
  const cellClasses = await rows[0].$$eval('.cell', (cells) => cells.map((c) => c.className.includes('masked')));
  assert.deepEqual(cellClasses, [false, true, false]);

  // A hostile value in a result is text.
  await runInWorkbench(page, "SELECT '<img src=x onerror=\"window.__xss=1\">' AS probe");
  assert.equal(await page.textContent('[data-testid=result-rows] .cell'), '<img src=x onerror="window.__xss=1">');
  assert.equal(await page.evaluate(() => window.__xss), undefined);

  // An error is shown with its position, marked in the editor.
  await runInWorkbench(page, 'SELECT violation_id,\n  no_such_column\nFROM gongan.traffic_violations');
  assert.match(await page.textContent('[data-testid=sql-error]'), /no_such_column|No field named/);
  assert.match(await page.textContent('[data-testid=sql-error]'), /第 2 行/);
  assert.equal(await page.textContent('.tok-error'), 'no_such_column');

  // 100,000 rows stream in; only the rows in view are in the page, and scrolling works.
  await runInWorkbench(page, 'SELECT violation_id, occurred_at, plate_no, fine_yuan FROM gongan.traffic_violations ORDER BY violation_id LIMIT 100000');
  assert.equal(await pageState(page, 'workbench.rows.length'), 100_000);
  assert.match(await page.textContent('[data-testid=sql-status]'), /100,000/);
  const inPage = (await page.$$('[data-testid=result-rows] .grid-row')).length;
  assert.ok(inPage > 10 && inPage < 200, `${inPage} rows are in the page`);
  const last = await sql(TOKENS.jiaotong_analyst, 'SELECT violation_id FROM gongan.traffic_violations ORDER BY violation_id LIMIT 1 OFFSET 99999');
  await page.$eval('.grid-scroll', (el) => { el.scrollTop = el.scrollHeight; });
  await page.waitForFunction((id) => {
    const shown = document.querySelectorAll('[data-testid=result-rows] .grid-row');
    return shown.length > 0 && shown[shown.length - 1].firstChild.textContent === id;
  }, last[0].violation_id, { timeout: 10_000 });

  // Parameters, CSV export and a chart of a small result.
  await runInWorkbench(page, 'SELECT road, count(*) AS n FROM gongan.traffic_violations WHERE points >= $1 GROUP BY road ORDER BY n DESC LIMIT 8');
  await page.fill('.params input[name="$1"]', '3');
  await page.click('[data-testid=run]');
  await page.waitForFunction(() => !window.cityhubConsole.workbench.running);
  const roads = await sql(TOKENS.jiaotong_analyst, 'SELECT road, count(*) AS n FROM gongan.traffic_violations WHERE points >= 3 GROUP BY road ORDER BY n DESC LIMIT 8');
  assert.equal(await pageState(page, 'workbench.rows.length'), roads.length);
  const download = page.waitForEvent('download');
  await page.click('text=导出 CSV');
  const file = await download;
  const csv = readFileSync(await file.path(), 'utf8').trim().split('\n');
  assert.equal(csv[0], 'road,n');
  assert.equal(csv.length, roads.length + 1);
  const parquetDownload = page.waitForEvent('download');
  await page.click('text=导出 Parquet');
  const parquet = readFileSync(await (await parquetDownload).path());
  assert.equal(parquet.subarray(0, 4).toString(), 'PAR1');
  assert.equal(parquet.subarray(-4).toString(), 'PAR1');
  await page.click('text=图表');
  await page.waitForSelector('[data-testid=chart] svg rect');
  assert.equal((await page.$$('[data-testid=chart] svg rect')).length, roads.length);
  await page.click('text=表格');

  // Cancel stops a long query on the hub, which audits it as cancelled.
  // (Twenty billion numbers: many small batches, so the engine notices the cancel at once.
  // A query that spends minutes inside one batch, such as a huge nested-loop join, would stop
  // only when that batch is done.)
  const slow = 'SELECT sum(value) AS total FROM generate_series(1, 20000000000)';
  await page.fill('[data-testid=sql-editor]', slow);
  await page.click('[data-testid=run]');
  await page.waitForTimeout(800);
  await page.click('[data-testid=cancel]');
  await page.waitForFunction(() => !window.cityhubConsole.workbench.running);
  assert.match(await page.textContent('[data-testid=sql-status]'), /已取消/);
  let outcome = null;
  for (let i = 0; i < 50 && outcome === null; i += 1) {
    const { body } = await hub('/audit?principal=demo-jiaotong-analyst&action=query&limit=10000', TOKENS.admin);
    outcome = body.filter((e) => e.detail.sql === slow).map((e) => e.outcome)[0] ?? null;
    if (outcome === null) await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.equal(outcome, 'cancelled');
});

test('the audit viewer filters by principal and action (admins only)', { timeout: 60_000 }, async (t) => {
  const page = await newPage(t);
  await sql(TOKENS.zhili_analyst, 'SELECT count(*) FROM zhili.grid_events');
  await signIn(page, TOKENS.admin);
  await page.goto(`${BASE}/console/#/audit`);
  await page.fill('[data-testid=audit-principal]', 'demo-zhili-analyst');
  await page.selectOption('[data-testid=audit-action]', 'query');
  await page.click('[data-testid=audit-search]');
  // The page first lists everything; wait for the filtered answer.
  await page.waitForFunction(() => /^已显示 \d+ 条$/.test(document.querySelector('form.toolbar .status').textContent)
    && document.querySelectorAll('[data-testid=audit-table] tbody tr').length > 0);
  const principals = await page.$$eval('[data-testid=audit-table] tbody tr td:nth-child(3)', (cells) => cells.map((c) => c.textContent));
  assert.ok(principals.every((p) => p.startsWith('demo-zhili-analyst')), principals.join(' | '));
  const actions = await page.$$eval('[data-testid=audit-table] tbody tr td:nth-child(4)', (cells) => cells.map((c) => c.textContent));
  assert.ok(actions.every((a) => a.startsWith('query')), actions.join(' | '));
  assert.match(await page.textContent('[data-testid=audit-table]'), /SELECT count\(\*\) FROM zhili\.grid_events/);
  // A time window that ends before the hub existed holds nothing.
  const shown = () => page.textContent('form.toolbar .status');
  await page.fill('[data-testid=audit-until]', '2000-01-01T08:00');
  await page.click('[data-testid=audit-search]');
  await page.waitForFunction(() => /^已显示/.test(document.querySelector('form.toolbar .status').textContent));
  assert.equal(await shown(), '已显示 0 条');
  await page.fill('[data-testid=audit-until]', '');
  await page.fill('[data-testid=audit-since]', '2000-01-01T08:00');
  await page.click('[data-testid=audit-search]');
  await page.waitForFunction(() => /^已显示/.test(document.querySelector('form.toolbar .status').textContent));
  assert.equal(await shown(), `已显示 ${principals.length} 条`);
});

test('a department applies for a conditional dataset, the owner approves, then it reads it', { timeout: 90_000 }, async (t) => {
  const page = await newPage(t);
  const counting = 'SELECT count(*) AS n FROM zhili.hotline_cases';
  const refused = await hub('/sql', TOKENS.jiaotong_analyst, { method: 'POST', body: counting });
  assert.equal(refused.status, 403, 'jiaotong may not read the hotline cases before a grant');

  await signIn(page, TOKENS.jiaotong_analyst);
  await page.goto(`${BASE}/console/#/catalogue`);
  await page.click('[data-testid=tab-datasets]');
  await page.click('tr[data-dataset="zhili.hotline_cases"]');
  await page.waitForSelector('[data-testid=apply-form]');
  // The detail lists the snapshots with their row counts, newest first, as the hub does.
  const listed = await hub('/datasets/zhili.hotline_cases/snapshots', TOKENS.jiaotong_analyst);
  const shownRows = await page.$$eval('[data-testid=snapshots] tbody tr td:nth-child(4)', (cells) => cells.map((c) => c.textContent));
  assert.equal(shownRows.length, Math.min(listed.body.length, 8));
  assert.equal(shownRows[0], listed.body[0].rows.toLocaleString('zh-CN'));
  await page.fill('[data-testid=apply-purpose]', '交通拥堵与市民投诉关联分析');
  await page.click('[data-testid=apply-submit]');
  await page.waitForFunction(() => /#\d+/.test(document.querySelector('[data-testid=apply-message]').textContent));
  const id = Number(/#(\d+)/.exec(await page.textContent('[data-testid=apply-message]'))[1]);
  await page.click('[data-testid=tab-outbox]');
  await page.waitForSelector(`[data-testid=outbox] tr[data-request="${id}"]`);

  await page.click('[data-testid=signout]');
  await signIn(page, TOKENS.zhili_producer);
  await page.goto(`${BASE}/console/#/catalogue`);
  await page.click('[data-testid=tab-inbox]');
  const row = page.locator(`[data-testid=inbox] tr[data-request="${id}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), /交通拥堵与市民投诉关联分析/);
  await row.locator('[data-testid=approve]').click();
  await page.waitForFunction((rid) => /已批准/.test(document.querySelector(`tr[data-request="${rid}"]`)?.textContent || ''), id);

  await page.click('[data-testid=signout]');
  await signIn(page, TOKENS.jiaotong_analyst);
  await page.goto(`${BASE}/console/#/sql`);
  await runInWorkbench(page, counting);
  const [expected] = await sql(TOKENS.jiaotong_analyst, counting);
  assert.ok(expected.n > 0);
  assert.equal(await page.textContent('[data-testid=result-rows] .cell'), String(expected.n));
});

test('a keepalive batch moves a county\'s online rate on the KPI screen without a reload', { timeout: 120_000 }, async (t) => {
  const page = await newPage(t);
  await signIn(page, TOKENS.zhili_dashboard);
  await page.goto(`${BASE}/console/#/kpi`);
  await page.waitForSelector('[data-testid=kpi-county] td[data-testid^=online-]');
  await page.waitForFunction(() => document.querySelector('[data-testid=kpi-live]').className.includes('open'));
  await page.evaluate(() => { window.__sameDocument = true; });
  // The video channels of one county that are offline now come back with one keepalive batch.
  const offline = await sql(TOKENS.admin, `SELECT county_code, id FROM hub.cameras WHERE status = 'offline'
    AND type_code IN (121, 122, 131, 132) AND county_code = (
      SELECT county_code FROM hub.cameras WHERE status = 'offline' AND type_code IN (121, 122, 131, 132)
      GROUP BY county_code ORDER BY count(*) DESC LIMIT 1)`);
  assert.ok(offline.length > 0, 'some video channel is offline');
  const county = offline[0].county_code;
  const cell = `[data-testid=kpi-county] td[data-testid=online-${county}]`;
  const before = await page.textContent(cell);
  const loads = await pageState(page, 'kpi.statsLoads');
  const sent = await hub('/cameras/keepalive', TOKENS.admin, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(offline.map((c) => ({ id: c.id }))),
  });
  assert.ok(sent.status < 300, JSON.stringify(sent.body));
  // The demo platform keeps changing a few statuses, so wait for a rise, not for any change.
  await page.waitForFunction(([selector, text]) => parseFloat(document.querySelector(selector).textContent) > parseFloat(text),
    [cell, before], { timeout: 90_000 });
  const afterwards = await page.textContent(cell);
  assert.ok(parseFloat(afterwards) > parseFloat(before), `${before} → ${afterwards}`);
  assert.ok(await pageState(page, 'kpi.statsLoads') > loads);
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded');
  // Each dashboard panel draws its endpoint's rows (the demo city has rows for each).
  for (const panel of ['hotline-today', 'grid-events-open', 'violations-per-hour', 'camera-offline-24h']) {
    await page.waitForSelector(`[data-testid=kpi-${panel}] svg :is(rect, circle)`);
  }
});

test('dataset and camera texts are rendered as text: <script>, <img onerror> and <svg onload> do not run', { timeout: 60_000 }, async (t) => {
  const hostile = '<script>window.__xss = "script"</script><img src=x onerror="window.__xss = \'img\'"> 恶意描述';
  const created = await hub('/datasets', TOKENS.zhili_producer, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      name: 'zhili.xss_probe', description: hostile, classification: 'general', sharing: 'unconditional',
      columns: [{ name: 'id', type: 'int64', nullable: false }],
    }),
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const page = await newPage(t);
  await signIn(page, TOKENS.jiaotong_analyst);
  await page.goto(`${BASE}/console/#/catalogue`);
  await page.click('[data-testid=tab-datasets]');
  const row = page.locator('tr[data-dataset="zhili.xss_probe"]');
  await row.waitFor();
  assert.equal(await row.locator('td.description').textContent(), hostile);
  await row.click();
  await page.waitForSelector('[data-testid=dataset-description]');
  assert.equal(await page.textContent('[data-testid=dataset-description]'), hostile);
  assert.equal(await page.locator('[data-testid=dataset-detail] img, [data-testid=dataset-list] img, script:not([src])').count(), 0);
  await page.waitForTimeout(300);
  assert.equal(await page.evaluate(() => window.__xss), undefined);

  // The same for a camera reported with hostile texts, opened by a link to it on the map.
  const id = '51102500001320999991';
  const camera = await hub(`/cameras/${id}`, TOKENS.gongan_producer, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: hostile, address: '<svg onload="window.__xss=\'svg\'">资中县', longitude: 104.85, latitude: 29.76 }),
  });
  assert.ok(camera.status === 201 || camera.status === 200, JSON.stringify(camera.body));
  await page.goto(`${BASE}/console/#/map/${id}`);
  await page.reload();
  await page.waitForFunction((name) => document.querySelector('[data-testid=camera-detail] h3')?.textContent === name, hostile, { timeout: 60_000 });
  assert.match(await page.textContent('[data-testid=camera-detail]'), /<svg onload=/);
  assert.equal(await page.locator('[data-testid=camera-detail] img, [data-testid=camera-detail] svg, script:not([src])').count(), 0);
  assert.equal(await pageState(page, 'map.clustered'), false, 'the link zooms in on the channel');
  await page.waitForTimeout(300);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
});
