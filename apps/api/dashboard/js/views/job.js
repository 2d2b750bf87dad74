import { api } from '../api.js';
import { lineChart } from '../chart.js';
import { h, messageArea, number, percent, statusBadge, when } from '../dom.js';
import { FINISHED, watchJob } from '../live.js';

/** A job with its learning curves, updated live (events stream, or polling without it). */
export function jobView(main, { params, navigate }) {
  const id = params.get('id');
  const message = messageArea();
  const rows = new Map();
  let job = null;
  let progress = null;

  const title = h('h1', {}, `Job ${id.slice(0, 8)}`);
  const status = h('span', { id: 'job-status' });
  const summary = h('dl', { class: 'row', id: 'job-summary' });
  const bar = h('progress', { id: 'job-progress', max: 1, value: 0, 'aria-labelledby': 'job-progress-text' });
  const barText = h('p', { id: 'job-progress-text', class: 'muted', 'aria-live': 'polite' });
  const mode = h('p', { id: 'live-mode', class: 'muted' });
  const charts = h('div', { class: 'charts', id: 'charts' });
  const table = h('tbody');
  const actions = h('p', { class: 'row', id: 'job-actions' });

  function drawCharts() {
    const sorted = [...rows.values()].sort((a, b) => a.epoch - b.epoch);
    const xMax = job?.progress.epochs ?? sorted.at(-1)?.epoch ?? 1;
    const serie = (name, className, key) => ({ name, className, points: sorted.map((r) => ({ x: r.epoch, y: r[key] })) });
    charts.replaceChildren(
      h('figure', { class: 'card' }, lineChart({ id: 'loss-chart', title: 'Loss', xMax, series: [serie('train loss', 'train', 'trainLoss'), serie('val loss', 'val', 'valLoss')] })),
      h(
        'figure',
        { class: 'card' },
        lineChart({
          id: 'accuracy-chart',
          title: 'Accuracy',
          xMax,
          y: { min: 0, max: 1 },
          format: (v) => `${Math.round(v * 100)}%`,
          series: [serie('train accuracy', 'train', 'trainAccuracy'), serie('val accuracy', 'val', 'valAccuracy')],
        }),
      ),
    );
    table.replaceChildren(
      ...sorted.map((r) =>
        h(
          'tr',
          {},
          h('td', { class: 'num' }, r.epoch),
          h('td', { class: 'num' }, number(r.trainLoss)),
          h('td', { class: 'num' }, number(r.valLoss)),
          h('td', { class: 'num' }, percent(r.trainAccuracy)),
          h('td', { class: 'num' }, percent(r.valAccuracy)),
          h('td', { class: 'num' }, r.learningRate === undefined ? '—' : r.learningRate.toExponential(2)),
        ),
      ),
    );
  }

  function drawProgress() {
    if (!job) return;
    const { epoch, epochs, percent: pct } = job.progress;
    if (progress && !FINISHED.has(job.status)) {
      const done = (progress.epoch - 1 + progress.batch / Math.max(progress.batches, 1)) / Math.max(progress.epochs, 1);
      bar.value = Math.min(1, Math.max(0, done));
      const eta = progress.etaSeconds === null || progress.etaSeconds === undefined ? '' : ` · about ${Math.ceil(progress.etaSeconds)} s left`;
      barText.textContent = `Epoch ${progress.epoch}/${progress.epochs} · batch ${progress.batch}/${progress.batches} · loss ${number(progress.loss)} · ${Math.round(progress.imagesPerSecond ?? 0)} images/s${eta}`;
    } else {
      bar.value = pct / 100;
      barText.textContent = `Epoch ${epoch}/${epochs} (${pct} %)`;
    }
  }

  function drawJob() {
    status.replaceChildren(statusBadge(job.status));
    const best = job.metrics.best;
    const item = (term, value) => h('div', {}, h('dt', { class: 'muted' }, term), h('dd', {}, value));
    summary.replaceChildren(
      item('Base model', job.baseModel),
      item('Strategy', job.strategy),
      item('Backend', job.backend ?? '—'),
      job.spec?.targetDatasetId ? item('Target dataset', h('span', { class: 'mono', title: job.spec.targetDatasetId }, job.spec.targetDatasetId.slice(0, 8))) : null,
      // domain_adaptation: estimating both domains' batch-norm statistics, before the first epoch.
      typeof job.timings?.adaptation === 'number' ? item('Adaptation', `${(job.timings.adaptation / 1000).toFixed(1)} s`) : null,
      item('Best val accuracy', best ? percent(best.valAccuracy ?? best.trainAccuracy) : '—'),
      item('Started', when(job.startedAt)),
      item('Finished', when(job.finishedAt)),
      job.stopReason ? item('Stopped', job.stopReason.replace('_', ' ')) : null,
    );
    if (job.error) message.show(`Failed (${job.error.code}): ${job.error.message}`);
    const buttons = [];
    if (job.modelId) buttons.push(h('a', { class: 'button', href: `#/models/${job.modelId}`, id: 'open-model' }, 'Open the model'));
    if (!FINISHED.has(job.status)) {
      buttons.push(h('button', { type: 'button', class: 'secondary', disabled: job.cancelRequested, onclick: cancel }, job.cancelRequested ? 'Canceling…' : 'Cancel job'));
    } else {
      buttons.push(h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete job'));
    }
    actions.replaceChildren(...buttons);
    drawProgress();
  }

  async function cancel() {
    try {
      job = await api('POST', `/v1/jobs/${id}/cancel`);
      drawJob();
    } catch (error) {
      message.show(`Could not cancel (${error.code}): ${error.message}`);
    }
  }

  async function remove() {
    if (!confirm('Delete this job with its metrics, checkpoints and model?')) return;
    try {
      await api('DELETE', `/v1/jobs/${id}`);
      navigate('#/jobs');
    } catch (error) {
      message.show(`Could not delete (${error.code}): ${error.message}`);
    }
  }

  main.replaceChildren(
    h('div', { class: 'row' }, title, status),
    message.el,
    h('section', { class: 'card', 'aria-label': 'Progress' }, summary, bar, barText, mode, actions),
    h('h2', {}, 'Learning curves'),
    charts,
    h(
      'details',
      { class: 'card' },
      h('summary', {}, 'Metrics per epoch'),
      h('table', { id: 'metrics-table' }, h('thead', {}, h('tr', {}, ['Epoch', 'Train loss', 'Val loss', 'Train acc.', 'Val acc.', 'Learning rate'].map((t) => h('th', { scope: 'col', class: 'num' }, t)))), table),
    ),
  );
  drawCharts();

  let redraw = 0;
  const scheduleCharts = () => {
    cancelAnimationFrame(redraw);
    redraw = requestAnimationFrame(drawCharts);
  };
  const stop = watchJob(id, {
    onJob(next) {
      const epochsChanged = job?.progress.epochs !== next.progress.epochs;
      job = next;
      if (FINISHED.has(job.status)) progress = null;
      drawJob();
      if (epochsChanged) scheduleCharts();
    },
    onEpoch(row) {
      const known = rows.get(row.epoch);
      if (known && JSON.stringify(known) === JSON.stringify(row)) return;
      rows.set(row.epoch, row);
      scheduleCharts();
    },
    onProgress(next) {
      progress = next;
      drawProgress();
    },
    onMode(kind) {
      mode.textContent = kind === 'stream' ? 'Live: following the job’s event stream.' : 'Live: refreshed every 2 seconds.';
      mode.dataset.mode = kind;
    },
    onError(error) {
      message.show(error.status === 404 ? 'No such job (or it belongs to another tenant).' : `Lost track of the job: ${error.message}`);
      mode.textContent = '';
    },
  });
  return () => {
    stop();
    cancelAnimationFrame(redraw);
  };
}
