// Gradient accumulation over micro-batches gives the optimizer the same mean gradient as one
// big batch, and the planner (micro-batch.ts) refuses a spec that cannot fit one image.
// cpu backend, tiny base: exact arithmetic matters here, not speed.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend.ts';
import { batchInput } from '../../src/training/batches.ts';
import { trainEpoch, type StageNet } from '../../src/training/epoch.ts';
import { buildClassifierHead } from '../../src/training/head.ts';
import { fitMicroBatch, MEMORY_BUDGET_ENV, memoryBudget, planMicroBatch, residentBytes, stepMemory, WASM_HEAP_MAX_BYTES } from '../../src/training/micro-batch.ts';
import { disposeOptimizer, makeOptimizer } from '../../src/training/optimizers.ts';
import { layerGraph, inputCut, rebuild, frozenCut } from '../../src/training/surgery.ts';
import { trainClassifier } from '../../src/training/index.ts';
import { colourData, hp, layerValues, maxAbsDiff, tinyResidualBase } from './helpers.ts';

const SIZE = 12;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

afterEach(() => {
  delete process.env[MEMORY_BUDGET_ENV];
});

/** A trainable copy of the whole tiny base + a head, as openStage would set up for `full`. */
function makeNet(base: ReturnType<typeof tinyResidualBase>, h: ReturnType<typeof hp>) {
  const graph = layerGraph(base.model);
  const cut = inputCut(graph);
  const top = rebuild(graph, { from: cut.cutLayer, to: graph.outputName, layers: cut.topLayers, name: 'top', trainable: true });
  const head = buildClassifierHead(8, 3, h.head, h.seed);
  const baseGroups = top.layers
    .filter((l) => l.trainableWeights.length > 0)
    .map((l) => ({ layer: l.name, optimizer: makeOptimizer(h, 0.05), vars: l.trainableWeights.map((w) => w.read() as tf.Variable), rateFactor: 1 }));
  const net: StageNet = {
    head,
    top,
    topTraining: false,
    headOpt: makeOptimizer(h, 0.05),
    headVars: head.trainableWeights.map((w) => w.read() as tf.Variable),
    baseGroups,
    baseVars: baseGroups.flatMap((g) => g.vars),
  };
  const dispose = () => {
    head.dispose();
    top.dispose();
    disposeOptimizer(net.headOpt);
    net.baseGroups.forEach((g) => disposeOptimizer(g.optimizer));
  };
  return { net, dispose };
}

describe('gradient accumulation', () => {
  it('micro-batches of 3 (uneven) over batches of 8 train the same weights as whole batches (class weights, l2, label smoothing)', async () => {
    const base = tinyResidualBase(SIZE);
    const train = colourData(20, SIZE, 5, 3);
    const h = hp({ optimizer: 'sgd', momentum: 0.9, l2: 0.01, labelSmoothing: 0.1 });
    const start = tf.memory().numTensors;
    const run = async (microBatch: number | undefined) => {
      const { net, dispose } = makeNet(base, h);
      const initial = layerValues(net.top!);
      let seed = 1;
      const outcome = await trainEpoch({
        net,
        train,
        features: null,
        input: batchInput({ size: SIZE, cutShape: [SIZE, SIZE, 3], bottom: null, augmentation: null, augRandom: Math.random }),
        hp: h,
        rates: () => ({ learningRate: 0.05, momentum: null }),
        batchSize: 8,
        microBatch,
        numClasses: 3,
        classWeights: Float32Array.from([1, 2, 0.5]),
        shuffle: () => ((seed = (seed * 16807) % 2147483647) / 2147483647),
        dropSeed: () => 0,
      });
      const values = new Map([...layerValues(net.top!), ...layerValues(net.head)]);
      dispose();
      return { outcome, values, initial };
    };
    const whole = await run(undefined);
    const micro = await run(3);
    expect(micro.outcome.complete).toBe(true);
    expect(micro.outcome.trainLoss).toBeCloseTo(whole.outcome.trainLoss, 5);
    expect(micro.outcome.trainAcc).toBe(whole.outcome.trainAcc);
    expect([...micro.values.keys()]).toEqual([...whole.values.keys()]);
    for (const [name, ws] of whole.values) ws.forEach((w, i) => expect(maxAbsDiff(w, micro.values.get(name)![i]!), name).toBeLessThanOrEqual(1e-5));
    // The micro-batched run really moved the weights (not two no-op runs agreeing).
    expect(maxAbsDiff(micro.initial.get('stem_conv')![0]!, micro.values.get('stem_conv')![0]!)).toBeGreaterThan(1e-4);
    expect(tf.memory().numTensors).toBe(start);
    base.model.dispose();
  });

  it('trainClassifier reports the micro-batch it chose, and is deterministic with accumulation', async () => {
    const base = tinyResidualBase(SIZE);
    const o = { strategy: 'full' as const, base, inputSize: SIZE, train: colourData(16, SIZE, 1), val: colourData(6, SIZE, 2), labels: ['red', 'green'], hyperparameters: hp({ epochs: 2, batchSize: 8 }) };
    const plenty = await trainClassifier(o);
    expect(plenty.microBatchSize).toBe(8);
    // A budget with room for ~3 images beside what the run holds: the planner splits each batch.
    const graph = layerGraph(base.model);
    const need = stepMemory(graph, inputCut(graph), { batchStatistics: false, optimizer: 'adam', headParams: 8 * 2 + 2 });
    process.env[MEMORY_BUDGET_ENV] = String(Math.round(residentBytes(base.model) + need.gradientBytes + Math.max(need.optimizerBytes - need.gradientBytes + 4096, 3.5 * need.perImageBytes)));
    const a = await trainClassifier(o);
    const b = await trainClassifier(o);
    expect(a.microBatchSize).toBeGreaterThan(0);
    expect(a.microBatchSize).toBeLessThan(8);
    const strip = (h: typeof a.history) => h.map(({ durationMs: _, ...r }) => r);
    expect(strip(b.history)).toEqual(strip(a.history));
    for (const r of [plenty, a, b]) r.model.dispose();
    base.model.dispose();
  });
});

describe('planMicroBatch', () => {
  it('plans batchSize when it fits, a smaller micro-batch when not, and refuses what one image cannot fit', () => {
    const base = tinyResidualBase(SIZE);
    const h = hp({ batchSize: 32 });
    const roomy = planMicroBatch({ model: base.model, strategy: 'full', hyperparameters: h, backend: 'wasm' });
    expect(roomy).toMatchObject({ fits: true, microBatch: 32, batchSize: 32 });
    const graph = layerGraph(base.model);
    const need = stepMemory(graph, inputCut(graph), { batchStatistics: true, optimizer: 'adam', headParams: 18 });
    const tight = fitMicroBatch(need, { batchSize: 32, residentBytes: 0, budget: { bytes: need.optimizerBytes + need.gradientBytes + 5 * need.perImageBytes, source: 'test' }, what: 'x' });
    expect(tight).toMatchObject({ fits: true, microBatch: 5 });
    const none = planMicroBatch({ model: base.model, strategy: 'scratch', hyperparameters: h, backend: 'wasm', budget: { bytes: 1000, source: 'a test budget' } });
    expect(none).toMatchObject({ fits: false, code: 'batch_exceeds_memory', budgetBytes: 1000 });
    if (!none.fits) expect(none.message).toMatch(/a test budget/);
    // feature_extraction trains the head only: any batch fits.
    expect(planMicroBatch({ model: base.model, strategy: 'feature_extraction', hyperparameters: h, backend: 'wasm' })).toMatchObject({ fits: true, microBatch: 32 });
    expect(frozenCut(graph).topLayers).toEqual([]);
    base.model.dispose();
  });

  it('budgets 85% of the 4 GiB wasm heap unless ML_MEMORY_BUDGET_BYTES says otherwise; a bad value throws', () => {
    expect(memoryBudget('wasm', {}).bytes).toBe(Math.floor(WASM_HEAP_MAX_BYTES * 0.85));
    expect(memoryBudget('wasm', { [MEMORY_BUDGET_ENV]: '123456' })).toEqual({ bytes: 123456, source: MEMORY_BUDGET_ENV });
    expect(() => memoryBudget('wasm', { [MEMORY_BUDGET_ENV]: 'lots' })).toThrow(MEMORY_BUDGET_ENV);
  });

  it('trainClassifier fails with a typed 422 before any work when one image does not fit', async () => {
    const base = tinyResidualBase(SIZE);
    process.env[MEMORY_BUDGET_ENV] = '1000';
    const epochs: number[] = [];
    await expect(
      trainClassifier({ strategy: 'scratch', base, inputSize: SIZE, train: colourData(8, SIZE, 1), val: null, labels: ['red', 'green'], hyperparameters: hp(), onEpochEnd: async (e) => void epochs.push(e.epoch) }),
    ).rejects.toMatchObject({ code: 'batch_exceeds_memory', status: 422 });
    expect(epochs).toEqual([]);
    base.model.dispose();
  });
});
