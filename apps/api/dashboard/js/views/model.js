import { api, apiBlob, saveBlob } from '../api.js';
import { bytes, h, messageArea, number, percent, when } from '../dom.js';
import { loadThumbnail } from './datasets.js';

/** The confusion matrix as a table whose cells shade with the share of their row. */
function confusionMatrix(evaluation, id = 'confusion-matrix') {
  const { labels, confusionMatrix: matrix } = evaluation;
  return h(
    'table',
    { class: 'confusion', id },
    h('caption', { class: 'muted' }, 'Rows: actual class; columns: predicted class. Darker = larger share of the row.'),
    h('thead', {}, h('tr', {}, h('td'), labels.map((label) => h('th', { scope: 'col' }, label)))),
    h(
      'tbody',
      {},
      matrix.map((row, actual) => {
        const total = row.reduce((a, b) => a + b, 0) || 1;
        return h(
          'tr',
          {},
          h('th', { scope: 'row' }, labels[actual]),
          row.map((count, predicted) => {
            const share = count / total;
            const cell = h('td', { title: `actual ${labels[actual]}, predicted ${labels[predicted]}: ${count} (${percent(share)})` }, String(count));
            // CSSOM, not a style attribute: the page's CSP has no 'unsafe-inline'.
            cell.style.backgroundColor = predicted === actual ? `hsl(140 55% ${96 - share * 60}%)` : `hsl(4 70% ${97 - share * 55}%)`;
            if (share > 0.6) cell.classList.add('dark');
            return cell;
          }),
        );
      }),
    ),
  );
}

function perClassTable(evaluation, id = 'per-class') {
  return h(
    'table',
    { id },
    h('thead', {}, h('tr', {}, ['Class', 'Precision', 'Recall', 'F1', 'Support'].map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null }, t)))),
    h(
      'tbody',
      {},
      evaluation.perClass.map((c) =>
        h('tr', {}, h('th', { scope: 'row' }, c.label), h('td', { class: 'num' }, number(c.precision)), h('td', { class: 'num' }, number(c.recall)), h('td', { class: 'num' }, number(c.f1)), h('td', { class: 'num' }, c.support)),
      ),
    ),
  );
}

/** A model: its evaluation, a prediction box, download and delete. */
export function modelView(main, { params, navigate }) {
  const id = params.get('id');
  const urls = [];
  const message = messageArea();
  const content = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));

  async function download(button) {
    button.disabled = true;
    try {
      saveBlob(await apiBlob(`/v1/models/${id}/download`), `model-${id}.zip`);
    } catch (error) {
      message.show(`Download failed (${error.code}): ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async function remove() {
    if (!confirm('Delete this model? Its job remains, without a model.')) return;
    try {
      await api('DELETE', `/v1/models/${id}`);
      navigate('#/jobs');
    } catch (error) {
      message.show(`Could not delete (${error.code}): ${error.message}`);
    }
  }

  function predictBox() {
    const input = h('input', { id: 'predict-file', type: 'file', accept: 'image/*' });
    const preview = h('img', { alt: 'The image sent for prediction' });
    preview.hidden = true;
    const result = h('div', { class: 'bars', id: 'prediction', 'aria-live': 'polite' });
    const zone = h(
      'div',
      { class: 'drop', id: 'drop-zone' },
      h('p', {}, 'Drop an image here, or ', h('label', { for: 'predict-file' }, 'choose one:')),
      input,
    );

    async function predict(file) {
      if (!file) return;
      const url = URL.createObjectURL(file);
      urls.push(url);
      preview.src = url;
      preview.hidden = false;
      result.replaceChildren(h('p', { class: 'muted' }, 'Predicting…'));
      const body = new FormData();
      body.append('file', file);
      try {
        const answer = await api('POST', `/v1/models/${id}/predict`, { body });
        const prediction = answer.predictions[0];
        result.replaceChildren(
          h('p', { id: 'predicted' }, 'Predicted: ', h('strong', { class: 'label' }, prediction.label), ` (${percent(prediction.score)})`),
          ...prediction.top.map((t) => {
            const fill = h('div', { class: 'bar-fill' });
            fill.style.width = `${Math.max(0, Math.min(1, t.score)) * 100}%`;
            return h('div', { class: 'bar-row' }, h('span', {}, t.label), h('div', { class: 'bar-track', 'aria-hidden': 'true' }, fill), h('span', { class: 'num' }, percent(t.score)));
          }),
        );
      } catch (error) {
        result.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Not predicted (${error.code}): ${error.message}`));
      }
    }

    input.addEventListener('change', () => predict(input.files?.[0]));
    zone.addEventListener('dragover', (event) => {
      event.preventDefault();
      zone.classList.add('over');
    });
    zone.addEventListener('dragleave', () => zone.classList.remove('over'));
    zone.addEventListener('drop', (event) => {
      event.preventDefault();
      zone.classList.remove('over');
      void predict(event.dataTransfer?.files?.[0]);
    });
    return h('section', { class: 'card', 'aria-labelledby': 'predict-title' }, h('h2', { id: 'predict-title' }, 'Try it'), zone, h('div', { class: 'predict' }, preview, result));
  }

  function mistakes(evaluation, datasetId, { id = 'mistakes', images = 'validation' } = {}) {
    const list = evaluation.mostConfidentErrors ?? [];
    if (list.length === 0) return h('p', { class: 'muted' }, `No ${images} image was misclassified.`);
    return h(
      'div',
      { class: 'mistakes', id },
      list.slice(0, 12).map((m) => {
        const img = h('img', { alt: `${m.id}: a ${m.label} taken for ${m.predicted}`, width: 96, height: 96 });
        if (datasetId) void loadThumbnail(img, datasetId, { path: m.id }, urls);
        return h('figure', { class: 'mistake' }, img, h('figcaption', {}, h('strong', {}, m.label), ' taken for ', h('strong', {}, m.predicted), ` (${percent(m.confidence)})`, h('br'), h('span', { class: 'muted mono' }, m.id)));
      }),
    );
  }

  /** domain_adaptation: what the batch-norm statistics were estimated from (metrics.adaptation). */
  function adaptationFacts(adaptation, item) {
    const short = (datasetId) => (datasetId ? h('span', { class: 'mono', title: datasetId }, datasetId.slice(0, 8)) : 'none');
    return h(
      'section',
      { class: 'card', id: 'adaptation', 'aria-labelledby': 'adaptation-title' },
      h('h2', { id: 'adaptation-title' }, 'Domain adaptation'),
      h(
        'dl',
        { class: 'row' },
        item('Method', adaptation.method === 'adabn' ? 'AdaBN (batch-norm statistics per domain)' : adaptation.method),
        item('Target dataset', short(adaptation.targetDatasetId)),
        item('Target test dataset', short(adaptation.targetTestDatasetId)),
        item('Source images', adaptation.sourceImages),
        item('Target images', adaptation.targetImages),
        adaptation.targetImagesNotSampled > 0 ? item('Target images not sampled', adaptation.targetImagesNotSampled) : null,
        adaptation.targetImagesSkipped > 0 ? item('Target images skipped', adaptation.targetImagesSkipped) : null,
        item('Batch-norm layers adapted', adaptation.batchNormLayers),
      ),
      h('p', { class: 'muted' }, 'The head trained on source-domain features; the model serves with the target domain’s statistics.'),
    );
  }

  /** The report on the labelled target-domain dataset, apart from the source validation. */
  function targetEvaluationSection(report, datasetId, item) {
    return h(
      'section',
      { class: 'card', id: 'target-evaluation', 'aria-labelledby': 'target-evaluation-title' },
      h('h2', { id: 'target-evaluation-title' }, `Target domain: evaluation on ${report.samples} target test images`),
      h(
        'dl',
        { class: 'row' },
        item('Accuracy', percent(report.accuracy)),
        item(`Top-${report.topK} accuracy`, percent(report.topKAccuracy)),
        item('Macro F1', number(report.macroF1)),
      ),
      h(
        'div',
        { class: 'row' },
        h('div', {}, h('h3', {}, 'Confusion matrix'), confusionMatrix(report, 'target-confusion-matrix')),
        h('div', {}, h('h3', {}, 'Per class'), perClassTable(report, 'target-per-class')),
      ),
      h('h3', {}, 'Most confident mistakes'),
      mistakes(report, datasetId, { id: 'target-mistakes', images: 'target test' }),
    );
  }

  (async () => {
    try {
      const model = await api('GET', `/v1/models/${id}`);
      const job = await api('GET', `/v1/jobs/${model.jobId}`).catch(() => null);
      const evaluation = model.evaluation;
      const target = model.targetEvaluation ?? null;
      const adaptation = model.metrics?.adaptation ?? null;
      const item = (term, value) => h('div', {}, h('dt', { class: 'muted' }, term), h('dd', {}, value));
      content.replaceChildren(
        h(
          'section',
          { class: 'card' },
          h(
            'dl',
            { class: 'row' },
            item('Classes', model.labels.join(', ')),
            item('Base model', model.baseModel),
            item('Strategy', model.strategy),
            item('Input', `${model.inputSize} × ${model.inputSize} RGB`),
            item('Accuracy', evaluation ? percent(evaluation.accuracy) : '—'),
            evaluation ? item(`Top-${evaluation.topK} accuracy`, percent(evaluation.topKAccuracy)) : null,
            evaluation ? item('Macro F1', number(evaluation.macroF1)) : null,
            target ? item('Target accuracy', percent(target.accuracy)) : null,
            model.transferGain === null ? null : item('Transfer gain', `${model.transferGain >= 0 ? '+' : ''}${(model.transferGain * 100).toFixed(1)} pt vs scratch`),
            item('Size', bytes(model.sizeBytes)),
            item('Created', when(model.createdAt)),
          ),
          h(
            'p',
            { class: 'row' },
            h('button', { type: 'button', id: 'download-model', onclick: (e) => download(e.currentTarget) }, 'Download (TensorFlow.js zip)'),
            h('a', { class: 'button secondary', href: `#/jobs/${model.jobId}` }, 'Its job'),
            h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete model'),
          ),
        ),
        predictBox(),
        evaluation
          ? h(
              'section',
              { class: 'card', 'aria-labelledby': 'evaluation-title' },
              h('h2', { id: 'evaluation-title' }, `Evaluation on ${evaluation.samples} validation images${adaptation ? ' (source domain)' : ''}`),
              h('div', { class: 'row' }, h('div', {}, h('h3', {}, 'Confusion matrix'), confusionMatrix(evaluation)), h('div', {}, h('h3', {}, 'Per class'), perClassTable(evaluation))),
              h('h3', {}, 'Most confident mistakes'),
              mistakes(evaluation, job?.datasetId),
            )
          : h('p', { class: 'card muted' }, 'No evaluation: the job had no validation images.'),
        adaptation ? adaptationFacts(adaptation, item) : null,
        target ? targetEvaluationSection(target, adaptation?.targetTestDatasetId ?? job?.spec?.targetTestDatasetId, item) : null,
      );
    } catch (error) {
      content.replaceChildren(h('p', { class: 'error' }, error.status === 404 ? 'No such model (or it belongs to another tenant).' : `Could not load the model: ${error.message}`));
    }
  })();

  main.replaceChildren(h('h1', {}, `Model ${id.slice(0, 8)}`), message.el, content);
  return () => urls.forEach((url) => URL.revokeObjectURL(url));
}
