// The batcher: images (or cached cut features) → the tensors a training or evaluation batch
// feeds the trainable part, plus the seeded epoch order.
import { tf } from '../backend.ts';
import { forwardImages } from '../inference/runner.ts';
import { augmentBatch, type Augmentation } from './augment.ts';
import type { LabelledImages } from './types.ts';

export function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

/** Checks a split's labels, and its images unless `images` is false (decoding deferred). */
export function checkSplit(name: string, d: LabelledImages, pixels: number, numClasses: number, images = true): void {
  if (images) {
    if (d.images.length !== d.labels.length) throw new Error(`${name}: ${d.images.length} images but ${d.labels.length} labels`);
    d.images.forEach((img, i) => {
      if (img.length !== pixels) throw new Error(`${name}: image ${i} has ${img.length} bytes; expected ${pixels}`);
    });
  }
  d.labels.forEach((c, i) => {
    if (c < 0 || c >= numClasses) throw new Error(`${name}: label ${i} = ${c} is not a class id in [0, ${numClasses})`);
  });
}

/** Images (by index) → float32 [n, S, S, 3] in [0, 1]. */
export function imageBatch(images: Uint8Array[], indices: ArrayLike<number>, size: number): tf.Tensor4D {
  const pixels = size * size * 3;
  const buf = new Float32Array(indices.length * pixels);
  for (let j = 0; j < indices.length; j++) {
    const img = images[indices[j]!]!;
    for (let p = 0; p < pixels; p++) buf[j * pixels + p] = img[p]! / 255;
  }
  return tf.tensor4d(buf, [indices.length, size, size, 3]);
}

/** A Fisher–Yates permutation of 0..n-1; draws exactly n − 1 numbers from `random`. */
export function shuffled(n: number, random: () => number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}

/**
 * Runs `model` (inference: a frozen base or bottom) over images in batches; returns outputs
 * row-major, images.length × width. ONNX Runtime or tfjs runs it (see inference/runner.ts),
 * which checks the images (size × size × 3 bytes) against the model's input.
 */
export async function runFrozen(model: tf.LayersModel, images: Uint8Array[], size: number, width: number, batchSize: number): Promise<Float32Array> {
  const result = await forwardImages(model, images, { batchSize });
  if (product(result.shape) !== width) throw new Error(`runFrozen: ${model.name} outputs [${result.shape}] per image, expected ${width} values`);
  return result.output;
}

/** The trainable part's input for some samples of a split (the caller disposes it). */
export type BatchInput = (split: LabelledImages, features: Float32Array | null, idx: ArrayLike<number>, augment: boolean) => tf.Tensor;

/**
 * Cached cut features when there are some; otherwise images, augmented when asked (drawing
 * from `augRandom`, in sample order), through the frozen bottom when there is one.
 */
export function batchInput(p: { size: number; cutShape: number[]; bottom: tf.LayersModel | null; augmentation: Augmentation | null; augRandom: () => number }): BatchInput {
  const width = product(p.cutShape);
  return (split, features, idx, augment) => {
    if (features) {
      const buf = new Float32Array(idx.length * width);
      for (let j = 0; j < idx.length; j++) buf.set(features.subarray(idx[j]! * width, (idx[j]! + 1) * width), j * width);
      return tf.tensor(buf, [idx.length, ...p.cutShape]);
    }
    return tf.tidy(() => {
      let x = imageBatch(split.images, idx, p.size);
      if (augment && p.augmentation) x = augmentBatch(x, p.augmentation, p.augRandom);
      return p.bottom ? (p.bottom.predict(x) as tf.Tensor) : x;
    });
  };
}
