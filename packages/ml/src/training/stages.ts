// Strategy → the stages it trains in, each a cut of the base (surgery.ts), an epoch count and a
// base learning rate; and the rate each trainable base layer gets relative to the head's.
// Pure: a resumed run recomputes the same plan and finds its place by index.
import { DomainError, type Hyperparameters, type Strategy } from '@finetune/core';
import { DEFAULT_STAGE_FRACTIONS, defaultStageEpochs } from './schedule.ts';
import { cutTensorAt, frozenCut, inputCut, resolveUnfreeze, validCuts, type Cut, type LayerGraph } from './surgery.ts';

export interface PlannedStage {
  index: number;
  cut: Cut;
  epochs: number;
  /** The stage's own rate (a `stages` entry's learningRate); null: the run's learningRate. */
  learningRate: number | null;
}

/** The stages a strategy trains in (one for every strategy but progressive_unfreezing). */
export function planStages(strategy: Strategy, hp: Hyperparameters, graph: LayerGraph): PlannedStage[] {
  const one = (cut: Cut): PlannedStage[] => [{ index: 1, cut, epochs: hp.epochs, learningRate: null }];
  switch (strategy) {
    case 'feature_extraction':
    case 'prototype':
    // The head trains on the frozen base's features (computed with domain-specific batch-norm statistics).
    case 'domain_adaptation':
      return one(frozenCut(graph));
    case 'fine_tune':
      return one(resolveUnfreeze(graph, hp.unfreeze ?? { topLayers: Math.max(1, Math.round(graph.order.length * DEFAULT_STAGE_FRACTIONS[1])) }));
    case 'full':
    case 'scratch':
      return one(inputCut(graph));
    case 'progressive_unfreezing': {
      if (hp.stages) {
        const stages = hp.stages.map((s, i) => ({ index: i + 1, cut: resolveUnfreeze(graph, s.unfreeze), epochs: s.epochs, learningRate: s.learningRate ?? null }));
        for (let i = 1; i < stages.length; i++) {
          if (stages[i]!.cut.position > stages[i - 1]!.cut.position) {
            throw new DomainError('invalid_stages', `stage ${i + 1} unfreezes fewer layers than stage ${i}; stages must unfreeze further down`, 422);
          }
        }
        return stages;
      }
      return defaultProgressiveStages(graph, hp);
    }
    default:
      throw new DomainError('unknown_strategy', `unknown strategy ${String(strategy)}`, 422);
  }
}

/** Head only → the top ~10% of layers → the top ~35%, each at a block boundary, each
 * strictly deeper than the last; epochs split by defaultStageEpochs. */
function defaultProgressiveStages(graph: LayerGraph, hp: Hyperparameters): PlannedStage[] {
  const cuts: Cut[] = [frozenCut(graph)];
  const all = validCuts(graph);
  for (const fraction of DEFAULT_STAGE_FRACTIONS.slice(1)) {
    const prev = cuts[cuts.length - 1]!;
    let cut: Cut | undefined = resolveUnfreeze(graph, { topLayers: Math.max(1, Math.round(graph.order.length * fraction)) });
    if (cut.trainableLayers.length <= prev.trainableLayers.length) cut = all.find((c) => c.trainableLayers.length > prev.trainableLayers.length);
    if (cut) cuts.push(cut);
  }
  const epochs = defaultStageEpochs(hp.epochs, cuts.length);
  return epochs.map((e, i) => ({ index: i + 1, cut: cuts[i]!, epochs: e, learningRate: null }));
}

/**
 * The base's blocks from the top down, each the weighted layers between two neighbouring block
 * boundaries. A boundary is a valid cut (exactly one tensor crosses it, as for `unfreeze`)
 * except one right below a BatchNormalization: a normalisation belongs to the block of the
 * layer it normalises. Residual blocks, which no cut can enter, stay whole.
 */
export function baseBlocks(graph: LayerGraph): string[][] {
  const { order } = graph;
  const boundaries = [0];
  for (let p = 1; p < order.length; p++) {
    if (graph.model.getLayer(order[p]!).getClassName() === 'BatchNormalization') continue;
    if (cutTensorAt(graph, p) !== null) boundaries.push(p);
  }
  boundaries.push(order.length);
  const blocks: string[][] = [];
  for (let i = 0; i + 1 < boundaries.length; i++) {
    const weighted = order.slice(boundaries[i], boundaries[i + 1]).filter((n) => graph.model.getLayer(n).weights.length > 0);
    if (weighted.length > 0) blocks.push(weighted);
  }
  return blocks.reverse();
}

/**
 * Base layer → the factor of the head's rate it trains at. With layerLearningRateDecay d
 * (ULMFiT's discriminative rates), the k-th block from the top (k = 1, 2, …) trains at
 * 1 / d^k: the head is the top, every block down the base d times slower than the one above.
 * Without it, every base layer trains at baseLearningRateMultiplier (scratch at 1: nothing
 * pretrained to protect).
 */
export function baseRateFactors(graph: LayerGraph, hp: Pick<Hyperparameters, 'baseLearningRateMultiplier' | 'layerLearningRateDecay'>, scratch: boolean): Map<string, number> {
  const factors = new Map<string, number>();
  baseBlocks(graph).forEach((block, i) => {
    const factor = scratch ? 1 : hp.layerLearningRateDecay !== null ? 1 / hp.layerLearningRateDecay ** (i + 1) : hp.baseLearningRateMultiplier;
    for (const layer of block) factors.set(layer, factor);
  });
  return factors;
}
