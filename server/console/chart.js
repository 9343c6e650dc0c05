// Small SVG charts (bar, line, pie) for query results and the KPI screens. Labels are SVG
// text nodes, so whatever a result holds is drawn as text.

import { s } from './dom.js';

const COLOURS = ['#2f6fde', '#f28c28', '#2aa876', '#d64545', '#8a5cd1', '#1fa2b8', '#c9a227',
  '#e5689c', '#6b7785', '#4f9d2d'];

export function colour(i) {
  return COLOURS[i % COLOURS.length];
}

function short(label, max = 12) {
  const text = String(label ?? '∅');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((f) => f * power >= value);
  return step * power;
}

function formatValue(value) {
  if (Math.abs(value) >= 10_000) return `${(value / 10_000).toFixed(1)}万`;
  if (Number.isInteger(value)) return String(value);
  return value.toFixed(Math.abs(value) < 1 ? 3 : 1);
}

/** `kind` is bar, line or pie; `labels` and `values` are parallel arrays. */
export function chart(kind, labels, values, { width = 640, height = 300 } = {}) {
  const numbers = values.map((v) => Number(v) || 0);
  if (kind === 'pie') return pie(labels, numbers, width, height);
  const left = 56;
  const bottom = 48;
  const top = 12;
  const plotWidth = width - left - 12;
  const plotHeight = height - top - bottom;
  const max = niceMax(Math.max(0, ...numbers));
  const y = (v) => top + plotHeight - (Math.max(v, 0) / max) * plotHeight;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' });
  for (let i = 0; i <= 4; i += 1) {
    const value = (max / 4) * i;
    svg.append(
      s('line', { x1: left, x2: width - 12, y1: y(value), y2: y(value), class: 'grid' }),
      s('text', { x: left - 6, y: y(value) + 4, 'text-anchor': 'end', class: 'axis' }, formatValue(value)),
    );
  }
  const n = Math.max(numbers.length, 1);
  const band = plotWidth / n;
  const labelEvery = Math.ceil(n / 16);
  labels.forEach((label, i) => {
    if (i % labelEvery !== 0) return;
    svg.append(s('text', {
      x: left + band * (i + 0.5), y: height - bottom + 16, 'text-anchor': 'middle', class: 'axis',
    }, short(label, Math.max(4, Math.floor(band * labelEvery / 7)))));
  });
  if (kind === 'line') {
    const points = numbers.map((v, i) => `${left + band * (i + 0.5)},${y(v)}`).join(' ');
    svg.append(s('polyline', { points, class: 'line', stroke: colour(0) }));
    numbers.forEach((v, i) => svg.append(
      s('circle', { cx: left + band * (i + 0.5), cy: y(v), r: 3, fill: colour(0) },
        s('title', {}, `${labels[i]}: ${v}`)),
    ));
  } else {
    numbers.forEach((v, i) => {
      const barWidth = Math.max(band * 0.7, 1);
      svg.append(s('rect', {
        x: left + band * i + (band - barWidth) / 2, y: y(v), width: barWidth,
        height: Math.max(top + plotHeight - y(v), 0), fill: colour(0),
      }, s('title', {}, `${labels[i]}: ${v}`)));
    });
  }
  return svg;
}

function pie(labels, numbers, width, height) {
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' });
  const total = numbers.reduce((a, b) => a + Math.max(b, 0), 0) || 1;
  const r = height / 2 - 16;
  const cx = r + 16;
  const cy = height / 2;
  let angle = -Math.PI / 2;
  numbers.forEach((v, i) => {
    const share = Math.max(v, 0) / total;
    if (share <= 0) return;
    const end = angle + share * 2 * Math.PI;
    const large = share > 0.5 ? 1 : 0;
    const [x1, y1] = [cx + r * Math.cos(angle), cy + r * Math.sin(angle)];
    const [x2, y2] = [cx + r * Math.cos(end), cy + r * Math.sin(end)];
    const d = share >= 0.9999
      ? `M ${cx - r} ${cy} a ${r} ${r} 0 1 0 ${2 * r} 0 a ${r} ${r} 0 1 0 ${-2 * r} 0`
      : `M ${cx} ${cy} L ${x1} ${y1} A ${r} ${r} 0 ${large} 1 ${x2} ${y2} Z`;
    svg.append(s('path', { d, fill: colour(i) }, s('title', {}, `${labels[i]}: ${v}`)));
    angle = end;
  });
  labels.slice(0, 12).forEach((label, i) => {
    const ly = 20 + i * 22;
    svg.append(
      s('rect', { x: 2 * r + 48, y: ly - 11, width: 12, height: 12, fill: colour(i) }),
      s('text', { x: 2 * r + 66, y: ly, class: 'legend' },
        `${short(label, 18)}  ${((Math.max(numbers[i], 0) / total) * 100).toFixed(1)}%`),
    );
  });
  return svg;
}
