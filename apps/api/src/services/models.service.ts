import type { Readable } from 'node:stream';
import yazl from 'yazl';
import { DomainError, isDomainError, NotFoundError } from '@finetune/core';
import type { Model } from '@finetune/db';
import { decodeImage, InferenceWorkerLost, scoreOutputs, type CalibrationReport } from '@finetune/ml';
import { keys } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';
import { MODEL_PAGE_FILES } from '../model-page/index.ts';
import type { ModelCache } from './model-cache.ts';
import type { PredictBatcher } from './predict-batcher.ts';

/** The files of an exported model, as stored under models/<id>/. */
export const MODEL_FILES = ['model.json', 'weights.bin', 'labels.json', 'metadata.json'] as const;

/** What the download zip holds: the model's files, then a page that runs it in a browser. */
export const DOWNLOAD_FILES: readonly string[] = [...MODEL_FILES, ...Object.keys(MODEL_PAGE_FILES)];

export async function getModel(deps: AppDeps, tenantId: string, id: string): Promise<Model> {
  const model = await deps.models.get(tenantId, id);
  if (!model) throw new NotFoundError('model', id);
  return model;
}

export function presentModel(model: Model) {
  return {
    id: model.id,
    jobId: model.jobId,
    baseModel: model.baseModel,
    strategy: model.strategy,
    labels: model.labels,
    inputSize: model.inputSize,
    input: { shape: [null, model.inputSize, model.inputSize, 3], scale: '[0, 1] (pixel / 255), RGB' },
    metrics: model.metrics,
    // Validation (what the best epoch was chosen on) and test (held out from every choice) apart.
    evaluation: model.evaluation,
    testEvaluation: model.testEvaluation,
    targetEvaluation: model.targetEvaluation,
    evaluationNote: model.evaluationNote,
    calibration: model.calibration as unknown as CalibrationReport | null,
    confidenceThreshold: model.confidenceThreshold,
    // compareWithScratch: accuracy minus the scratch baseline's, on the same held-out split
    // (test when there is one). Negative means the pretrained start did worse than random
    // initialisation. Models from before the split was recorded measured it on validation.
    scratchAccuracy: model.scratchAccuracy,
    transferGain: model.transferGain,
    transferGainSplit: (model.transferGainSplit ?? (model.transferGain === null ? null : 'validation')) as 'test' | 'validation' | null,
    negativeTransfer: model.transferGain === null ? null : model.transferGain < 0,
    files: DOWNLOAD_FILES,
    sizeBytes: Number(model.sizeBytes),
    createdAt: model.createdAt.toISOString(),
  };
}

/**
 * Deletes a model: its row first (it stops being listed, served or counted at once), then its
 * objects; the job that trained it stays, with no model. Another tenant's model is a 404.
 */
export async function deleteModel(deps: AppDeps, cache: ModelCache, tenantId: string, id: string): Promise<void> {
  const model = await deps.models.delete(tenantId, id);
  if (!model) throw new NotFoundError('model', id);
  cache.forget(model.id);
  await deps.store.deletePrefix(model.storagePrefix);
}

/** Sets or clears (null) a model's confidence threshold; another tenant's model is a 404. */
export async function setConfidenceThreshold(deps: AppDeps, tenantId: string, id: string, threshold: number | null): Promise<Model> {
  const model = await deps.models.setConfidenceThreshold(tenantId, id, threshold);
  if (!model) throw new NotFoundError('model', id);
  return model;
}

/**
 * A zip of the model's files, streamed from S3 entry by entry (never whole in memory), and of the
 * page that classifies images with them in a browser (read from disk as the zip is written).
 * metadata.json, written at training, gets the model's current confidence threshold (it can
 * change after training), so the page answers "unknown" where /predict does.
 */
export async function downloadModel(deps: AppDeps, tenantId: string, id: string): Promise<Readable> {
  const model = await getModel(deps, tenantId, id);
  const zip = new yazl.ZipFile();
  for (const file of MODEL_FILES) {
    if (file === 'metadata.json') {
      const stored = await deps.store.getBuffer(keys.modelFile(model.id, file));
      const metadata = JSON.parse(stored.toString('utf8')) as Record<string, unknown>;
      // Unchanged since training: the stored bytes, exactly as counted in the model's size.
      const current = (metadata.confidenceThreshold ?? null) === model.confidenceThreshold;
      zip.addBuffer(current ? stored : Buffer.from(JSON.stringify({ ...metadata, confidenceThreshold: model.confidenceThreshold }, null, 2)), file);
      continue;
    }
    const stream = await deps.store.getStream(keys.modelFile(model.id, file));
    zip.addReadStream(stream, file, { compress: file !== 'weights.bin' });
  }
  for (const [name, path] of Object.entries(MODEL_PAGE_FILES)) zip.addFile(path, name);
  zip.end();
  return zip.outputStream as Readable;
}

export const MAX_PREDICT_INSTANCES = 32;

/**
 * Classifies up to MAX_PREDICT_INSTANCES images. Scores are calibrated (the model's temperature,
 * when it has one); below `threshold` — the request's, else the model's confidenceThreshold — a
 * prediction's label is "unknown". Images are decoded and checked here, per request; only then
 * does the forward pass go through the batcher, which may share it with concurrent requests.
 */
export async function predict(deps: AppDeps, cache: ModelCache, batcher: PredictBatcher, tenantId: string, id: string, images: Buffer[], threshold?: number) {
  const timer = cache.metrics?.predictSeconds.startTimer();
  const model = await getModel(deps, tenantId, id);
  if (images.length === 0) throw new DomainError('no_instances', 'send one image (multipart field "file") or {"instances": [{"b64": …}]}', 400);
  if (images.length > MAX_PREDICT_INSTANCES) {
    throw new DomainError('too_many_instances', `at most ${MAX_PREDICT_INSTANCES} instances per request`, 400);
  }
  const pixels = await Promise.all(
    images.map(async (image, i) => {
      try {
        return await decodeImage(image, model.inputSize, { maxPixels: deps.config.limits.imagePixels });
      } catch (error) {
        // A format we do not take at all (SVG, …) is refused before decoding: 415.
        if (isDomainError(error)) throw new DomainError(error.code, `instance ${i}: ${error.message}`, error.status);
        throw new DomainError('invalid_image', `instance ${i} is not a decodable image: ${(error as Error).message}`, 422);
      }
    }),
  );
  const layers = await cache.get(model.id, async () => ({
    modelJson: await deps.store.getBuffer(keys.modelFile(model.id, 'model.json')),
    weights: await deps.store.getBuffer(keys.modelFile(model.id, 'weights.bin')),
  }));
  const temperature = (model.calibration as { temperature?: number } | null)?.temperature ?? 1;
  const scoring = { temperature, threshold: threshold ?? model.confidenceThreshold };
  const predictions = scoreOutputs(await forward(batcher, layers, pixels), model.labels, Math.min(5, model.labels.length), scoring);
  timer?.();
  return predictions;
}

/** The batcher's forward pass; a pool worker that died holding the run is a 503 (the request may be retried). */
async function forward(batcher: PredictBatcher, layers: Parameters<PredictBatcher['forward']>[0], pixels: Float32Array[]) {
  try {
    return await batcher.forward(layers, pixels);
  } catch (error) {
    if (error instanceof InferenceWorkerLost) throw new DomainError('inference_unavailable', `the prediction could not be completed: ${error.message}; retry the request`, 503);
    throw error;
  }
}
