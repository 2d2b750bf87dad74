// One stage's working set: the frozen bottom, the trainable top (copies of the base's layers
// above the cut, with the weights trained so far), the optimizers that update them (owned by the
// caller: they outlive the stage), and the cut features when they can be cached. Everything else
// here lives for one stage; `close` hands the top's weights back.
import { tf } from '../backend.ts';
import { serializeModel } from '../export.ts';
import type { Augmentation } from './augment.ts';
import { batchInput, product, runFrozen, type BatchInput } from './batches.ts';
import { supplyBatchNormScale } from './batch-norm-gradient.ts';
import type { BaseGroup, StageNet } from './epoch.ts';
import type { PlannedStage } from './stages.ts';
import { applyCopies, rebuild, tensorShape, type LayerGraph } from './surgery.ts';
import type { TensorData } from './training-state.ts';
import type { CheckpointData, LabelledImages } from './types.ts';
import { applyHeadCopies, snapshotLayers, weightData, type WeightMap } from './weights.ts';

/** Above this many bytes of cached cut features per split, the bottom runs per batch instead. */
export const MAX_FEATURE_CACHE_BYTES = 1024 ** 3;

export type FeatureMemo = (split: 'train' | 'val', cut: string, compute: () => Promise<Float32Array>) => Promise<Float32Array>;

export interface StageSession extends StageNet {
  stage: PlannedStage;
  input: BatchInput;
  trainFeatures: Float32Array | null;
  valFeatures: Float32Array | null;
  /** A copy of every weight the classifier would have now: trained base layers, the top, the head. */
  snapshot(): WeightMap;
  /** Current values of every base layer that has trained so far (the top's live, the rest as kept). */
  trainedData(): Promise<Map<string, TensorData[]>>;
  checkpoint(meta: { epoch: number; labels: string[] }): Promise<CheckpointData>;
  /** Keeps what the top learned in `trained` (for later stages and the final model), then frees the stage. */
  close(): void;
}

export async function openStage(p: {
  graph: LayerGraph;
  /** The caller's base: used as the bottom when nothing of it trains, never disposed. */
  base: tf.LayersModel;
  stage: PlannedStage;
  head: tf.LayersModel;
  /** Base layers trained so far, by name; the top starts from these. */
  trained: WeightMap;
  /** The head's optimizer, and each trainable base layer's (given its variables in step order). */
  optimizers: { head: tf.Optimizer; base: (layer: string, vars: tf.Variable[]) => tf.Optimizer };
  /** Base layer → its rate ÷ the head's (stages.ts baseRateFactors). */
  rateFactors: Map<string, number>;
  /** False: `close` forgets what the top learned (the learning-rate range test). Default true. */
  keepWeights?: boolean;
  scratch: boolean;
  size: number;
  train: LabelledImages;
  val: LabelledImages | null;
  augmentation: Augmentation | null;
  augRandom: () => number;
  memo: FeatureMemo;
  /** Resolves once the images are decoded: awaited before anything reads pixels. */
  pixels: () => Promise<void>;
}): Promise<StageSession> {
  const { graph, stage, head, trained } = p;
  const cut = stage.cut;
  const cutShape = tensorShape(graph, cut.cutLayer);
  const atInput = cut.position === 0;
  const fullyFrozen = cut.topLayers.length === 0;
  const bottom = atInput ? null : fullyFrozen ? p.base : rebuild(graph, { from: graph.inputName, to: cut.cutLayer, layers: graph.order.slice(0, cut.position), name: 'frozen_bottom' });
  const top = fullyFrozen
    ? null
    : rebuild(graph, { from: cut.cutLayer, to: graph.outputName, layers: cut.topLayers, weights: (name) => trained.get(name), name: 'trainable_top', trainable: true });
  const scaleConstants = top ? supplyBatchNormScale(top) : [];
  const close = () => {
    if (top && p.keepWeights !== false) snapshotLayers(top, trained);
    if (bottom && bottom !== p.base) bottom.dispose();
    top?.dispose();
    tf.dispose(scaleConstants);
  };
  let baseGroups: BaseGroup[];
  try {
    baseGroups = (top?.layers ?? [])
      .filter((l) => l.trainableWeights.length > 0)
      .map((l) => {
        const vars = l.trainableWeights.map((w) => w.read() as tf.Variable);
        const rateFactor = p.rateFactors.get(l.name);
        if (rateFactor === undefined) throw new Error(`no learning-rate factor for base layer ${l.name}`);
        return { layer: l.name, optimizer: p.optimizers.base(l.name, vars), vars, rateFactor };
      });
  } catch (error) {
    close();
    throw error;
  }

  let trainFeatures: Float32Array | null;
  let valFeatures: Float32Array | null;
  try {
    const width = product(cutShape);
    const canCache = !atInput && width * 4 * Math.max(p.train.labels.length, p.val?.labels.length ?? 0) <= MAX_FEATURE_CACHE_BYTES;
    const frozen = (split: LabelledImages) => async () => {
      await p.pixels();
      return runFrozen(bottom!, split.images, p.size, width, 32);
    };
    // Augmented images change every epoch, so their features cannot be cached.
    trainFeatures = canCache && !p.augmentation ? await p.memo('train', cut.cutLayer, frozen(p.train)) : null;
    const val = p.val;
    valFeatures = canCache && val ? await p.memo('val', cut.cutLayer, frozen(val)) : null;
    // Batches built from images (no cached features for a split) need the pixels.
    if (!trainFeatures || (val && !valFeatures)) await p.pixels();
  } catch (error) {
    close();
    throw error;
  }

  return {
    stage,
    head,
    top,
    topTraining: p.scratch,
    headOpt: p.optimizers.head,
    headVars: head.trainableWeights.map((w) => w.read() as tf.Variable),
    baseGroups,
    baseVars: baseGroups.flatMap((g) => g.vars),
    input: batchInput({ size: p.size, cutShape, bottom, augmentation: p.augmentation, augRandom: p.augRandom }),
    trainFeatures,
    valFeatures,
    snapshot() {
      const weights: WeightMap = new Map();
      for (const [name, ws] of trained) if (!cut.topLayers.includes(name)) weights.set(name, ws.map((w) => w.clone()));
      if (top) snapshotLayers(top, weights);
      snapshotLayers(head, weights);
      return weights;
    },
    async trainedData() {
      const live = new Map(trained);
      // getWeights returns the variables themselves: read, not disposed.
      for (const layer of top?.layers ?? []) if (layer.weights.length > 0) live.set(layer.name, layer.getWeights());
      return weightData(live);
    },
    async checkpoint(meta) {
      const input = tf.input({ shape: cutShape, name: atInput ? graph.inputName : `${cut.cutLayer}_features` });
      const emb = top ? applyCopies(graph, input, { from: cut.cutLayer, to: graph.outputName, layers: cut.topLayers, weights: (l) => top.getLayer(l).getWeights() }) : input;
      const m = tf.model({ inputs: input, outputs: applyHeadCopies(head, emb), name: 'checkpoint' });
      try {
        const s = await serializeModel(m, { metadata: { cutLayer: cut.cutLayer, epoch: meta.epoch, labels: meta.labels } });
        return { ...s, cutLayer: cut.cutLayer };
      } finally {
        m.dispose();
      }
    },
    close,
  };
}
