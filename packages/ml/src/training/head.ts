// The classification head and its loss. Every head layer is named `head_*` so a trained model
// can be cut back to its base (surgery.ts baseFromTrainedModel). The head ends in a linear
// `head_logits` Dense and a separate `head_softmax` Activation: training reads the logits (a
// log-softmax loss is stable), the exported model outputs probabilities.
import { DomainError, type Hyperparameters } from '@finetune/core';
import { tf } from '../backend.ts';

export const LOGITS_LAYER = 'head_logits';
export const SOFTMAX_LAYER = 'head_softmax';

/**
 * embedding [N, dim] → probabilities [N, numClasses]:
 * ([Dropout] → Dense(hidden, activation))* → [Dropout] → Dense(numClasses) → Softmax,
 * Dropout only when head.dropout > 0. Kernels Glorot-uniform seeded from `seed`.
 */
export function buildClassifierHead(dim: number, numClasses: number, head: Hyperparameters['head'], seed: number): tf.LayersModel {
  const input = tf.input({ shape: [dim], name: 'head_input' });
  let x: tf.SymbolicTensor = input;
  let k = 0;
  let drops = 0;
  const dropout = () => {
    if (head.dropout > 0) x = tf.layers.dropout({ rate: head.dropout, name: `head_dropout_${++drops}` }).apply(x) as tf.SymbolicTensor;
  };
  const dense = (units: number, activation: string, name: string) =>
    tf.layers.dense({
      units,
      activation: activation as 'relu',
      name,
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + ++k }),
      biasInitializer: 'zeros',
    });
  head.hiddenUnits.forEach((units, i) => {
    dropout();
    x = dense(units, head.activation, `head_hidden_${i + 1}`).apply(x) as tf.SymbolicTensor;
  });
  dropout();
  x = dense(numClasses, 'linear', LOGITS_LAYER).apply(x) as tf.SymbolicTensor;
  x = tf.layers.activation({ activation: 'softmax', name: SOFTMAX_LAYER }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: x, name: 'head' });
}

/**
 * Runs the head up to its logits. In training mode Dropout layers drop with masks drawn from
 * `seedFor()` (a fresh seed per call; tfjs' own Dropout with a fixed `seed` would reuse one mask
 * for every batch, and without one it is not reproducible).
 */
export function headLogits(head: tf.LayersModel, x: tf.Tensor, training: boolean, seedFor?: () => number): tf.Tensor2D {
  let y = x;
  for (const layer of head.layers) {
    const cls = layer.getClassName();
    if (cls === 'InputLayer') continue;
    if (layer.name === SOFTMAX_LAYER) break;
    if (cls === 'Dropout') {
      const rate = (layer.getConfig() as { rate: number }).rate;
      if (training && rate > 0) {
        const keep = tf.greaterEqual(tf.randomUniform(y.shape, 0, 1, 'float32', seedFor?.()), rate);
        y = tf.div(tf.mul(y, tf.cast(keep, 'float32')), 1 - rate);
      }
      continue;
    }
    y = layer.apply(y) as tf.Tensor;
  }
  return y as tf.Tensor2D;
}

/**
 * Mean cross-entropy from logits, with optional label smoothing (targets y(1−ε) + ε/K) and
 * per-sample weights (Keras' sample_weight convention: mean over the batch of w_i · loss_i).
 */
export function classificationLoss(
  logits: tf.Tensor2D,
  labels: tf.Tensor1D,
  opts: { numClasses: number; labelSmoothing?: number; sampleWeights?: tf.Tensor1D | null },
): tf.Scalar {
  return tf.tidy(() => {
    const eps = opts.labelSmoothing ?? 0;
    let target = tf.oneHot(tf.cast(labels, 'int32'), opts.numClasses).toFloat();
    if (eps > 0) target = tf.add(tf.mul(target, 1 - eps), eps / opts.numClasses);
    let perSample = tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(logits)), -1));
    if (opts.sampleWeights) perSample = tf.mul(perSample, opts.sampleWeights);
    return tf.mean(perSample) as tf.Scalar;
  });
}

/**
 * Per-class loss weights (indexed by class id), or null for none. 'balanced' is scikit-learn's
 * n / (k · n_c) over the training labels (k = classes present; absent classes get 1). A map
 * gives weights by label; labels it omits weigh 1; an unknown label is an error.
 */
export function classWeightVector(spec: Hyperparameters['classWeights'], labels: string[], y: ArrayLike<number>): Float32Array | null {
  if (!spec) return null;
  const w = new Float32Array(labels.length).fill(1);
  if (spec === 'balanced') {
    const counts = new Float64Array(labels.length);
    for (let i = 0; i < y.length; i++) counts[y[i]!]!++;
    const present = counts.filter((c) => c > 0).length;
    counts.forEach((c, i) => {
      if (c > 0) w[i] = y.length / (present * c);
    });
    return w;
  }
  for (const [label, weight] of Object.entries(spec)) {
    const i = labels.indexOf(label);
    if (i < 0) throw new DomainError('invalid_class_weights', `classWeights names '${label}', which is not a class (${labels.join(', ')})`, 422);
    w[i] = weight;
  }
  return w;
}

/** Σ‖kernel‖² over the variables whose names end in `kernel` (Keras' l2 kernel regulariser). */
export function l2Penalty(variables: tf.Variable[], l2: number): tf.Scalar | null {
  const kernels = variables.filter((v) => /kernel(_\d+)?$/.test(v.name));
  if (l2 <= 0 || kernels.length === 0) return null;
  return tf.tidy(() => tf.mul(tf.addN(kernels.map((v) => tf.sum(tf.square(v)))), l2) as tf.Scalar);
}
