// The camera map: Neijiang's county outlines (GeoJSON shipped with the console, GCJ-02) and
// every channel the caller may see, drawn on a canvas in GCJ-02 too (the registry answers
// both systems; web-map outlines are GCJ-02, so the cameras are drawn in the same system).
// Zoomed out, channels are counted per screen cell (clusters); zoomed in, each is a dot
// coloured by status. A click on a dot shows the channel as the registry knows it.

import { api, sqlRows } from './api.js';
import { beijingTime, h, number, replace } from './dom.js';
import { t } from './i18n.js';

const STATUS = ['online', 'offline', 'unknown'];
const STATUS_COLOUR = ['#23a55a', '#e03c3c', '#9aa3ad'];
/** The same colours as RGBA pixels (little-endian: 0xAABBGGRR). */
const DOT_PIXEL = STATUS_COLOUR.map((hex) => {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
});
/** Below this many pixels per degree, channels are drawn as clusters. */
const CLUSTER_BELOW = 2600;
const CELL = 28;

let outlines = null;
async function loadOutlines() {
  if (!outlines) {
    const response = await fetch('neijiang-counties.json');
    outlines = await response.json();
  }
  return outlines;
}

/** Every channel with a position, in typed arrays (94,000 objects would be slow to filter). */
async function loadChannels() {
  const ids = [];
  const lon = [];
  const lat = [];
  const status = [];
  const county = [];
  const industry = [];
  const type = [];
  await sqlRows(
    'SELECT id, round(gcj02_longitude, 5) AS x, round(gcj02_latitude, 5) AS y, status, county_code, industry, type_code '
      + 'FROM hub.cameras WHERE gcj02_longitude IS NOT NULL AND gcj02_latitude IS NOT NULL',
    [],
    {
      onColumns() {},
      onRows(rows) {
        for (const row of rows) {
          ids.push(row[0]);
          lon.push(row[1]);
          lat.push(row[2]);
          const known = STATUS.indexOf(row[3]);
          status.push(known < 0 ? 2 : known);
          county.push(row[4] || '');
          industry.push(row[5] ?? -1);
          type.push(row[6] ?? -1);
        }
      },
    },
  );
  return {
    ids,
    lon: Float64Array.from(lon),
    lat: Float64Array.from(lat),
    status: Uint8Array.from(status),
    county,
    industry: Int16Array.from(industry),
    type: Int16Array.from(type),
  };
}

async function loadNames() {
  const names = { industry: new Map(), type: new Map() };
  await sqlRows(
    'SELECT DISTINCT industry, industry_name, type_code, type_name FROM hub.cameras',
    [],
    {
      onColumns() {},
      onRows(rows) {
        for (const [industry, industryName, type, typeName] of rows) {
          if (industry !== null) names.industry.set(industry, industryName);
          if (type !== null) names.type.set(type, typeName);
        }
      },
    },
  );
  return names;
}

export async function cameraMap(root, session, focus) {
  const canvas = h('canvas', { class: 'map-canvas', 'data-testid': 'map-canvas' });
  const info = h('div', { class: 'map-info', 'data-testid': 'map-info' });
  const detail = h('aside', { class: 'map-detail', 'data-testid': 'camera-detail', hidden: true });
  const countySelect = h('select', { 'data-testid': 'filter-county' }, h('option', { value: '' }, t('map.allCounties')));
  const statusSelect = h('select', { 'data-testid': 'filter-status' },
    h('option', { value: '' }, t('map.allStatus')),
    STATUS.map((s) => h('option', { value: s }, t(`status.${s}`))));
  const industrySelect = h('select', { 'data-testid': 'filter-industry' }, h('option', { value: '' }, t('map.allIndustries')));
  const typeSelect = h('select', { 'data-testid': 'filter-type' }, h('option', { value: '' }, t('map.allTypes')));
  const legend = h('div', { class: 'legend' }, STATUS.map((s, i) => h('span', {},
    h('i', { class: 'dot', style: { background: STATUS_COLOUR[i] } }), t(`status.${s}`))));
  // Single dots are written as pixels into a layer of their own: tens of thousands of tiny
  // rectangles as canvas paths cost more to rasterise than the pixels themselves.
  const dotLayer = h('canvas', { class: 'map-dots' });
  const frame = h('div', { class: 'map-frame' }, canvas, dotLayer, detail);
  replace(root, h('div', { class: 'map-page' },
    h('div', { class: 'toolbar' }, countySelect, statusSelect, industrySelect, typeSelect,
      h('button', { on: { click: () => fit() } }, t('map.fit')), legend, info),
    frame));
  replace(info, t('common.loading'));

  const [geo, channels, names] = await Promise.all([loadOutlines(), loadChannels(), loadNames()]);
  for (const feature of geo.features) {
    countySelect.append(h('option', { value: feature.properties.code }, feature.properties.name));
  }
  for (const [code, name] of [...names.industry].sort((a, b) => a[0] - b[0])) {
    industrySelect.append(h('option', { value: code }, `${code} ${name}`));
  }
  for (const [code, name] of [...names.type].sort((a, b) => a[0] - b[0])) {
    typeSelect.append(h('option', { value: code }, `${code} ${name}`));
  }

  const n = channels.ids.length;
  const state = {
    total: n,
    filtered: n,
    drawnPoints: 0,
    clustered: true,
    ready: false,
    frames: [],
    view: { lon: 104.95, lat: 29.55, scale: 1000 },
    selected: null,
  };
  window.cityhubConsole.map = state;
  const visible = new Uint8Array(n);
  const cosLat = Math.cos((29.6 * Math.PI) / 180);

  function applyFilters() {
    const county = countySelect.value;
    const status = statusSelect.value === '' ? -1 : STATUS.indexOf(statusSelect.value);
    const industry = industrySelect.value === '' ? null : Number(industrySelect.value);
    const type = typeSelect.value === '' ? null : Number(typeSelect.value);
    let count = 0;
    for (let i = 0; i < n; i += 1) {
      const keep = (county === '' || channels.county[i] === county)
        && (status < 0 || channels.status[i] === status)
        && (industry === null || channels.industry[i] === industry)
        && (type === null || channels.type[i] === type);
      visible[i] = keep ? 1 : 0;
      count += keep ? 1 : 0;
    }
    state.filtered = count;
    draw();
  }
  for (const select of [countySelect, statusSelect, industrySelect, typeSelect]) {
    select.addEventListener('change', applyFilters);
  }

  // ---- view: equirectangular around the city, x scaled by cos(latitude) ----
  const context = canvas.getContext('2d');
  const dotContext = dotLayer.getContext('2d');
  let dotPixels = null;
  let dotsShown = false;
  let width = 0;
  let height = 0;
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    width = frame.clientWidth;
    height = Math.max(frame.clientHeight, 400);
    for (const layer of [canvas, dotLayer]) {
      layer.width = Math.round(width * ratio);
      layer.height = Math.round(height * ratio);
      layer.style.width = `${width}px`;
      layer.style.height = `${height}px`;
    }
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    dotPixels = null;
  }
  const px = (lon) => width / 2 + (lon - state.view.lon) * state.view.scale * cosLat;
  const py = (lat) => height / 2 - (lat - state.view.lat) * state.view.scale;
  const toLon = (x) => state.view.lon + (x - width / 2) / (state.view.scale * cosLat);
  const toLat = (y) => state.view.lat - (y - height / 2) / state.view.scale;

  function fit() {
    let [minLon, maxLon, minLat, maxLat] = [Infinity, -Infinity, Infinity, -Infinity];
    const extend = (lon, lat) => {
      minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
      minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
    };
    for (const feature of geo.features) eachRing(feature, (ring) => ring.forEach(([lon, lat]) => extend(lon, lat)));
    for (let i = 0; i < n; i += 1) extend(channels.lon[i], channels.lat[i]);
    state.view.lon = (minLon + maxLon) / 2;
    state.view.lat = (minLat + maxLat) / 2;
    state.view.scale = 0.92 * Math.min(width / ((maxLon - minLon) * cosLat), height / (maxLat - minLat));
    draw();
  }

  function eachRing(feature, callback) {
    const { type, coordinates } = feature.geometry;
    const polygons = type === 'Polygon' ? [coordinates] : coordinates;
    for (const polygon of polygons) for (const ring of polygon) callback(ring);
  }

  let scheduled = false;
  function draw() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      const begin = performance.now();
      paint();
      state.frames.push(performance.now() - begin);
      if (state.frames.length > 240) state.frames.shift();
    });
  }

  function paint() {
    context.clearRect(0, 0, width, height);
    context.fillStyle = '#0f1c2e';
    context.fillRect(0, 0, width, height);
    geo.features.forEach((feature) => {
      const selected = countySelect.value === feature.properties.code;
      context.beginPath();
      eachRing(feature, (ring) => {
        ring.forEach(([lon, lat], i) => (i === 0 ? context.moveTo(px(lon), py(lat)) : context.lineTo(px(lon), py(lat))));
        context.closePath();
      });
      context.fillStyle = selected ? '#1f3a5c' : '#172a42';
      context.fill('evenodd');
      context.lineWidth = 1.2;
      context.strokeStyle = '#5c7fa8';
      context.stroke();
    });
    context.fillStyle = '#c5d5ea';
    context.font = '13px sans-serif';
    context.textAlign = 'center';
    for (const feature of geo.features) {
      const [lon, lat] = feature.properties.centre;
      context.fillText(feature.properties.name, px(lon), py(lat) - 18);
    }
    state.clustered = state.view.scale < CLUSTER_BELOW;
    if (state.clustered && dotsShown) {
      dotContext.clearRect(0, 0, dotLayer.width, dotLayer.height);
      dotsShown = false;
    }
    dotsShown = !state.clustered;
    state.drawnPoints = state.clustered ? paintClusters() : paintDots();
    if (!state.ready) state.readyAt = performance.now();
    state.ready = true;
    replace(info, t('map.count', number(state.drawnPoints), number(state.filtered), number(state.total)));
  }

  function paintDots() {
    const ratio = window.devicePixelRatio || 1;
    const [w, hgt] = [dotLayer.width, dotLayer.height];
    if (!dotPixels || dotPixels.width !== w || dotPixels.height !== hgt) dotPixels = dotContext.createImageData(w, hgt);
    const pixels = new Uint32Array(dotPixels.data.buffer);
    pixels.fill(0);
    const size = Math.max(1, Math.round((state.view.scale > 12000 ? 5 : 3) * ratio));
    let drawn = 0;
    for (let i = 0; i < n; i += 1) {
      if (!visible[i]) continue;
      const x0 = Math.round(px(channels.lon[i]) * ratio - size / 2);
      const y0 = Math.round(py(channels.lat[i]) * ratio - size / 2);
      if (x0 + size <= 0 || y0 + size <= 0 || x0 >= w || y0 >= hgt) continue;
      const colour = DOT_PIXEL[channels.status[i]];
      for (let y = Math.max(y0, 0); y < Math.min(y0 + size, hgt); y += 1) {
        pixels.fill(colour, y * w + Math.max(x0, 0), y * w + Math.min(x0 + size, w));
      }
      drawn += 1;
    }
    dotContext.putImageData(dotPixels, 0, 0);
    if (state.selected !== null) {
      context.strokeStyle = '#ffffff';
      context.lineWidth = 2;
      context.strokeRect(px(channels.lon[state.selected]) - 6, py(channels.lat[state.selected]) - 6, 12, 12);
    }
    return drawn;
  }

  function paintClusters() {
    const columns = Math.ceil(width / CELL) + 1;
    const rows = Math.ceil(height / CELL) + 1;
    const counts = new Int32Array(columns * rows * 3);
    const sumX = new Float64Array(columns * rows);
    const sumY = new Float64Array(columns * rows);
    let drawn = 0;
    for (let i = 0; i < n; i += 1) {
      if (!visible[i]) continue;
      const x = px(channels.lon[i]);
      const y = py(channels.lat[i]);
      if (x < 0 || y < 0 || x >= width || y >= height) continue;
      const cell = Math.floor(y / CELL) * columns + Math.floor(x / CELL);
      counts[cell * 3 + channels.status[i]] += 1;
      sumX[cell] += x;
      sumY[cell] += y;
      drawn += 1;
    }
    context.textAlign = 'center';
    context.textBaseline = 'middle';
    context.font = '10px sans-serif';
    for (let cell = 0; cell < columns * rows; cell += 1) {
      const online = counts[cell * 3];
      const offline = counts[cell * 3 + 1];
      const total = online + offline + counts[cell * 3 + 2];
      if (total === 0) continue;
      const x = sumX[cell] / total;
      const y = sumY[cell] / total;
      const radius = Math.min(4 + Math.log2(total) * 1.6, CELL / 2);
      const share = offline / total;
      context.beginPath();
      context.arc(x, y, radius, 0, 2 * Math.PI);
      context.fillStyle = share > 0.2 ? STATUS_COLOUR[1] : share > 0.05 ? '#e8a33c' : online > 0 ? STATUS_COLOUR[0] : STATUS_COLOUR[2];
      context.globalAlpha = 0.85;
      context.fill();
      context.globalAlpha = 1;
      if (total >= 10) {
        context.fillStyle = '#081018';
        context.fillText(total >= 1000 ? `${(total / 1000).toFixed(1)}k` : String(total), x, y);
      }
    }
    context.textBaseline = 'alphabetic';
    return drawn;
  }

  // ---- interaction: drag to pan, wheel to zoom, click for a channel ----
  let drag = null;
  canvas.addEventListener('pointerdown', (event) => {
    drag = { x: event.clientX, y: event.clientY, lon: state.view.lon, lat: state.view.lat, moved: false };
    try {
      canvas.setPointerCapture(event.pointerId);
    } catch {
      // A synthetic event's pointer cannot be captured; dragging works without it.
    }
  });
  canvas.addEventListener('pointermove', (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    state.view.lon = drag.lon - dx / (state.view.scale * cosLat);
    state.view.lat = drag.lat + dy / state.view.scale;
    draw();
  });
  canvas.addEventListener('pointerup', (event) => {
    const wasDrag = drag && drag.moved;
    drag = null;
    if (!wasDrag) pick(event);
  });
  canvas.addEventListener('wheel', (event) => {
    event.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoomAt(event.clientX - rect.left, event.clientY - rect.top, event.deltaY < 0 ? 1.4 : 1 / 1.4);
  }, { passive: false });

  function zoomAt(x, y, factor) {
    const [lon, lat] = [toLon(x), toLat(y)];
    state.view.scale = Math.min(Math.max(state.view.scale * factor, 200), 400_000);
    state.view.lon = lon - (x - width / 2) / (state.view.scale * cosLat);
    state.view.lat = lat + (y - height / 2) / state.view.scale;
    draw();
  }

  function pick(event) {
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    if (state.clustered) {
      zoomAt(x, y, 2.5);
      return;
    }
    let best = -1;
    let bestDistance = 64;
    for (let i = 0; i < n; i += 1) {
      if (!visible[i]) continue;
      const d = (px(channels.lon[i]) - x) ** 2 + (py(channels.lat[i]) - y) ** 2;
      if (d < bestDistance) { best = i; bestDistance = d; }
    }
    if (best >= 0) showCamera(channels.ids[best], best);
  }

  /** The registry's record of channel `id` (`index`: its place in the drawn channels, if any). */
  async function showCamera(id, index) {
    state.selected = index;
    draw();
    detail.hidden = false;
    replace(detail, t('common.loading'));
    try {
      const camera = await api(`/cameras/${encodeURIComponent(id)}`);
      state.shown = camera;
      const streams = ['rtsp', 'rtmp', 'flv', 'hls', 'webrtc']
        .map((k) => [k, (camera.streams && camera.streams[k]) || camera[`${k}_url`]])
        .filter(([, url]) => url);
      const row = (label, value) => [h('dt', {}, label), h('dd', {}, value ?? '—')];
      replace(detail,
        h('button', { class: 'close', on: { click: () => { detail.hidden = true; state.selected = null; draw(); } } }, '×'),
        h('h3', {}, camera.name || camera.id),
        h('dl', { class: 'facts' },
          row(t('map.id'), h('code', {}, camera.id)),
          row(t('map.region'), `${camera.region_name || ''} (${camera.region_code || ''})`),
          row(t('map.industry'), camera.industry_name),
          row(t('map.type'), camera.type_name),
          row(t('map.network'), camera.network_name),
          row(t('map.serial'), camera.serial),
          row(t('map.department'), camera.department),
          row(t('map.status'), h('span', { class: `pill status-${camera.status}` }, t(`status.${camera.status}`))),
          row(t('map.since'), beijingTime(camera.status_since)),
          row(t('map.keepalive'), beijingTime(camera.last_keepalive_at)),
          row(t('map.address'), camera.address),
          row(t('map.position'), camera.gcj02 ? `${camera.gcj02.longitude.toFixed(6)}, ${camera.gcj02.latitude.toFixed(6)} (GCJ-02)` : null),
          row('WGS-84', camera.longitude !== undefined && camera.longitude !== null ? `${camera.longitude.toFixed(6)}, ${camera.latitude.toFixed(6)}` : null)),
        streams.length ? [h('h4', {}, t('map.streams')), h('ul', { class: 'streams' },
          streams.map(([k, url]) => h('li', {}, h('b', {}, k.toUpperCase()), ' ', h('code', {}, url))))] : null,
        camera.curated || camera.reported ? [h('h4', {}, t('map.curatedVsReported')),
          sourceTable(camera.reported || {}, camera.curated || {})] : null);
    } catch (error) {
      replace(detail, h('p', { class: 'bad' }, error.message));
    }
  }

  function sourceTable(reported, curated) {
    const keys = [...new Set([...Object.keys(reported), ...Object.keys(curated)])].sort();
    const text = (v) => (v === undefined ? '' : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v));
    return h('table', { class: 'data compact' },
      h('thead', {}, h('tr', {}, h('th', {}, ''), h('th', {}, t('map.reported')), h('th', {}, t('map.curated')))),
      h('tbody', {}, keys.map((k) => h('tr', { class: curated[k] !== undefined ? 'curated' : '' },
        h('td', {}, k), h('td', {}, text(reported[k])), h('td', {}, text(curated[k]))))));
  }

  const observer = new ResizeObserver(() => { resize(); draw(); });
  observer.observe(frame);
  resize();
  applyFilters();
  fit();
  // A link to one channel (#/map/51102500001320000017): centred, zoomed in, its record shown.
  if (focus) {
    const index = channels.ids.indexOf(focus);
    if (index >= 0) {
      state.view = { lon: channels.lon[index], lat: channels.lat[index], scale: 20_000 };
      draw();
    }
    showCamera(focus, index >= 0 ? index : null);
  }
  return () => observer.disconnect();
}

