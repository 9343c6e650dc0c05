// The console's shell: sign-in with a token, the header with who is signed in, and the
// pages the role may use (hash routes, so the server only ever serves one page).

import { api, forgetToken, keepToken, onUnauthorized, token } from './api.js';
import { auditViewer } from './audit.js';
import { catalogue } from './catalogue.js';
import { h, replace } from './dom.js';
import { language, onLanguage, setLanguage, t } from './i18n.js';
import { kpiScreen } from './kpi.js';
import { cameraMap } from './map.js';
import { workbench } from './workbench.js';

/** What the page exposes to people debugging it and to the browser tests. */
window.cityhubConsole = { session: null, route: null };

const PAGES = [
  { route: 'sql', needs: 'sql', label: 'nav.sql', open: workbench },
  { route: 'catalogue', needs: 'catalogue', label: 'nav.catalogue', open: catalogue },
  { route: 'map', needs: 'cameras', label: 'nav.map', open: cameraMap },
  { route: 'kpi', needs: 'kpi', label: 'nav.kpi', open: kpiScreen },
  { route: 'audit', needs: 'audit', label: 'nav.audit', open: auditViewer },
];

const app = document.getElementById('app');
let session = null;
let closeCurrent = null;
let shown = 0;

function languageToggle() {
  return h('button', {
    class: 'lang', 'data-testid': 'language',
    on: { click: () => setLanguage(language() === 'zh' ? 'en' : 'zh') },
  }, language() === 'zh' ? 'English' : '中文');
}

function signInPage(message) {
  close();
  session = null;
  window.cityhubConsole.session = null;
  const input = h('input', {
    type: 'password', autocomplete: 'off', required: true, 'data-testid': 'token',
    placeholder: 'chub_…', 'aria-label': t('signin.token'),
  });
  const note = h('p', { class: 'message bad', 'data-testid': 'signin-message' }, message || '');
  const form = h('form', { class: 'signin' },
    h('h1', {}, t('app.name')),
    h('p', { class: 'muted' }, t('app.tagline')),
    h('label', {}, t('signin.token'), input),
    h('button', { class: 'primary', type: 'submit', 'data-testid': 'signin' }, t('signin.submit')),
    note,
    h('p', { class: 'muted small' }, t('signin.hint')),
    languageToggle());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    keepToken(input.value.trim());
    await start();
  });
  replace(app, form);
  input.focus();
}

async function start() {
  try {
    session = await api('/me');
  } catch (error) {
    forgetToken();
    signInPage(error.status === 401 ? t('signin.refused') : error.message);
    return;
  }
  window.cityhubConsole.session = session;
  if (!location.hash) location.hash = `#/${allowedPages()[0].route}`;
  show();
}

function allowedPages() {
  return PAGES.filter((page) => session.can.includes(page.needs));
}

function close() {
  if (typeof closeCurrent === 'function') closeCurrent();
  closeCurrent = null;
  shown += 1;
}

function show() {
  if (!session) return;
  close();
  const pages = allowedPages();
  // #/page, or #/page/detail for a link to one thing on it (a channel on the map).
  const [wanted, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const detail = rest.length ? decodeURIComponent(rest.join('/')) : null;
  const page = pages.find((p) => p.route === wanted) || pages[0];
  window.cityhubConsole.route = page.route;
  const main = h('main', { class: `page page-${page.route}` });
  const who = [
    session.department_name ? `${session.department_name}（${session.department}）` : session.department,
    t(`role.${session.role}`),
    session.region_name,
  ].filter(Boolean).join(' · ');
  replace(app,
    h('header', { class: 'top' },
      h('span', { class: 'brand' }, t('app.short')),
      h('nav', {}, pages.map((p) => h('a', {
        href: `#/${p.route}`, class: p === page ? 'active' : '', 'data-testid': `nav-${p.route}`,
      }, t(p.label)))),
      h('span', { class: 'spacer' }),
      h('span', { class: 'who', 'data-testid': 'who', title: session.name }, who),
      languageToggle(),
      h('button', { 'data-testid': 'signout', on: { click: signOut } }, t('signin.out'))),
    main);
  const generation = ++shown;
  Promise.resolve(page.open(main, session, page.route === wanted ? detail : null))
    .then((closer) => {
      // A page left before it finished opening is closed at once (its event streams too).
      if (generation === shown) closeCurrent = closer;
      else if (typeof closer === 'function') closer();
    })
    .catch((error) => replace(main, h('p', { class: 'bad' }, error.message)));
}

function signOut() {
  forgetToken();
  location.hash = '';
  signInPage();
}

window.addEventListener('hashchange', show);
onLanguage(() => (session ? show() : signInPage()));
onUnauthorized(() => {
  if (session) {
    forgetToken();
    signInPage(t('signin.expired'));
  }
});
document.documentElement.lang = language() === 'zh' ? 'zh-CN' : 'en';
if (token()) start(); else signInPage();
