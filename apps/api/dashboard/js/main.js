// The dashboard's entry point: a hash router over a handful of views. Each view renders into
// <main> and returns a cleanup (stop live updates, revoke object URLs) run when it is left.
import { session } from './api.js';
import { datasetsView } from './views/datasets.js';
import { jobView } from './views/job.js';
import { jobsView } from './views/jobs.js';
import { modelView } from './views/model.js';
import { newJobView } from './views/new-job.js';
import { signIn } from './views/signin.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const UUID = '([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})';

const ROUTES = [
  { pattern: /^\/(datasets)?$/, view: datasetsView, title: 'Datasets' },
  { pattern: /^\/jobs$/, view: jobsView, title: 'Jobs' },
  { pattern: /^\/jobs\/new$/, view: newJobView, title: 'New job' },
  { pattern: new RegExp(`^/jobs/${UUID}$`), view: jobView, title: 'Job' },
  { pattern: new RegExp(`^/models/${UUID}$`), view: modelView, title: 'Model' },
];

let cleanup = null;

function leave() {
  cleanup?.();
  cleanup = null;
}

function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function showSignIn(reason, kind) {
  leave();
  nav.hidden = true;
  document.title = 'Sign in · finetune';
  signIn(main, { reason, kind, onSignedIn: () => navigate('#/datasets') });
}

function render() {
  if (!session.key) return showSignIn();
  leave();
  nav.hidden = false;
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const params = new URLSearchParams(query);
  const route = ROUTES.find((r) => r.pattern.test(path || '/'));
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === `#${path}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!route) {
    main.replaceChildren(Object.assign(document.createElement('p'), { textContent: 'No such page.' }));
    return;
  }
  const id = route.pattern.exec(path || '/')[1];
  if (id && route.view !== datasetsView) params.set('id', id);
  document.title = `${route.title} · finetune`;
  cleanup = route.view(main, { params, navigate }) ?? null;
  main.focus({ preventScroll: true });
}

session.onUnauthorized(() => {
  session.signOut();
  showSignIn('Your API key is no longer accepted: sign in again.');
});
document.getElementById('sign-out').addEventListener('click', () => {
  session.signOut();
  showSignIn('Signed out.', 'muted');
});
window.addEventListener('hashchange', render);
render();
