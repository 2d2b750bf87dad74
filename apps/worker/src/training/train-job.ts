import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DomainError, totalEpochs, type Config, type JobSpec, type Strategy } from '@finetune/core';
import type { Db, JobsRepository } from '@finetune/db';
import {
  evaluateClassifier,
  predictProbabilities,
  serializeModel,
  tf,
  trainClassifier,
  type EpochEvent,
  type Evaluation,
  type TrainClassifierResult,
} from '@finetune/ml';
import { keys, type ObjectStore } from '@finetune/storage';
import { FeatureCache } from './feature-cache.ts';
import type { TrainingOutcome, TrainingProgress } from './messages.ts';
import { prepareData, type PreparedData, type SplitImages } from './prepare-data.ts';
import { resolveBase } from './resolve-base.ts';

export interface TrainingContext {
  config: Config;
  db: Db;
  jobs: JobsRepository;
  store: ObjectStore;
  backend: string;
  attempt: number;
  report: (progress: TrainingProgress) => void;
  log: (message: string, fields?: Record<string, unknown>) => void;
}

const CANCEL_POLL_MS = 1_000;
const require = createRequire(import.meta.url);

/**
 * One attempt of a training job: decode the dataset at the base's input size, train with the
 * spec's strategy (every epoch writes metrics to Postgres and a checkpoint to S3), evaluate the
 * best epoch's model on the validation split, optionally train the scratch baseline on the
 * same split, and export the model (base + head as one tfjs layers model) with its report.
 */
export async function runTrainingJob(jobId: string, ctx: TrainingContext): Promise<TrainingOutcome> {
  const job = await ctx.jobs.get(jobId);
  if (!job) return { status: 'skipped', reason: 'job row not found' };
  if (!(await ctx.jobs.markRunning(jobId, ctx.backend, ctx.attempt))) {
    return { status: 'skipped', reason: `job is ${job.status}${job.cancelRequested ? ' (cancel requested)' : ''}` };
  }
  const startedAt = Date.now();
  const spec = job.spec as unknown as JobSpec;
  const hp = spec.hyperparameters;
  const epochs = totalEpochs(spec);
  const dataset = job.datasetId ? await ctx.db.dataset.findUnique({ where: { id: job.datasetId } }) : null;
  if (!dataset || dataset.status !== 'ready') throw new DomainError('dataset_deleted', "the job's dataset no longer exists", 422);

  // Loaded before the temp dir and the cancel poll exist, so a missing base leaves nothing behind.
  const base = await resolveBase(ctx.store, ctx.db, spec.baseModel);
  let canceled = false;
  const poll = setInterval(() => {
    ctx.jobs.isCancelRequested(jobId).then(
      (requested) => (canceled ||= requested),
      () => undefined, // a missed poll is retried a second later
    );
  }, CANCEL_POLL_MS);
  const report = (phase: TrainingProgress['phase'], epoch: number, percent: number) =>
    ctx.report({ phase, epoch, epochs, percent: Math.round(percent) });

  const workDir = await mkdtemp(join(tmpdir(), `finetune-job-${jobId}-`));
  try {
    report('preparing', 0, 0);
    const inputSize = base.base.info.inputSize;
    const data = await prepareData(ctx.store, ctx.config, dataset.storageKey, workDir, inputSize, hp, () => canceled);
    await ctx.jobs.recordSkippedImages(jobId, data.skipped);
    if (canceled) return await finishCanceled(ctx, jobId);

    const cache = new FeatureCache(ctx.store, base.cacheName, dataset.id, {
      sha256: dataset.sha256,
      inputSize,
      resize: 'cover',
      decoder: 'sharp-rgb8',
    });
    const train = (strategy: Strategy, onEpochEnd?: (e: EpochEvent) => Promise<void>) =>
      trainClassifier({
        strategy,
        base: base.base,
        inputSize,
        train: { images: data.train.images, labels: data.train.targets },
        val: data.val && { images: data.val.images, labels: data.val.targets },
        labels: data.labels,
        hyperparameters: hp,
        frozenFeatures: ({ cut, split }, compute) =>
          cache.getOrCompute(cut, split, (split === 'val' ? data.val?.ids : data.train.ids) ?? [], compute),
        onEpochEnd,
        shouldStop: () => canceled,
      });

    report('training', 0, 5);
    const result = await train(spec.strategy, async (epoch) => {
      const checkpoint = await epoch.checkpoint();
      const modelKey = keys.checkpoint(jobId, epoch.epoch, 'model.json');
      await ctx.store.putBuffer(modelKey, checkpoint.modelJson, 'application/json');
      await ctx.store.putBuffer(keys.checkpoint(jobId, epoch.epoch, 'weights.bin'), checkpoint.weights, 'application/octet-stream');
      await ctx.jobs.recordEpoch(
        jobId,
        {
          epoch: epoch.epoch,
          stage: epoch.stage ?? null,
          trainLoss: epoch.trainLoss,
          trainAcc: epoch.trainAcc,
          valLoss: epoch.valLoss,
          valAcc: epoch.valAcc,
          learningRate: epoch.learningRate,
          durationMs: Math.round(epoch.durationMs),
        },
        modelKey,
      );
      report('training', epoch.epoch, 5 + (80 * epoch.epoch) / epochs);
    });
    const embeddingCacheHit = cache.hits + cache.misses === 0 ? null : cache.misses === 0;
    await ctx.jobs.recordTrainingFacts(jobId, { embeddingCacheHit, stoppedEarly: result.stoppedEarly });
    if (canceled) {
      result.model.dispose();
      return await finishCanceled(ctx, jobId);
    }

    report('evaluating', result.epochsRun, 85);
    const evaluation = await evaluate(result.model, data.val ?? data.train, data.labels, inputSize, hp.topK);
    let scratch: { accuracy: number; evaluation: Evaluation } | null = null;
    if (spec.compareWithScratch) {
      report('comparing', result.epochsRun, 88);
      const baseline = await train('scratch');
      try {
        if (canceled) {
          result.model.dispose();
          return await finishCanceled(ctx, jobId);
        }
        const baselineEvaluation = await evaluate(baseline.model, data.val ?? data.train, data.labels, inputSize, hp.topK);
        scratch = { accuracy: baselineEvaluation.accuracy, evaluation: baselineEvaluation };
      } finally {
        baseline.model.dispose();
      }
    }

    report('exporting', result.epochsRun, 95);
    const modelId = await exportModel(ctx, { jobId, spec, base, data, result, evaluation, scratch, startedAt, datasetSha: dataset.sha256, embeddingCacheHit });
    ctx.log('training finished', { modelId, bestEpoch: result.bestEpoch, accuracy: evaluation.accuracy, transferGain: scratch && evaluation.accuracy - scratch.accuracy });
    return { status: 'succeeded', modelId };
  } finally {
    clearInterval(poll);
    base.dispose();
    await rm(workDir, { recursive: true, force: true });
  }
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

/** Writes model.json, weights.bin, labels.json and metadata.json, then the model row. */
async function exportModel(ctx: TrainingContext, input: ExportInput): Promise<string> {
  const { jobId, spec, base, data, result, evaluation, scratch } = input;
  const modelId = randomUUID();
  const labels = data.labels;
  const inputSize = base.base.info.inputSize;
  const files = await serializeModel(result.model, { metadata: { labels } });
  result.model.dispose();
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
      versions: { tfjs: tf.version.tfjs, sharp: packageVersion('sharp'), node: process.versions.node },
      trainingTimeMs: Date.now() - input.startedAt,
      embeddingCacheReused: input.embeddingCacheHit === true,
    },
    history: result.history,
    createdAt: new Date().toISOString(),
  };
  await ctx.store.putBuffer(keys.modelFile(modelId, 'model.json'), files.modelJson, 'application/json');
  await ctx.store.putBuffer(keys.modelFile(modelId, 'weights.bin'), files.weights, 'application/octet-stream');
  await ctx.store.putBuffer(keys.modelFile(modelId, 'labels.json'), Buffer.from(JSON.stringify(labels)), 'application/json');
  await ctx.store.putBuffer(keys.modelFile(modelId, 'metadata.json'), Buffer.from(JSON.stringify(metadata, null, 2)), 'application/json');
  await ctx.jobs.succeed(jobId, {
    id: modelId,
    baseModel: base.label,
    strategy: spec.strategy,
    labels,
    inputSize,
    storagePrefix: keys.modelPrefix(modelId),
    metrics: {
      bestEpoch: result.bestEpoch,
      ...metadata.metrics,
      trainableLayers: result.trainableLayers,
      reproducibility: metadata.reproducibility,
    } as object,
    evaluation: evaluation as object,
    scratchAccuracy: scratch?.accuracy ?? null,
    transferGain,
  });
  return modelId;
}

function packageVersion(name: string): string | null {
  try {
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return null;
  }
}

async function finishCanceled(ctx: TrainingContext, jobId: string): Promise<TrainingOutcome> {
  await ctx.jobs.finish(jobId, 'canceled');
  return { status: 'canceled' };
}
