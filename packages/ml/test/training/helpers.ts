// Small bases and synthetic data for the training-engine tests (fast on the cpu backend).
import { DEFAULT_HYPERPARAMETERS, type Hyperparameters } from '@finetune/core';
import { tf } from '../../src/backend.ts';
import { mulberry32 } from '../../src/random.ts';
import type { BaseModel } from '../../src/zoo.ts';

/**
 * A tiny functional base with what makes cut selection interesting: BatchNormalization and a
 * residual Add. size×size×3 → 8-d embedding.
 *   stem_conv → stem_bn → stem_relu ─┬─ b1_conv → b1_bn → b1_relu ─ b1_add → top_conv → top_bn → top_relu → pool
 *                                    └──────────────────────────────┘
 */
export function tinyResidualBase(size = 12, seed = 7): BaseModel {
  const init = (k: number) => tf.initializers.glorotUniform({ seed: seed + k });
  const input = tf.input({ shape: [size, size, 3], name: 'image' });
  const conv = (name: string, filters: number, k: number, strides = 1) =>
    tf.layers.conv2d({ filters, kernelSize: 3, strides, padding: 'same', kernelInitializer: init(k), name });
  const bn = (name: string) => tf.layers.batchNormalization({ name, movingMeanInitializer: 'zeros', movingVarianceInitializer: 'ones' });
  let x = conv('stem_conv', 6, 1).apply(input) as tf.SymbolicTensor;
  x = bn('stem_bn').apply(x) as tf.SymbolicTensor;
  const skip = tf.layers.reLU({ name: 'stem_relu' }).apply(x) as tf.SymbolicTensor;
  x = conv('b1_conv', 6, 2).apply(skip) as tf.SymbolicTensor;
  x = bn('b1_bn').apply(x) as tf.SymbolicTensor;
  x = tf.layers.reLU({ name: 'b1_relu' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.add({ name: 'b1_add' }).apply([x, skip]) as tf.SymbolicTensor;
  x = conv('top_conv', 8, 3, 2).apply(x) as tf.SymbolicTensor;
  x = bn('top_bn').apply(x) as tf.SymbolicTensor;
  x = tf.layers.reLU({ name: 'top_relu' }).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.globalAveragePooling2d({ name: 'pool' }).apply(x) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: out, name: 'tiny_base' });
  // Non-trivial BN statistics, so "moving stats unchanged" and "inference mode" mean something.
  const r = mulberry32(seed);
  for (const name of ['stem_bn', 'b1_bn', 'top_bn']) {
    const layer = model.getLayer(name);
    const ws = layer.getWeights().map((w, i) => tf.tensor(Array.from({ length: w.size }, () => (i === 3 ? 0.5 + r() : r() - 0.5)), w.shape));
    layer.setWeights(ws);
    tf.dispose(ws);
  }
  model.trainable = false;
  return {
    info: { id: 'tiny', inputSize: size, embeddingSize: 8, source: 'test', licence: 'test', available: true, pretrained: true, description: 'test' },
    model,
  };
}

/** Two or three colour classes with noise: learnable in a few epochs. */
export function colourData(n: number, size: number, seed: number, numClasses = 2): { images: Uint8Array[]; labels: Int32Array } {
  const r = mulberry32(seed);
  const images: Uint8Array[] = [];
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % numClasses;
    labels[i] = c;
    const img = new Uint8Array(size * size * 3);
    for (let p = 0; p < size * size; p++) {
      for (let ch = 0; ch < 3; ch++) {
        const mean = ch === c ? 180 : 60;
        img[p * 3 + ch] = Math.max(0, Math.min(255, Math.round(mean + (r() - 0.5) * 120)));
      }
    }
    images.push(img);
  }
  return { images, labels };
}

export function hp(over: Partial<Hyperparameters> = {}): Hyperparameters {
  return { ...DEFAULT_HYPERPARAMETERS, epochs: 2, batchSize: 8, learningRate: 0.01, ...over };
}

/** Per-layer weight values (as arrays) of a model, by layer name. */
export function layerValues(model: tf.LayersModel): Map<string, Float32Array[]> {
  const out = new Map<string, Float32Array[]>();
  for (const layer of model.layers) if (layer.weights.length > 0) out.set(layer.name, layer.getWeights().map((w) => w.dataSync() as Float32Array));
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
