// Early stopping within one stage (Keras' EarlyStopping: `patience` epochs without an
// improvement larger than `minDelta` end it). Its state is two numbers, saved with the run so a
// resumed stage stops at the same epoch as an uninterrupted one.
import type { Hyperparameters } from '@finetune/core';

export interface EarlyStoppingState {
  /** The best monitored value so far this stage; null before the first epoch. */
  best: number | null;
  /** Epochs since it last improved. */
  wait: number;
}

export interface EpochMetrics {
  trainLoss: number;
  trainAcc: number;
  valLoss: number | null;
  valAcc: number | null;
}

export class EarlyStopping {
  private best: number | null;
  private wait: number;

  constructor(
    private readonly config: Hyperparameters['earlyStopping'],
    state: EarlyStoppingState = { best: null, wait: 0 },
  ) {
    this.best = state.best;
    this.wait = state.wait;
  }

  /** Records an epoch; true when the stage should end after it. Never true without a config. */
  update(m: EpochMetrics): boolean {
    if (!this.config) return false;
    const { monitor, patience, minDelta } = this.config;
    // A val_ monitor falls back to the training metric when there is no validation set.
    const useVal = monitor.startsWith('val_') && m.valLoss !== null && m.valAcc !== null;
    const isLoss = monitor.endsWith('loss');
    const value = isLoss ? (useVal ? m.valLoss! : m.trainLoss) : useVal ? m.valAcc! : m.trainAcc;
    const sign = isLoss ? -1 : 1; // maximise sign × value
    if (this.best === null || sign * (value - this.best) > minDelta) {
      this.best = value;
      this.wait = 0;
      return false;
    }
    return ++this.wait >= patience;
  }

  state(): EarlyStoppingState {
    return { best: this.best, wait: this.wait };
  }
}
