// Seeded on-the-fly image augmentation for a batch [N, S, S, 3] in [0, 1]. Flip, rotation,
// zoom and random crop are folded into one projective transform per image (one
// tf.image.transform call, which both cpu and wasm implement); brightness is an added offset.
import type { Hyperparameters } from '@finetune/core';
import { tf } from '../backend.ts';

export type Augmentation = NonNullable<Hyperparameters['augmentation']>;

export function augmentationEnabled(a: Augmentation | null | undefined): a is Augmentation {
  return !!a && (a.flipHorizontal || a.rotationDegrees > 0 || a.zoom > 0 || a.brightness > 0 || a.randomCrop > 0);
}

type M3 = [number, number, number, number, number, number, number, number, number];
const mul = (a: M3, b: M3): M3 => {
  const r = new Array(9).fill(0) as M3;
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) r[i * 3 + j] = r[i * 3 + j]! + a[i * 3 + k]! * b[k * 3 + j]!;
  return r;
};

/**
 * The output→input pixel map of one augmented image (what tf.image.transform takes): flip,
 * then rotation by θ and zoom by z about the centre (z > 1 zooms in), then a crop removing a
 * random fraction ≤ randomCrop of each side, resized back. Draws exactly 7 numbers from
 * `random` whatever is enabled, so enabling one augmentation does not shift the others' draws.
 */
export function augmentationTransform(a: Augmentation, size: number, random: () => number): number[] {
  const u = Array.from({ length: 7 }, () => random());
  const c = (size - 1) / 2;
  const flip = a.flipHorizontal && u[0]! < 0.5;
  const theta = (((u[1]! * 2 - 1) * a.rotationDegrees) / 180) * Math.PI;
  const zoom = 1 + (u[2]! * 2 - 1) * a.zoom;
  const [l, r, t, b] = [u[3]!, u[4]!, u[5]!, u[6]!].map((v) => v * a.randomCrop) as [number, number, number, number];
  // Built as maps from output coordinates to input coordinates, composed right to left.
  const F: M3 = flip ? [-1, 0, size - 1, 0, 1, 0, 0, 0, 1] : [1, 0, 0, 0, 1, 0, 0, 0, 1];
  const cos = Math.cos(theta) / zoom;
  const sin = Math.sin(theta) / zoom;
  const R: M3 = [cos, -sin, c - cos * c + sin * c, sin, cos, c - sin * c - cos * c, 0, 0, 1];
  const C: M3 = [1 - l - r, 0, l * size, 0, 1 - t - b, t * size, 0, 0, 1];
  const m = mul(C, mul(R, F));
  return [m[0], m[1], m[2], m[3], m[4], m[5], 0, 0];
}

/** Augments a batch; returns a new tensor (the caller disposes both). */
export function augmentBatch(images: tf.Tensor4D, a: Augmentation, random: () => number): tf.Tensor4D {
  const [n, h, w] = images.shape;
  if (h !== w) throw new Error('augmentBatch: square images only');
  const transforms = Array.from({ length: n }, () => augmentationTransform(a, h, random));
  const deltas = Array.from({ length: n }, () => (random() * 2 - 1) * a.brightness);
  return tf.tidy(() => {
    const geometric = a.flipHorizontal || a.rotationDegrees > 0 || a.zoom > 0 || a.randomCrop > 0;
    // One image per call: tfjs-backend-cpu 4.22's Transform writes zeros for every image after
    // the first of a batch (a batched call returned [img0, 0, 0, …] here).
    let x: tf.Tensor4D = geometric
      ? tf.concat(
          transforms.map((t, i) => tf.image.transform(tf.slice(images, [i, 0, 0, 0], [1, -1, -1, -1]), tf.tensor2d(t, [1, 8]), 'bilinear', 'nearest')),
          0,
        )
      : images.clone();
    if (a.brightness > 0) x = tf.clipByValue(tf.add(x, tf.tensor4d(deltas, [n, 1, 1, 1])), 0, 1) as tf.Tensor4D;
    return x;
  });
}
