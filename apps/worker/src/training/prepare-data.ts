import { join } from 'node:path';
import { datasetZipLimits, DomainError, type Config, type Hyperparameters } from '@finetune/core';
import { decodeImageBytes, indexDatasetZip, readZipEntries, stratifiedSplit } from '@finetune/ml';
import type { ObjectStore } from '@finetune/storage';
import type { RunTimings } from './run-timings.ts';

export interface SplitImages {
  /** RGB uint8, inputSize × inputSize × 3 each (a quarter of the float size in memory). */
  images: Uint8Array[];
  targets: Int32Array;
  /** Archive paths: stable ids for the cache key and for the evaluation's error list. */
  ids: string[];
}

export interface PreparedData {
  labels: string[];
  train: SplitImages;
  val: SplitImages | null;
  skipped: number;
}

/**
 * Downloads a dataset archive, splits it (its own val/ folder, or a stratified seeded split)
 * and decodes every image at the base's input size. Corrupt images are counted and skipped.
 */
export async function prepareData(
  store: ObjectStore,
  config: Config,
  storageKey: string,
  workDir: string,
  inputSize: number,
  hp: Pick<Hyperparameters, 'validationSplit' | 'seed'>,
  isCanceled: () => boolean,
  timings?: RunTimings,
): Promise<PreparedData> {
  const zipPath = join(workDir, 'source.zip');
  const downloaded = performance.now();
  await store.downloadToFile(storageKey, zipPath);
  timings?.add('download', performance.now() - downloaded);
  const decoding = performance.now();
  const { limits } = config;
  const zipLimits = datasetZipLimits(limits);
  const index = await indexDatasetZip(zipPath, zipLimits);
  const bytesNeeded = index.entries.length * inputSize * inputSize * 3;
  if (bytesNeeded > limits.trainingImageBytes) {
    throw new DomainError(
      'dataset_too_large',
      `${index.entries.length} images at ${inputSize}px need ${bytesNeeded} bytes in memory; the limit is ${limits.trainingImageBytes} (MAX_TRAINING_IMAGE_BYTES)`,
      422,
    );
  }
  const labels = index.classes;
  const labelIndex = new Map(labels.map((label, i) => [label, i]));
  const splitOf = new Map<string, 'train' | 'val'>();
  if (index.entries.some((e) => e.split === 'val')) {
    for (const e of index.entries) splitOf.set(e.path, e.split);
  } else {
    const { val } = stratifiedSplit(index.entries.map((e) => labelIndex.get(e.label)!), hp.validationSplit, hp.seed);
    const valSet = new Set(val);
    index.entries.forEach((e, i) => splitOf.set(e.path, valSet.has(i) ? 'val' : 'train'));
  }

  const collected = { train: { images: [] as Uint8Array[], targets: [] as number[], ids: [] as string[] }, val: { images: [] as Uint8Array[], targets: [] as number[], ids: [] as string[] } };
  const labelOf = new Map(index.entries.map((e) => [e.path, labelIndex.get(e.label)!]));
  let skipped = 0;
  await readZipEntries(zipPath, new Set(labelOf.keys()), zipLimits, async (path, data) => {
    if (isCanceled()) return;
    try {
      const image = await decodeImageBytes(data, inputSize, { maxPixels: limits.imagePixels });
      const split = collected[splitOf.get(path) ?? 'train'];
      split.images.push(image);
      split.targets.push(labelOf.get(path)!);
      split.ids.push(path);
    } catch {
      skipped += 1; // corrupt or unsupported image: counted on the job, not fatal
    }
  });

  const missing = labels.filter((_, i) => !collected.train.targets.includes(i));
  if (missing.length > 0 && !isCanceled()) {
    throw new DomainError('empty_class', `no decodable training image for class(es): ${missing.join(', ')}`, 422);
  }
  const finish = (s: (typeof collected)['train']): SplitImages => ({ images: s.images, targets: Int32Array.from(s.targets), ids: s.ids });
  timings?.add('decode', performance.now() - decoding);
  return {
    labels,
    train: finish(collected.train),
    val: collected.val.images.length > 0 ? finish(collected.val) : null,
    skipped,
  };
}
