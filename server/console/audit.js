// The audit log viewer (admins): who read or changed what, filtered by principal, dataset,
// action and time, a page at a time (the log is append-only and may be large).

import { api, query } from './api.js';
import { beijingTime, h, replace } from './dom.js';
import { t } from './i18n.js';

const ACTIONS = ['', 'query', 'push', 'import', 'kafka_flush', 'delete', 'compact', 'share_request',
  'share_decision', 'grant_revoke', 'token_create', 'token_revoke', 'dataset_create', 'dataset_change',
  'endpoint_saved', 'endpoint_read', 'camera_register', 'camera_curate', 'camera_import', 'audit_purge'];
const PAGE = 200;

export function auditViewer(root) {
  const principal = h('input', { placeholder: t('audit.principal'), 'data-testid': 'audit-principal' });
  const dataset = h('input', { placeholder: t('audit.dataset'), 'data-testid': 'audit-dataset' });
  const action = h('select', { 'data-testid': 'audit-action' },
    ACTIONS.map((a) => h('option', { value: a }, a === '' ? t('audit.anyAction') : a)));
  const since = h('input', { type: 'datetime-local', title: t('audit.since'), 'data-testid': 'audit-since' });
  const until = h('input', { type: 'datetime-local', title: t('audit.until'), 'data-testid': 'audit-until' });
  // The inputs are Beijing wall-clock times, whatever the browser's own zone.
  const beijing = (input) => (input.value ? new Date(`${input.value}:00+08:00`).toISOString() : '');
  const rows = h('tbody', {});
  const more = h('button', { hidden: true }, t('audit.more'));
  const status = h('span', { class: 'status' });
  let last = null;
  // Only the latest search may fill the table: an earlier one answering late is dropped.
  let latest = 0;

  async function load(append) {
    const search = ++latest;
    if (!append) {
      replace(rows);
      status.textContent = t('common.loading');
    }
    const params = {
      principal: principal.value.trim(),
      dataset: dataset.value.trim(),
      action: action.value,
      since: beijing(since),
      until: beijing(until),
      limit: PAGE,
      after: append && last !== null ? last : '',
    };
    try {
      const entries = await api(query('/audit', params));
      if (search !== latest) return;
      for (const entry of entries) rows.append(entryRow(entry));
      last = entries.length ? entries[entries.length - 1].id : last;
      more.hidden = entries.length < PAGE;
      status.textContent = t('audit.shown', rows.children.length);
    } catch (error) {
      if (search === latest) status.textContent = error.message;
    }
  }

  function entryRow(entry) {
    const detail = entry.detail || {};
    const summary = detail.sql || detail.reason || detail.purpose || '';
    return h('tr', { class: `outcome-${entry.outcome}` },
      h('td', {}, entry.id),
      h('td', {}, beijingTime(entry.at)),
      h('td', {}, entry.principal, h('br'), h('small', {}, entry.department)),
      h('td', {}, entry.action, detail.via ? h('small', {}, ` · ${detail.via}`) : null),
      h('td', {}, entry.outcome),
      h('td', {}, entry.dataset ? h('code', {}, entry.dataset) : '—'),
      h('td', {}, (detail.sensitive_columns || []).map((c) => h('span', { class: 'pill sensitive' },
        typeof c === 'string' ? c : `${c.column || c.name}${c.masked ? ` (${t('sql.masked')})` : ''}`))),
      h('td', { class: 'description' }, h('details', {}, h('summary', {}, summary.slice(0, 120)),
        h('pre', {}, JSON.stringify(detail, null, 2)))));
  }

  const form = h('form', { class: 'toolbar' }, principal, dataset, action,
    h('label', {}, t('audit.since'), since), h('label', {}, t('audit.until'), until),
    h('button', { class: 'primary', type: 'submit', 'data-testid': 'audit-search' }, t('audit.search')), status);
  form.addEventListener('submit', (event) => { event.preventDefault(); last = null; load(false); });
  more.addEventListener('click', () => load(true));
  replace(root, form,
    h('table', { class: 'data', 'data-testid': 'audit-table' },
      h('thead', {}, h('tr', {}, ['#', t('audit.at'), t('audit.principal'), t('audit.action'),
        t('audit.outcome'), t('audit.dataset'), t('audit.sensitive'), t('audit.detail')].map((x) => h('th', {}, x)))),
      rows),
    more);
  load(false);
}
