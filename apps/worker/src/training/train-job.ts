import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DomainError, totalEpochs, type Config, type JobSpec, type StopReason, type Strategy } from '@finetune/core';
import type { BaseModelsRepository, DatasetsRepository, JobsRepository, ModelInput, ModelsRepository } from '@finetune/db';
import {
  augmentationEnabled,
  evaluateClassifier,
  frozenEngine,
  writeBatchNormStatistics,
  layerGraph,
  predictProbabilities,
  probabilitiesFromEmbeddings,
  serializeModel,
  tf,
  trainClassifier,
  type Evaluation,
  type TrainClassifierOptions,
  type TrainClassifierResult,
} from '@finetune/ml';
import { keys, type ObjectStore } from '@finetune/storage';
import { batchProgress } from './batch-progress.ts';
import { RunTimings } from './run-timings.ts';
import { JobCheckpoints } from './checkpoints.ts';
import { FeatureCache } from './feature-cache.ts';
import type { TrainingOutcome, TrainingProgress } from './messages.ts';
import { deferredDataset, listDataset, type DatasetListing, type PreparedData, type SplitImages } from './prepare-data.ts';
import { decodeOverlapped, frozenOverlap } from './frozen-overlap.ts';
import { comparisonSplit, heldOutReport, type HeldOutOutputs, type HeldOutReport } from './held-out-evaluation.ts';
import { resolveBase } from './resolve-base.ts';
import { estimateDomainStatistics, prepareTargetDomain, type Adaptation, type AdaptationFacts, type TargetDomain } from './domain-adaptation.ts';
import { RunControl } from './run-control.ts';

export interface TrainingContext {
  config: Config;
  jobs: JobsRepository;
  datasets: DatasetsRepository;
  models: ModelsRepository;
  baseModels: BaseModelsRepository;
  store: ObjectStore;
  backend: string;
  report: (progress: TrainingProgress) => void;
  log: (message: string, fields?: Record<string, unknown>) => void;
  /** Registers what to do when the parent asks this run to stop and hand the job back. */
  onStopRequest: (handler: () => void) => void;
}

const require = createRequire(import.meta.url);

/**
 * One run of a training job, under the lease its worker's claim took: decode the dataset at the
 * base's input size, resume from the job's last checkpoint if it has one, train with the spec's
 * strategy (every epoch commits its metrics and a checkpoint), evaluate the best epoch's model
 * on the validation and test splits (never on training images), calibrate it on validation,
 * optionally train the scratch baseline and compare on the test split (else validation), and export
 * the model (base + head as one tfjs layers model). The job's state is not touched here: the
 * outcome goes back to the worker process, which records it.
 */
export async function runTrainingJob(jobId: string, lease: string, ctx: TrainingContext): Promise<TrainingOutcome> {
  const job = await ctx.jobs.get(jobId);
  if (!job) return { status: 'skipped', reason: 'job row not found' };
  if (job.leaseToken !== lease || job.status !== 'running') return { status: 'lease_lost' };
  const spec = job.spec as unknown as JobSpec;
  const hp = spec.hyperparameters;
  const epochs = totalEpochs(spec);
  await ctx.jobs.recordBackend(jobId, lease, ctx.backend);
  const dataset = job.datasetId ? await ctx.datasets.get(job.tenantId, job.datasetId) : null;
  if (!dataset || dataset.status !== 'ready') throw new DomainError('dataset_deleted', "the job's dataset no longer exists", 422);

  // Loaded before the temp dir and the poll exist, so a missing base leaves nothing behind.
  const base = await resolveBase(ctx.store, { models: ctx.models, baseModels: ctx.baseModels }, job.tenantId, spec.baseModel);
  const checkpoints = new JobCheckpoints(ctx.store, ctx.jobs, jobId, lease, ctx.config.checkpointsKeepLast, ctx.config.checkpointIntervalSeconds);
  const resume = await checkpoints.resumePoint();
  if (resume) ctx.log('resuming from checkpoint', { epoch: resume.epoch, elapsedMs: resume.elapsedMs });
  const maxRuntimeMs = (spec.maxRuntimeSeconds ?? ctx.config.maxJobRuntimeSeconds) * 1000;
  const control = new RunControl(ctx.jobs, jobId, lease, resume?.elapsedMs ?? 0, maxRuntimeMs);
  ctx.onStopRequest(() => control.stop('handover'));
  // A job resumed only to be canceled (it was waiting for a retry) must know before it trains.
  await control.poll();
  const report = (phase: TrainingProgress['phase'], epoch: number, percent: number) =>
    ctx.report({ phase, epoch, epochs, percent: Math.round(percent) });

  const workDir = await mkdtemp(join(tmpdir(), `finetune-job-${jobId}-`));
  const timings = new RunTimings();
  let frozenLayers: string | null = null;
  // domain_adaptation: the statistics estimated on each domain (set once they are).
  let adaptation: Adaptation | null = null;
  try {
    report('preparing', resume?.epoch ?? 0, 0);
    const inputSize = base.base.info.inputSize;
    // Decoding stops early when the run will end without a model. A job with trained epochs that
    // is canceled or out of time still needs the data: its best epoch is evaluated and exported.
    const abandon = () => interruption(control) !== null || (control.shouldStop() && !resume);
    const preprocessing: Record<string, unknown> = { sha256: dataset.sha256, inputSize, resize: 'cover', decoder: 'sharp-rgb8' };
    // domain_adaptation: the base's features come from source-domain BN statistics; the cache
    // key names them (set once they are estimated, before any feature is read).
    const cache = new FeatureCache(ctx.store, job.tenantId, base.cacheName, dataset.id, preprocessing);
    const listing = await listDataset(ctx.store, ctx.config, dataset.storageKey, workDir, inputSize, hp, timings);
    // The base's embeddings per "cut/split" as this run got them: what evaluation reuses.
    const embeddings = new Map<string, Float32Array>();
    const embeddingLayer = layerGraph(base.base.model).outputName;
    const cached = await cachedRun(spec, listing, cache, { base: base.base.model, embeddingLayer, config: ctx.config, inputSize, timings });
    if (cached) frozenLayers = cached.engine;
    cached?.features.forEach((features, key) => embeddings.set(key, features));
    // Not cached: with TRAINING_DECODE_OVERLAP=on the frozen base runs on the images as they decode (frozen-overlap.ts).
    const overlap = cached ? null : await frozenOverlap(spec, listing, cache, { base: base.base.model, maxPixels: ctx.config.limits.imagePixels, resumed: resume !== null, timings, isCanceled: abandon });
    const data = cached?.data ?? (await decodeOverlapped(listing, { config: ctx.config, inputSize, timings }, abandon, overlap));
    const interrupted = interruption(control);
    if (interrupted) return interrupted;
    if (abandon() && control.stopCause() === 'canceled') return { status: 'canceled', model: null };
    if (abandon()) throw noEpochWithin(maxRuntimeMs);
    await ctx.jobs.recordSkippedImages(jobId, lease, data.skipped);
    // A complete decoding tells later runs which images do not decode, so they can skip it.
    if (!cached) await cache.recordUnreadableImages(ctx.config.limits.imagePixels, data.unreadable);

    let target: TargetDomain | null = null;
    if (spec.strategy === 'domain_adaptation') {
      report('adapting', resume?.epoch ?? 0, 2);
      target = await prepareTargetDomain({ config: ctx.config, store: ctx.store, datasets: ctx.datasets, timings }, job.tenantId, spec, data.labels, workDir, inputSize);
      // Stops between batches on the rule decoding stops by: a cancel before any epoch ends the run here.
      adaptation = await estimateDomainStatistics(base.base.model, inputSize, data.train.images, target, { spec, config: ctx.config, timings, shouldStop: abandon });
      const during = interruption(control);
      if (during) return during;
      if (!adaptation && control.stopCause() === 'canceled') return { status: 'canceled', model: null };
      if (!adaptation) throw noEpochWithin(maxRuntimeMs);
      writeBatchNormStatistics(base.base.model, adaptation.source);
      preprocessing.batchNormStatistics = adaptation.sourceHash;
    }

    const train = (strategy: Strategy, options: Pick<TrainClassifierOptions, 'resumeFrom' | 'onEpochEnd' | 'onBatchEnd' | 'onLearningRateFinder'> = {}) =>
      trainClassifier({
        strategy,
        base: base.base,
        inputSize,
        train: { images: data.train.images, labels: data.train.targets },
        val: data.val && { images: data.val.images, labels: data.val.targets },
        labels: data.labels,
        hyperparameters: hp,
        // Decodes into the arrays above, and only if something in the run needs pixels.
        ...(data.decoded ? {} : { loadImages: data.decode }),
        frozenFeatures: async ({ cut, split }, compute) => {
          frozenLayers = await frozenEngine(base.base.model, cut);
          const ids = (split === 'val' ? data.val?.ids : data.train.ids) ?? [];
          const key = `${cut}/${split}`;
          const engine = frozenLayers;
          // A miss takes what the overlap computed while decoding, if it has exactly these features.
          const computed = async () => overlap?.take(cut, split, engine, ids.length) ?? timings.time('frozenForward', compute);
          const features = embeddings.get(key) ?? (await cache.getOrCompute(cut, split, ids, engine, computed));
          embeddings.set(key, features);
          return features;
        },
        shouldStop: control.shouldStop,
        ...options,
      });
    // When only the head trained, the final model's base is the frozen base: its probabilities
    // follow from the base's embeddings, and the base need not run over the images again.
    const frozenBase = (r: TrainClassifierResult) => ['feature_extraction', 'prototype', 'domain_adaptation'].includes(spec.strategy) && r.trainableLayers.length === 0;
    // Validation and test apart; with no validation data, no evaluation rather than the training set's.
    const evaluateModel = (r: TrainClassifierResult) =>
      timings.within('evaluation', 'decode', async () => {
        const outputs = (split: SplitImages | null, name: 'val' | 'test') =>
          split &&
          heldOutOutputs(r.model, split, {
            inputSize,
            embeddings: frozenBase(r) ? embeddingsOf(embeddings, embeddingLayer, name) : null,
            decode: data.decode,
          });
        return heldOutReport(data.labels, hp.topK, await outputs(data.val, 'val'), await outputs(data.test, 'test'));
      });

    // domain_adaptation: the exported model carries the target domain's statistics, and the
    // labelled target test set (if any) is evaluated with them, apart from the source reports.
    const toTargetDomain = async (r: TrainClassifierResult): Promise<TargetReport | null> => {
      if (!adaptation || !target) return null;
      writeBatchNormStatistics(r.model, adaptation.target);
      const test = target.test;
      if (!test) return { facts: adaptation.facts, evaluation: null };
      const probabilities = await timings.time('evaluation', () => predictProbabilities(r.model, test.images, inputSize));
      return { facts: adaptation.facts, evaluation: evaluateClassifier({ probabilities, targets: test.targets, ids: test.ids, labels: data.labels, topK: hp.topK }) };
    };

    report('training', resume?.epoch ?? 0, 5);
    const result = await timings.within('training', 'frozenForward', () =>
      train(spec.strategy, {
        ...(resume ? { resumeFrom: resume.state } : {}),
        // learningRate "auto": the range test's curve and choice, on the job before the first epoch.
        onLearningRateFinder: (finder) => ctx.jobs.recordLearningRateFinder(jobId, lease, finder),
        onBatchEnd: batchProgress(epochs, ctx.report),
        onEpochEnd: async (epoch) => {
          await checkpoints.commitEpoch(epoch, control.elapsedMs());
          const percent = Math.round(5 + (80 * epoch.epoch) / epochs);
          ctx.report({ phase: 'training', epoch: epoch.epoch, epochs, percent, epochSeconds: epoch.durationMs / 1000 });
        },
      }),
    );
    // Where the run's time went and what ran it: recorded with the model the run ends with.
    const recordRun = () =>
      ctx.jobs.recordRun(jobId, lease, {
        timings: timings.toJSON(),
        runtime: { training: `tfjs-${ctx.backend}`, frozenLayers, device: ctx.backend === 'tensorflow-gpu' ? 'gpu' : 'cpu' },
      });
    try {
      // The epochs whose checkpoints the cadence held back, however the training ended.
      if (control.stopCause() !== 'lease_lost') await timings.time('training', () => checkpoints.flush());
      const embeddingCacheHit = cache.hits + cache.misses === 0 ? null : cache.misses === 0;
      const stopped = interruption(control);
      if (stopped) return stopped;
      await ctx.jobs.recordTrainingFacts(jobId, lease, {
        embeddingCacheHit,
        stoppedEarly: result.stoppedEarly,
        microBatchSize: result.microBatchSize ?? null,
      });
      const exportInput = { jobId, spec, base, data, result, startedAt: job.startedAt?.getTime() ?? Date.now(), datasetSha: dataset.sha256, embeddingCacheHit };

      if (control.stopCause() === 'canceled') {
        if (result.bestEpoch === 0) return { status: 'canceled', model: null };
        report('exporting', result.epochsRun, 95);
        const evaluation = await evaluateModel(result);
        const targetReport = await toTargetDomain(result);
        const model = await timings.time('export', () => exportModel(ctx, { ...exportInput, evaluation, scratch: null, target: targetReport }));
        await recordRun();
        return { status: 'canceled', model };
      }
      if (result.bestEpoch === 0) throw noEpochWithin(maxRuntimeMs);

      report('evaluating', result.epochsRun, 85);
      const evaluation = await evaluateModel(result);
      const targetReport = await toTargetDomain(result);
      let scratch: Scratch | null = null;
      // Compared on the test split when there is one; with nothing held out there is no comparison.
      const compared = comparisonSplit(data);
      if (spec.compareWithScratch && compared && !control.stopCause()) {
        report('comparing', result.epochsRun, 88);
        await data.decode(); // scratch trains on pixels
        const baseline = await timings.time('comparison', () => train('scratch'));
        try {
          const during = interruption(control);
          if (during) return during;
          // A budget spent during the baseline leaves no comparison; a cancel keeps the model.
          if (!control.stopCause()) {
            const baselineOutputs = await timings.time('comparison', () =>
              heldOutOutputs(baseline.model, compared.data, { inputSize, embeddings: null, decode: data.decode }),
            );
            const baselineEvaluation = evaluateClassifier({ ...baselineOutputs, labels: data.labels, topK: hp.topK });
            scratch = { accuracy: baselineEvaluation.accuracy, evaluation: baselineEvaluation, split: compared.split };
          }
        } finally {
          baseline.model.dispose();
        }
      }

      report('exporting', result.epochsRun, 95);
      const model = await timings.time('export', () => exportModel(ctx, { ...exportInput, evaluation, scratch, target: targetReport }));
      await recordRun();
      if (control.stopCause() === 'canceled') return { status: 'canceled', model };
      const stopReason: StopReason = control.stopCause() === 'max_runtime' ? 'max_runtime' : result.stoppedEarly ? 'early_stopping' : 'completed';
      await checkpoints.sweepStray();
      ctx.log('training finished', { modelId: model.id, bestEpoch: result.bestEpoch, accuracy: evaluation.evaluation?.accuracy ?? null, stopReason });
      return { status: 'succeeded', model, stopReason };
    } finally {
      result.model.dispose();
    }
  } finally {
    // A zoo base stays loaded in the process: it goes back to its own statistics.
    if (adaptation) writeBatchNormStatistics(base.base.model, adaptation.original);
    control.dispose();
    base.dispose();
    await rm(workDir, { recursive: true, force: true });
  }
}

function noEpochWithin(maxRuntimeMs: number): DomainError {
  return new DomainError(
    'max_runtime_exceeded',
    `no epoch completed within maxRuntimeSeconds (${maxRuntimeMs / 1000} s); raise it or train on less data`,
    422,
  );
}

/** The outcome when a run must end without a result of its own: its lease is gone, or it hands over. */
function interruption(control: RunControl): TrainingOutcome | null {
  if (control.stopCause() === 'lease_lost') return { status: 'lease_lost' };
  if (control.stopCause() === 'handover') return { status: 'handover' };
  return null;
}

interface EvaluationInputs {
  inputSize: number;
  /** The split's embeddings at the layer feeding the head, when the model's base is the frozen base. */
  embeddings: { layer: string; values: Float32Array } | null;
  /** Decodes the split's images if they are not yet (deferred decoding). */
  decode: () => Promise<void>;
}

/**
 * The class probabilities of `model` on a split, what its evaluation and calibration are computed
 * from. They come from the split's embeddings through the head when the run has them and the base
 * stayed frozen (the same numbers, up to float rounding, as running the whole model), else from
 * the images.
 */
async function heldOutOutputs(model: tf.LayersModel, split: SplitImages, inputs: EvaluationInputs): Promise<HeldOutOutputs> {
  let probabilities: Float32Array;
  if (inputs.embeddings) {
    probabilities = await probabilitiesFromEmbeddings(model, inputs.embeddings.values, inputs.embeddings.layer);
  } else {
    await inputs.decode();
    probabilities = await predictProbabilities(model, split.images, inputs.inputSize);
  }
  return { probabilities, targets: split.targets, ids: split.ids };
}

function embeddingsOf(embeddings: Map<string, Float32Array>, layer: string, split: 'train' | 'val' | 'test'): EvaluationInputs['embeddings'] {
  const values = embeddings.get(`${layer}/${split}`);
  return values ? { layer, values } : null;
}

/**
 * A run that needs no pixels: a frozen-base strategy without augmentation (which needs pixels)
 * whose every embedding — train and val, at the base's output — is in the cache under the ids
 * an earlier decoding of this archive produced. Returns those embeddings and the splits with
 * their images not decoded; null (decode as usual) when anything is missing.
 */
async function cachedRun(
  spec: JobSpec,
  listing: DatasetListing,
  cache: FeatureCache,
  p: { base: tf.LayersModel; embeddingLayer: string; config: Config; inputSize: number; timings: RunTimings },
): Promise<{ data: PreparedData; features: Map<string, Float32Array>; engine: string } | null> {
  const frozenOnly = spec.strategy === 'prototype' || (spec.strategy === 'feature_extraction' && !augmentationEnabled(spec.hyperparameters.augmentation));
  if (!frozenOnly) return null;
  // No record: this archive was never decoded with these settings, or it was before records
  // existed. Assuming every image decoded is then safe: the cache keys only match if it did.
  const unreadable = (await cache.unreadableImages(p.config.limits.imagePixels)) ?? [];
  let data: PreparedData;
  try {
    data = deferredDataset(listing, unreadable, { config: p.config, inputSize: p.inputSize, timings: p.timings });
  } catch {
    return null; // a class without images: decoding reports it as it always has
  }
  const engine = await frozenEngine(p.base, p.embeddingLayer);
  const features = new Map<string, Float32Array>();
  for (const [split, part] of [['train', data.train], ['val', data.val]] as const) {
    if (!part) continue;
    const values = await cache.lookup(p.embeddingLayer, split, part.ids, engine);
    if (!values) return null;
    features.set(`${p.embeddingLayer}/${split}`, values);
  }
  return { data, features, engine };
}

/** domain_adaptation: what was adapted, and the evaluation on the labelled target test set. */
interface TargetReport {
  facts: AdaptationFacts;
  evaluation: Evaluation | null;
}

/** The scratch baseline's result, on the split the comparison was made on. */
interface Scratch {
  accuracy: number;
  evaluation: Evaluation;
  split: 'test' | 'validation';
}

interface ExportInput {
  jobId: string;
  spec: JobSpec;
  base: Awaited<ReturnType<typeof resolveBase>>;
  data: PreparedData;
  result: TrainClassifierResult;
  evaluation: HeldOutReport;
  scratch: Scratch | null;
  target: TargetReport | null;
  startedAt: number;
  datasetSha: string;
  embeddingCacheHit: boolean | null;
}

/** Writes model.json, weights.bin, labels.json and metadata.json; returns the model row to record. */
async function exportModel(ctx: TrainingContext, input: ExportInput): Promise<ModelInput & { id: string }> {
  const { jobId, spec, base, data, result, evaluation, scratch } = input;
  const modelId = randomUUID();
  const labels = data.labels;
  const inputSize = base.base.info.inputSize;
  const files = await serializeModel(result.model, { metadata: { labels } });
  const best = result.history.find((h) => h.epoch === result.bestEpoch) ?? null;
  const ours = scratch && (scratch.split === 'test' ? evaluation.testEvaluation : evaluation.evaluation);
  const transferGain = scratch && ours ? ours.accuracy - scratch.accuracy : null;
  const metadata = {
    format: 'tfjs-layers-model',
    modelId,
    jobId,
    baseModel: base.label,
    strategy: spec.strategy,
    labels,
    input: { shape: [null, inputSize, inputSize, 3], scale: '[0, 1] (pixel / 255), RGB', resize: 'cover' },
    bestEpoch: result.bestEpoch,
    epochsRun: result.epochsRun,
    stoppedEarly: result.stoppedEarly,
    trainableLayers: result.trainableLayers,
    metrics: best && { trainLoss: best.trainLoss, trainAccuracy: best.trainAcc, valLoss: best.valLoss, valAccuracy: best.valAcc },
    evaluation: evaluation.evaluation,
    testEvaluation: evaluation.testEvaluation,
    evaluationNote: evaluation.evaluationNote,
    // domain_adaptation: on the labelled target-domain dataset (targetTestDatasetId), with the
    // target statistics the model carries; `adaptation` says what was estimated from what.
    targetEvaluation: input.target?.evaluation ?? null,
    adaptation: input.target?.facts ?? null,
    // The page in the download scores with softmax(log p / temperature), as /predict does.
    calibration: evaluation.calibration,
    // Set later with PATCH /v1/models/:id; the download carries the current value.
    confidenceThreshold: null,
    transfer: scratch && { scratchAccuracy: scratch.accuracy, transferGain, negativeTransfer: transferGain! < 0, split: scratch.split },
    reproducibility: {
      seed: spec.hyperparameters.seed,
      hyperparameters: spec.hyperparameters,
      dataset: {
        id: spec.datasetId,
        sha256: input.datasetSha,
        trainImages: data.train.ids.length,
        valImages: data.val?.ids.length ?? 0,
        testImages: data.test?.ids.length ?? 0,
        skippedImages: data.skipped,
      },
      backend: ctx.backend,
      // Images per forward + backward pass; below batchSize, gradients were summed over micro-batches.
      microBatchSize: result.microBatchSize ?? null,
      versions: { tfjs: tf.version.tfjs, sharp: packageVersion('sharp'), node: process.versions.node },
      trainingTimeMs: Date.now() - input.startedAt,
      embeddingCacheReused: input.embeddingCacheHit === true,
    },
    history: result.history,
    createdAt: new Date().toISOString(),
  };
  const objects: [name: string, body: Buffer | Uint8Array, type: string][] = [
    ['model.json', files.modelJson, 'application/json'],
    ['weights.bin', files.weights, 'application/octet-stream'],
    ['labels.json', Buffer.from(JSON.stringify(labels)), 'application/json'],
    ['metadata.json', Buffer.from(JSON.stringify(metadata, null, 2)), 'application/json'],
  ];
  for (const [name, body, type] of objects) await ctx.store.putBuffer(keys.modelFile(modelId, name), body, type);
  return {
    id: modelId,
    baseModel: base.label,
    strategy: spec.strategy,
    labels,
    inputSize,
    storagePrefix: keys.modelPrefix(modelId),
    // Counted against the tenant's storage quota.
    sizeBytes: objects.reduce((sum, [, body]) => sum + body.byteLength, 0),
    metrics: {
      bestEpoch: result.bestEpoch,
      ...metadata.metrics,
      trainableLayers: result.trainableLayers,
      reproducibility: metadata.reproducibility,
      ...(metadata.adaptation ? { adaptation: metadata.adaptation } : {}),
    } as object,
    // Absent, not null: a nullable JSON column takes no plain null (and the row crosses IPC as JSON).
    ...(evaluation.evaluation ? { evaluation: evaluation.evaluation as object } : {}),
    ...(evaluation.testEvaluation ? { testEvaluation: evaluation.testEvaluation as object } : {}),
    ...(input.target?.evaluation ? { targetEvaluation: input.target.evaluation as object } : {}),
    ...(evaluation.calibration ? { calibration: evaluation.calibration as object } : {}),
    evaluationNote: evaluation.evaluationNote,
    scratchAccuracy: scratch?.accuracy ?? null,
    transferGain,
    transferGainSplit: scratch?.split ?? null,
  };
}

function packageVersion(name: string): string | null {
  try {
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return null;
  }
}
