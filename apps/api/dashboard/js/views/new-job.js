import { api } from '../api.js';
import { h, messageArea } from '../dom.js';
import { kindOf } from './datasets.js';

// The job form. The API is the one judge of a spec: the form does not second-guess it
// (novalidate) and shows each problem the API reports beside the field it names.

const STRATEGIES = {
  feature_extraction: 'Base frozen, a new softmax head trains; frozen features are cached. The right first try for small data.',
  fine_tune: 'The top of the base trains too, at a lower rate. For more data, or data unlike the base’s.',
  progressive_unfreezing: 'Stages that unfreeze further down, top first (head, then ~10 %, then ~35 % of layers).',
  full: 'Every layer trains, the pretrained weights as the start. For large datasets far from the base’s domain.',
  scratch: 'Same architecture, random initialisation: the baseline that shows what transfer bought.',
  prototype: 'Few-shot: class means of the embeddings, no training loop. A servable model in seconds.',
  domain_adaptation:
    'Feature extraction on the labelled data, then the base’s batch-norm statistics re-estimated on unlabelled images of the domain the model will serve (AdaBN).',
};

/** What each strategy starts from (README "Strategies"); the API fills in everything else. */
const DEFAULTS = {
  feature_extraction: { epochs: 15, batchSize: 16, optimizer: 'adam', learningRate: 0.001 },
  fine_tune: { epochs: 10, batchSize: 16, optimizer: 'sgd', learningRate: 0.001, topLayers: 20 },
  progressive_unfreezing: { epochs: 12, batchSize: 16, optimizer: 'adam', learningRate: 0.001 },
  full: { epochs: 10, batchSize: 16, optimizer: 'sgd', learningRate: 0.001 },
  scratch: { epochs: 20, batchSize: 32, optimizer: 'adam', learningRate: 0.001 },
  prototype: {},
  domain_adaptation: { epochs: 15, batchSize: 16, optimizer: 'adam', learningRate: 0.001 },
};
const COMMON = { validationSplit: 0.2, seed: 42, patience: '', topLayers: '', adaptationLayers: '', maxRuntimeSeconds: '' };

const OPTIMIZERS = ['adam', 'sgd', 'adamw', 'rmsprop'];

/** Form fields and where each sits in the job spec (the `path` of a validation error). */
const FIELDS = [
  { id: 'datasetId', label: 'Dataset', path: '/datasetId', kind: 'select' },
  { id: 'baseModel', label: 'Base model', path: '/baseModel', kind: 'select' },
  { id: 'strategy', label: 'Strategy', path: '/strategy', kind: 'select' },
  { id: 'targetDatasetId', label: 'Target dataset', path: '/targetDatasetId', kind: 'select', hint: 'unlabelled images of the domain the model will serve', only: ['domain_adaptation'], required: true },
  { id: 'targetTestDatasetId', label: 'Target test dataset (optional)', path: '/targetTestDatasetId', kind: 'select', hint: 'labelled images of that domain, only evaluated on', only: ['domain_adaptation'] },
  { id: 'epochs', label: 'Epochs', path: '/hyperparameters/epochs', min: 1, max: 500, step: 1, training: true },
  { id: 'batchSize', label: 'Batch size', path: '/hyperparameters/batchSize', min: 1, max: 1024, step: 1, training: true },
  { id: 'optimizer', label: 'Optimizer', path: '/hyperparameters/optimizer', kind: 'select', training: true },
  { id: 'learningRate', label: 'Learning rate', path: '/hyperparameters/learningRate', min: 0, max: 10, step: 'any', training: true },
  { id: 'topLayers', label: 'Unfreeze top layers', path: '/hyperparameters/unfreeze/topLayers', min: 1, step: 1, hint: 'blank: the default cut', only: ['fine_tune'] },
  { id: 'adaptationLayers', label: 'Adapted batch-norm layers', path: '/hyperparameters/adaptationLayers', min: 1, step: 1, hint: 'the first N from the input; blank: all of them', only: ['domain_adaptation'] },
  { id: 'patience', label: 'Early-stopping patience', path: '/hyperparameters/earlyStopping/patience', min: 1, step: 1, hint: 'epochs without improvement of val loss; blank: off', training: true },
  { id: 'validationSplit', label: 'Validation split', path: '/hyperparameters/validationSplit', min: 0, max: 0.5, step: 'any', hint: 'ignored when the zip has its own val/' },
  { id: 'seed', label: 'Seed', path: '/hyperparameters/seed', min: 0, step: 1 },
  { id: 'maxRuntimeSeconds', label: 'Time budget (s)', path: '/maxRuntimeSeconds', min: 1, step: 1, hint: 'blank: the server’s default' },
  { id: 'compareWithScratch', label: 'Also train from scratch to measure the transfer gain', path: '/compareWithScratch', kind: 'checkbox', notFor: ['scratch', 'prototype', 'domain_adaptation'] },
];

/** 422 codes that are about one field. */
const CODE_FIELDS = {
  unknown_dataset: 'datasetId',
  dataset_not_found: 'datasetId',
  unlabelled_dataset: 'datasetId',
  target_dataset_labelled: 'targetDatasetId',
  class_mismatch: 'targetTestDatasetId',
  unknown_model: 'baseModel',
  unknown_base_model: 'baseModel',
  max_runtime_too_long: 'maxRuntimeSeconds',
};

/** A dataset problem about a target names it first ("targetTestDatasetId … is unlabelled") or in
 * brackets ("dataset … (targetDatasetId) does not exist"); a mere mention elsewhere is advice. */
const TARGET_NAMED = /^(targetDatasetId|targetTestDatasetId)\b|\((targetDatasetId|targetTestDatasetId)\)/;

export function newJobView(main, { params, navigate }) {
  const message = messageArea();
  const controls = {};
  const errors = {};
  const wrappers = {};

  for (const field of FIELDS) {
    const errorId = `err-${field.id}`;
    const common = {
      id: field.id,
      name: field.id,
      'aria-describedby': [field.hint ? `hint-${field.id}` : null, errorId].filter(Boolean).join(' '),
      'aria-required': field.required ? 'true' : null,
    };
    const control =
      field.kind === 'select'
        ? h('select', common)
        : field.kind === 'checkbox'
          ? h('input', { ...common, type: 'checkbox' })
          : h('input', { ...common, type: 'number', inputmode: 'decimal', min: field.min, max: field.max, step: field.step });
    const error = h('p', { id: errorId, class: 'field-error', 'aria-live': 'polite' });
    error.hidden = true;
    controls[field.id] = control;
    errors[field.id] = error;
    const label = h('label', { for: field.id }, field.label);
    wrappers[field.id] =
      field.kind === 'checkbox'
        ? h('div', { class: 'field check actions' }, control, label, error)
        : h('div', { class: 'field', 'data-field': field.id }, label, control, field.hint ? h('p', { id: `hint-${field.id}`, class: 'hint' }, field.hint) : null, error);
  }
  const strategyHint = h('p', { id: 'hint-strategy', class: 'hint' });
  controls.strategy.setAttribute('aria-describedby', 'hint-strategy err-strategy');
  wrappers.strategy.insertBefore(strategyHint, errors.strategy);
  const baseHint = h('p', { id: 'hint-baseModel', class: 'hint' });
  controls.baseModel.setAttribute('aria-describedby', 'hint-baseModel err-baseModel');
  wrappers.baseModel.insertBefore(baseHint, errors.baseModel);

  for (const [name] of Object.entries(STRATEGIES)) controls.strategy.append(h('option', { value: name }, name));
  for (const name of OPTIMIZERS) controls.optimizer.append(h('option', { value: name }, name));

  const submit = h('button', { type: 'submit' }, 'Start job');
  const form = h(
    'form',
    { class: 'card grid', id: 'job-form', novalidate: true, 'aria-labelledby': 'job-form-title' },
    FIELDS.map((f) => wrappers[f.id]),
    h('div', { class: 'actions' }, submit, message.el),
  );

  /** Shows the fields a strategy uses and fills in its defaults. */
  function applyStrategy() {
    const strategy = controls.strategy.value;
    strategyHint.textContent = STRATEGIES[strategy] ?? '';
    const values = { ...COMMON, ...DEFAULTS[strategy] };
    for (const field of FIELDS) {
      const used = !(field.training && strategy === 'prototype') && (!field.only || field.only.includes(strategy)) && !field.notFor?.includes(strategy);
      wrappers[field.id].hidden = !used;
      if (field.id in values) controls[field.id].value = String(values[field.id]);
    }
    if (wrappers.compareWithScratch.hidden) controls.compareWithScratch.checked = false;
  }

  function showBaseHint() {
    const option = controls.baseModel.selectedOptions[0];
    baseHint.textContent = option?.dataset.description ?? '';
  }

  function clearErrors() {
    message.clear();
    for (const f of FIELDS) {
      errors[f.id].hidden = true;
      errors[f.id].textContent = '';
      controls[f.id].removeAttribute('aria-invalid');
    }
  }

  function fieldError(id, text) {
    errors[id].textContent = text;
    errors[id].hidden = false;
    controls[id].setAttribute('aria-invalid', 'true');
  }

  /** The field an error path (`/hyperparameters/epochs`) or a dotted name in a detail points at. */
  function fieldFor(path) {
    const candidates = FIELDS.filter((f) => !wrappers[f.id].hidden && (path === f.path || path.startsWith(`${f.path}/`)));
    return candidates[0]?.id;
  }

  function showProblem(error) {
    const placed = [];
    for (const e of error.errors) {
      const path = e.path || (e.params?.missingProperty ? `/${e.params.missingProperty}` : '');
      const id = path && fieldFor(path);
      if (id) {
        fieldError(id, e.message ?? 'invalid');
        placed.push(id);
      }
    }
    if (placed.length === 0 && CODE_FIELDS[error.code]) {
      const target = TARGET_NAMED.exec(error.message);
      const id = target ? (target[1] ?? target[2]) : CODE_FIELDS[error.code];
      fieldError(id, error.message);
      placed.push(id);
    }
    if (placed.length === 0 && error.code === 'invalid_spec') {
      // "hyperparameters.unfreeze applies to …": the dotted name says which field.
      for (const f of FIELDS) {
        const dotted = f.path.slice(1).split('/');
        const names = [dotted.join('.'), dotted.slice(0, -1).join('.')].filter((n) => n.includes('.'));
        // Top-level names that say one field ("needs targetDatasetId"); datasetId and strategy
        // are named in too many messages about other fields.
        if (f.id.startsWith('target')) names.push(f.id);
        if (!wrappers[f.id].hidden && names.some((n) => error.message.includes(n))) {
          fieldError(f.id, error.message);
          placed.push(f.id);
          break;
        }
      }
    }
    message.show(placed.length ? `The job was not started (${error.code}): see the field${placed.length > 1 ? 's' : ''} marked below.` : `The job was not started (${error.code}): ${error.message}`);
    controls[placed[0]]?.focus();
  }

  /** The spec as the form says it: blank fields are left to the API's defaults. */
  function spec() {
    const strategy = controls.strategy.value;
    const value = (id) => (wrappers[id].hidden || controls[id].value.trim() === '' ? undefined : Number(controls[id].value));
    const hyperparameters = {};
    for (const id of ['epochs', 'batchSize', 'learningRate', 'validationSplit', 'seed']) {
      if (value(id) !== undefined) hyperparameters[id] = value(id);
    }
    if (!wrappers.optimizer.hidden) hyperparameters.optimizer = controls.optimizer.value;
    if (value('topLayers') !== undefined) hyperparameters.unfreeze = { topLayers: value('topLayers') };
    if (value('patience') !== undefined) hyperparameters.earlyStopping = { patience: value('patience') };
    if (value('adaptationLayers') !== undefined) hyperparameters.adaptationLayers = value('adaptationLayers');
    // A custom base (the tenant's own) is named by id in an object; a zoo base by its name.
    const base = controls.baseModel.selectedOptions[0];
    const baseModel = base?.dataset.kind === 'custom' ? { baseModelId: base.value } : controls.baseModel.value;
    const body = { datasetId: controls.datasetId.value, baseModel, strategy, hyperparameters };
    // A target left unchosen is left out: the API then says it is needed, beside its field.
    for (const id of ['targetDatasetId', 'targetTestDatasetId']) {
      if (!wrappers[id].hidden && controls[id].value) body[id] = controls[id].value;
    }
    if (value('maxRuntimeSeconds') !== undefined) body.maxRuntimeSeconds = value('maxRuntimeSeconds');
    if (!wrappers.compareWithScratch.hidden && controls.compareWithScratch.checked) body.compareWithScratch = true;
    return body;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    submit.disabled = true;
    try {
      const job = await api('POST', '/v1/jobs', { json: spec() });
      navigate(`#/jobs/${job.id}`);
    } catch (error) {
      showProblem(error);
    } finally {
      submit.disabled = false;
    }
  });
  controls.strategy.addEventListener('change', applyStrategy);
  controls.baseModel.addEventListener('change', showBaseHint);

  main.replaceChildren(h('h1', { id: 'job-form-title' }, 'Start a job'), h('p', { class: 'muted' }, 'Defaults follow the strategy; blank fields take the API’s defaults.'), form);

  (async () => {
    try {
      const [datasets, bases] = await Promise.all([api('GET', '/v1/datasets?limit=100'), api('GET', '/v1/base-models')]);
      // Jobs train on labelled datasets; an unlabelled one is only ever a domain_adaptation target.
      const labelled = datasets.items.filter((d) => kindOf(d) === 'labelled');
      const unlabelled = datasets.items.filter((d) => kindOf(d) === 'unlabelled');
      if (labelled.length === 0) message.show('Upload a labelled dataset first (Datasets).');
      const describe = (d) => `${d.name} — ${d.classes.length} classes, ${d.counts.images} images`;
      for (const d of labelled) {
        controls.datasetId.append(h('option', { value: d.id, selected: d.id === params.get('dataset') }, describe(d)));
      }
      controls.targetDatasetId.append(h('option', { value: '' }, unlabelled.length ? 'Choose an unlabelled dataset' : 'None yet: upload one with kind unlabelled'));
      for (const d of unlabelled) {
        controls.targetDatasetId.append(h('option', { value: d.id, selected: d.id === params.get('target') }, `${d.name} — ${d.counts.images} unlabelled images`));
      }
      controls.targetTestDatasetId.append(h('option', { value: '' }, 'None'));
      for (const d of labelled) controls.targetTestDatasetId.append(h('option', { value: d.id }, describe(d)));
      for (const b of bases.items) {
        const option =
          b.kind === 'custom'
            ? h('option', { value: b.id, disabled: !b.available }, `${b.name} (yours, ${b.inputSize ?? '?'} px)${b.available ? '' : ` — ${b.status}`}`)
            : h('option', { value: b.id, disabled: !b.available }, `${b.id} (${b.inputSize} px${b.pretrained ? '' : ', random init'})${b.available ? '' : ' — unavailable'}`);
        option.dataset.kind = b.kind;
        option.dataset.description =
          b.kind === 'custom' ? `Your own base: embedding layer ${b.embeddingLayer}, ${b.embeddingSize ?? '?'}-d, pixels scaled ${b.scale}.` : `${b.description} Source: ${b.source}; licence: ${b.licence}.`;
        controls.baseModel.append(option);
      }
      const preferred = bases.items.find((b) => b.id === 'mobilenet_v2' && b.available) ?? bases.items.find((b) => b.available);
      if (preferred) controls.baseModel.value = preferred.id;
      // From an unlabelled dataset's "Adapt a model to it": the strategy that uses it.
      controls.strategy.value = unlabelled.some((d) => d.id === params.get('target')) ? 'domain_adaptation' : 'feature_extraction';
      applyStrategy();
      showBaseHint();
    } catch (error) {
      message.show(`Could not load datasets and base models: ${error.message}`);
    }
  })();
}
