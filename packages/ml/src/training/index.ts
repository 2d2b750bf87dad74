export {
  trainClassifier,
  planStages,
  MAX_FEATURE_CACHE_BYTES,
  type TrainClassifierOptions,
  type TrainClassifierResult,
  type EpochReport,
  type EpochEvent,
  type CheckpointData,
  type LabelledImages,
} from './train-classifier.ts';
export type { BatchEvent } from './epoch.ts';
export { TrainingStateError, TRAINING_STATE_FORMAT } from './training-state.ts';
export { learningRateForEpoch, defaultStageEpochs, oneCycleAt, ONE_CYCLE_DEFAULTS } from './schedule.ts';
export { baseBlocks, baseRateFactors } from './stages.ts';
export { rangeTest, rangeTestRate, suggestLearningRate, valleyIndex, RANGE_TEST, type LearningRateFinderResult } from './lr-finder.ts';
export { registerTrainingGradients } from './gradients.ts';
export { makeOptimizer, setLearningRate, applyDecoupledWeightDecay, disposeOptimizer } from './optimizers.ts';
export { augmentBatch, augmentationTransform, augmentationEnabled, type Augmentation } from './augment.ts';
export { buildClassifierHead, headLogits, classificationLoss, classWeightVector, l2Penalty, LOGITS_LAYER, SOFTMAX_LAYER } from './head.ts';
export { buildPrototypeHead, classPrototypes, PROTOTYPE_SCALE } from './prototype.ts';
export {
  HEAD_PREFIX,
  layerGraph,
  cutTensorAt,
  validCuts,
  resolveUnfreeze,
  frozenCut,
  inputCut,
  rebuild,
  applyCopies,
  cloneLayer,
  baseFromTrainedModel,
  hashSeed,
  type LayerGraph,
  type Cut,
} from './surgery.ts';
export { planMicroBatch, memoryBudget, currentBackend, type MicroBatchPlan, type MemoryBudget } from './micro-batch.ts';
export { warmUpTraining } from './warm-up.ts';
export {
  batchNormLayers,
  estimateBatchNormStatistics,
  planStatisticsPass,
  requireBatchNormalization,
  STATISTICS_BATCH,
  readBatchNormStatistics,
  writeBatchNormStatistics,
  type BatchNormStatistics,
} from './batch-norm-statistics.ts';
