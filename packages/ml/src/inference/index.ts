export {
  forwardImages,
  frozenEngine,
  engineChoice,
  tfjsEngine,
  type EngineName,
  type EngineChoice,
  type ForwardOptions,
  type ForwardResult,
  type ImageBatch,
} from './runner.ts';
export { InferencePool, InferenceWorkerLost, poolThreads, type InferencePoolOptions, type PooledModel } from './pool.ts';
