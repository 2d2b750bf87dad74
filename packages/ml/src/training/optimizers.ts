// Optimizers by name, with a per-epoch learning rate and AdamW's decoupled weight decay.
import type { Hyperparameters } from '@finetune/core';
import { tf } from '../backend.ts';

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
