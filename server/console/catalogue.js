// The shared catalogue (共享目录): every dataset the caller may see with its owner,
// classification, sharing type, columns and sensitivity tags, rows and snapshots over time,
// and the caller's access; the application form for conditional datasets; the share-request
// inbox (approve with narrowing, reject with a reason) and outbox; grants held and given.

import { api } from './api.js';
import { chart } from './chart.js';
import { beijingTime, h, number, replace } from './dom.js';
import { t } from './i18n.js';

export function catalogue(root, session) {
  const tabs = [
    ['datasets', t('cat.datasets')],
    ['inbox', t('cat.inbox')],
    ['outbox', t('cat.outbox')],
    ['grants', t('cat.grants')],
  ];
  let body = h('div', { class: 'catalogue-body' });
  const bar = h('div', { class: 'tabs' });
  replace(root, bar, body);
  let current = sessionStorage.getItem('cityhub.catalogueTab') || 'datasets';

  function show(tab) {
    current = tab;
    sessionStorage.setItem('cityhub.catalogueTab', tab);
    replace(bar, tabs.map(([key, label]) => h('button', {
      class: key === tab ? 'tab active' : 'tab', 'data-testid': `tab-${key}`, on: { click: () => show(key) },
    }, label)));
    // Each showing draws into a container of its own: a slower, older one that finishes
    // late writes into a container no longer in the page.
    const target = h('div', { class: 'catalogue-body' });
    body.replaceWith(target);
    body = target;
    const views = { datasets, inbox, outbox, grants };
    views[tab](target, session, show).catch((error) => replace(target, h('p', { class: 'bad' }, error.message)));
  }
  show(current);
}

export function classificationText(value) {
  return { general: t('cls.general'), important: t('cls.important'), core: t('cls.core') }[value] || value;
}

export function sharingText(value) {
  return { unconditional: t('share.unconditional'), conditional: t('share.conditional'), none: t('share.none') }[value] || value;
}

function accessText(value) {
  return t(`access.${value}`);
}

async function datasets(body, session) {
  const list = await api('/datasets');
  const filter = h('input', { type: 'search', placeholder: t('cat.filter'), 'data-testid': 'dataset-filter' });
  const rows = h('tbody', {});
  const detail = h('div', { class: 'detail', 'data-testid': 'dataset-detail' }, h('p', { class: 'muted' }, t('cat.pick')));
  function draw() {
    const needle = filter.value.trim().toLowerCase();
    replace(rows, list
      .filter((d) => !needle || d.name.toLowerCase().includes(needle)
        || (d.description || '').toLowerCase().includes(needle))
      .map((d) => h('tr', {
        'data-dataset': d.name, tabindex: 0,
        on: { click: () => open(d.name), keydown: (e) => { if (e.key === 'Enter') open(d.name); } },
      },
      h('td', {}, h('code', {}, d.name)),
      h('td', {}, d.owner),
      h('td', { class: 'description' }, d.description || ''),
      h('td', {}, h('span', { class: `pill cls-${d.classification}` }, classificationText(d.classification))),
      h('td', {}, h('span', { class: `pill share-${d.sharing}` }, sharingText(d.sharing))),
      h('td', { class: 'num' }, number(d.rows)),
      h('td', {}, h('span', { class: `pill access-${d.access}` }, accessText(d.access))))));
  }
  filter.addEventListener('input', draw);
  async function open(name) {
    replace(detail, t('common.loading'));
    try {
      await datasetDetail(detail, name, session);
    } catch (error) {
      replace(detail, h('p', { class: 'bad' }, error.message));
    }
  }
  draw();
  replace(body, h('div', { class: 'split' },
    h('div', { class: 'list' }, filter,
      h('table', { class: 'data', 'data-testid': 'dataset-list' },
        h('thead', {}, h('tr', {}, [t('cat.name'), t('cat.owner'), t('cat.description'),
          t('cat.classification'), t('cat.sharing'), t('cat.rows'), t('cat.access')].map((x) => h('th', {}, x)))),
        rows)),
    detail));
}

async function datasetDetail(detail, name, session) {
  const [dataset, snapshots] = await Promise.all([
    api(`/datasets/${encodeURIComponent(name)}`),
    api(`/datasets/${encodeURIComponent(name)}/snapshots`).catch(() => []),
  ]);
  // Oldest first for the chart (the hub lists the newest first).
  const history = [...(Array.isArray(snapshots) ? snapshots : [])].sort((a, b) => a.id - b.id).slice(-60);
  const canApply = dataset.owner !== session.department && dataset.sharing === 'conditional'
    && dataset.access !== 'granted' && session.can.includes('catalogue');
  replace(detail,
    h('h2', {}, h('code', {}, dataset.name)),
    h('p', { class: 'description', 'data-testid': 'dataset-description' }, dataset.description || ''),
    h('dl', { class: 'facts' },
      h('dt', {}, t('cat.owner')), h('dd', {}, dataset.owner),
      h('dt', {}, t('cat.classification')), h('dd', {}, classificationText(dataset.classification)),
      h('dt', {}, t('cat.sharing')), h('dd', {}, sharingText(dataset.sharing)),
      h('dt', {}, t('cat.access')), h('dd', {}, accessText(dataset.access)),
      h('dt', {}, t('cat.rows')), h('dd', {}, number(dataset.rows)),
      h('dt', {}, t('cat.updated')), h('dd', {}, beijingTime(dataset.updated_at)),
      h('dt', {}, t('cat.cycle')), h('dd', {}, dataset.update_cycle || '—'),
      h('dt', {}, t('cat.resource')), h('dd', {}, dataset.resource_code || '—')),
    h('h3', {}, t('cat.columns')),
    h('table', { class: 'data compact' },
      h('thead', {}, h('tr', {}, [t('cat.column'), t('cat.type'), t('cat.nullable'), t('cat.sensitivity')].map((x) => h('th', {}, x)))),
      h('tbody', {}, (dataset.columns || []).map((c) => h('tr', {},
        h('td', {}, h('code', {}, c.name)), h('td', {}, c.type), h('td', {}, c.nullable ? '✓' : ''),
        h('td', {}, c.sensitivity ? h('span', { class: 'pill sensitive' }, t(`sens.${c.sensitivity}`)) : ''))))),
    history.length ? h('h3', {}, t('cat.snapshots')) : null,
    history.length > 1 ? chart('line', history.map((s) => beijingTime(s.created_at).slice(5, 16)),
      history.map((s) => s.rows), { width: 560, height: 200 }) : null,
    history.length ? h('table', { class: 'data compact', 'data-testid': 'snapshots' },
      h('thead', {}, h('tr', {}, [t('cat.id'), t('cat.updated'), t('cat.operation'), t('cat.rows'), t('cat.files')].map((x) => h('th', {}, x)))),
      h('tbody', {}, history.slice(-8).reverse().map((snapshot) => h('tr', {},
        h('td', {}, snapshot.id), h('td', {}, beijingTime(snapshot.created_at)), h('td', {}, snapshot.operation),
        h('td', { class: 'num' }, number(snapshot.rows)), h('td', { class: 'num' }, number(snapshot.files)))))) : null,
    canApply ? applyForm(dataset, detail) : null);
}

function applyForm(dataset, detail) {
  const purpose = h('textarea', { required: true, rows: 2, 'data-testid': 'apply-purpose', placeholder: t('apply.purposeHint') });
  const boxes = (dataset.columns || []).map((c) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', value: c.name, checked: true }), c.name));
  const unmasked = (dataset.columns || []).filter((c) => c.sensitivity).map((c) => h('label', { class: 'check' },
    h('input', { type: 'checkbox', value: c.name }), c.name));
  const until = h('input', { type: 'date' });
  const message = h('p', { class: 'message', 'data-testid': 'apply-message' });
  const submit = h('button', { class: 'primary', 'data-testid': 'apply-submit' }, t('apply.submit'));
  const form = h('form', { class: 'apply', 'data-testid': 'apply-form' },
    h('h3', {}, t('apply.title')),
    h('label', {}, t('apply.purpose'), purpose),
    h('fieldset', {}, h('legend', {}, t('apply.columns')), boxes),
    unmasked.length ? h('fieldset', {}, h('legend', {}, t('apply.unmasked')), unmasked) : null,
    h('label', {}, t('apply.until'), until),
    submit, message);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const columns = boxes.map((b) => b.firstChild).filter((i) => i.checked).map((i) => i.value);
    const body = {
      purpose: purpose.value.trim(),
      columns: columns.length === boxes.length ? null : columns,
      unmasked: unmasked.map((b) => b.firstChild).filter((i) => i.checked).map((i) => i.value),
      until: until.value ? new Date(`${until.value}T23:59:59+08:00`).toISOString() : null,
    };
    submit.disabled = true;
    try {
      const request = await api(`/datasets/${encodeURIComponent(dataset.name)}/share-requests`, { method: 'POST', body });
      message.className = 'message good';
      message.textContent = t('apply.sent', request.id, beijingTime(request.answer_due_at));
    } catch (error) {
      message.className = 'message bad';
      message.textContent = error.message;
      submit.disabled = false;
    }
  });
  return form;
}

function requestRow(request, actions) {
  return h('tr', { 'data-request': request.id, class: request.overdue ? 'overdue' : '' },
    h('td', {}, `#${request.id}`),
    h('td', {}, h('code', {}, request.dataset)),
    h('td', {}, request.department, h('br'), h('small', {}, request.requested_by)),
    h('td', { class: 'description' }, request.purpose),
    h('td', {}, request.columns ? request.columns.join(', ') : t('apply.all'),
      request.unmasked && request.unmasked.length ? [h('br'), h('small', {}, `${t('apply.unmaskedShort')}: ${request.unmasked.join(', ')}`)] : null),
    h('td', {}, h('span', { class: `pill status-${request.status}` }, t(`status.${request.status}`)),
      request.reason ? [h('br'), h('small', {}, request.reason)] : null),
    h('td', {}, beijingTime(request.answer_due_at),
      request.overdue ? [' ', h('span', { class: 'pill overdue-mark' }, t('cat.overdue'))] : null),
    h('td', {}, actions));
}

const REQUEST_HEAD = () => [t('cat.id'), t('cat.name'), t('cat.requester'), t('apply.purpose'),
  t('apply.columns'), t('cat.status'), t('cat.deadline'), ''];

async function inbox(body, session, show) {
  const requests = await api('/share-requests');
  const incoming = requests.filter((r) => r.owner === session.department || session.role === 'admin');
  const table = h('table', { class: 'data', 'data-testid': 'inbox' },
    h('thead', {}, h('tr', {}, REQUEST_HEAD().map((x) => h('th', {}, x)))),
    h('tbody', {}, incoming.map((request) => requestRow(request,
      request.status === 'pending' && session.can.includes('decide') ? decideForm(request, () => show('inbox')) : null))));
  replace(body, incoming.length ? table : h('p', { class: 'muted' }, t('cat.noRequests')));
}

function decideForm(request, done) {
  const reason = h('input', { placeholder: t('decide.reason'), 'data-testid': 'decide-reason' });
  const columns = h('input', {
    placeholder: t('decide.narrow'), value: request.columns ? request.columns.join(',') : '',
    title: t('decide.narrowHint'),
  });
  const expires = h('input', { type: 'date', title: t('decide.expires') });
  const message = h('small', { class: 'bad' });
  const decide = async (approve) => {
    const body = { reason: reason.value.trim() || null };
    if (approve) {
      const narrowed = columns.value.split(',').map((c) => c.trim()).filter(Boolean);
      if (narrowed.length) body.columns = narrowed;
      if (expires.value) body.expires_at = new Date(`${expires.value}T23:59:59+08:00`).toISOString();
    }
    try {
      await api(`/share-requests/${request.id}/${approve ? 'approve' : 'reject'}`, { method: 'POST', body });
      done();
    } catch (error) {
      message.textContent = error.message;
    }
  };
  return h('div', { class: 'decide' }, reason, columns, expires,
    h('button', { class: 'primary', 'data-testid': 'approve', on: { click: () => decide(true) } }, t('decide.approve')),
    h('button', { 'data-testid': 'reject', on: { click: () => decide(false) } }, t('decide.reject')),
    message);
}

async function outbox(body, session) {
  const requests = await api('/share-requests');
  const outgoing = requests.filter((r) => r.department === session.department);
  replace(body, outgoing.length
    ? h('table', { class: 'data', 'data-testid': 'outbox' },
      h('thead', {}, h('tr', {}, REQUEST_HEAD().map((x) => h('th', {}, x)))),
      h('tbody', {}, outgoing.map((r) => requestRow(r, null))))
    : h('p', { class: 'muted' }, t('cat.noRequests')));
}

async function grants(body, session, show) {
  const list = await api('/grants');
  const owner = (g) => g.dataset.split('.')[0];
  const held = list.filter((g) => g.department === session.department);
  const given = list.filter((g) => owner(g) === session.department || (session.role === 'admin' && g.department !== session.department));
  const row = (grant, revocable) => {
    const reason = h('input', { placeholder: t('decide.revokeReason') });
    const message = h('small', { class: 'bad' });
    return h('tr', { class: grant.active ? '' : 'inactive', 'data-grant': grant.id },
      h('td', {}, `#${grant.id}`), h('td', {}, h('code', {}, grant.dataset)), h('td', {}, grant.department),
      h('td', {}, grant.columns ? grant.columns.join(', ') : t('apply.all')),
      h('td', {}, (grant.unmasked || []).join(', ') || '—'),
      h('td', {}, beijingTime(grant.expires_at) || '—'),
      h('td', {}, grant.active ? t('grant.active') : (grant.revoked_at ? `${t('grant.revoked')} ${grant.revoke_reason || ''}` : t('grant.expired'))),
      h('td', {}, revocable && grant.active ? [reason, h('button', {
        on: {
          click: async () => {
            try {
              await api(`/grants/${grant.id}/revoke`, { method: 'POST', body: { reason: reason.value } });
              show('grants');
            } catch (error) {
              message.textContent = error.message;
            }
          },
        },
      }, t('grant.revoke')), message] : null));
  };
  const head = h('thead', {}, h('tr', {}, [t('cat.id'), t('cat.name'), t('grant.holder'), t('apply.columns'),
    t('apply.unmaskedShort'), t('grant.expires'), t('cat.status'), ''].map((x) => h('th', {}, x))));
  replace(body,
    h('h3', {}, t('grant.held')),
    held.length ? h('table', { class: 'data', 'data-testid': 'grants-held' }, head.cloneNode(true), h('tbody', {}, held.map((g) => row(g, false))))
      : h('p', { class: 'muted' }, t('grant.none')),
    h('h3', {}, t('grant.given')),
    given.length ? h('table', { class: 'data', 'data-testid': 'grants-given' }, head, h('tbody', {}, given.map((g) => row(g, true))))
      : h('p', { class: 'muted' }, t('grant.none')));
}

