import Type, { type TSchema } from 'typebox';
import { JOB_STATUSES } from '@finetune/core';
import { Uuid } from './schemas.ts';

// What every route answers, as JSON Schema: Fastify serialises responses with these (a field not
// in the schema never leaves the API) and the OpenAPI document (GET /openapi.json) is generated
// from them. A route's present* function and its schema here change together.

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const DateTime = () => Type.String({ format: 'date-time' });
/** Free-form JSON (a job's spec, a model's evaluation): documented where it is produced. */
const Json = (description: string) => Type.Unknown({ description });

export const Problem = Type.Object(
  {
    type: Type.String({ description: 'urn:finetune:problem:<code>' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'stable machine-readable error code' }),
    instance: Type.Optional(Type.String()),
    errors: Type.Optional(Type.Array(Type.Unknown())),
  },
  // Problem-specific members, e.g. a quota's `quota`, `usage` and `limit`.
  { additionalProperties: true, description: 'RFC 9457 problem details (application/problem+json)' },
);

const Page = <T extends TSchema>(item: T) =>
  Type.Object({ items: Type.Array(item), nextCursor: Nullable(Uuid()) }, { description: 'a page: pass nextCursor as ?cursor= for the next one' });

const ClassCounts = Type.Record(Type.String(), Type.Integer(), { description: 'images per class' });

export const Dataset = Type.Object({
  id: Uuid(),
  name: Type.String(),
  status: Type.Union([Type.Literal('ready'), Type.Literal('deleting')]),
  kind: Type.Union([Type.Literal('labelled'), Type.Literal('unlabelled')], {
    description: 'labelled: images in class folders, what jobs train on; unlabelled: images only, a domain_adaptation target',
  }),
  layout: Type.String({ description: '"flat" (<class>/<img>), "split" (train/… + val/…) or "unlabelled" (images anywhere, no classes)' }),
  classes: Type.Array(Type.String()),
  counts: Type.Object({
    train: ClassCounts,
    val: ClassCounts,
    test: ClassCounts,
    images: Type.Integer(),
    skipped: Type.Integer(),
    ignored: Type.Integer(),
    skippedFiles: Type.Array(Type.Object({ path: Type.String(), reason: Type.String() })),
    unlabelled: Type.Optional(Type.Integer({ description: 'images of an unlabelled dataset' })),
  }),
  sizeBytes: Type.Integer(),
  sha256: Type.String(),
  report: Nullable(
    Type.Object(
      { blocking: Type.Integer(), warnings: Type.Integer() },
      { description: 'how many data-check findings of each severity (GET /v1/datasets/:id/report); null if never checked' },
    ),
  ),
  createdAt: DateTime(),
});

export const Metric = Type.Object({
  epoch: Type.Integer(),
  trainLoss: Type.Number(),
  trainAccuracy: Type.Number(),
  valLoss: Nullable(Type.Number()),
  valAccuracy: Nullable(Type.Number()),
  learningRate: Type.Number(),
  durationMs: Type.Integer(),
  stage: Nullable(Type.Integer()),
});

export const Checkpoint = Type.Object({
  epoch: Type.Integer(),
  trainLoss: Type.Number(),
  trainAccuracy: Type.Number(),
  valLoss: Nullable(Type.Number()),
  valAccuracy: Nullable(Type.Number()),
  sizeBytes: Type.Integer(),
  elapsedMs: Type.Integer(),
  createdAt: DateTime(),
});

export const Job = Type.Object({
  id: Uuid(),
  status: Type.Union(JOB_STATUSES.map((s) => Type.Literal(s))),
  datasetId: Nullable(Uuid()),
  baseModel: Type.String(),
  strategy: Type.String(),
  spec: Json('the validated job spec with every default filled in, as the worker runs it'),
  progress: Type.Object({ epoch: Type.Integer(), epochs: Type.Integer(), percent: Type.Integer() }),
  metrics: Type.Object({ best: Nullable(Metric), last: Nullable(Metric) }),
  backend: Nullable(Type.String()),
  modelId: Nullable(Uuid()),
  skippedImages: Type.Integer(),
  warnings: Type.Array(
    Type.Object({ check: Type.String(), severity: Type.String(), message: Type.String(), fileCount: Type.Integer() }),
    { description: "the dataset's blocking data-check findings when the job was created (strictDataChecks refuses instead)" },
  ),
  microBatchSize: Nullable(
    Type.Integer({ description: 'images per forward + backward pass, chosen to fit the backend memory; gradients of a batch are summed over them' }),
  ),
  learningRateFinder: Nullable(
    Type.Object(
      {
        suggested: Type.Number({ description: "the range test's suggestion (fastai's valley)" }),
        chosen: Type.Number({ description: 'the rate the job trains with (the head; base layers scale it)' }),
        curve: Type.Array(Type.Object({ lr: Type.Number(), loss: Type.Number({ description: 'smoothed training loss at that rate' }) })),
      },
      { description: 'learningRate "auto": the learning-rate range test run before training; null otherwise or until it ran' },
    ),
  ),
  timings: Nullable(
    Type.Object(
      {
        queueWaitMs: Nullable(Type.Integer()),
        download: Type.Optional(Type.Integer()),
        decode: Type.Optional(Type.Integer()),
        adaptation: Type.Optional(Type.Integer({ description: 'domain_adaptation: estimating the batch-norm statistics of both domains' })),
        frozenForward: Type.Optional(Type.Integer()),
        training: Type.Optional(Type.Integer()),
        evaluation: Type.Optional(Type.Integer()),
        comparison: Type.Optional(Type.Integer()),
        export: Type.Optional(Type.Integer()),
      },
      { description: "milliseconds per phase of the latest run (frozenForward is not counted in training); null until a run recorded them" },
    ),
  ),
  runtime: Nullable(
    Type.Object(
      { training: Type.String(), frozenLayers: Nullable(Type.String()), device: Type.String() },
      { description: 'what ran the latest run: the tfjs backend that trained, the engine of the frozen layers (onnxruntime or tfjs-<backend>), the device' },
    ),
  ),
  embeddingCache: Nullable(Type.Union([Type.Literal('reused'), Type.Literal('computed')])),
  stoppedEarly: Type.Boolean(),
  stopReason: Nullable(Type.String({ description: 'completed | early_stopping | max_runtime | canceled | asha_stopped (a sweep trial ASHA stopped at a rung)' })),
  sweepId: Nullable(Uuid()),
  trialNumber: Nullable(Type.Integer({ description: 'the trial number within its sweep, from 0' })),
  attempts: Type.Integer(),
  runs: Type.Integer(),
  cancelRequested: Type.Boolean(),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  createdAt: DateTime(),
  startedAt: Nullable(DateTime()),
  finishedAt: Nullable(DateTime()),
});

export const Model = Type.Object({
  id: Uuid(),
  jobId: Uuid(),
  baseModel: Type.String(),
  strategy: Type.String(),
  labels: Type.Array(Type.String()),
  inputSize: Type.Integer(),
  input: Type.Object({ shape: Type.Array(Nullable(Type.Integer())), scale: Type.String() }),
  metrics: Json('best-epoch figures, trained layers and the reproducibility record'),
  evaluation: Json(
    'on the validation split (the one the best epoch was chosen on): per-class precision/recall/F1, confusion matrix, top-k accuracy, ' +
      'most confident errors; null when nothing was held out (see evaluationNote)',
  ),
  testEvaluation: Json('the same report on the test split (never used for selection); null without a test split'),
  targetEvaluation: Json(
    'domain_adaptation: the same report on the labelled target-domain dataset the job named (targetTestDatasetId), ' +
      'with the target statistics the model carries; null otherwise',
  ),
  evaluationNote: Nullable(Type.String({ description: 'why evaluation is null' })),
  calibration: Nullable(
    Type.Object(
      {
        temperature: Type.Number({ description: 'scores are softmax(logits / temperature)' }),
        fittedOn: Type.Literal('validation'),
        fitSamples: Type.Integer(),
        measuredOn: Type.Union([Type.Literal('test'), Type.Literal('validation')], { description: 'the split the figures below are measured on' }),
        samples: Type.Integer(),
        eceBefore: Type.Number({ description: 'expected calibration error (15 bins) without scaling' }),
        eceAfter: Type.Number(),
        nllBefore: Type.Number({ description: 'mean negative log-likelihood' }),
        nllAfter: Type.Number(),
        bins: Type.Array(
          Type.Object({ lower: Type.Number(), upper: Type.Number(), count: Type.Integer(), confidence: Type.Number(), accuracy: Type.Number() }),
          { description: 'reliability diagram after scaling: the non-empty confidence bins' },
        ),
      },
      { description: 'temperature scaling fitted on the validation split; null without validation data' },
    ),
  ),
  confidenceThreshold: Nullable(Type.Number({ description: 'below this top score /predict labels an image "unknown"' })),
  scratchAccuracy: Nullable(Type.Number()),
  transferGain: Nullable(Type.Number()),
  transferGainSplit: Nullable(Type.Union([Type.Literal('test'), Type.Literal('validation')], { description: 'the split scratchAccuracy and transferGain were measured on' })),
  negativeTransfer: Nullable(Type.Boolean()),
  files: Type.Array(Type.String()),
  sizeBytes: Type.Integer(),
  createdAt: DateTime(),
});

export const Prediction = Type.Object({
  label: Type.String({ description: 'the top class, or "unknown" when its score is below the confidence threshold' }),
  score: Type.Number(),
  top: Type.Array(Type.Object({ label: Type.String(), score: Type.Number() })),
});

export const BaseModel = Type.Object({
  id: Type.String(),
  kind: Type.Literal('zoo'),
  inputSize: Type.Integer(),
  embeddingSize: Type.Integer(),
  source: Type.String(),
  licence: Type.String(),
  available: Type.Boolean(),
  pretrained: Type.Boolean(),
  description: Type.String(),
});

/** A tenant's own base model (POST /v1/base-models). Before it is `ready` its sizes may be unknown. */
export const CustomBaseModel = Type.Object({
  id: Uuid(),
  kind: Type.Literal('custom'),
  name: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('validating'), Type.Literal('ready'), Type.Literal('failed')]),
  source: Type.Union([Type.Literal('zip'), Type.Literal('url')]),
  url: Nullable(Type.String()),
  inputSize: Nullable(Type.Integer()),
  embeddingSize: Nullable(Type.Integer()),
  embeddingLayer: Type.String(),
  pooled: Type.Boolean({ description: 'the embedding layer outputs a feature map, global-average-pooled into the embedding' }),
  scale: Type.Union([Type.Literal('0_1'), Type.Literal('-1_1'), Type.Literal('0_255')]),
  layerCount: Nullable(Type.Integer({ description: 'layers from the input up to the embedding layer' })),
  sizeBytes: Type.Integer(),
  available: Type.Boolean({ description: 'ready: a job can name it as {"baseModelId": id}' }),
  pretrained: Type.Boolean(),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  createdAt: DateTime(),
  readyAt: Nullable(DateTime()),
});

export const ApiKey = Type.Object({
  id: Uuid(),
  tenantId: Uuid(),
  name: Nullable(Type.String()),
  prefix: Type.String(),
  role: Type.Union([Type.Literal('member'), Type.Literal('admin')]),
  createdAt: DateTime(),
  revokedAt: Nullable(DateTime()),
});

export const CreatedApiKey = Type.Object({
  id: Uuid(),
  key: Type.String({ description: 'the key itself: shown in this response only' }),
  prefix: Type.String(),
  role: Type.Union([Type.Literal('member'), Type.Literal('admin')]),
  name: Nullable(Type.String()),
  tenantId: Uuid(),
});

const Limit = Nullable(Type.Integer({ description: 'null: unlimited' }));
const Quotas = Type.Object({
  concurrentJobs: Type.Object({ usage: Type.Integer(), limit: Limit }),
  storedBytes: Type.Object({
    usage: Type.Integer(),
    limit: Limit,
    breakdown: Type.Object({ datasets: Type.Integer(), models: Type.Integer(), checkpoints: Type.Integer(), baseModels: Type.Integer(), total: Type.Integer() }),
  }),
  models: Type.Object({ usage: Type.Integer(), limit: Limit }),
});

export const Tenant = Type.Object({
  id: Uuid(),
  name: Type.String(),
  createdAt: DateTime(),
  quotaOverrides: Type.Object(
    { concurrentJobs: Limit, storedBytes: Limit, models: Limit },
    { description: "the tenant's own quotas; null means the deployment's default, 0 unlimited" },
  ),
  quotas: Quotas,
});

const RateLimit = Nullable(Type.Object({ perMinute: Type.Integer(), burst: Type.Integer() }));
export const Usage = Type.Object({
  tenantId: Uuid(),
  quotas: Quotas,
  rateLimits: Type.Object({ default: RateLimit, predict: RateLimit, upload: RateLimit }),
});

const Check = Type.Object({ ok: Type.Boolean(), error: Type.Optional(Type.String()) });
export const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
  checks: Type.Object({ database: Check, redis: Check, storage: Check }),
});

export const Pages = {
  datasets: Page(Dataset),
  jobs: Page(Job),
  models: Page(Model),
  tenants: Page(Tenant),
};

/** 4xx/5xx answers of every route. */
export const errorResponses = {
  '4xx': Problem,
  '5xx': Problem,
};

export const NoContent = Type.Unknown({ description: 'no content' });

/** A binary body (a zip). */
export const Binary = (description: string) => Type.String({ format: 'binary', description });

export const BatchPrediction = Type.Object({
  id: Uuid(),
  modelId: Nullable(Uuid()),
  datasetId: Nullable(Uuid()),
  status: Type.Union([Type.Literal('queued'), Type.Literal('running'), Type.Literal('succeeded'), Type.Literal('failed')]),
  counts: Type.Object({
    total: Type.Integer({ description: 'images in the dataset (all splits)' }),
    done: Type.Integer({ description: 'images processed so far, recorded every few dozen' }),
    failed: Type.Integer({ description: 'images that could not be decoded (a line with `error` in the results)' }),
  }),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  createdAt: DateTime(),
  startedAt: Nullable(DateTime()),
  finishedAt: Nullable(DateTime()),
});

export const BatchPredictionPage = Page(BatchPrediction);

/** POST /v1/datasets/uploads: where and how the client PUTs its zip. */
export const PresignedUpload = Type.Object({
  uploadId: Uuid(),
  url: Type.String({ description: 'a presigned S3 URL: PUT the zip here (no Authorization header) before expiresAt' }),
  method: Type.Literal('PUT'),
  headers: Type.Record(Type.String(), Type.String(), {
    description: 'headers to send with the PUT as they are (they are part of the signature; content-length binds the declared size)',
  }),
  expiresAt: DateTime(),
});

/** GET /v1/datasets/:id/report: the data checks run when the dataset was uploaded. */
export const DatasetReport = Type.Object({
  datasetId: Uuid(),
  summary: Type.Object({ blocking: Type.Integer(), warnings: Type.Integer(), info: Type.Integer() }),
  findings: Type.Array(
    Type.Object({
      check: Type.String({ description: 'e.g. duplicate_across_classes, train_val_leakage, class_imbalance' }),
      severity: Type.Union([Type.Literal('info'), Type.Literal('warning'), Type.Literal('blocking')]),
      message: Type.String(),
      files: Type.Array(Type.String(), { description: 'archive paths concerned, at most 20' }),
      fileCount: Type.Integer({ description: 'how many files are concerned in all' }),
    }),
    { description: 'blocking first, then warnings, then info' },
  ),
});

/** A sweep's trial on its leaderboard. */
export const SweepTrial = Type.Object({
  trialNumber: Type.Integer({ description: 'from 0, in the order the trials were started' }),
  jobId: Uuid(),
  status: Type.Union(JOB_STATUSES.map((s) => Type.Literal(s))),
  params: Type.Record(Type.String(), Type.Unknown(), { description: "the trial's sampled values, by hyperparameter path" }),
  metric: Nullable(Type.Number({ description: "the sweep's metric at the trial's best epoch (the one its model keeps); null until an epoch completed" })),
  epochsRun: Type.Integer(),
  epochs: Type.Integer(),
  stoppedByAsha: Type.Boolean({ description: 'ASHA stopped the trial at a rung (it ended canceled with its best epoch as its model)' }),
  modelId: Nullable(Uuid()),
});

export const Sweep = Type.Object({
  id: Uuid(),
  status: Type.Union(['queued', 'running', 'succeeded', 'failed', 'canceled'].map((s) => Type.Literal(s))),
  datasetId: Nullable(Uuid()),
  searcher: Type.Union([Type.Literal('random'), Type.Literal('asha')]),
  metric: Type.String({ description: 'val_accuracy | accuracy (maximised), val_loss | loss (minimised)' }),
  spec: Json('the validated sweep request with every default filled in'),
  maxTrials: Type.Integer(),
  maxConcurrentTrials: Type.Integer(),
  counts: Type.Object({
    created: Type.Integer({ description: 'trials started so far (at most maxTrials)' }),
    queued: Type.Integer(),
    running: Type.Integer({ description: 'running or retrying' }),
    succeeded: Type.Integer(),
    failed: Type.Integer(),
    canceled: Type.Integer(),
    stoppedByAsha: Type.Integer({ description: 'of the canceled, those ASHA stopped' }),
  }),
  bestTrial: Nullable(SweepTrial),
  modelId: Nullable(Uuid()),
  leaderboard: Type.Optional(
    Type.Array(SweepTrial, { description: 'every trial, best metric first (trials without one last); only on GET /v1/sweeps/:id' }),
  ),
  warnings: Type.Array(
    Type.Object({ check: Type.String(), severity: Type.String(), message: Type.String(), fileCount: Type.Integer() }),
    { description: "the dataset's blocking data-check findings when the sweep was created" },
  ),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  createdAt: DateTime(),
  startedAt: Nullable(DateTime()),
  finishedAt: Nullable(DateTime()),
});

export const SweepPage = Page(Sweep);
