export { initBackend, activeBackend, wasmBackendThreads, tf, type BackendName } from './backend.ts';
export { loadBaseModel, loadModelFromUrl, buildSmallCnn, zooTensorCount, type BaseModel } from './zoo.ts';
export { decodeImage, decodeImageBytes, isImagePath, IMAGE_EXTENSIONS, DEFAULT_MAX_PIXELS, type DecodeOptions } from './images.ts';
export {
  indexDatasetZip,
  readZipEntries,
  inspectDatasetZip,
  type ZipLimits,
  type DatasetIndex,
  type DatasetEntry,
  type DatasetSplit,
  type DatasetSummary,
  type DatasetKind,
} from './dataset-zip.ts';
export {
  runDataChecks,
  imageFacts,
  type DataReport,
  type Finding,
  type Severity,
  type ImageFacts,
  type DataCheckInput,
} from './data-checks.ts';
export { computeEmbeddings } from './embed.ts';
export { mlThreads, wasmThreads } from './threads.ts';
export {
  forwardImages,
  frozenEngine,
  engineChoice,
  InferencePool,
  InferenceWorkerLost,
  poolThreads,
  type InferencePoolOptions,
  type PooledModel,
  type EngineName,
  type EngineChoice,
  type ForwardOptions,
  type ForwardResult,
  type ImageBatch,
} from './inference/index.ts';
export { convertToOnnx, type OnnxConversion } from './onnx/index.ts';
export { mulberry32, type Random } from './random.ts';
export { serializeModel, loadModelFromFiles, type SerializedModel } from './export.ts';
export { buildCustomBase, customBaseFromTopology, parseModelJson, checkWeightBytes, singleShardModelJson, type CustomBase, type CustomBaseFacts, type CustomBaseOptions, type ParsedModelJson } from './custom-base.ts';
export { modelFromTopology } from './topology.ts';
export { readBaseModelZip, type BaseModelFiles, type BaseModelZipLimits } from './base-model-zip.ts';
export { predictImages, predictProbabilities, scoreOutputs, UNKNOWN_LABEL, type Prediction, type Scoring } from './predict.ts';
export { probabilitiesFromEmbeddings } from './head-probabilities.ts';
export { evaluateClassifier, type Evaluation, type ClassReport, type ConfidentError } from './evaluation.ts';
export { stratifiedSplit, heldOutSplit } from './split.ts';
export {
  calibrate,
  applyTemperature,
  expectedCalibrationError,
  fitTemperature,
  TEMPERATURE_RANGE,
  type CalibrationReport,
  type CalibrationError,
  type ReliabilityBin,
} from './calibration.ts';
export * from './training/index.ts';
export { verifyGpu, GpuUnavailableError, TFJS_GPU_LIBRARIES } from './gpu.ts';
