import { api } from '../api.js';
import { FINISHED } from '../live.js';
import { h, statusBadge, when } from '../dom.js';

/** Every job of the tenant, newest first; refreshed every 5 s while one is unfinished. */
export function jobsView(main) {
  const body = h('tbody', {}, h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'Loading…')));
  let timer;

  // Lists carry no per-epoch figures (the job page has them): progress, not accuracy, here.
  function row(job) {
    return h(
      'tr',
      { 'data-id': job.id },
      h('td', {}, h('a', { href: `#/jobs/${job.id}` }, job.id.slice(0, 8))),
      h('td', {}, statusBadge(job.status)),
      h('td', {}, job.baseModel),
      h('td', {}, job.strategy),
      h('td', { class: 'num' }, `${job.progress.epoch}/${job.progress.epochs}`),
      h('td', {}, when(job.createdAt)),
      h('td', {}, job.modelId ? h('a', { href: `#/models/${job.modelId}` }, 'model') : '—'),
    );
  }

  async function refresh() {
    try {
      const page = await api('GET', '/v1/jobs?limit=50');
      body.replaceChildren(...(page.items.length ? page.items.map(row) : [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No jobs yet.'))]));
      if (page.items.some((job) => !FINISHED.has(job.status))) timer = setTimeout(refresh, 5000);
    } catch (error) {
      body.replaceChildren(h('tr', {}, h('td', { colspan: 7, class: 'error' }, `Could not list jobs: ${error.message}`)));
    }
  }

  main.replaceChildren(
    h('div', { class: 'row' }, h('h1', {}, 'Jobs'), h('a', { class: 'button', href: '#/jobs/new' }, 'New job')),
    h(
      'div',
      { class: 'card' },
      h(
        'table',
        { id: 'job-list' },
        h('caption', { class: 'muted' }, 'Jobs, newest first'),
        h('thead', {}, h('tr', {}, ['Job', 'Status', 'Base model', 'Strategy', 'Epoch', 'Created', 'Model'].map((t) => h('th', { scope: 'col', class: t === 'Epoch' ? 'num' : null }, t)))),
        body,
      ),
    ),
  );
  void refresh();
  return () => clearTimeout(timer);
}
