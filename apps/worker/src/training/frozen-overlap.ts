// The frozen forward pass side by side with decoding, for a run whose base's features are not
// cached yet. Without it a first run decodes every image and only then runs the frozen base over
// them; with it the base runs on each split's images batch by batch as they decode.
//
// The features must be the very numbers the engine's own pass would compute, so that the cache
// holds the same bytes either way: the batches are the ones that pass makes (the split's images
// in the order the split holds them, 32 at a time from the first), through the same model and
// engine. Only images that decoded go in, and decodeDataset hands them over in archive order, so
// a split's k-th image here is the split's k-th image. The cache key needs the split's ids, which
// are final only once decoding ends (an unreadable image drops out): the features are kept per
// split and given to the engine's `frozenFeatures` memo — which looks the cache up and stores
// what it misses, as always — in place of its own pass.
//
// ONNX Runtime's session.run holds this thread for a batch, while sharp decodes on libuv's pool:
// decodes in flight go on during a batch, and the next ones start between batches.
//
// Off unless TRAINING_DECODE_OVERLAP=on: both phases are CPU-bound, and with ONNX Runtime on every
// core (ML_THREADS unset) they only compete — its threads wait for each other at every operator, so
// a decode that takes a core stalls the pass. On a busy 2-core host the two together took longer
// overlapped than one after the other (bench/decode-overlap.ts). It can pay off only where the
// pass leaves cores idle for decoding (ML_THREADS below the cores the worker can count on).
import type { JobSpec } from '@finetune/core';
import { augmentationEnabled, forwardImages, frozenEngine, layerGraph, MAX_FEATURE_CACHE_BYTES, planStages, type tf } from '@finetune/ml';
import type { FeatureCache } from './feature-cache.ts';
import { decodeDataset, type DatasetListing, type DecodedImage, type PreparedData } from './prepare-data.ts';
import type { RunTimings } from './run-timings.ts';

/** The batches the engine's frozen pass makes (runFrozen's batch size in stage.ts and prototype-run.ts). */
const FORWARD_BATCH = 32;

type FrozenSplit = 'train' | 'val';

/** TRAINING_DECODE_OVERLAP: 'off' (default: decode everything, then run the base) or 'on'. */
export function decodeOverlapSetting(env: Record<string, string | undefined> = process.env): 'on' | 'off' {
  const raw = env.TRAINING_DECODE_OVERLAP || 'off';
  if (raw !== 'on' && raw !== 'off') throw new Error(`TRAINING_DECODE_OVERLAP must be 'on' or 'off' (got '${raw}')`);
  return raw;
}

/** The frozen base's output features of the splits it was given images of, computed as they decode. */
export class FrozenOverlap {
  private readonly pending: Record<FrozenSplit, Uint8Array[]> = { train: [], val: [] };
  private readonly outputs: Record<FrozenSplit, Float32Array[]> = { train: [], val: [] };
  private readonly rows: Record<FrozenSplit, number> = { train: 0, val: 0 };
  private readonly engines = new Set<string>();
  /** The batches run one after another, in the order they filled. */
  private chain: Promise<void> = Promise.resolve();
  /** A batch failed or was skipped: the features are incomplete and the engine computes its own. */
  private incomplete = false;
  private stopped = false;

  constructor(
    private readonly base: tf.LayersModel,
    /** The layer the features are taken at: the base's output. */
    readonly cut: string,
    private readonly splits: ReadonlySet<FrozenSplit>,
    private readonly timings: RunTimings,
    private readonly isCanceled: () => boolean,
  ) {}

  /** decodeDataset's `onDecoded`. Never throws: a failure only means the engine runs its own pass. */
  readonly add: DecodedImage = (_path, split, image) => {
    if (!image || (split !== 'train' && split !== 'val') || !this.splits.has(split)) return;
    this.pending[split].push(image);
    this.rows[split] += 1;
    if (this.pending[split].length === FORWARD_BATCH) this.forward(split);
  };

  private forward(split: FrozenSplit): void {
    const images = this.pending[split];
    this.pending[split] = [];
    this.chain = this.chain.then(async () => {
      if (this.incomplete || this.stopped || this.isCanceled()) {
        this.incomplete = true;
        return;
      }
      try {
        const result = await this.timings.time('frozenForward', () => forwardImages(this.base, images, { batchSize: FORWARD_BATCH }));
        this.outputs[split].push(result.output);
        this.engines.add(result.engine);
      } catch {
        // The engine's own pass runs over the split instead, and reports any error as it always has.
        this.incomplete = true;
      }
    });
  }

  /** After the last image: runs the splits' last, partial batches and waits for every batch. */
  async finish(): Promise<void> {
    for (const split of ['train', 'val'] as const) if (this.pending[split].length > 0) this.forward(split);
    await this.chain;
  }

  /** Runs no further batch (decoding failed) and waits for the one running. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.chain;
  }

  /**
   * The split's features at `cut` as `engine` computes them, for a split of `count` images; null
   * when this overlap does not have exactly those (another cut, another engine — ONNX Runtime
   * fell back to tfjs midway —, a batch failed, or the split was not asked for). Given once: the
   * caller keeps them.
   */
  take(cut: string, split: FrozenSplit, engine: string, count: number): Float32Array | null {
    const parts = this.outputs[split];
    this.outputs[split] = [];
    const usable = !this.incomplete && cut === this.cut && this.splits.has(split) && this.rows[split] === count && count > 0;
    if (!usable || this.engines.size !== 1 || !this.engines.has(engine)) return null;
    const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

/**
 * The overlap for this run, or null when it would not help or might not match: it applies when
 * the engine's first stage is the frozen cut (the base's output: feature_extraction, prototype,
 * progressive_unfreezing's default first stage), to the splits whose features at that cut the
 * engine will ask for and the cache cannot be shown to hold. Not for domain_adaptation: its
 * features come from batch-norm statistics estimated after decoding. Not for a resumed run: it
 * may start past the first stage. A cut below the output (fine_tune) runs through a rebuilt
 * bottom model, which this does not reproduce.
 */
export async function frozenOverlap(
  spec: JobSpec,
  listing: DatasetListing,
  cache: FeatureCache,
  p: { base: tf.LayersModel; maxPixels: number; resumed: boolean; timings: RunTimings; isCanceled: () => boolean },
): Promise<FrozenOverlap | null> {
  if (decodeOverlapSetting() === 'off' || p.resumed || spec.strategy === 'domain_adaptation') return null;
  const graph = layerGraph(p.base);
  let firstCut: string | undefined;
  try {
    firstCut = planStages(spec.strategy, spec.hyperparameters, graph)[0]?.cut.cutLayer;
  } catch {
    return null; // a plan that does not hold: the engine reports it
  }
  if (firstCut !== graph.outputName) return null;
  // What the engine memoises (stage.ts): cut features per split when they fit in memory, the
  // training split's only without augmentation. prototype always takes both.
  const listed = (split: FrozenSplit) => listing.entries.filter((e) => e.split === split);
  const width = (p.base.outputs[0]!.shape.slice(1) as number[]).reduce((a, b) => a * b, 1);
  const prototype = spec.strategy === 'prototype';
  const fits = width * 4 * Math.max(listed('train').length, listed('val').length) <= MAX_FEATURE_CACHE_BYTES;
  const splits = new Set<FrozenSplit>();
  if (prototype || (fits && !augmentationEnabled(spec.hyperparameters.augmentation))) splits.add('train');
  if ((prototype || fits) && listed('val').length > 0) splits.add('val');
  // An earlier decoding's record gives the splits' ids now: a split whose features are cached
  // under them is read from the cache, not computed again.
  const unreadable = await cache.unreadableImages(p.maxPixels);
  if (unreadable) {
    const engine = await frozenEngine(p.base, graph.outputName);
    const skip = new Set(unreadable);
    for (const split of [...splits]) {
      const ids = listed(split).flatMap((e) => (skip.has(e.path) ? [] : [e.path]));
      if (await cache.has(graph.outputName, split, ids, engine)) splits.delete(split);
    }
  }
  return splits.size > 0 ? new FrozenOverlap(p.base, graph.outputName, splits, p.timings, p.isCanceled) : null;
}

/** decodeDataset, with the overlap's forward pass running alongside when there is one. */
export async function decodeOverlapped(
  listing: DatasetListing,
  decoding: Parameters<typeof decodeDataset>[1],
  isCanceled: () => boolean,
  overlap: FrozenOverlap | null,
): Promise<PreparedData> {
  if (!overlap) return decodeDataset(listing, decoding, isCanceled);
  let data: PreparedData;
  try {
    data = await decodeDataset(listing, decoding, isCanceled, overlap.add);
  } catch (error) {
    await overlap.stop();
    throw error;
  }
  await overlap.finish();
  return data;
}
