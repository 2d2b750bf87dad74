// Optimizers by name, with a per-epoch learning rate and AdamW's decoupled weight decay, and
// their state (moments, iterations) as values so a run can resume mid-stage.
import type { Hyperparameters } from '@finetune/core';
import { tf } from '../backend.ts';
import type { TensorData } from './training-state.ts';
import { tensorData, tensorFrom } from './weights.ts';

/**
 * sgd: plain SGD, or momentum (optionally Nesterov) when momentum > 0. adam / adamw: tfjs Adam
 * (beta1 0.9, beta2 0.999; adamw adds decay via applyDecoupledWeightDecay). rmsprop: rho 0.9,
 * no momentum (the Keras and PyTorch default; `momentum` is the SGD setting).
 */
export function makeOptimizer(hp: Pick<Hyperparameters, 'optimizer' | 'momentum' | 'nesterov'>, learningRate: number): tf.Optimizer {
  switch (hp.optimizer) {
    case 'sgd':
      return hp.momentum > 0 ? tf.train.momentum(learningRate, hp.momentum, hp.nesterov) : tf.train.sgd(learningRate);
    case 'adam':
    case 'adamw':
      return tf.train.adam(learningRate, 0.9, 0.999);
    case 'rmsprop':
      return tf.train.rmsprop(learningRate, 0.9, 0);
    default:
      throw new Error(`unknown optimizer ${String(hp.optimizer)}`);
  }
}

/**
 * Changes an optimizer's learning rate in place, keeping its state (moments, iterations).
 * SGD and Momentum precompute −lr as a kept scalar (setLearningRate replaces it); Adam and
 * RMSProp read `this.learningRate` on every step.
 */
export function setLearningRate(optimizer: tf.Optimizer, learningRate: number): void {
  const o = optimizer as unknown as { setLearningRate?: (lr: number) => void; learningRate: number };
  if (typeof o.setLearningRate === 'function') o.setLearningRate(learningRate);
  else o.learningRate = learningRate;
}

/**
 * Sets SGD momentum in place (one_cycle's momentum cycling). Only the Momentum optimizer has
 * one: plain SGD, Adam (beta1 stays 0.9 — tfjs keeps Adam's bias correction as a running
 * product of one beta1) and RMSProp are left as they are.
 */
export function setMomentum(optimizer: tf.Optimizer, momentum: number): void {
  if (optimizer.getClassName() !== 'Momentum') return;
  // tfjs' setMomentum only records the number; its update reads the scalar `m` made in the
  // constructor, so that scalar is what must change.
  const o = optimizer as unknown as { momentum: number; m: tf.Scalar };
  if (o.momentum === momentum) return;
  o.m.dispose();
  o.momentum = momentum;
  o.m = tf.keep(tf.scalar(momentum));
}

/** AdamW (Loshchilov & Hutter): after the Adam step, p ← p − lr · wd · p for every variable. */
export function applyDecoupledWeightDecay(variables: tf.Variable[], learningRate: number, weightDecay: number): void {
  if (weightDecay <= 0 || variables.length === 0) return;
  const factor = 1 - learningRate * weightDecay;
  tf.tidy(() => {
    for (const v of variables) v.assign(tf.mul(v, factor));
  });
}

/**
 * Disposes an optimizer and everything it holds. tfjs' MomentumOptimizer.dispose does not call
 * SGD's, so the kept −lr scalar (`c`) would leak one tensor per optimizer.
 */
export function disposeOptimizer(optimizer: tf.Optimizer): void {
  optimizer.dispose();
  const c = (optimizer as unknown as { c?: tf.Tensor }).c;
  if (c && !c.isDisposed) c.dispose();
}

/**
 * Slots per variable in the order tfjs' getWeights lists them (after the iteration count):
 * Adam m…, v…; Momentum accumulations…; RMSProp mean squares…, moments… (…, mean grads… when
 * centered); SGD none. tfjs matches slots to variables by position in applyGradients' list,
 * not by name (names are numbered per process), so a restore must feed the same variable order.
 */
function slotsPerVariable(optimizer: tf.Optimizer): number {
  switch (optimizer.getClassName()) {
    case 'Adam':
      return 2;
    case 'Momentum':
      return 1;
    case 'RMSProp':
      return (optimizer as unknown as { centered: boolean }).centered ? 3 : 2;
    case 'SGD':
      return 0;
    default:
      throw new Error(`cannot save the state of a ${optimizer.getClassName()} optimizer`);
  }
}

/** Adam's running beta^t products: setWeights recomputes them with pow(), which differs from
 * the repeated float32 products in the last bits, so they are saved as they are. */
type AdamInternals = { accBeta1: tf.Variable; accBeta2: tf.Variable };

/**
 * The optimizer's state as values: [iterations (int32 scalar), …slots in getWeights order,
 * (Adam) accBeta1, accBeta2]. Empty slots before the first step.
 */
export async function optimizerState(optimizer: tf.Optimizer): Promise<TensorData[]> {
  const named = await optimizer.getWeights();
  try {
    const out = await Promise.all(named.map((w) => tensorData(w.tensor)));
    if (optimizer.getClassName() === 'Adam') {
      const o = optimizer as unknown as AdamInternals;
      out.push(await tensorData(o.accBeta1), await tensorData(o.accBeta2));
    }
    return out;
  } finally {
    named[0]?.tensor.dispose(); // the iteration count is a fresh scalar; the slots are the optimizer's own
  }
}

/**
 * Loads what optimizerState saved into a fresh optimizer of the same kind that will update
 * `variables` (in the order the training loop passes them). Checks counts and shapes first.
 */
export async function restoreOptimizerState(optimizer: tf.Optimizer, variables: tf.Variable[], saved: TensorData[]): Promise<void> {
  const perVariable = slotsPerVariable(optimizer);
  const adam = optimizer.getClassName() === 'Adam';
  const slots = perVariable * variables.length;
  const expected = 1 + slots + (adam ? 2 : 0);
  if (saved.length !== expected) {
    throw new Error(`training state: ${saved.length} optimizer tensors for a ${optimizer.getClassName()} over ${variables.length} variables; expected ${expected}`);
  }
  saved.forEach((s, i) => {
    const shape = i === 0 || i > slots ? [] : variables[(i - 1) % variables.length]!.shape;
    const dtype = i === 0 ? 'int32' : 'float32';
    if (s.dtype !== dtype || s.shape.join('x') !== shape.join('x')) {
      throw new Error(`training state: optimizer tensor ${i} is ${s.dtype}[${s.shape}]; expected ${dtype}[${shape}]`);
    }
  });
  const tensors = saved.slice(0, 1 + slots).map((s, i) => ({ name: i === 0 ? 'iter' : `slot_${i}`, tensor: tensorFrom(s) }));
  try {
    // setWeights wraps each tensor in a new variable sharing its data, so ours can go.
    await optimizer.setWeights(tensors);
  } finally {
    tensors.forEach((t) => t.tensor.dispose());
  }
  if (adam) {
    const o = optimizer as unknown as AdamInternals;
    tf.tidy(() => {
      o.accBeta1.assign(tensorFrom(saved[1 + slots]!) as tf.Scalar);
      o.accBeta2.assign(tensorFrom(saved[2 + slots]!) as tf.Scalar);
    });
  }
}
