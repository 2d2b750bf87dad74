// The `domain_adaptation` strategy: AdaBN (packages/ml/src/training/batch-norm-statistics.ts).
// The base's BatchNormalization statistics are estimated twice, on a sample of the labelled
// source images and on a sample of the unlabelled target images (targetDatasetId). The head
// trains on features the base computes with the source statistics, exactly as
// feature_extraction trains it (epochs, checkpoints, resume, early stopping, calibration on the
// source validation split); the model it exports carries the target statistics, so on the
// target domain its features arrive at the head on the scale the head learnt. A labelled
// target-domain dataset (targetTestDatasetId) is only evaluated on, apart from everything else.
//
// Both estimates are deterministic (seeded samples in archive order, one fixed batch order), so a
// resumed run computes the same statistics, hence the same features, as the run it continues.
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DomainError, type Config, type JobSpec } from '@finetune/core';
import type { DatasetsRepository } from '@finetune/db';
import {
  batchNormLayers,
  currentBackend,
  estimateBatchNormStatistics,
  hashSeed,
  mulberry32,
  planStatisticsPass,
  readBatchNormStatistics,
  requireBatchNormalization,
  tf,
  type BatchNormStatistics,
} from '@finetune/ml';
import type { ObjectStore } from '@finetune/storage';
import { decodeDataset, decodeUnlabelled, listDataset } from './prepare-data.ts';
import type { RunTimings } from './run-timings.ts';

export interface TargetDomain {
  /** The sampled target images the statistics come from. */
  images: Uint8Array[];
  /** Listed images left out of the sample (above ADAPTATION_MAX_IMAGES), and sampled ones that did not decode. */
  notSampled: number;
  skipped: number;
  /** targetTestDatasetId's images with class ids in the training dataset's labels; null without one. */
  test: { images: Uint8Array[]; targets: Int32Array; ids: string[] } | null;
}

export interface Adaptation {
  source: BatchNormStatistics;
  target: BatchNormStatistics;
  /** The base's own statistics of the adapted layers: put back when the run ends (zoo bases are
   * cached in the process). */
  original: BatchNormStatistics;
  /** Identifies the source statistics: part of the embedding-cache key of features computed with them. */
  sourceHash: string;
  facts: AdaptationFacts;
}

/** What the model's metadata records about the adaptation. */
export interface AdaptationFacts {
  method: 'adabn';
  targetDatasetId: string;
  targetTestDatasetId: string | null;
  /** Images the statistics were estimated from, per domain. */
  sourceImages: number;
  targetImages: number;
  /** Target images listed but not sampled (above ADAPTATION_MAX_IMAGES), and sampled but undecodable. */
  targetImagesNotSampled: number;
  targetImagesSkipped: number;
  /** BatchNormalization layers that took each domain's statistics (adaptationLayers, else all). */
  batchNormLayers: number;
}

interface Context {
  config: Config;
  store: ObjectStore;
  datasets: DatasetsRepository;
  timings: RunTimings;
}

/** Reads the target domain's datasets: the unlabelled sample, and the labelled test set if named. */
export async function prepareTargetDomain(
  ctx: Context,
  tenantId: string,
  spec: JobSpec,
  labels: string[],
  workDir: string,
  inputSize: number,
): Promise<TargetDomain> {
  const target = spec.targetDatasetId ? await ctx.datasets.get(tenantId, spec.targetDatasetId) : null;
  if (!target || target.status !== 'ready') throw new DomainError('dataset_deleted', "the job's target dataset (targetDatasetId) no longer exists", 422);
  const decoding = { config: ctx.config, inputSize, timings: ctx.timings };
  const sample = { maxImages: ctx.config.adaptationMaxImages, seed: hashSeed(spec.hyperparameters.seed, 'target_sample') };
  const unlabelled = await decodeUnlabelled(ctx.store, decoding, target.storageKey, join(workDir, 'target.zip'), sample);

  let test: TargetDomain['test'] = null;
  if (spec.targetTestDatasetId) {
    const row = await ctx.datasets.get(tenantId, spec.targetTestDatasetId);
    if (!row || row.status !== 'ready') throw new DomainError('dataset_deleted', "the job's target test dataset (targetTestDatasetId) no longer exists", 422);
    const dir = join(workDir, 'target-test');
    await mkdir(dir, { recursive: true });
    // Every image of it is a test image, whatever folder it sits in.
    const listing = await listDataset(ctx.store, ctx.config, row.storageKey, dir, inputSize, { validationSplit: 0, testSplit: 0, seed: 0 }, ctx.timings);
    const data = await decodeDataset(listing, decoding, () => false);
    const toSource = listing.labels.map((label) => labels.indexOf(label));
    const missing = listing.labels.filter((_, i) => toSource[i]! < 0);
    if (missing.length > 0) throw new DomainError('class_mismatch', `the target test dataset has classes the training dataset lacks: ${missing.join(', ')}`, 422);
    const parts = [data.train, data.val, data.test].filter((p) => p !== null);
    test = {
      images: parts.flatMap((p) => p.images),
      targets: Int32Array.from(parts.flatMap((p) => Array.from(p.targets, (t) => toSource[t]!))),
      ids: parts.flatMap((p) => p.ids),
    };
  }
  return { images: unlabelled.images, notSampled: unlabelled.notSampled, skipped: unlabelled.skipped, test };
}

/**
 * Estimates the base's statistics on both domains. The source sample is drawn from the training
 * images only (never validation or test), at most ADAPTATION_MAX_IMAGES of them. Null when
 * `shouldStop` turned true (checked between batches): the base is then left as it was.
 */
export async function estimateDomainStatistics(
  base: tf.LayersModel,
  inputSize: number,
  sourceTrain: Uint8Array[],
  target: TargetDomain,
  p: { spec: JobSpec; config: Config; timings: RunTimings; shouldStop: () => boolean },
): Promise<Adaptation | null> {
  requireBatchNormalization(base);
  const sourceSample = evenSample(sourceTrain, p.config.adaptationMaxImages);
  const plan = planStatisticsPass(base, p.spec.hyperparameters, currentBackend());
  if (!plan.fits) throw new DomainError(plan.code, plan.message, 422);
  // In a seeded random order: a batch's statistics normalise the layers above it, and a batch of
  // one class (archives list images class by class) would be normalised by that class's alone.
  const onBatch = () => {
    if (p.shouldStop()) throw new EstimateStopped();
  };
  const estimate = (images: Uint8Array[], stream: string) =>
    p.timings.time('adaptation', () =>
      estimateBatchNormStatistics(base, shuffled(images, hashSeed(p.spec.hyperparameters.seed, stream)), inputSize, { batchSize: plan.microBatch, onBatch }),
    );
  // adaptationLayers: only the first N layers take the domains' statistics; the rest keep the base's.
  const adapted = new Set(batchNormLayers(base).slice(0, p.spec.hyperparameters.adaptationLayers ?? undefined).map((l) => l.name));
  const only = (stats: BatchNormStatistics): BatchNormStatistics => new Map([...stats].filter(([name]) => adapted.has(name)));
  let source: BatchNormStatistics;
  let target_: BatchNormStatistics;
  try {
    source = only(await estimate(sourceSample, 'adabn_source'));
    target_ = only(await estimate(target.images, 'adabn_target'));
  } catch (error) {
    if (error instanceof EstimateStopped) return null;
    throw error;
  }
  return {
    source,
    target: target_,
    original: only(await readBatchNormStatistics(base)),
    sourceHash: statisticsHash(source),
    facts: {
      method: 'adabn',
      targetDatasetId: p.spec.targetDatasetId!,
      targetTestDatasetId: p.spec.targetTestDatasetId ?? null,
      sourceImages: sourceSample.length,
      targetImages: target.images.length,
      targetImagesNotSampled: target.notSampled,
      targetImagesSkipped: target.skipped,
      batchNormLayers: adapted.size,
    },
  };
}

class EstimateStopped extends Error {}

function shuffled<T>(items: T[], seed: number): T[] {
  const random = mulberry32(seed);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** At most `max` of the images, evenly spaced through them (every class of a sorted split is represented). */
function evenSample<T>(items: T[], max: number): T[] {
  if (items.length <= max) return items;
  return Array.from({ length: max }, (_, i) => items[Math.floor((i * items.length) / max)]!);
}

function statisticsHash(stats: BatchNormStatistics): string {
  const hash = createHash('sha256');
  for (const [name, { mean, variance }] of stats) {
    hash.update(name);
    hash.update(Buffer.from(mean.buffer, mean.byteOffset, mean.byteLength));
    hash.update(Buffer.from(variance.buffer, variance.byteOffset, variance.byteLength));
  }
  return hash.digest('hex').slice(0, 32);
}
