// The SQL workbench: an editor with highlighting and completion of the caller's own tables
// and columns, run and cancel, a virtualised result table (only the visible rows are in the
// page, so 100,000 rows scroll like 100), masked values marked, errors shown where they are,
// CSV and Parquet export, a chart of the result, parameters, and a history kept per browser.

import { ApiError, sqlBlob, sqlRows } from './api.js';
import { chart } from './chart.js';
import { clear, download, h, replace } from './dom.js';
import { t } from './i18n.js';
import { completions, offsetOf, parameters, tokenize } from './sql.js';

const HISTORY_KEY = 'cityhub.history';
const HISTORY_SIZE = 50;
const ROW_HEIGHT = 26;
/** Rows kept in the page's memory; the rest of a bigger answer is left to the export. */
const MAX_ROWS = 1_000_000;

const EXAMPLE = `-- 12345 热线：各区县本周受理量\nSELECT region_code, category, count(*) AS cases
FROM zhili.hotline_cases
WHERE received_at >= now() - INTERVAL '7 days'
GROUP BY region_code, category
ORDER BY cases DESC
LIMIT 100`;

function loadHistory() {
  try {
    return JSON.parse(localStorage.getItem(HISTORY_KEY)) || [];
  } catch {
    return [];
  }
}

function remember(entry) {
  const history = loadHistory().filter((e) => e.sql !== entry.sql);
  history.unshift(entry);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(history.slice(0, HISTORY_SIZE)));
}

/** The caller's tables and columns from information_schema (what the view shows it). */
async function loadCatalog() {
  const catalog = { schemas: new Set(), tables: [] };
  const byName = new Map();
  await sqlRows(
    'SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns '
      + "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') "
      + 'ORDER BY table_schema, table_name, ordinal_position',
    [],
    {
      onColumns() {},
      onRows(rows) {
        for (const [schema, table, column, type] of rows) {
          const key = `${schema}.${table}`;
          if (!byName.has(key)) {
            const entry = { schema, name: table, columns: [] };
            byName.set(key, entry);
            catalog.tables.push(entry);
            catalog.schemas.add(schema);
          }
          byName.get(key).columns.push({ name: column, type });
        }
      },
    },
  );
  return catalog;
}

export function workbench(root, session) {
  const state = {
    columns: [],
    masked: new Set(),
    rows: [],
    running: null,
    error: null,
    catalog: { schemas: new Set(), tables: [] },
    view: 'table',
  };
  window.cityhubConsole.workbench = state;

  const textarea = h('textarea', {
    class: 'editor-input', spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off',
    'aria-label': t('sql.editor'), 'data-testid': 'sql-editor',
  });
  textarea.value = sessionStorage.getItem('cityhub.draft') || EXAMPLE;
  const highlight = h('pre', { class: 'editor-highlight', 'aria-hidden': 'true' });
  const popup = h('ul', { class: 'completion', hidden: true, role: 'listbox' });
  const editor = h('div', { class: 'editor' }, highlight, textarea, popup);
  const errorBox = h('div', { class: 'sql-error', hidden: true, role: 'alert', 'data-testid': 'sql-error' });
  const paramsBox = h('div', { class: 'params' });
  const status = h('span', { class: 'status', 'data-testid': 'sql-status' });
  const runButton = h('button', { class: 'primary', 'data-testid': 'run', on: { click: run } }, t('sql.run'));
  const cancelButton = h('button', { disabled: true, 'data-testid': 'cancel', on: { click: cancel } }, t('sql.cancel'));
  const csvButton = h('button', { on: { click: () => exportAs('text/csv', 'csv') } }, t('sql.csv'));
  const parquetButton = h('button', { on: { click: () => exportAs('application/vnd.apache.parquet', 'parquet') } }, t('sql.parquet'));
  const tableTab = h('button', { class: 'tab active', on: { click: () => showView('table') } }, t('sql.table'));
  const chartTab = h('button', { class: 'tab', on: { click: () => showView('chart') } }, t('sql.chart'));
  const resultBox = h('div', { class: 'result' });
  const tree = h('div', { class: 'tree', 'data-testid': 'table-tree' }, t('common.loading'));
  const historyList = h('ol', { class: 'history' });

  replace(root,
    h('div', { class: 'workbench' },
      h('aside', { class: 'side' },
        h('h3', {}, t('sql.tables')), tree,
        h('h3', {}, t('sql.history')), historyList),
      h('section', { class: 'main' },
        editor,
        paramsBox,
        h('div', { class: 'toolbar' }, runButton, cancelButton, status,
          h('span', { class: 'spacer' }), tableTab, chartTab, csvButton, parquetButton),
        errorBox,
        resultBox)));

  // ---- the editor ----
  let completion = { items: [], selected: 0, prefix: '' };

  function render() {
    const sql = textarea.value;
    const cursor = textarea.selectionStart;
    const errorAt = state.error && state.error.offset !== null ? state.error.offset : -1;
    clear(highlight);
    // A zero-width mark at the caret, inside the token it falls in: completion opens there.
    let caretPlaced = false;
    for (const token of tokenize(sql)) {
      const end = token.start + token.text.length;
      const classes = [`tok-${token.type}`];
      if (errorAt >= token.start && errorAt < end && token.type !== 'space') classes.push('tok-error');
      const className = classes.join(' ');
      if (!caretPlaced && cursor >= token.start && cursor <= end) {
        caretPlaced = true;
        const split = cursor - token.start;
        highlight.append(
          h('span', { class: className }, token.text.slice(0, split)),
          h('span', { class: 'caret-mark' }),
          h('span', { class: className }, token.text.slice(split)),
        );
      } else {
        highlight.append(h('span', { class: className }, token.text));
      }
    }
    if (!caretPlaced) highlight.append(h('span', { class: 'caret-mark' }));
    // A trailing newline needs a character after it to take up its line.
    highlight.append('\n');
    highlight.scrollTop = textarea.scrollTop;
    highlight.scrollLeft = textarea.scrollLeft;
    renderParams();
  }

  function renderParams() {
    const names = parameters(textarea.value).filter((name) => /^\$\d+$/.test(name));
    const old = new Map([...paramsBox.querySelectorAll('input')].map((i) => [i.name, i.value]));
    clear(paramsBox);
    for (const name of names) {
      paramsBox.append(h('label', {}, name,
        h('input', { name, value: old.get(name) || '', placeholder: t('sql.paramHint') })));
    }
  }

  function paramValues() {
    return [...paramsBox.querySelectorAll('input')].map((input) => {
      const text = input.value.trim();
      if (text !== '' && !Number.isNaN(Number(text))) return Number(text);
      if (text === 'true' || text === 'false') return text === 'true';
      if (text === 'null') return null;
      return input.value;
    });
  }

  function showCompletion(force) {
    const { prefix, items } = completions(textarea.value, textarea.selectionStart, state.catalog);
    if (items.length === 0 || (!force && prefix === '' && !textarea.value.slice(0, textarea.selectionStart).endsWith('.'))) {
      popup.hidden = true;
      completion = { items: [], selected: 0, prefix: '' };
      return;
    }
    completion = { items, selected: 0, prefix };
    const mark = highlight.querySelector('.caret-mark');
    popup.style.left = `${Math.min(mark.offsetLeft, editor.clientWidth - 260)}px`;
    popup.style.top = `${mark.offsetTop - textarea.scrollTop + 22}px`;
    drawCompletion();
    popup.hidden = false;
  }

  function drawCompletion() {
    replace(popup, completion.items.map((item, i) => h('li', {
      class: i === completion.selected ? 'selected' : '',
      role: 'option',
      on: { mousedown: (event) => { event.preventDefault(); accept(i); } },
    }, h('span', {}, item.text), h('small', {}, item.kind))));
    const selected = popup.children[completion.selected];
    if (selected) selected.scrollIntoView({ block: 'nearest' });
  }

  function accept(i) {
    const item = completion.items[i];
    const cursor = textarea.selectionStart;
    const start = cursor - completion.prefix.length;
    textarea.setRangeText(item.text, start, cursor, 'end');
    popup.hidden = true;
    completion = { items: [], selected: 0, prefix: '' };
    edited();
    textarea.focus();
  }

  function edited() {
    sessionStorage.setItem('cityhub.draft', textarea.value);
    if (state.error) {
      state.error = null;
      errorBox.hidden = true;
    }
    render();
  }

  textarea.addEventListener('input', () => {
    edited();
    showCompletion(false);
  });
  textarea.addEventListener('scroll', () => {
    highlight.scrollTop = textarea.scrollTop;
    highlight.scrollLeft = textarea.scrollLeft;
  });
  textarea.addEventListener('click', () => { popup.hidden = true; render(); });
  textarea.addEventListener('blur', () => setTimeout(() => { popup.hidden = true; }, 150));
  textarea.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 'Enter') {
      event.preventDefault();
      run();
      return;
    }
    if (event.ctrlKey && event.key === ' ') {
      event.preventDefault();
      showCompletion(true);
      return;
    }
    if (popup.hidden) return;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      const n = completion.items.length;
      completion.selected = (completion.selected + (event.key === 'ArrowDown' ? 1 : n - 1)) % n;
      drawCompletion();
    } else if (event.key === 'Enter' || event.key === 'Tab') {
      event.preventDefault();
      accept(completion.selected);
    } else if (event.key === 'Escape') {
      popup.hidden = true;
    }
  });

  // ---- the tables of the caller ----
  loadCatalog().then((catalog) => {
    state.catalog = catalog;
    clear(tree);
    for (const table of catalog.tables) {
      const full = `${table.schema}.${table.name}`;
      tree.append(h('details', {},
        h('summary', { title: full, on: { dblclick: () => insert(full) } }, full),
        h('ul', {}, table.columns.map((c) => h('li', { on: { dblclick: () => insert(c.name) } },
          c.name, ' ', h('small', {}, c.type))))));
    }
  }).catch((error) => replace(tree, h('span', { class: 'bad' }, error.message)));

  function insert(text) {
    textarea.setRangeText(text, textarea.selectionStart, textarea.selectionEnd, 'end');
    edited();
    textarea.focus();
  }

  // ---- history ----
  function renderHistory() {
    replace(historyList, loadHistory().map((entry) => h('li', {
      title: entry.sql,
      on: { click: () => { textarea.value = entry.sql; edited(); } },
    }, h('code', {}, entry.sql.replace(/\s+/g, ' ').slice(0, 80)),
    h('small', {}, ` ${entry.rows ?? '—'} ${t('sql.rowsShort')} · ${entry.ms} ms`))));
  }

  // ---- running ----
  async function run() {
    if (state.running) return;
    const sql = textarea.value;
    const params = paramValues();
    const controller = new AbortController();
    state.running = controller;
    state.error = null;
    errorBox.hidden = true;
    state.rows = [];
    state.columns = [];
    state.masked = new Set();
    state.truncated = false;
    runButton.disabled = true;
    cancelButton.disabled = false;
    const started = performance.now();
    // When the answer began and when its first rows were on screen (the benchmark reads these).
    state.timings = { started, firstByte: null, firstRows: null };
    status.textContent = t('sql.running');
    let table = null;
    try {
      await sqlRows(sql, params, {
        signal: controller.signal,
        onColumns(columns, masked) {
          state.timings.firstByte = performance.now();
          state.columns = columns;
          state.masked = masked;
          table = resultTable();
          replace(resultBox, table.element);
        },
        onRows(rows) {
          const room = MAX_ROWS - state.rows.length;
          if (rows.length > room) state.truncated = true;
          for (const row of rows.slice(0, room)) state.rows.push(row);
          table.update();
          status.textContent = t('sql.streaming', state.rows.length.toLocaleString());
        },
      });
      const ms = Math.round(performance.now() - started);
      status.textContent = t('sql.done', state.rows.length.toLocaleString(), ms)
        + (state.truncated ? ` ${t('sql.truncated', MAX_ROWS.toLocaleString())}` : '');
      remember({ sql, rows: state.rows.length, ms, at: new Date().toISOString() });
      renderHistory();
      if (state.view === 'chart') showView('chart');
    } catch (error) {
      if (controller.signal.aborted) {
        status.textContent = t('sql.cancelled', state.rows.length.toLocaleString());
      } else {
        showError(error, sql);
      }
    } finally {
      state.running = null;
      runButton.disabled = false;
      cancelButton.disabled = true;
    }
  }

  function cancel() {
    if (state.running) state.running.abort();
  }

  function showError(error, sql) {
    status.textContent = t('sql.failed');
    const position = error instanceof ApiError ? error.position : null;
    state.error = {
      message: error.message,
      offset: position ? offsetOf(sql, position.line, position.column) : null,
    };
    replace(errorBox,
      h('strong', {}, error instanceof ApiError ? `${error.code}` : t('common.error')),
      position ? ` (${t('sql.at', position.line, position.column)})` : '',
      h('pre', {}, error.message));
    errorBox.hidden = false;
    if (state.error.offset !== null) {
      textarea.focus();
      textarea.setSelectionRange(state.error.offset, state.error.offset);
    }
    render();
  }

  async function exportAs(accept, extension) {
    try {
      status.textContent = t('sql.exporting');
      const blob = await sqlBlob(textarea.value, paramValues(), accept);
      download(blob, `cityhub-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, '')}.${extension}`);
      status.textContent = t('sql.exported', extension.toUpperCase(), (blob.size / 1024).toFixed(1));
    } catch (error) {
      showError(error, textarea.value);
    }
  }

  // ---- the result as a table: only the rows in view are in the page ----
  function resultTable() {
    const columns = state.columns;
    const template = `repeat(${columns.length}, minmax(120px, 1fr))`;
    const header = h('div', { class: 'grid-row grid-head', style: { gridTemplateColumns: template } },
      columns.map((name, i) => h('div', { class: state.masked.has(i) ? 'cell masked-head' : 'cell', title: name },
        name, state.masked.has(i) ? h('span', { class: 'badge', title: t('sql.maskedHint') }, t('sql.masked')) : null)));
    const spacer = h('div', { class: 'grid-spacer' });
    const body = h('div', { class: 'grid-body', 'data-testid': 'result-rows' });
    const scroller = h('div', { class: 'grid-scroll' }, header, h('div', { class: 'grid-viewport' }, spacer, body));
    let drawn = [-1, -1, -1];
    function draw() {
      const count = state.rows.length;
      const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_HEIGHT) - 5);
      const visible = Math.ceil((scroller.clientHeight || 600) / ROW_HEIGHT) + 10;
      const last = Math.min(count, first + visible);
      if (drawn[0] === first && drawn[1] === last && drawn[2] === count) return;
      drawn = [first, last, count];
      if (count > 0 && state.timings && state.timings.firstRows === null) {
        state.timings.firstRows = performance.now();
      }
      spacer.style.height = `${count * ROW_HEIGHT}px`;
      clear(body);
      body.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
      for (let r = first; r < last; r += 1) {
        const row = state.rows[r];
        body.append(h('div', { class: 'grid-row', style: { gridTemplateColumns: template } },
          row.map((value, i) => {
            const classes = ['cell'];
            if (state.masked.has(i)) classes.push('masked');
            if (value === null || value === undefined) classes.push('null');
            if (typeof value === 'number') classes.push('num');
            const text = value === null || value === undefined ? 'NULL'
              : typeof value === 'object' ? JSON.stringify(value) : String(value);
            return h('div', { class: classes.join(' '), title: text }, text);
          })));
      }
    }
    scroller.addEventListener('scroll', () => requestAnimationFrame(draw));
    let pending = false;
    return {
      element: scroller,
      update() {
        if (pending) return;
        pending = true;
        requestAnimationFrame(() => { pending = false; draw(); });
      },
    };
  }

  // ---- the result as a chart ----
  function showView(view) {
    state.view = view;
    tableTab.classList.toggle('active', view === 'table');
    chartTab.classList.toggle('active', view === 'chart');
    if (view === 'table') {
      if (state.columns.length === 0) return;
      const table = resultTable();
      replace(resultBox, table.element);
      table.update();
      return;
    }
    const numeric = state.columns.map((_, i) => state.rows.slice(0, 100).some((r) => typeof r[i] === 'number'));
    const kind = h('select', {}, ['bar', 'line', 'pie'].map((k) => h('option', { value: k }, t(`chart.${k}`))));
    const xSelect = h('select', {}, state.columns.map((c, i) => h('option', { value: i }, c)));
    const ySelect = h('select', {}, state.columns.map((c, i) => h('option', { value: i, selected: numeric[i] }, c)));
    const firstNumeric = numeric.indexOf(true);
    if (firstNumeric >= 0) ySelect.value = String(firstNumeric);
    const area = h('div', { class: 'chart-area', 'data-testid': 'chart' });
    const drawChart = () => {
      const rows = state.rows.slice(0, 200);
      const x = Number(xSelect.value);
      const y = Number(ySelect.value);
      replace(area, chart(kind.value, rows.map((r) => r[x]), rows.map((r) => r[y])));
    };
    for (const select of [kind, xSelect, ySelect]) select.addEventListener('change', drawChart);
    replace(resultBox, h('div', { class: 'chart-controls' },
      h('label', {}, t('chart.kind'), kind), h('label', {}, t('chart.x'), xSelect),
      h('label', {}, t('chart.y'), ySelect),
      state.rows.length > 200 ? h('small', {}, t('chart.first200')) : null), area);
    if (state.columns.length > 0) drawChart();
  }

  render();
  renderHistory();
  return () => cancel();
}
