// The KPI screens (大屏) for the governance centre's wall: 在线率 / 完好率 / 建档率 per county
// and per industry, channels going offline over the last 24 hours, and the demo city's
// dashboards. Everything is fed by the dashboard endpoints' server-sent events: the screen
// changes when the data does, without polling and without a reload.

import { api, events } from './api.js';
import { chart } from './chart.js';
import { beijingTime, h, number, percent, replace } from './dom.js';
import { t } from './i18n.js';

/** The endpoints the screen listens to, and how each is drawn. */
const PANELS = [
  { endpoint: 'camera-offline-24h', title: 'kpi.offline24h', kind: 'line', x: 'hour', y: 'went_offline', time: true },
  { endpoint: 'hotline-today', title: 'kpi.hotline', kind: 'bar', x: 'category', y: 'cases' },
  { endpoint: 'violations-per-hour', title: 'kpi.violations', kind: 'line', x: 'hour', y: 'violations', time: true },
  { endpoint: 'grid-events-open', title: 'kpi.gridEvents', kind: 'bar', x: 'region_name', y: 'open_events' },
];
/** Its events say that channel statuses changed: the rates are read again then. */
const STATUS_ENDPOINT = 'camera-online-rate';

export function kpiScreen(root, session) {
  const controller = new AbortController();
  const state = { statsLoads: 0, events: {}, region: null, industry: null };
  window.cityhubConsole.kpi = state;

  const clock = h('span', { class: 'clock' });
  const live = h('span', { class: 'live', 'data-testid': 'kpi-live' }, t('kpi.connecting'));
  const tiles = h('div', { class: 'tiles', 'data-testid': 'kpi-tiles' });
  const byCounty = h('div', { class: 'panel', 'data-testid': 'kpi-county' });
  const byIndustry = h('div', { class: 'panel', 'data-testid': 'kpi-industry' });
  const panels = PANELS.map((panel) => ({
    ...panel,
    element: h('div', { class: 'panel', 'data-testid': `kpi-${panel.endpoint}` },
      h('h3', {}, t(panel.title)), h('p', { class: 'muted' }, t('common.loading'))),
  }));
  const screen = h('div', { class: 'kpi', 'data-testid': 'kpi-screen' },
    h('header', {},
      h('h2', {}, session.region_name ? t('kpi.titleRegion', session.region_name) : t('kpi.title')),
      live, clock,
      h('button', { on: { click: () => toggleFullScreen(screen) } }, t('kpi.fullscreen'))),
    tiles,
    h('div', { class: 'kpi-grid' }, byCounty, byIndustry, panels.map((p) => p.element)));
  replace(root, screen);

  const tick = () => { clock.textContent = beijingTime(Date.now()); };
  tick();
  const timer = setInterval(tick, 1000);

  async function loadStats() {
    const [region, industry] = await Promise.all([
      api('/cameras/stats?group_by=region'),
      api('/cameras/stats?group_by=industry'),
    ]);
    state.region = region;
    state.industry = industry;
    state.statsLoads += 1;
    state.updatedAt = Date.now();
    drawTiles(region.overall);
    drawRates(byCounty, t('kpi.byCounty'), region.groups, 'county');
    drawRates(byIndustry, t('kpi.byIndustry'), industry.groups, 'industry');
  }

  function drawTiles(overall) {
    const tile = (label, value, testid) => h('div', { class: 'tile', 'data-testid': testid },
      h('div', { class: 'value' }, value), h('div', { class: 'label' }, label));
    replace(tiles,
      tile(t('kpi.online'), percent(overall.online_rate, 2), 'tile-online'),
      tile(t('kpi.availability'), percent(overall.availability, 2), 'tile-availability'),
      tile(t('kpi.completeness'), percent(overall.completeness, 2), 'tile-completeness'),
      tile(t('kpi.channels'), number(overall.total), 'tile-total'),
      tile(t('kpi.offlineNow'), number(overall.offline), 'tile-offline'));
  }

  function drawRates(panel, title, groups, kind) {
    const bar = (value) => h('div', { class: 'rate' },
      h('div', { class: 'rate-bar', style: { width: `${Math.max(0, Math.min(1, value || 0)) * 100}%` } }),
      h('span', {}, percent(value, 2)));
    replace(panel, h('h3', {}, title),
      h('table', { class: 'data rates' },
        h('thead', {}, h('tr', {}, [kind === 'county' ? t('kpi.county') : t('kpi.industry'), t('kpi.channels'),
          t('kpi.online'), t('kpi.availability'), t('kpi.completeness')].map((x) => h('th', {}, x)))),
        h('tbody', {}, groups.map((g) => h('tr', { 'data-key': g.key ?? '' },
          h('td', {}, g.name || g.key || '—'), h('td', { class: 'num' }, number(g.total)),
          h('td', { 'data-testid': `online-${g.key}` }, bar(g.online_rate)),
          h('td', {}, bar(g.availability)), h('td', {}, bar(g.completeness)))))));
  }

  function drawPanel(panel, rows) {
    const labels = rows.map((r) => (panel.time ? beijingTime(r[panel.x]).slice(11, 16) : r[panel.x]));
    replace(panel.element, h('h3', {}, t(panel.title)),
      rows.length ? chart(panel.kind, labels, rows.map((r) => r[panel.y]), { width: 560, height: 220 })
        : h('p', { class: 'muted' }, t('kpi.empty')));
  }

  const stateText = { open: t('kpi.live'), retrying: t('kpi.retrying'), failed: t('kpi.noLive') };
  function listen(name, onResult, onState) {
    state.events[name] = 0;
    events(`/endpoints/${name}/events`, ({ event, data }) => {
      if (event !== 'result') return;
      state.events[name] += 1;
      onResult(JSON.parse(data));
    }, controller.signal, onState);
  }
  const showLive = (status, error) => {
    live.textContent = stateText[status] || status;
    live.className = `live ${status}`;
    live.title = error ? error.message : '';
  };

  const statsReady = loadStats().catch((error) => replace(tiles, h('p', { class: 'bad' }, error.message)));
  // Each new result of the status endpoint means channel statuses moved: read the rates again.
  statsReady.then(() => listen(STATUS_ENDPOINT, () => {
    if (state.events[STATUS_ENDPOINT] > 1) loadStats().catch(() => {});
  }, showLive));
  for (const panel of panels) {
    listen(panel.endpoint, (rows) => drawPanel(panel, rows), (status, error) => {
      if (status === 'failed') {
        replace(panel.element, h('h3', {}, t(panel.title)), h('p', { class: 'muted' }, error.message));
      }
    });
  }

  return () => {
    controller.abort();
    clearInterval(timer);
  };
}

function toggleFullScreen(element) {
  if (document.fullscreenElement) document.exitFullscreen();
  else element.requestFullscreen().catch(() => element.classList.toggle('pseudo-fullscreen'));
}
