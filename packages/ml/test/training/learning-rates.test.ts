// Learning rates that need no tuning: the range test (learningRate "auto"), one_cycle,
// discriminative rates per block, and optimizer state carried across progressive stages.
// cpu backend, the tiny residual base of helpers.ts.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend.ts';
import { rangeTest, rangeTestRate, SmoothedLoss, suggestLearningRate, valleyIndex } from '../../src/training/lr-finder.ts';
import { disposeOptimizer, makeOptimizer, setMomentum } from '../../src/training/optimizers.ts';
import { oneCycleAt } from '../../src/training/schedule.ts';
import { baseBlocks, baseRateFactors } from '../../src/training/stages.ts';
import { layerGraph } from '../../src/training/surgery.ts';
import { trainClassifier, type EpochEvent, type TrainClassifierOptions, type TrainClassifierResult } from '../../src/training/index.ts';
import { decodeTrainingState } from '../../src/training/training-state.ts';
import { colourData, hp, layerValues, maxAbsDiff, tinyResidualBase } from './helpers.ts';

const SIZE = 12;
let base: ReturnType<typeof tinyResidualBase>;
const train = colourData(25, SIZE, 1, 3);
const val = colourData(9, SIZE, 2, 3);
const labels = ['red', 'green', 'blue'];

beforeAll(async () => {
  await tf.setBackend('cpu');
  base = tinyResidualBase(SIZE);
});

const options = (strategy: TrainClassifierOptions['strategy'], h: Parameters<typeof hp>[0]): TrainClassifierOptions => ({
  strategy,
  base,
  inputSize: SIZE,
  train,
  val,
  labels,
  hyperparameters: hp(h),
});

function weightDiff(a: tf.LayersModel, b: tf.LayersModel): number {
  const [va, vb] = [layerValues(a), layerValues(b)];
  expect([...vb.keys()]).toEqual([...va.keys()]);
  let worst = 0;
  for (const [name, ws] of va) ws.forEach((w, i) => (worst = Math.max(worst, maxAbsDiff(w, vb.get(name)![i]!))));
  return worst;
}

const withoutTimes = (r: TrainClassifierResult) => r.history.map(({ durationMs: _, ...rest }) => rest);

describe('range test (fastai lr_find)', () => {
  it('sweeps exponentially from 1e-7 to 10 over 100 steps', () => {
    expect(rangeTestRate(0)).toBe(1e-7);
    expect(rangeTestRate(50)).toBeCloseTo(1e-3, 12);
    expect(rangeTestRate(100)).toBeCloseTo(10, 9);
    expect(rangeTestRate(99) / rangeTestRate(98)).toBeCloseTo(10 ** 0.08, 9);
  });

  it('smooths with a debiased moving average (beta 0.98)', () => {
    const s = new SmoothedLoss();
    expect(s.add(2)).toBeCloseTo(2, 12);
    // (0.02·2·0.98 + 0.02·4) / (1 − 0.98²)
    expect(s.add(4)).toBeCloseTo((0.02 * 2 * 0.98 + 0.02 * 4) / (1 - 0.98 ** 2), 12);
  });

  it('stops after the step whose smoothed loss exceeds 4× the best, and on NaN; otherwise runs all steps', async () => {
    const seen: number[] = [];
    const exploding = await rangeTest(async (lr) => {
      seen.push(lr);
      return seen.length === 61 ? 1e6 : 1;
    });
    // Step 61 (index 60) pushes the smoothed loss far above 4 × 1: recorded, then the test ends.
    expect(exploding).toHaveLength(61);
    expect(seen).toHaveLength(61);
    expect(exploding[60]!.loss).toBeGreaterThan(4);
    expect(exploding.slice(0, 60).every((p) => Math.abs(p.loss - 1) < 1e-9)).toBe(true);

    let nanSteps = 0;
    const nan = await rangeTest(async () => (nanSteps++ === 30 ? NaN : 1));
    expect(nan).toHaveLength(31);

    const flat = await rangeTest(async () => 1);
    expect(flat).toHaveLength(100);
    expect(flat.map((p) => p.lr)).toEqual(Array.from({ length: 100 }, (_, i) => rangeTestRate(i)));
  });

  it('valley: 1/3 + 1/6 along the longest decreasing run (fastai valley, including its start offset)', () => {
    // Longest decreasing run ends at index 5 with length 6: start = 5 − 6 = −1, sections = 2,
    // index = −1 + 2 + 1 = 2.
    expect(valleyIndex([5, 4, 3, 2, 1, 0.5, 2, 8])).toBe(2);
    // A bump in the middle: the run 9, 7, 6, 5, 3, 2, 1 (7 points, ends at 8) skips the bump.
    expect(valleyIndex([9, 7, 6, 8, 5, 3, 2, 4, 1, 20])).toBe(8 - 7 + 2 + 1);
  });

  it('suggests a rate on the falling side of a U-shaped curve, ignoring the first tenth and the last 5 points', () => {
    const curve = Array.from({ length: 100 }, (_, i) => {
      const lr = rangeTestRate(i);
      return { lr, loss: (Math.log10(lr) + 2) ** 2 + 1 };
    });
    const lr = suggestLearningRate(curve);
    expect(lr).toBeLessThan(1e-2);
    expect(lr).toBeGreaterThan(1e-6);
    // The same as the valley of the trimmed curve.
    const trimmed = curve.slice(10, -5);
    expect(lr).toBe(trimmed[valleyIndex(trimmed.map((p) => p.loss))]!.lr);
    // A curve too short to trim uses all of it; NaN ends it.
    expect(suggestLearningRate([{ lr: 1, loss: 3 }, { lr: 2, loss: 2 }, { lr: 3, loss: NaN }])).toBe(1);
  });
});

describe('one_cycle (fastai fit_one_cycle)', () => {
  it('matches combined_cos at known steps: warm-up from lr/25, peak at pctStart, anneal to lr/25/1e5; momentum 0.95 → 0.85 → 0.95', () => {
    const at = (step: number, total: number) => oneCycleAt({}, 1, step, total);
    expect(at(0, 100)).toEqual({ learningRate: 0.04, momentum: 0.95 });
    expect(at(25, 100).learningRate).toBeCloseTo(1, 12);
    expect(at(25, 100).momentum).toBeCloseTo(0.85, 12);
    // Phase 2 a third of the way: cos(π · 2/3) = −1/2 → start + (end − start) / 4.
    expect(at(50, 100).learningRate).toBeCloseTo(1 + (0.04 / 1e5 - 1) / 4, 12);
    expect(at(50, 100).momentum).toBeCloseTo(0.85 + 0.1 / 4, 12);
    // Halfway through the warm-up (step 1 of 8): midway between lr/25 and lr.
    expect(at(1, 8).learningRate).toBeCloseTo(0.52, 12);
    expect(at(1, 8).momentum).toBeCloseTo(0.9, 12);
    // The last step is just short of the floor.
    expect(at(99, 100).learningRate).toBeGreaterThan(0.04 / 1e5);
    expect(at(99, 100).learningRate).toBeLessThan(1e-3);
    expect(oneCycleAt({ pctStart: 0.5, div: 10, divFinal: 100 }, 2, 0, 10).learningRate).toBeCloseTo(0.2, 12);
    expect(() => at(100, 100)).toThrow(/outside/);
  });

  it('trains per step: SGD momentum cycles, the reported rate is the epoch’s first step', async () => {
    const r = await trainClassifier(options('feature_extraction', { epochs: 2, optimizer: 'sgd', momentum: 0.9, learningRate: 0.1, lrSchedule: { type: 'one_cycle' } }));
    // 25 images, batches of 8: 4 steps per epoch, 8 in all.
    expect(r.history.map((h) => h.learningRate)).toEqual([oneCycleAt({}, 0.1, 0, 8).learningRate, oneCycleAt({}, 0.1, 4, 8).learningRate]);
    r.model.dispose();
  });

  it('momentum cycling changes the momentum the SGD update uses (tfjs reads a kept scalar, not the field)', async () => {
    const v = tf.variable(tf.scalar(0));
    const o = makeOptimizer({ optimizer: 'sgd', momentum: 0.9, nesterov: false }, 1);
    const step = () => o.applyGradients([{ name: v.name, tensor: tf.scalar(1) }]);
    step(); // accumulation 1, v = −1
    setMomentum(o, 0.5);
    step(); // accumulation 0.5 · 1 + 1 = 1.5, v = −2.5
    expect(v.dataSync()[0]).toBeCloseTo(-2.5, 6);
    disposeOptimizer(o);
    v.dispose();
  });
});

describe('discriminative rates (layerLearningRateDecay)', () => {
  it('blocks run between valid cuts, a BatchNormalization with its layer, top first', () => {
    const graph = layerGraph(base.model);
    expect(baseBlocks(graph)).toEqual([
      ['top_conv', 'top_bn'],
      ['b1_conv', 'b1_bn'],
      ['stem_conv', 'stem_bn'],
    ]);
    const f = baseRateFactors(graph, { baseLearningRateMultiplier: 0.1, layerLearningRateDecay: 2.6 }, false);
    expect([f.get('top_bn'), f.get('b1_conv'), f.get('stem_bn')]).toEqual([1 / 2.6, 1 / 2.6 ** 2, 1 / 2.6 ** 3]);
    expect(new Set(baseRateFactors(graph, { baseLearningRateMultiplier: 0.1, layerLearningRateDecay: null }, false).values())).toEqual(new Set([0.1]));
  });

  it('one SGD step moves each block by lr / 2.6^k times its gradient', async () => {
    const step = async (h: Parameters<typeof hp>[0]) => {
      // One batch of all 25 images, one epoch: a single step from the same start.
      const r = await trainClassifier({ ...options('full', { epochs: 1, batchSize: 32, optimizer: 'sgd', momentum: 0, learningRate: 0.05, ...h }), val: null });
      const values = layerValues(r.model);
      r.model.dispose();
      return values;
    };
    const start = layerValues(base.model);
    const plain = await step({ baseLearningRateMultiplier: 1 });
    const decayed = await step({ layerLearningRateDecay: 2.6 });
    const moved = (m: Map<string, Float32Array[]>, layer: string) => m.get(layer)![0]!.reduce((s, w, i) => s + Math.abs(w - start.get(layer)![0]![i]!), 0);
    for (const [layer, k] of [['top_conv', 1], ['b1_conv', 2], ['stem_conv', 3]] as const) {
      expect(moved(plain, layer)).toBeGreaterThan(0);
      expect(moved(decayed, layer) / moved(plain, layer)).toBeCloseTo(1 / 2.6 ** k, 4);
    }
  });
});

describe('progressive unfreezing keeps optimizer state across stages', () => {
  const progressive = (h: Parameters<typeof hp>[0] = {}) =>
    options('progressive_unfreezing', {
      optimizer: 'adam',
      stages: [
        { unfreeze: { fromLayer: 'top_conv' }, epochs: 1 },
        { unfreeze: { fromLayer: 'b1_conv' }, epochs: 2 },
      ],
      ...h,
    });

  it('a layer trained in stage 1 goes on with its moments in stage 2; a newly unfrozen layer starts fresh', async () => {
    const states = new Map<number, Uint8Array>();
    const r = await trainClassifier({ ...progressive(), onEpochEnd: async (e: EpochEvent) => void states.set(e.epoch, await e.state()) });
    r.model.dispose();
    const iterations = (epoch: number, layer: string | null) => {
      const o = decodeTrainingState(states.get(epoch)!).optimizers!;
      const saved = layer === null ? o.head : o.base.get(layer);
      return saved ? saved[0]!.data[0] : undefined;
    };
    // 25 images in batches of 8: 4 steps an epoch.
    expect([iterations(1, null), iterations(1, 'top_conv'), iterations(1, 'b1_conv')]).toEqual([4, 4, undefined]);
    expect([iterations(2, null), iterations(2, 'top_conv'), iterations(2, 'b1_conv')]).toEqual([8, 8, 4]);
    // The moments go on from stage 1's (not re-zeroed): the first moment of top_conv after
    // epoch 2 is not what 4 steps from zero would give.
    const m = (epoch: number) => decodeTrainingState(states.get(epoch)!).optimizers!.base.get('top_conv')![1]!.data;
    expect(maxAbsDiff(m(1), new Float32Array(m(1).length))).toBeGreaterThan(0);
  });

  it('with learningRate "auto", one_cycle and layer decay: resumed mid-stage and at the stage boundary ends as the uninterrupted run, without repeating the range test', async () => {
    const o = progressive({ learningRate: 'auto', lrSchedule: { type: 'one_cycle' }, layerLearningRateDecay: 2.6 });
    let found = 0;
    const states = new Map<number, Uint8Array>();
    const reference = await trainClassifier({
      ...o,
      onLearningRateFinder: async () => void found++,
      onEpochEnd: async (e) => void states.set(e.epoch, await e.state()),
    });
    expect(found).toBe(1);
    const finder = reference.learningRateFinder!;
    expect(finder.chosen).toBe(finder.suggested);
    expect(finder.curve.length).toBeGreaterThan(10);
    expect(reference.history[0]!.learningRate).toBeCloseTo(finder.chosen / 25, 12);
    for (const k of [1, 2]) {
      const resumed = await trainClassifier({ ...o, resumeFrom: states.get(k)!, onLearningRateFinder: async () => void found++ });
      expect(found, `resume after epoch ${k}`).toBe(1);
      expect(resumed.learningRateFinder).toEqual(finder);
      expect(withoutTimes(resumed)).toEqual(withoutTimes(reference));
      expect(weightDiff(resumed.model, reference.model)).toBe(0);
      resumed.model.dispose();
    }
    reference.model.dispose();
  });
});

describe('learningRate "auto"', () => {
  it('is deterministic, leaves no trace (the run equals one given the chosen rate) and frees what it made', async () => {
    for (const strategy of ['feature_extraction', 'fine_tune'] as const) {
      const h = { epochs: 2, optimizer: 'adam' as const, unfreeze: strategy === 'fine_tune' ? { topLayers: 4 } : null };
      const start = tf.memory().numTensors;
      const auto = await trainClassifier(options(strategy, { ...h, learningRate: 'auto' }));
      const again = await trainClassifier(options(strategy, { ...h, learningRate: 'auto' }));
      const chosen = auto.learningRateFinder!.chosen;
      expect(again.learningRateFinder).toEqual(auto.learningRateFinder);
      expect(chosen).toBeGreaterThan(1e-7);
      expect(chosen).toBeLessThan(10);
      const byHand = await trainClassifier(options(strategy, { ...h, learningRate: chosen }));
      expect(byHand.learningRateFinder).toBeNull();
      expect(withoutTimes(byHand)).toEqual(withoutTimes(auto));
      expect(weightDiff(byHand.model, auto.model)).toBe(0);
      [auto, again, byHand].forEach((r) => r.model.dispose());
      expect(tf.memory().numTensors, strategy).toBe(start);
    }
  });
});
