// Domain-specific BatchNormalization statistics: AdaBN (Li, Wang, Shi, Liu & Hou, "Revisiting
// Batch Normalization for Practical Domain Adaptation", 2016). A BN layer's moving mean and
// variance describe the inputs it saw in training; on another domain (inverted, recoloured,
// differently lit images) every layer's inputs drift from them and the drift compounds up the
// network. Re-estimating the statistics on a domain's own images — no labels needed — puts each
// layer's inputs back to zero mean and unit variance there, so a head trained on the source
// domain's features reads the target domain's features on the same scale.
//
// Estimated the way such statistics are computed in training: the model runs in training mode
// (every BN normalises with its batch's statistics, so a layer sees inputs normalised as the
// layers below will normalise them) and each BN's moving averages are updated with a momentum
// that makes them the image-weighted average over all batches (momentum m = seen / (seen + n)).
// The variance is each batch's (biased) variance averaged; with batches of several images and
// every spatial position of a channel in each, the difference from the pooled variance is small.
import type { Hyperparameters } from '@finetune/core';
import { DomainError } from '@finetune/core';
import { tf, type BackendName } from '../backend.ts';
import { yieldToEventLoop } from '../event-loop.ts';
import { planMicroBatch, type MicroBatchPlan } from './micro-batch.ts';

/** Per BatchNormalization layer (by name): its moving mean and variance, one value per channel. */
export type BatchNormStatistics = Map<string, { mean: Float32Array; variance: Float32Array }>;

interface BatchNormLayer extends tf.layers.Layer {
  momentum: number;
  movingMean: { read(): tf.Tensor; write(t: tf.Tensor): void };
  movingVariance: { read(): tf.Tensor; write(t: tf.Tensor): void };
}

/** The model's BatchNormalization layers (with moving statistics), in layer order. */
export function batchNormLayers(model: tf.LayersModel): BatchNormLayer[] {
  return model.layers.filter((l) => l.getClassName() === 'BatchNormalization' && (l as BatchNormLayer).movingMean !== undefined) as BatchNormLayer[];
}

/** Images per training-mode forward pass of an estimate, at most (the plan may lower it). */
export const STATISTICS_BATCH = 8;

/**
 * How many images an estimate may run at once on `backend`: the pass keeps every activation of
 * its batch, so it is planned as a whole-network training step of STATISTICS_BATCH images —
 * which needs more than a forward pass, so the plan is on the safe side. The API refuses a spec
 * whose plan does not fit (before any work), the worker runs what it plans: the same function.
 */
export function planStatisticsPass(model: tf.LayersModel, hyperparameters: Hyperparameters, backend: BackendName): MicroBatchPlan {
  return planMicroBatch({
    model,
    strategy: 'full',
    hyperparameters: { ...hyperparameters, batchSize: STATISTICS_BATCH },
    backend,
    what: `strategy domain_adaptation's batch-norm statistics pass (a training-mode forward pass through the whole base, ${STATISTICS_BATCH} images at most at a time)`,
  });
}

/** domain_adaptation re-estimates BatchNormalization statistics: a base without any cannot adapt. */
export function requireBatchNormalization(model: tf.LayersModel): void {
  if (batchNormLayers(model).length > 0) return;
  throw new DomainError(
    'no_batch_normalization',
    "strategy domain_adaptation re-estimates the base's BatchNormalization statistics on each domain (AdaBN), and this base has no BatchNormalization layer; use a base that has (mobilenet_v2, inception_v3)",
    422,
  );
}

/** The statistics the model's BN layers hold now. */
export async function readBatchNormStatistics(model: tf.LayersModel): Promise<BatchNormStatistics> {
  const stats: BatchNormStatistics = new Map();
  for (const layer of batchNormLayers(model)) {
    const [mean, variance] = await Promise.all([layer.movingMean.read().data(), layer.movingVariance.read().data()]);
    stats.set(layer.name, { mean: Float32Array.from(mean), variance: Float32Array.from(variance) });
  }
  return stats;
}

/**
 * Sets the statistics of the model's BN layers named in `stats` (layers it does not name keep
 * theirs). The model may be a copy of the one the statistics were read from: layers match by name.
 */
export function writeBatchNormStatistics(model: tf.LayersModel, stats: BatchNormStatistics): void {
  for (const layer of batchNormLayers(model)) {
    const s = stats.get(layer.name);
    if (!s) continue;
    const shape = layer.movingMean.read().shape;
    if (s.mean.length !== shape[0]) throw new Error(`batch-norm statistics for ${layer.name} have ${s.mean.length} channels; the layer has ${shape[0]}`);
    // write() assigns to the layer's variable; its new data id tells runner.ts' ONNX sessions to rebuild.
    layer.movingMean.write(tf.tensor1d(s.mean));
    layer.movingVariance.write(tf.tensor1d(s.variance));
  }
}

/**
 * The BN statistics of `model` on `images` (RGB uint8, inputSize² × 3 each), estimated as the
 * header describes. The model is left as it was (its statistics and momenta are restored).
 * `batchSize` images run at once: the training-mode forward pass keeps every activation of a
 * batch until it ends, so it stays small.
 */
export async function estimateBatchNormStatistics(
  model: tf.LayersModel,
  images: readonly Uint8Array[],
  inputSize: number,
  opts: { batchSize?: number; onBatch?: (done: number, total: number) => void | Promise<void> } = {},
): Promise<BatchNormStatistics> {
  const layers = batchNormLayers(model);
  if (layers.length === 0) throw new Error('the model has no BatchNormalization layer');
  if (images.length === 0) throw new Error('no images to estimate batch-norm statistics from');
  const pixels = inputSize * inputSize * 3;
  const batchSize = Math.max(1, Math.floor(opts.batchSize ?? 8));
  const original = await readBatchNormStatistics(model);
  const momenta = layers.map((l) => l.momentum);
  try {
    let seen = 0;
    for (let start = 0; start < images.length; start += batchSize) {
      const batch = images.slice(start, start + batchSize);
      const n = batch.length;
      // The first batch replaces the old statistics (m = 0); later ones average in by image count.
      for (const layer of layers) layer.momentum = seen / (seen + n);
      tf.tidy(() => {
        const data = new Float32Array(n * pixels);
        batch.forEach((img, i) => {
          if (img.length !== pixels) throw new Error(`image ${start + i} has ${img.length} bytes; expected ${pixels}`);
          for (let j = 0; j < pixels; j++) data[i * pixels + j] = img[j]! / 255;
        });
        const x = tf.tensor4d(data, [n, inputSize, inputSize, 3]);
        // The output itself is not needed: running the layers in training mode updates the averages.
        model.apply(x, { training: true });
      });
      seen += n;
      await opts.onBatch?.(seen, images.length);
      await yieldToEventLoop();
    }
    return await readBatchNormStatistics(model);
  } finally {
    writeBatchNormStatistics(model, original);
    layers.forEach((l, i) => (l.momentum = momenta[i]!));
  }
}
