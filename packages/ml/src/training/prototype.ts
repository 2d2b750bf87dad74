// Few-shot prototypes: each class is the normalised mean of its normalised embeddings, and an
// image gets the class whose prototype is nearest by cosine. No training loop; the result is a
// head of stock layers (browser-loadable, no custom or Lambda layers):
//   x → Concatenate[x, Rescaling(−1)(x)] → LayerNormalization(no centre/scale) → Dense → Softmax.
// [x, −x] has mean 0 and variance ‖x‖²/D, so the normalisation yields [x, −x]·√D/‖x‖; the Dense
// kernel holds s·p̂_c/√D in its first D rows and zeros below, so logits = s·cos(x, p_c).
import { tf } from '../backend.ts';
import { LOGITS_LAYER, SOFTMAX_LAYER } from './head.ts';

/** Softmax temperature on the cosine (cosine classifiers commonly use 10–30). */
export const PROTOTYPE_SCALE = 10;

/** Unit-norm class means of unit-norm embeddings, [numClasses × dim] row-major; a class
 * without samples gets a zero row (it never wins against a positive cosine). */
export function classPrototypes(embeddings: Float32Array, labels: ArrayLike<number>, numClasses: number, dim: number): Float32Array {
  const protos = new Float64Array(numClasses * dim);
  for (let i = 0; i < labels.length; i++) {
    const row = embeddings.subarray(i * dim, (i + 1) * dim);
    let norm = 0;
    for (const v of row) norm += v * v;
    norm = Math.sqrt(norm) || 1;
    const c = labels[i]!;
    for (let j = 0; j < dim; j++) protos[c * dim + j]! += row[j]! / norm;
  }
  const out = new Float32Array(numClasses * dim);
  for (let c = 0; c < numClasses; c++) {
    let norm = 0;
    for (let j = 0; j < dim; j++) norm += protos[c * dim + j]! ** 2;
    norm = Math.sqrt(norm);
    if (norm > 0) for (let j = 0; j < dim; j++) out[c * dim + j] = protos[c * dim + j]! / norm;
  }
  return out;
}

/** The prototype head: embedding [N, dim] → probabilities softmax(scale · cos(x, p_c)). */
export function buildPrototypeHead(prototypes: Float32Array, numClasses: number, dim: number, scale = PROTOTYPE_SCALE): tf.LayersModel {
  const input = tf.input({ shape: [dim], name: 'head_input' });
  const negated = tf.layers.rescaling({ scale: -1, offset: 0, name: 'head_negate' }).apply(input) as tf.SymbolicTensor;
  const both = tf.layers.concatenate({ axis: -1, name: 'head_concat' }).apply([input, negated]) as tf.SymbolicTensor;
  const normed = tf.layers.layerNormalization({ axis: -1, center: false, scale: false, epsilon: 1e-12, name: 'head_normalize' }).apply(both) as tf.SymbolicTensor;
  const dense = tf.layers.dense({ units: numClasses, useBias: false, name: LOGITS_LAYER });
  const logits = dense.apply(normed) as tf.SymbolicTensor;
  const probs = tf.layers.activation({ activation: 'softmax', name: SOFTMAX_LAYER }).apply(logits) as tf.SymbolicTensor;
  const kernel = new Float32Array(2 * dim * numClasses);
  const k = scale / Math.sqrt(dim);
  for (let c = 0; c < numClasses; c++) for (let j = 0; j < dim; j++) kernel[j * numClasses + c] = prototypes[c * dim + j]! * k;
  const w = tf.tensor2d(kernel, [2 * dim, numClasses]);
  dense.setWeights([w]);
  w.dispose();
  return tf.model({ inputs: input, outputs: probs, name: 'prototype_head' });
}
