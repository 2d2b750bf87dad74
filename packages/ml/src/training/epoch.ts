// The epoch runner: one pass of minibatch steps over the training set, and the validation pass.
import type { Hyperparameters } from '@finetune/core';
import { tf } from '../backend.ts';
import { yieldToEventLoop } from '../event-loop.ts';
import { range, shuffled, type BatchInput } from './batches.ts';
import { classificationLoss, headLogits, l2Penalty } from './head.ts';
import { applyDecoupledWeightDecay, setLearningRate, setMomentum } from './optimizers.ts';
import type { LabelledImages } from './types.ts';

const EVAL_BATCH = 64;

/**
 * One trainable base layer and its own optimizer. One optimizer per layer: each layer can train
 * at its own rate (discriminative rates), and progressive unfreezing carries a layer's moments
 * into the next stage while a newly unfrozen layer starts with fresh ones (its own iteration
 * count, so Adam's bias correction is right for it too).
 */
export interface BaseGroup {
  layer: string;
  optimizer: tf.Optimizer;
  /** In the order the optimizer sees them every step (its state is keyed by position). */
  vars: tf.Variable[];
  /** This layer's rate ÷ the head's. */
  rateFactor: number;
}

/** The trainable part of a stage: [top] + head, and the optimizers that update it. */
export interface StageNet {
  head: tf.LayersModel;
  top: tf.LayersModel | null;
  /** BatchNormalization in training mode (scratch only: nothing pretrained to preserve). */
  topTraining: boolean;
  headOpt: tf.Optimizer;
  /** In the order the optimizer sees them every step (its state is keyed by position). */
  headVars: tf.Variable[];
  baseGroups: BaseGroup[];
  /** Every group's variables, in the top's layer order. */
  baseVars: tf.Variable[];
}

/** The head's rate (base layers: × their factor) and, when the schedule cycles it, the SGD momentum. */
export interface StepRates {
  learningRate: number;
  momentum: number | null;
}

/** Sets every optimizer of the net to `rates` (momentum only where the optimizer has one). */
export function applyRates(net: StageNet, rates: StepRates): void {
  setLearningRate(net.headOpt, rates.learningRate);
  for (const g of net.baseGroups) setLearningRate(g.optimizer, rates.learningRate * g.rateFactor);
  if (rates.momentum !== null) {
    setMomentum(net.headOpt, rates.momentum);
    for (const g of net.baseGroups) setMomentum(g.optimizer, rates.momentum);
  }
}

/** What one gradient step needs besides the batch. */
export interface StepContext {
  net: StageNet;
  train: LabelledImages;
  features: Float32Array | null;
  input: BatchInput;
  hp: Pick<Hyperparameters, 'optimizer' | 'weightDecay' | 'labelSmoothing' | 'l2'>;
  /** Images per forward + backward pass (micro-batch.ts); the step's gradient sums them. Default: the batch. */
  microBatch?: number;
  numClasses: number;
  classWeights: Float32Array | null;
  dropSeed: () => number;
}

/** One optimizer step on the images `idx` at `rates`; the batch's mean loss and correct count. */
export async function trainStep(p: StepContext, idx: Uint32Array, rates: StepRates): Promise<{ loss: number; correct: number }> {
  const { net, hp } = p;
  applyRates(net, rates);
  const step = await accumulateGradients({ ...p, idx, allVars: [...net.headVars, ...net.baseVars] });
  try {
    net.headOpt.applyGradients(net.headVars.map((v) => ({ name: v.name, tensor: step.grads[v.name]! })));
    for (const g of net.baseGroups) g.optimizer.applyGradients(g.vars.map((v) => ({ name: v.name, tensor: step.grads[v.name]! })));
    if (hp.optimizer === 'adamw') {
      applyDecoupledWeightDecay(net.headVars, rates.learningRate, hp.weightDecay);
      for (const g of net.baseGroups) applyDecoupledWeightDecay(g.vars, rates.learningRate * g.rateFactor, hp.weightDecay);
    }
  } finally {
    tf.dispose(step.grads);
  }
  return { loss: step.loss, correct: step.correct };
}

export interface EpochOutcome {
  /** False when shouldStop cut the epoch short: the caller discards it. */
  complete: boolean;
  /** shouldStop returned true during the epoch. */
  stopped: boolean;
  trainLoss: number;
  trainAcc: number;
}

export async function trainEpoch(
  p: StepContext & {
    /** The rates of the epoch's 0-based `batch` (per-step schedules; otherwise the same for every batch). */
    rates: (batch: number) => StepRates;
    batchSize: number;
    shuffle: () => number;
    shouldStop?: () => boolean | Promise<boolean>;
    /** After every batch: where the epoch is (progress reports). */
    onBatchEnd?: (e: BatchEvent) => void;
  },
): Promise<EpochOutcome> {
  const n = p.train.labels.length;
  const order = shuffled(n, p.shuffle);
  let lossSum = 0;
  let correct = 0;
  let seen = 0;
  let stopped = false;
  for (let start = 0; start < n; start += p.batchSize) {
    const idx = order.subarray(start, Math.min(n, start + p.batchSize));
    const step = await trainStep(p, idx, p.rates(start / p.batchSize));
    lossSum += step.loss * idx.length;
    correct += step.correct;
    seen += idx.length;
    p.onBatchEnd?.({ batch: start / p.batchSize + 1, batches: Math.ceil(n / p.batchSize), images: seen, trainLoss: lossSum / seen, trainAcc: correct / seen });
    if (p.shouldStop && (await p.shouldStop())) {
      stopped = true;
      // Stopping after the last batch still completes the epoch.
      if (start + p.batchSize < n) return { complete: false, stopped, trainLoss: NaN, trainAcc: NaN };
    }
    await yieldToEventLoop();
  }
  return { complete: true, stopped, trainLoss: lossSum / seen, trainAcc: correct / seen };
}

/** The running figures of an epoch after one more batch. */
export interface BatchEvent {
  /** 1-based. */
  batch: number;
  batches: number;
  /** Images trained so far in this epoch. */
  images: number;
  /** Mean over the epoch's batches so far. */
  trainLoss: number;
  trainAcc: number;
}

type StepInput = StepContext & { idx: Uint32Array; allVars: tf.Variable[] };

/**
 * One step's loss and gradient, computed over micro-batches of at most `microBatch` images in
 * order and summed: each micro-batch's mean loss is weighted by its share of the batch, so the
 * sum is the batch's mean loss and its gradient the batch's mean gradient (up to float rounding;
 * the l2 penalty enters once, with the first micro-batch). A batch that fits in one pass runs
 * exactly as it did before micro-batching. Deterministic: same order, same sums, and the
 * augmentation and dropout streams are drawn in sample order either way.
 */
async function accumulateGradients(p: StepInput): Promise<{ grads: tf.NamedTensorMap; loss: number; correct: number }> {
  const { net, hp, idx } = p;
  const micro = Math.max(1, Math.min(p.microBatch ?? idx.length, idx.length));
  let sum: tf.NamedTensorMap | null = null;
  let loss = 0;
  let correct = 0;
  try {
    for (let m = 0; m < idx.length; m += micro) {
      const part = idx.subarray(m, Math.min(idx.length, m + micro));
      const share = part.length / idx.length;
      const x = p.input(p.train, p.features, part, true);
      const labelArr = Int32Array.from(part, (i) => p.train.labels[i]!);
      const labels = tf.tensor1d(labelArr, 'int32');
      const weights = p.classWeights ? tf.tensor1d(Float32Array.from(labelArr, (c) => p.classWeights![c]!)) : null;
      let correctT: tf.Tensor | undefined;
      try {
        const { value, grads } = tf.variableGrads(() => {
          const emb = net.top ? (net.top.apply(x, { training: net.topTraining }) as tf.Tensor) : x;
          const logits = headLogits(net.head, emb, true, p.dropSeed);
          correctT = tf.keep(tf.sum(tf.equal(tf.argMax(logits, -1), labels)));
          const mean = classificationLoss(logits, labels, { numClasses: p.numClasses, labelSmoothing: hp.labelSmoothing, sampleWeights: weights });
          const scaled: tf.Scalar = share === 1 ? mean : tf.mul(mean, share);
          const penalty = m === 0 ? l2Penalty(p.allVars, hp.l2) : null;
          return penalty ? (tf.add(scaled, penalty) as tf.Scalar) : scaled;
        }, p.allVars);
        const prev: tf.NamedTensorMap | null = sum;
        // From here the step owns the grads (the running sum, or the first micro-batch's).
        sum = prev ? tf.tidy(() => Object.fromEntries(Object.keys(prev).map((k) => [k, tf.add(prev[k]!, grads[k]!)]))) : grads;
        if (prev) tf.dispose([prev, grads]);
        try {
          const [lv, cv] = await Promise.all([value.data(), correctT!.data()]);
          loss += lv[0]!;
          correct += cv[0]!;
        } finally {
          value.dispose();
        }
      } finally {
        tf.dispose([x, labels]);
        correctT?.dispose();
        weights?.dispose();
      }
      if (m + micro < idx.length) await yieldToEventLoop();
    }
  } catch (error) {
    if (sum) tf.dispose(sum);
    throw error;
  }
  return { grads: sum!, loss, correct };
}

/** Plain cross-entropy and accuracy on the validation set (inference mode everywhere). */
export async function evaluate(p: { net: Pick<StageNet, 'head' | 'top'>; val: LabelledImages; features: Float32Array | null; input: BatchInput; numClasses: number }): Promise<{ loss: number; acc: number }> {
  const { val, net } = p;
  let lossSum = 0;
  let correct = 0;
  const n = val.labels.length;
  for (let start = 0; start < n; start += EVAL_BATCH) {
    const idx = range(start, Math.min(n, start + EVAL_BATCH));
    const [l, c] = tf.tidy(() => {
      const x = p.input(val, p.features, idx, false);
      const emb = net.top ? (net.top.apply(x, { training: false }) as tf.Tensor) : x;
      const logits = headLogits(net.head, emb, false);
      const labels = tf.tensor1d(val.labels.subarray(start, start + idx.length), 'int32');
      const loss = tf.mul(classificationLoss(logits, labels, { numClasses: p.numClasses }), idx.length);
      return [loss, tf.sum(tf.equal(tf.argMax(logits, -1), labels))];
    });
    const [lv, cv] = await Promise.all([l!.data(), c!.data()]);
    l!.dispose();
    c!.dispose();
    lossSum += lv[0]!;
    correct += cv[0]!;
    await yieldToEventLoop();
  }
  return { loss: lossSum / n, acc: correct / n };
}
