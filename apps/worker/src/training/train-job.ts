import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DomainError, totalEpochs, type Config, type JobSpec, type StopReason, type Strategy } from '@finetune/core';
import type { DatasetsRepository, JobsRepository, ModelInput, ModelsRepository } from '@finetune/db';
import {
  evaluateClassifier,
  frozenEngine,
  predictProbabilities,
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
import { prepareData, type PreparedData, type SplitImages } from './prepare-data.ts';
import { resolveBase } from './resolve-base.ts';
import { RunControl } from './run-control.ts';

export interface TrainingContext {
  config: Config;
  jobs: JobsRepository;
  datasets: DatasetsRepository;
  models: ModelsRepository;
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
 * on the validation split, optionally train the scratch baseline on the same split, and export
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
  const base = await resolveBase(ctx.store, ctx.models, job.tenantId, spec.baseModel);
  const checkpoints = new JobCheckpoints(ctx.store, ctx.jobs, jobId, lease, ctx.config.checkpointsKeepLast);
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
  try {
    report('preparing', resume?.epoch ?? 0, 0);
    const inputSize = base.base.info.inputSize;
    // Decoding stops early when the run will end without a model. A job with trained epochs that
    // is canceled or out of time still needs the data: its best epoch is evaluated and exported.
    const abandon = () => interruption(control) !== null || (control.shouldStop() && !resume);
    const data = await prepareData(ctx.store, ctx.config, dataset.storageKey, workDir, inputSize, hp, abandon, timings);
    const interrupted = interruption(control);
    if (interrupted) return interrupted;
    if (abandon() && control.stopCause() === 'canceled') return { status: 'canceled', model: null };
    if (abandon()) throw noEpochWithin(maxRuntimeMs);
    await ctx.jobs.recordSkippedImages(jobId, lease, data.skipped);

    const cache = new FeatureCache(ctx.store, job.tenantId, base.cacheName, dataset.id, {
      sha256: dataset.sha256,
      inputSize,
      resize: 'cover',
      decoder: 'sharp-rgb8',
    });
    const train = (strategy: Strategy, options: Pick<TrainClassifierOptions, 'resumeFrom' | 'onEpochEnd' | 'onBatchEnd'> = {}) =>
      trainClassifier({
        strategy,
        base: base.base,
        inputSize,
        train: { images: data.train.images, labels: data.train.targets },
        val: data.val && { images: data.val.images, labels: data.val.targets },
        labels: data.labels,
        hyperparameters: hp,
        frozenFeatures: async ({ cut, split }, compute) => {
          frozenLayers = await frozenEngine(base.base.model, cut);
          const ids = (split === 'val' ? data.val?.ids : data.train.ids) ?? [];
          return cache.getOrCompute(cut, split, ids, frozenLayers, () => timings.time('frozenForward', compute));
        },
        shouldStop: control.shouldStop,
        ...options,
      });

    report('training', resume?.epoch ?? 0, 5);
    const result = await timings.within('training', 'frozenForward', () =>
      train(spec.strategy, {
        ...(resume ? { resumeFrom: resume.state } : {}),
        onBatchEnd: batchProgress(epochs, ctx.report),
        onEpochEnd: async (epoch) => {
          await checkpoints.save(epoch, control.elapsedMs());
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
        const evaluation = await timings.time('evaluation', () => evaluate(result.model, data.val ?? data.train, data.labels, inputSize, hp.topK));
        const model = await timings.time('export', () => exportModel(ctx, { ...exportInput, evaluation, scratch: null }));
        await recordRun();
        return { status: 'canceled', model };
      }
      if (result.bestEpoch === 0) throw noEpochWithin(maxRuntimeMs);

      report('evaluating', result.epochsRun, 85);
      const evaluation = await timings.time('evaluation', () => evaluate(result.model, data.val ?? data.train, data.labels, inputSize, hp.topK));
      let scratch: { accuracy: number; evaluation: Evaluation } | null = null;
      if (spec.compareWithScratch && !control.stopCause()) {
        report('comparing', result.epochsRun, 88);
        const baseline = await timings.time('comparison', () => train('scratch'));
        try {
          const during = interruption(control);
          if (during) return during;
          // A budget spent during the baseline leaves no comparison; a cancel keeps the model.
          if (!control.stopCause()) {
            const baselineEvaluation = await timings.time('comparison', () => evaluate(baseline.model, data.val ?? data.train, data.labels, inputSize, hp.topK));
            scratch = { accuracy: baselineEvaluation.accuracy, evaluation: baselineEvaluation };
          }
        } finally {
          baseline.model.dispose();
        }
      }

      report('exporting', result.epochsRun, 95);
      const model = await timings.time('export', () => exportModel(ctx, { ...exportInput, evaluation, scratch }));
      await recordRun();
      if (control.stopCause() === 'canceled') return { status: 'canceled', model };
      const stopReason: StopReason = control.stopCause() === 'max_runtime' ? 'max_runtime' : result.stoppedEarly ? 'early_stopping' : 'completed';
      await checkpoints.sweepStray();
      ctx.log('training finished', { modelId: model.id, bestEpoch: result.bestEpoch, accuracy: evaluation.accuracy, stopReason });
      return { status: 'succeeded', model, stopReason };
    } finally {
      result.model.dispose();
    }
  } finally {
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

async function evaluate(model: tf.LayersModel, split: SplitImages, labels: string[], inputSize: number, topK: number) {
  const probabilities = await predictProbabilities(model, split.images, inputSize);
  return evaluateClassifier({ probabilities, targets: split.targets, labels, ids: split.ids, topK });
}

interface ExportInput {
  jobId: string;
  spec: JobSpec;
  base: Awaited<ReturnType<typeof resolveBase>>;
  data: PreparedData;
  result: TrainClassifierResult;
  evaluation: Evaluation;
  scratch: { accuracy: number; evaluation: Evaluation } | null;
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
  const transferGain = scratch ? evaluation.accuracy - scratch.accuracy : null;
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
    evaluation,
    transfer: scratch && { scratchAccuracy: scratch.accuracy, transferGain, negativeTransfer: transferGain! < 0 },
    reproducibility: {
      seed: spec.hyperparameters.seed,
      hyperparameters: spec.hyperparameters,
      dataset: {
        id: spec.datasetId,
        sha256: input.datasetSha,
        trainImages: data.train.images.length,
        valImages: data.val?.images.length ?? 0,
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
    } as object,
    evaluation: evaluation as object,
    scratchAccuracy: scratch?.accuracy ?? null,
    transferGain,
  };
}

function packageVersion(name: string): string | null {
  try {
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return null;
  }
}
