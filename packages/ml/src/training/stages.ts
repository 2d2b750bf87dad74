// Strategy → the stages it trains in, each a cut of the base (surgery.ts), an epoch count and a
// base learning rate. Pure: a resumed run recomputes the same plan and finds its place by index.
import { DomainError, type Hyperparameters, type Strategy } from '@finetune/core';
import { DEFAULT_STAGE_FRACTIONS, defaultStageEpochs } from './schedule.ts';
import { frozenCut, inputCut, resolveUnfreeze, validCuts, type Cut, type LayerGraph } from './surgery.ts';

export interface PlannedStage {
  index: number;
  cut: Cut;
  epochs: number;
  learningRate: number;
}

/** The stages a strategy trains in (one for every strategy but progressive_unfreezing). */
export function planStages(strategy: Strategy, hp: Hyperparameters, graph: LayerGraph): PlannedStage[] {
  const one = (cut: Cut): PlannedStage[] => [{ index: 1, cut, epochs: hp.epochs, learningRate: hp.learningRate }];
  switch (strategy) {
    case 'feature_extraction':
    case 'prototype':
      return one(frozenCut(graph));
    case 'fine_tune':
      return one(resolveUnfreeze(graph, hp.unfreeze ?? { topLayers: Math.max(1, Math.round(graph.order.length * DEFAULT_STAGE_FRACTIONS[1])) }));
    case 'full':
    case 'scratch':
      return one(inputCut(graph));
    case 'progressive_unfreezing': {
      if (hp.stages) {
        const stages = hp.stages.map((s, i) => ({ index: i + 1, cut: resolveUnfreeze(graph, s.unfreeze), epochs: s.epochs, learningRate: s.learningRate ?? hp.learningRate }));
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
  return epochs.map((e, i) => ({ index: i + 1, cut: cuts[i]!, epochs: e, learningRate: hp.learningRate }));
}
