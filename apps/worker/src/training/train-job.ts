import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DomainError, findBaseModel, type Config, type JobSpec } from '@finetune/core';
import type { Db, JobsRepository } from '@finetune/db';
import {
  composeModel,
  computeEmbeddings,
  decodeImage,
  indexDatasetZip,
  loadBaseModel,
  readZipEntries,
  serializeModel,
  stratifiedSplit,
  tf,
  trainHead,
  type EpochResult,
} from '@finetune/ml';
import { keys, type ObjectStore } from '@finetune/storage';
import type { TrainingOutcome, TrainingProgress } from './messages.ts';

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

/** Images decoded at a time before they are embedded: bounds memory on large datasets. */
const EMBED_CHUNK = 64;
const EMBED_BATCH = 16;
const CANCEL_POLL_MS = 1_000;

/**
 * Feature extraction: the frozen base embeds every image once (not once per epoch), a softmax
 * head trains on the embeddings, and each epoch writes its metrics and a head checkpoint. The
 * model kept is the best epoch's head on top of the base, exported as one tfjs layers model.
 */
export async function runTrainingJob(jobId: string, ctx: TrainingContext): Promise<TrainingOutcome> {
  const job = await ctx.jobs.get(jobId);
  if (!job) return { status: 'skipped', reason: 'job row not found' };
  if (!(await ctx.jobs.markRunning(jobId, ctx.backend, ctx.attempt))) {
    return { status: 'skipped', reason: `job is ${job.status}${job.cancelRequested ? ' (cancel requested)' : ''}` };
  }
  const spec = job.spec as unknown as JobSpec;
  const hp = spec.hyperparameters;
  const info = findBaseModel(spec.baseModel);
  if (!info) throw new DomainError('unknown_base_model', `base model "${spec.baseModel}" is not in the zoo`, 422);
  const dataset = job.datasetId ? await ctx.db.dataset.findUnique({ where: { id: job.datasetId } }) : null;
  if (!dataset || dataset.status !== 'ready') throw new DomainError('dataset_deleted', 'the job\'s dataset no longer exists', 422);

  let canceled = false;
  const poll = setInterval(() => {
    ctx.jobs.isCancelRequested(jobId).then(
      (requested) => (canceled ||= requested),
      () => undefined, // a missed poll is retried a second later
    );
  }, CANCEL_POLL_MS);
  const report = (phase: TrainingProgress['phase'], epoch: number, percent: number) =>
    ctx.report({ phase, epoch, epochs: hp.epochs, percent: Math.round(percent) });

  const workDir = await mkdtemp(join(tmpdir(), `finetune-job-${jobId}-`));
  try {
    report('preparing', 0, 0);
    const zipPath = join(workDir, 'source.zip');
    await ctx.store.downloadToFile(dataset.storageKey, zipPath);
    const { limits } = ctx.config;
    const zipLimits = {
      maxEntries: limits.datasetEntries,
      maxUncompressedBytes: limits.datasetUncompressedBytes,
      maxEntryBytes: limits.imageBytes,
    };
    const index = await indexDatasetZip(zipPath, zipLimits);
    const labels = index.classes;
    const labelIndex = new Map(labels.map((label, i) => [label, i]));
    const splitOf = chooseSplit(index.entries, labelIndex, hp.validationSplit, hp.seed);

    // Decode and embed in chunks as the zip streams by; only embeddings are kept.
    const base = await loadBaseModel(spec.baseModel);
    const tensorsBeforeTraining = tf.memory().numTensors; // the cached base's weights excluded
    const embedded = { train: [] as Float32Array[], val: [] as Float32Array[] };
    const targets = { train: [] as number[], val: [] as number[] };
    let pending: { pixels: Float32Array; split: 'train' | 'val'; label: number }[] = [];
    let skipped = 0;
    let done = 0;
    const total = index.entries.length;
    const flush = async () => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      const vectors = await computeEmbeddings(base, batch.map((p) => p.pixels), EMBED_BATCH);
      batch.forEach((item, i) => {
        embedded[item.split].push(vectors.subarray(i * info.embeddingSize, (i + 1) * info.embeddingSize));
        targets[item.split].push(item.label);
      });
      done += batch.length;
      report('embedding', 0, (40 * done) / total);
    };
    const entryByPath = new Map(index.entries.map((e) => [e.path, e]));
    await readZipEntries(zipPath, new Set(entryByPath.keys()), zipLimits, async (path, data) => {
      if (canceled) return;
      const entry = entryByPath.get(path)!;
      try {
        const pixels = await decodeImage(data, info.inputSize, { maxPixels: limits.imagePixels });
        pending.push({ pixels, split: splitOf.get(path) ?? 'train', label: labelIndex.get(entry.label)! });
      } catch {
        skipped += 1; // corrupt or unsupported image: counted on the job, not fatal
        done += 1;
      }
      if (pending.length >= EMBED_CHUNK) await flush();
    });
    await flush();
    await ctx.jobs.recordSkippedImages(jobId, skipped);
    if (canceled) return await finishCanceled(ctx, jobId);

    const missing = labels.filter((_, i) => !targets.train.includes(i));
    if (missing.length > 0) {
      throw new DomainError('empty_class', `no decodable training image for class(es): ${missing.join(', ')}`, 422);
    }

    const stack = (rows: Float32Array[]) => {
      const out = new Float32Array(rows.length * info.embeddingSize);
      rows.forEach((row, i) => out.set(row, i * info.embeddingSize));
      return out;
    };
    const result = await trainHead({
      train: { x: stack(embedded.train), y: Int32Array.from(targets.train) },
      val: targets.val.length > 0 ? { x: stack(embedded.val), y: Int32Array.from(targets.val) } : null,
      dim: info.embeddingSize,
      numClasses: labels.length,
      hyperparameters: hp,
      shouldStop: () => canceled,
      onEpochEnd: async (epoch: EpochResult) => {
        const files = await serializeModel(epoch.head);
        const headKey = keys.checkpoint(jobId, epoch.epoch, 'head.json');
        await ctx.store.putBuffer(headKey, files.modelJson, 'application/json');
        await ctx.store.putBuffer(keys.checkpoint(jobId, epoch.epoch, 'weights.bin'), files.weights, 'application/octet-stream');
        await ctx.jobs.recordEpoch(
          jobId,
          {
            epoch: epoch.epoch,
            trainLoss: epoch.trainLoss,
            trainAcc: epoch.trainAcc,
            valLoss: epoch.valLoss,
            valAcc: epoch.valAcc,
            learningRate: epoch.learningRate,
            durationMs: Math.round(epoch.durationMs),
          },
          headKey,
        );
        report('training', epoch.epoch, 40 + (55 * epoch.epoch) / hp.epochs);
      },
    });
    if (canceled) {
      result.head.dispose();
      return await finishCanceled(ctx, jobId);
    }

    report('exporting', result.epochsRun, 95);
    const modelId = randomUUID();
    const full = composeModel(base.model, result.head);
    const files = await serializeModel(full, { metadata: { labels } });
    // composeModel copies layers (weights shared by reference count): disposing the composed
    // model and the head leaves the cached base intact.
    full.dispose();
    result.head.dispose();
    const metrics = await ctx.jobs.metrics(jobId);
    const best = metrics.find((m) => m.epoch === result.bestEpoch) ?? null;
    const metadata = {
      format: 'tfjs-layers-model',
      modelId,
      jobId,
      baseModel: spec.baseModel,
      strategy: spec.strategy,
      labels,
      input: { shape: [null, info.inputSize, info.inputSize, 3], scale: '[0, 1] (pixel / 255), RGB', resize: 'cover' },
      bestEpoch: result.bestEpoch,
      epochsRun: result.epochsRun,
      metrics: best && {
        trainLoss: best.trainLoss,
        trainAccuracy: best.trainAcc,
        valLoss: best.valLoss,
        valAccuracy: best.valAcc,
      },
      dataset: {
        id: dataset.id,
        sha256: dataset.sha256,
        trainImages: targets.train.length,
        valImages: targets.val.length,
        skippedImages: skipped,
      },
      hyperparameters: hp,
      backend: ctx.backend,
      versions: { tfjs: tf.version.tfjs, node: process.versions.node },
      createdAt: new Date().toISOString(),
    };
    await ctx.store.putBuffer(keys.modelFile(modelId, 'model.json'), files.modelJson, 'application/json');
    await ctx.store.putBuffer(keys.modelFile(modelId, 'weights.bin'), files.weights, 'application/octet-stream');
    await ctx.store.putBuffer(keys.modelFile(modelId, 'labels.json'), Buffer.from(JSON.stringify(labels)), 'application/json');
    await ctx.store.putBuffer(keys.modelFile(modelId, 'metadata.json'), Buffer.from(JSON.stringify(metadata, null, 2)), 'application/json');
    await ctx.jobs.succeed(jobId, {
      id: modelId,
      baseModel: spec.baseModel,
      labels,
      inputSize: info.inputSize,
      storagePrefix: keys.modelPrefix(modelId),
      metrics: { bestEpoch: result.bestEpoch, ...metadata.metrics, dataset: metadata.dataset, backend: ctx.backend },
    });
    ctx.log('training finished', { modelId, bestEpoch: result.bestEpoch, tensorsLeaked: tf.memory().numTensors - tensorsBeforeTraining });
    return { status: 'succeeded', modelId };
  } finally {
    clearInterval(poll);
    await rm(workDir, { recursive: true, force: true });
  }
}

/**
 * Train/validation split. A dataset with its own val/ folder keeps it; otherwise each class is
 * split on its own (stratified, seeded), so a run is reproducible and every class trains.
 */
function chooseSplit(
  entries: { path: string; label: string; split: 'train' | 'val' }[],
  labelIndex: Map<string, number>,
  validationSplit: number,
  seed: number,
): Map<string, 'train' | 'val'> {
  if (entries.some((e) => e.split === 'val')) return new Map(entries.map((e) => [e.path, e.split]));
  const { val } = stratifiedSplit(entries.map((e) => labelIndex.get(e.label)!), validationSplit, seed);
  const valSet = new Set(val);
  return new Map(entries.map((e, i) => [e.path, valSet.has(i) ? 'val' : 'train']));
}

async function finishCanceled(ctx: TrainingContext, jobId: string): Promise<TrainingOutcome> {
  await ctx.jobs.finish(jobId, 'canceled');
  return { status: 'canceled' };
}
