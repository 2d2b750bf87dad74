import { api, apiBlob, limiter, upload } from '../api.js';
import { bytes, h, messageArea, when } from '../dom.js';

const THUMBS_PER_CLASS = 3;
const CLASSES_SHOWN = 12;

/** What the file field asks for, per kind of dataset. */
const FILE_HINTS = {
  labelled: 'One folder per class (<class>/<image>), or train/ and val/ with class folders inside.',
  unlabelled: 'Images anywhere in the zip, no class folders: the target domain of a domain_adaptation job.',
};

/** Datasets uploaded before kinds existed are labelled. */
export const kindOf = (dataset) => dataset.kind ?? 'labelled';

/** Thumbnails come one request each: a few at a time. */
const fetchThumb = limiter(4);

/** Loads a thumbnail of the dataset into `img` (an object URL, revoked when the view goes). */
export function loadThumbnail(img, datasetId, query, urls) {
  return fetchThumb(async () => {
    const blob = await apiBlob(`/v1/datasets/${datasetId}/samples?${new URLSearchParams(query)}`);
    const url = URL.createObjectURL(blob);
    urls.push(url);
    img.src = url;
  }).catch(() => img.remove());
}

export function datasetsView(main) {
  const urls = [];
  const message = messageArea();
  const list = h('div', { id: 'dataset-list', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));

  const file = h('input', { id: 'dataset-file', name: 'file', type: 'file', accept: '.zip,application/zip', required: true, 'aria-describedby': 'dataset-file-hint' });
  const name = h('input', { id: 'dataset-name', name: 'name', type: 'text', maxlength: 200 });
  const kind = h(
    'select',
    { id: 'dataset-kind', name: 'kind', 'aria-describedby': 'dataset-kind-hint' },
    h('option', { value: 'labelled' }, 'labelled'),
    h('option', { value: 'unlabelled' }, 'unlabelled'),
  );
  const fileHint = h('p', { id: 'dataset-file-hint', class: 'hint' }, FILE_HINTS.labelled);
  const showKind = () => {
    fileHint.textContent = FILE_HINTS[kind.value];
  };
  kind.addEventListener('change', showKind);
  const progress = h('progress', { id: 'upload-progress', max: 1, value: 0, 'aria-label': 'Upload progress' });
  progress.hidden = true;
  const button = h('button', { type: 'submit' }, 'Upload');
  const form = h(
    'form',
    { class: 'card grid', id: 'upload-form', 'aria-labelledby': 'upload-title' },
    h('h2', { id: 'upload-title', class: 'actions' }, 'Upload a dataset'),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'dataset-file' }, 'Zip of images'),
      file,
      fileHint,
    ),
    h(
      'div',
      { class: 'field' },
      h('label', { for: 'dataset-kind' }, 'Kind'),
      kind,
      h('p', { id: 'dataset-kind-hint', class: 'hint' }, 'labelled: what jobs train on; unlabelled: images only, to adapt a model to.'),
    ),
    h('div', { class: 'field' }, h('label', { for: 'dataset-name' }, 'Name (optional)'), name),
    h('div', { class: 'actions' }, button, progress),
    h('div', { class: 'actions' }, message.el),
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!file.files?.[0]) return message.show('Choose a zip file first.');
    const body = new FormData();
    if (name.value.trim()) body.append('name', name.value.trim());
    body.append('kind', kind.value);
    body.append('file', file.files[0]);
    button.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    message.show('Uploading…', 'muted');
    try {
      const dataset = await upload('/v1/datasets', body, (done) => {
        progress.value = done;
        if (done >= 1) message.show('Uploaded; checking every image…', 'muted');
      });
      const contents = kindOf(dataset) === 'unlabelled' ? `${dataset.counts.images} unlabelled images` : `${dataset.counts.images} images in ${dataset.classes.length} classes`;
      message.show(`Dataset “${dataset.name}” is ready: ${contents}.`, 'ok');
      form.reset();
      showKind();
      await refresh();
    } catch (error) {
      message.show(`Upload refused (${error.code}): ${error.message}`);
    } finally {
      button.disabled = false;
      progress.hidden = true;
    }
  });

  async function remove(dataset) {
    if (!confirm(`Delete dataset “${dataset.name}”? Models trained on it remain.`)) return;
    try {
      await api('DELETE', `/v1/datasets/${dataset.id}`);
      await refresh();
    } catch (error) {
      message.show(error.code === 'dataset_in_use' ? 'A job that is still running needs this dataset; cancel it first.' : `Could not delete: ${error.message}`);
    }
  }

  function card(dataset) {
    const unlabelled = kindOf(dataset) === 'unlabelled';
    const splits = dataset.layout === 'split';
    const classes = dataset.classes.slice(0, CLASSES_SHOWN).map((label) => {
      const train = dataset.counts.train[label] ?? 0;
      const val = dataset.counts.val[label] ?? 0;
      const thumbs = h('div', { class: 'thumbs' });
      for (let index = 0; index < Math.min(THUMBS_PER_CLASS, train + val); index++) {
        const img = h('img', { alt: `${label}, image ${index + 1}`, width: 64, height: 64 });
        thumbs.append(img);
        loadThumbnail(img, dataset.id, { class: label, index: String(index) }, urls);
      }
      return h(
        'section',
        { class: 'class', 'data-class': label },
        h('h3', {}, label, ' ', h('span', { class: 'muted count' }, splits ? `${train} train · ${val} val` : `${train} images`)),
        thumbs,
      );
    });
    const more = dataset.classes.length > CLASSES_SHOWN ? h('p', { class: 'muted' }, `… and ${dataset.classes.length - CLASSES_SHOWN} more classes`) : null;
    const skipped = dataset.counts.skipped > 0 ? h('p', { class: 'muted' }, `${dataset.counts.skipped} file(s) skipped as undecodable.`) : null;
    const facts = [unlabelled ? null : `${dataset.classes.length} classes`, `${dataset.counts.images} images`, bytes(dataset.sizeBytes), when(dataset.createdAt)];
    return h(
      'article',
      { class: 'card dataset', 'data-id': dataset.id, 'data-kind': kindOf(dataset), 'aria-labelledby': `ds-${dataset.id}` },
      h(
        'div',
        { class: 'row' },
        h('h2', { id: `ds-${dataset.id}` }, dataset.name),
        h('span', { class: `kind ${kindOf(dataset)}` }, kindOf(dataset)),
        h('span', { class: 'muted' }, facts.filter(Boolean).join(' · ')),
      ),
      // An unlabelled dataset has no classes to show: its image count, and what it is for.
      unlabelled
        ? h(
            'p',
            { class: 'unlabelled-count' },
            h('strong', {}, `${dataset.counts.unlabelled ?? dataset.counts.images} unlabelled images`),
            h('span', { class: 'muted' }, ' — no classes: the target domain of a domain_adaptation job.'),
          )
        : [h('div', { class: 'classes' }, classes), more],
      skipped,
      h(
        'p',
        { class: 'row' },
        unlabelled
          ? h('a', { class: 'button', href: `#/jobs/new?target=${dataset.id}` }, 'Adapt a model to it')
          : h('a', { class: 'button', href: `#/jobs/new?dataset=${dataset.id}` }, 'Train on this dataset'),
        h('button', { type: 'button', class: 'danger', onclick: () => remove(dataset) }, 'Delete'),
      ),
    );
  }

  async function refresh() {
    try {
      const page = await api('GET', '/v1/datasets?limit=50');
      list.replaceChildren(...(page.items.length ? page.items.map(card) : [h('p', { class: 'muted' }, 'No datasets yet: upload a zip above.')]));
    } catch (error) {
      list.replaceChildren(h('p', { class: 'error' }, `Could not list datasets: ${error.message}`));
    }
  }

  main.replaceChildren(h('h1', {}, 'Datasets'), form, list);
  void refresh();
  return () => urls.forEach((url) => URL.revokeObjectURL(url));
}
