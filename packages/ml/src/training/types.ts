// The engine's public shapes: what trainClassifier takes, reports per epoch and returns.
import type { Hyperparameters, Strategy } from '@finetune/core';
import type { tf } from '../backend.ts';
import type { SerializedModel } from '../export.ts';
import type { BaseModel } from '../zoo.ts';
import type { BatchEvent } from './epoch.ts';
import type { LearningRateFinderResult } from './lr-finder.ts';

export interface LabelledImages {
  /**
   * Each image RGB uint8 (0..255), inputSize × inputSize × 3, row-major HWC. Empty until
   * `TrainClassifierOptions.loadImages` has filled it, when the caller defers decoding.
   */
  images: Uint8Array[];
  /** One class id per sample: the split's size. */
  labels: Int32Array;
}

export interface EpochReport {
  /** 1-based, global across stages. */
  epoch: number;
  /** 1-based stage (progressive_unfreezing only). */
  stage?: number;
  /** Mean optimised loss over the epoch's batches (class weights, label smoothing, l2 included). */
  trainLoss: number;
  trainAcc: number;
  /** Plain cross-entropy on the validation set (no smoothing, no weights); null without one. */
  valLoss: number | null;
  valAcc: number | null;
  /** The head's learning rate this epoch. */
  learningRate: number;
  /** The base layers' rate this epoch (learningRate × baseLearningRateMultiplier); null when no base layer trains. */
  baseLearningRate: number | null;
  durationMs: number;
  isBest: boolean;
  /** Base layers (with weights) that trained this epoch. */
  trainableLayers: string[];
}

export interface CheckpointData extends SerializedModel {
  /** The cut the checkpoint starts at: its model takes that layer's output (or the image). */
  cutLayer: string;
}

export interface EpochEvent extends EpochReport {
  /** Serialises the current trainable part (unfrozen top + head, this epoch's weights) as a
   * standard layers model: cut features → probabilities. Valid only during the callback. */
  checkpoint: () => Promise<CheckpointData>;
  /** The complete training state after this epoch (weights, optimizer moments, schedule and
   * early-stopping position, RNG states, best epoch, history) as one self-contained blob for
   * `resumeFrom`. Valid only during the callback. */
  state: () => Promise<Uint8Array>;
}

export interface TrainClassifierOptions {
  strategy: Strategy;
  /** image → embedding: a zoo base or baseFromTrainedModel(...). Never modified or disposed. */
  base: BaseModel;
  inputSize: number;
  train: LabelledImages;
  val: LabelledImages | null;
  /** Class names; class id i is labels[i]. */
  labels: string[];
  hyperparameters: Hyperparameters;
  /**
   * Memo for frozen-part outputs (N × prod(cut shape) float32, in image order). `cut` is the
   * layer whose output is cached (the base's output layer for feature_extraction/prototype).
   * The key says nothing about the base model, the dataset or the split: the caller adds those.
   */
  frozenFeatures?: (key: { cut: string; split: 'train' | 'val' }, compute: () => Promise<Float32Array>) => Promise<Float32Array>;
  /**
   * Deferred decoding: when given, `train.images` and `val.images` may stay empty until this
   * fills them (in `labels` order). The engine calls it once, the first time something needs
   * pixels (a `frozenFeatures` miss, augmentation, a cut below the cached features, scratch);
   * a run whose features all come from `frozenFeatures` never decodes an image.
   */
  loadImages?: () => Promise<void>;
  /** learningRate "auto": called once the range test has chosen the rate, before the first epoch
   * (not on a resume: the state carries the result). */
  onLearningRateFinder?: (result: LearningRateFinderResult) => Promise<void>;
  /** Called for the epochs trained by this call only (not for those restored by `resumeFrom`). */
  onEpochEnd?: (e: EpochEvent) => Promise<void>;
  /** After every training batch: the epoch in progress (1-based, across stages) and its running figures. */
  onBatchEnd?: (e: BatchEvent & { epoch: number; stage: number }) => void;
  /** Checked after every batch; true → stop (a partial epoch is discarded). */
  shouldStop?: () => boolean | Promise<boolean>;
  /**
   * A blob from `EpochEvent.state()` of an earlier call with the same strategy, hyperparameters,
   * labels and train/val sizes: training continues after that epoch and ends with what an
   * uninterrupted run would have produced. A blob from other options, or a damaged one, throws.
   */
  resumeFrom?: Uint8Array;
}

export interface TrainClassifierResult {
  /** image → probabilities with the best epoch's weights. The caller disposes it. */
  model: tf.LayersModel;
  /** 0 when no epoch completed. */
  bestEpoch: number;
  /** Restored epochs included. */
  epochsRun: number;
  /** shouldStop returned true. */
  stopped: boolean;
  stoppedEarly: boolean;
  /** Base layers that trained in any stage (empty for feature_extraction and prototype). */
  trainableLayers: string[];
  /** Every epoch, restored ones included. */
  history: EpochReport[];
  /**
   * Images per forward + backward pass: the largest that fits the backend's memory, the
   * smallest over the stages this call trained (micro-batch.ts). Below batchSize, each step
   * summed the gradients of several micro-batches. Absent for prototype (no gradient step).
   */
  microBatchSize?: number;
  /** learningRate "auto": the range test (restored from the state on a resume); null otherwise. */
  learningRateFinder?: LearningRateFinderResult | null;
}
