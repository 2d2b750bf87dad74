import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { datasetZipLimits, DomainError, type Config, type Hyperparameters } from '@finetune/core';
import { decodeImageBytes, heldOutSplit, indexDatasetZip, mulberry32, readZipEntries, type ZipLimits } from '@finetune/ml';
import type { ObjectStore } from '@finetune/storage';
import type { RunTimings } from './run-timings.ts';

/** Images decoded at once: sharp runs on libuv's pool (4 threads by default), one image per call. */
const DECODE_CONCURRENCY = Math.max(2, availableParallelism());

export interface SplitImages {
  /**
   * RGB uint8, inputSize × inputSize × 3 each (a quarter of the float size in memory). Empty
   * until `PreparedData.decode` has run when the preparation deferred decoding.
   */
  images: Uint8Array[];
  targets: Int32Array;
  /** Archive paths: stable ids for the cache key and for the evaluation's error list. */
  ids: string[];
}

export interface PreparedData {
  labels: string[];
  train: SplitImages;
  val: SplitImages | null;
  /** Held out for the test metrics: never trained on, never used to pick an epoch or a temperature. */
  test: SplitImages | null;
  skipped: number;
  /** Archive paths that did not decode (counted in `skipped`), in archive order. */
  unreadable: string[];
  /** False when the images are not decoded yet (see `decode`). */
  decoded: boolean;
  /** Decodes the images into the splits (once; at once when already decoded). */
  decode: () => Promise<void>;
}

/** The archive on disk, its classes, and which split every image belongs to: no pixels yet. */
export interface DatasetListing {
  zipPath: string;
  labels: string[];
  /** Every image the index lists, in archive order, with its split and class id. */
  entries: { path: string; split: ListedSplit; target: number }[];
}

type ListedSplit = 'train' | 'val' | 'test';

interface Decoding {
  config: Config;
  inputSize: number;
  timings?: RunTimings | undefined;
}

/**
 * Downloads a dataset archive, reads its index and splits it: the archive's own val/ and test/
 * folders, else stratified seeded parts of its training images (validationSplit, testSplit —
 * each ignored when the archive has the folder). The split depends on the listing only, never on
 * which images decode, so a run that finds all its features in the embedding cache needs no pixels.
 */
export async function listDataset(
  store: ObjectStore,
  config: Config,
  storageKey: string,
  workDir: string,
  inputSize: number,
  hp: Pick<Hyperparameters, 'validationSplit' | 'testSplit' | 'seed'>,
  timings?: RunTimings,
  fileName = 'source.zip',
): Promise<DatasetListing> {
  const zipPath = join(workDir, fileName);
  const downloaded = performance.now();
  await store.downloadToFile(storageKey, zipPath);
  timings?.add('download', performance.now() - downloaded);
  const { limits } = config;
  const index = await indexDatasetZip(zipPath, datasetZipLimits(limits));
  const listed = index.entries;
  const bytesNeeded = listed.length * inputSize * inputSize * 3;
  if (bytesNeeded > limits.trainingImageBytes) {
    throw new DomainError(
      'dataset_too_large',
      `${listed.length} images at ${inputSize}px need ${bytesNeeded} bytes in memory; the limit is ${limits.trainingImageBytes} (MAX_TRAINING_IMAGE_BYTES)`,
      422,
    );
  }
  const labels = index.classes;
  const labelIndex = new Map(labels.map((label, i) => [label, i]));
  const targets = listed.map((e) => labelIndex.get(e.label)!);
  // The archive's train images are the pool a missing val or test part is drawn from. With no
  // test part this is the same draw as before test splits existed: a job's validation set stays.
  const pool = listed.flatMap((e, i) => (e.split === 'train' ? [i] : []));
  const drawn = heldOutSplit(
    pool.map((i) => targets[i]!),
    {
      val: listed.some((e) => e.split === 'val') ? 0 : hp.validationSplit,
      // Specs stored before testSplit existed have none.
      test: listed.some((e) => e.split === 'test') ? 0 : (hp.testSplit ?? 0),
    },
    hp.seed,
  );
  const drawnSplit = new Map<number, ListedSplit>([...drawn.val.map((j) => [pool[j]!, 'val'] as const), ...drawn.test.map((j) => [pool[j]!, 'test'] as const)]);
  const splitOf = (i: number): ListedSplit => drawnSplit.get(i) ?? listed[i]!.split;
  return { zipPath, labels, entries: listed.map((e, i) => ({ path: e.path, split: splitOf(i), target: targets[i]! })) };
}

/** One listed image once it and every image before it in archive order have decoded (or failed to: null). */
export type DecodedImage = (path: string, split: ListedSplit, image: Uint8Array | null) => void;

/**
 * Decodes every listed image at the base's input size. Corrupt images are counted and skipped:
 * the splits hold the images that decoded. Stops reading early when `isCanceled` turns true.
 * `onDecoded` sees the images as the splits will hold them — in archive order, each as soon as
 * every image before it has settled — so work on them can start while later ones decode.
 */
export async function decodeDataset(listing: DatasetListing, decoding: Decoding, isCanceled: () => boolean, onDecoded?: DecodedImage): Promise<PreparedData> {
  // Work `onDecoded` starts meanwhile (the frozen forward pass) is its own phase, not decoding.
  return decoding.timings ? decoding.timings.within('decode', 'frozenForward', () => decodeAll(listing, decoding, isCanceled, onDecoded)) : decodeAll(listing, decoding, isCanceled, onDecoded);
}

async function decodeAll(listing: DatasetListing, decoding: Decoding, isCanceled: () => boolean, onDecoded: DecodedImage | undefined): Promise<PreparedData> {
  const collected = { train: emptySplit(), val: emptySplit(), test: emptySplit() };
  const byPath = new Map(listing.entries.map((e) => [e.path, e]));
  const unreadable: string[] = [];
  // Decoded side by side, placed in archive order: the splits' order is what seeds, shuffles and
  // resumes depend on, so it must not follow which decode finished first.
  const inOrder: Array<{ path: string; image: Uint8Array | null; settled: boolean }> = [];
  let announced = 0;
  await readZipEntries(
    listing.zipPath,
    new Set(byPath.keys()),
    zipLimits(decoding.config),
    async (path, bytes) => {
      if (isCanceled()) return;
      const slot = { path, image: null as Uint8Array | null, settled: false };
      inOrder.push(slot);
      try {
        slot.image = await decodeImageBytes(bytes, decoding.inputSize, { maxPixels: decoding.config.limits.imagePixels });
      } catch {
        // corrupt or unsupported image: counted on the job, not fatal
      }
      slot.settled = true;
      // The settled images at the front of the archive order that onDecoded has not seen yet.
      while (onDecoded && inOrder[announced]?.settled) {
        const { path: settled, image } = inOrder[announced++]!;
        onDecoded(settled, byPath.get(settled)!.split, image);
      }
    },
    undefined,
    { concurrency: DECODE_CONCURRENCY },
  );
  for (const { path, image } of inOrder) {
    if (!image) {
      unreadable.push(path);
      continue;
    }
    const entry = byPath.get(path)!;
    const split = collected[entry.split];
    split.images.push(image);
    split.targets.push(entry.target);
    split.ids.push(path);
  }
  if (!isCanceled()) requireEveryClass(listing.labels, collected.train.targets);
  return {
    labels: listing.labels,
    train: finish(collected.train),
    val: collected.val.ids.length > 0 ? finish(collected.val) : null,
    test: collected.test.ids.length > 0 ? finish(collected.test) : null,
    skipped: unreadable.length,
    unreadable,
    decoded: true,
    decode: () => Promise.resolve(),
  };
}

/**
 * The splits an earlier decoding of the same archive produced — the listing minus the images
 * it found unreadable — with their ids and targets but no pixels yet. `decode` reads them when
 * something needs them; an image that decoded before and fails now is an error, since the
 * splits (and what was trained on them) would no longer match.
 */
export function deferredDataset(listing: DatasetListing, unreadable: readonly string[], decoding: Decoding): PreparedData {
  const skip = new Set(unreadable);
  const collected = { train: emptySplit(), val: emptySplit(), test: emptySplit() };
  for (const e of listing.entries) {
    if (skip.has(e.path)) continue;
    collected[e.split].targets.push(e.target);
    collected[e.split].ids.push(e.path);
  }
  requireEveryClass(listing.labels, collected.train.targets);
  let decoded: Promise<void> | null = null;
  const data: PreparedData = {
    labels: listing.labels,
    train: finish(collected.train),
    val: collected.val.ids.length > 0 ? finish(collected.val) : null,
    test: collected.test.ids.length > 0 ? finish(collected.test) : null,
    skipped: listing.entries.filter((e) => skip.has(e.path)).length,
    unreadable: [...unreadable],
    decoded: false,
    decode: () => (decoded ??= decodeInto(listing, data, decoding)),
  };
  return data;
}

async function decodeInto(listing: DatasetListing, data: PreparedData, decoding: Decoding): Promise<void> {
  const started = performance.now();
  const slots = new Map<string, { split: SplitImages; at: number }>();
  for (const split of [data.train, data.val, data.test]) split?.ids.forEach((id, at) => slots.set(id, { split, at }));
  const images = new Map<SplitImages, Uint8Array[]>([[data.train, []]]);
  if (data.val) images.set(data.val, []);
  if (data.test) images.set(data.test, []);
  // Decoded side by side; each image goes to its listed slot, whichever finishes first.
  const decodeOne = async (path: string, bytes: Buffer) => {
    const slot = slots.get(path)!;
    let image: Uint8Array;
    try {
      image = await decodeImageBytes(bytes, decoding.inputSize, { maxPixels: decoding.config.limits.imagePixels });
    } catch (error) {
      throw new Error(`image ${path} decoded in an earlier run of this dataset but not now: ${(error as Error).message}`);
    }
    images.get(slot.split)![slot.at] = image;
  };
  await readZipEntries(listing.zipPath, new Set(slots.keys()), zipLimits(decoding.config), decodeOne, undefined, { concurrency: DECODE_CONCURRENCY });
  for (const [split, decoded] of images) {
    const missing = split.ids.find((_, i) => decoded[i] === undefined);
    if (missing !== undefined) throw new Error(`image ${missing} is listed but was not read from the archive`);
    split.images.push(...decoded);
  }
  data.decoded = true;
  decoding.timings?.add('decode', performance.now() - started);
}

/** Images of an unlabelled dataset, decoded, in archive order. */
export interface UnlabelledImages {
  images: Uint8Array[];
  ids: string[];
  /** Listed images left out of the sample (beyond maxImages). */
  notSampled: number;
  /** Sampled images that did not decode. */
  skipped: number;
}

/**
 * An unlabelled dataset's images (a domain-adaptation target): at most `maxImages` of them, a
 * sample drawn with `seed` (the same images on every run of a job), decoded at `inputSize` and
 * kept in archive order. Images that do not decode are counted and skipped.
 */
export async function decodeUnlabelled(
  store: ObjectStore,
  decoding: Decoding,
  storageKey: string,
  zipPath: string,
  sample: { maxImages: number; seed: number },
): Promise<UnlabelledImages> {
  const downloaded = performance.now();
  await store.downloadToFile(storageKey, zipPath);
  decoding.timings?.add('download', performance.now() - downloaded);
  const started = performance.now();
  const index = await indexDatasetZip(zipPath, zipLimits(decoding.config), 'unlabelled');
  const paths = index.entries.map((e) => e.path);
  const chosen = seededSample(paths.length, sample.maxImages, sample.seed);
  const wanted = new Set(chosen.map((i) => paths[i]!));
  const decoded = new Map<string, Uint8Array>();
  let skipped = 0;
  await readZipEntries(
    zipPath,
    wanted,
    zipLimits(decoding.config),
    async (path, bytes) => {
      try {
        decoded.set(path, await decodeImageBytes(bytes, decoding.inputSize, { maxPixels: decoding.config.limits.imagePixels }));
      } catch {
        skipped++;
      }
    },
    () => void skipped++,
    { concurrency: DECODE_CONCURRENCY },
  );
  const ids = paths.filter((p) => decoded.has(p));
  decoding.timings?.add('decode', performance.now() - started);
  if (ids.length === 0) throw new DomainError('empty_target_dataset', 'no image of the target dataset decodes', 422);
  return { images: ids.map((p) => decoded.get(p)!), ids, notSampled: paths.length - wanted.size, skipped };
}

/** `k` of the indices 0..n-1 (all of them when k ≥ n), drawn with `seed`, in increasing order. */
function seededSample(n: number, k: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  if (k >= n) return order;
  const random = mulberry32(seed);
  // Fisher–Yates, stopped after the first k places.
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (n - i));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order.slice(0, k).sort((a, b) => a - b);
}

function zipLimits(config: Config): ZipLimits {
  return datasetZipLimits(config.limits);
}

function emptySplit() {
  return { images: [] as Uint8Array[], targets: [] as number[], ids: [] as string[] };
}

function finish(s: ReturnType<typeof emptySplit>): SplitImages {
  return { images: s.images, targets: Int32Array.from(s.targets), ids: s.ids };
}

function requireEveryClass(labels: string[], trainTargets: number[]): void {
  const present = new Set(trainTargets);
  const missing = labels.filter((_, i) => !present.has(i));
  if (missing.length > 0) {
    throw new DomainError('empty_class', `no decodable training image for class(es): ${missing.join(', ')}`, 422);
  }
}
