import type { Readable } from 'node:stream';
import yazl from 'yazl';
import { DomainError, isDomainError, NotFoundError } from '@finetune/core';
import type { Model } from '@finetune/db';
import { decodeImage, predictImages } from '@finetune/ml';
import { keys } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';
import { MODEL_PAGE_FILES } from '../model-page/index.ts';
import type { ModelCache } from './model-cache.ts';

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
    evaluation: model.evaluation,
    // compareWithScratch: accuracy minus the scratch baseline's, on the same validation split.
    // Negative means the pretrained start did worse than random initialisation.
    scratchAccuracy: model.scratchAccuracy,
    transferGain: model.transferGain,
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

/**
 * A zip of the model's files, streamed from S3 entry by entry (never whole in memory), and of the
 * page that classifies images with them in a browser (read from disk as the zip is written).
 */
export async function downloadModel(deps: AppDeps, tenantId: string, id: string): Promise<Readable> {
  const model = await getModel(deps, tenantId, id);
  const zip = new yazl.ZipFile();
  for (const file of MODEL_FILES) {
    const stream = await deps.store.getStream(keys.modelFile(model.id, file));
    zip.addReadStream(stream, file, { compress: file !== 'weights.bin' });
  }
  for (const [name, path] of Object.entries(MODEL_PAGE_FILES)) zip.addFile(path, name);
  zip.end();
  return zip.outputStream as Readable;
}

export const MAX_PREDICT_INSTANCES = 32;

export async function predict(deps: AppDeps, cache: ModelCache, tenantId: string, id: string, images: Buffer[]) {
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
  const predictions = await predictImages(layers, pixels, model.inputSize, model.labels, Math.min(5, model.labels.length));
  timer?.();
  return predictions;
}
