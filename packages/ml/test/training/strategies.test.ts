// Each strategy trains exactly the layers it should, on a tiny base with BatchNormalization
// and a residual Add (cpu backend: it has the conv gradient kernels wasm lacks).
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend.ts';
import { loadModelFromFiles, serializeModel } from '../../src/export.ts';
import { baseFromTrainedModel, trainClassifier, type EpochEvent, type TrainClassifierOptions } from '../../src/training/index.ts';
import { colourData, hp, layerValues, maxAbsDiff, tinyResidualBase } from './helpers.ts';

const SIZE = 12;
const BN = ['stem_bn', 'b1_bn', 'top_bn'];
let base: ReturnType<typeof tinyResidualBase>;
let original: Map<string, Float32Array[]>;
const train = colourData(24, SIZE, 1);
const val = colourData(8, SIZE, 2);

beforeAll(async () => {
  await tf.setBackend('cpu');
  base = tinyResidualBase(SIZE);
  original = layerValues(base.model);
});

function run(over: Partial<TrainClassifierOptions> & { hyperparameters?: TrainClassifierOptions['hyperparameters'] }) {
  return trainClassifier({ strategy: 'feature_extraction', base, inputSize: SIZE, train, val, labels: ['red', 'green'], hyperparameters: hp(), ...over });
}

/** Which base layers' weights differ from the original base (BN: gamma/beta only, and moving stats separately). */
function changed(model: tf.LayersModel) {
  const now = layerValues(model);
  const weights: string[] = [];
  const movingStats: string[] = [];
  for (const [name, ws] of original) {
    const cur = now.get(name)!;
    const trainable = BN.includes(name) ? [0, 1] : ws.map((_, i) => i);
    if (trainable.some((i) => maxAbsDiff(ws[i]!, cur[i]!) > 1e-7)) weights.push(name);
    if (BN.includes(name) && [2, 3].some((i) => maxAbsDiff(ws[i]!, cur[i]!) > 0)) movingStats.push(name);
  }
  return { weights, movingStats };
}

describe('trainClassifier strategies', () => {
  it('feature_extraction trains the head only', async () => {
    const r = await run({ strategy: 'feature_extraction' });
    expect(changed(r.model)).toEqual({ weights: [], movingStats: [] });
    expect(r.trainableLayers).toEqual([]);
    expect(r.model.layers.filter((l) => l.name.startsWith('head_')).map((l) => l.name)).toEqual(['head_logits', 'head_softmax']);
    r.model.dispose();
  });

  it('fine_tune moves a cut inside the residual block down to the block boundary and trains only above it; BN moving stats never move', async () => {
    const epochs: EpochEvent[] = [];
    // top 5 layers = b1_bn…pool: the cut would split the residual block, so it moves to stem_relu.
    const r = await run({ strategy: 'fine_tune', hyperparameters: hp({ unfreeze: { topLayers: 5 } }), onEpochEnd: async (e) => void epochs.push(e) });
    expect(r.trainableLayers).toEqual(['b1_conv', 'b1_bn', 'top_conv', 'top_bn']);
    expect(changed(r.model)).toEqual({ weights: ['b1_conv', 'b1_bn', 'top_conv', 'top_bn'], movingStats: [] });
    expect(epochs.map((e) => [e.learningRate, e.baseLearningRate])).toEqual([[0.01, 0.001], [0.01, 0.001]]);
    r.model.dispose();
    // The cached base is untouched.
    expect(changed(base.model)).toEqual({ weights: [], movingStats: [] });
  });

  it('fine_tune fromLayer at a block boundary keeps it; unknown layers are a 422', async () => {
    const r = await run({ strategy: 'fine_tune', hyperparameters: hp({ epochs: 1, unfreeze: { fromLayer: 'top_conv' } }) });
    expect(r.trainableLayers).toEqual(['top_conv', 'top_bn']);
    expect(changed(r.model).weights).toEqual(['top_conv', 'top_bn']);
    r.model.dispose();
    await expect(run({ strategy: 'fine_tune', hyperparameters: hp({ unfreeze: { fromLayer: 'nope' } }) })).rejects.toMatchObject({ code: 'unknown_layer' });
  });

  it('full trains every base layer from the pretrained weights, BN in inference mode', async () => {
    const r = await run({ strategy: 'full', hyperparameters: hp({ epochs: 1 }) });
    expect(changed(r.model)).toEqual({ weights: ['stem_conv', 'stem_bn', 'b1_conv', 'b1_bn', 'top_conv', 'top_bn'], movingStats: [] });
    r.model.dispose();
  });

  it('scratch re-initialises every layer (seeded) and trains everything, BN with batch statistics', async () => {
    const a = await run({ strategy: 'scratch', hyperparameters: hp({ epochs: 1, seed: 3 }) });
    const b = await run({ strategy: 'scratch', hyperparameters: hp({ epochs: 1, seed: 3 }) });
    const c = changed(a.model);
    expect(c.weights).toEqual(['stem_conv', 'stem_bn', 'b1_conv', 'b1_bn', 'top_conv', 'top_bn']);
    expect(c.movingStats).toEqual(BN);
    // Far from the pretrained base, not a small step away from it.
    expect(maxAbsDiff(layerValues(a.model).get('stem_conv')![0]!, original.get('stem_conv')![0]!)).toBeGreaterThan(0.1);
    // Reproducible on cpu from the seed.
    for (const [name, ws] of layerValues(a.model)) ws.forEach((w, i) => expect(maxAbsDiff(w, layerValues(b.model).get(name)![i]!), name).toBe(0));
    a.model.dispose();
    b.model.dispose();
  });

  it('progressive_unfreezing runs default stages top-down, each epoch reporting its stage and layers', async () => {
    const r = await run({ strategy: 'progressive_unfreezing', hyperparameters: hp({ epochs: 4 }) });
    expect(r.history.map((h) => h.stage)).toEqual([1, 1, 2, 3]);
    expect(r.history.map((h) => h.trainableLayers)).toEqual([[], [], ['top_bn'], ['top_conv', 'top_bn']]);
    expect(r.history.map((h) => h.epoch)).toEqual([1, 2, 3, 4]);
    r.model.dispose();
  });

  it('progressive_unfreezing takes explicit stages with their own learning rates', async () => {
    const r = await run({
      strategy: 'progressive_unfreezing',
      hyperparameters: hp({
        stages: [
          { unfreeze: { fromLayer: 'top_conv' }, epochs: 1, learningRate: 0.05 },
          { unfreeze: { topLayers: 100 }, epochs: 1 },
        ],
      }),
    });
    // Stage 2 unfreezes more layers, so it warms up over its first epoch (24 images in batches
    // of 8: 3 steps, the first at 1/4 of the rate); an epoch reports its first step's rate.
    expect(r.history.map((h) => [h.stage, h.learningRate, h.trainableLayers.length])).toEqual([
      [1, 0.05, 2],
      [2, 0.01 / 4, 6],
    ]);
    expect(r.trainableLayers).toEqual(['stem_conv', 'stem_bn', 'b1_conv', 'b1_bn', 'top_conv', 'top_bn']);
    r.model.dispose();
  });
});

describe('trainClassifier behaviour', () => {
  it('leaves no tensors behind after a run with every option on + disposing the model; is reproducible', async () => {
    const options = {
      strategy: 'fine_tune' as const,
      hyperparameters: hp({
        epochs: 2,
        optimizer: 'adamw',
        weightDecay: 0.01,
        unfreeze: { topLayers: 4 },
        head: { hiddenUnits: [5], activation: 'swish', dropout: 0.3 },
        l2: 0.001,
        labelSmoothing: 0.1,
        classWeights: 'balanced',
        augmentation: { flipHorizontal: true, rotationDegrees: 10, zoom: 0.1, brightness: 0.1, randomCrop: 0.1 },
        lrSchedule: { type: 'cosine' },
      }),
    };
    const start = tf.memory().numTensors;
    const a = await run({ ...options, onEpochEnd: async (e) => void (await e.checkpoint()) });
    a.model.dispose();
    expect(tf.memory().numTensors).toBe(start);
    const b = await run(options);
    b.model.dispose();
    expect(b.history.map((h) => h.trainLoss)).toEqual(a.history.map((h) => h.trainLoss));
    expect(tf.memory().numTensors).toBe(start);
  });

  it('keeps the best epoch by validation accuracy and its weights', async () => {
    const events: { epoch: number; isBest: boolean; valAcc: number | null }[] = [];
    const r = await run({ strategy: 'scratch', hyperparameters: hp({ epochs: 4, learningRate: 0.05 }), onEpochEnd: async (e) => void events.push(e) });
    const bestByRule = [...r.history].sort((x, y) => y.valAcc! - x.valAcc! || x.valLoss! - y.valLoss! || x.epoch - y.epoch)[0]!;
    expect(r.bestEpoch).toBe(bestByRule.epoch);
    // The returned model scores the best epoch's validation accuracy.
    const pred = tf.tidy(() => tf.argMax(r.model.predict(tf.tensor4d(Float32Array.from(val.images.flatMap((i) => Array.from(i, (v) => v / 255))), [8, SIZE, SIZE, 3])) as tf.Tensor, -1).dataSync());
    expect(pred.filter((p, i) => p === val.labels[i]).length / 8).toBe(bestByRule.valAcc);
    r.model.dispose();
  });

  it('early stopping stops after `patience` epochs without improvement', async () => {
    const r = await run({ hyperparameters: hp({ epochs: 20, earlyStopping: { monitor: 'val_loss', patience: 2, minDelta: 5 } }) });
    expect(r.epochsRun).toBe(3);
    expect(r.stoppedEarly).toBe(true);
    expect(r.stopped).toBe(false);
    r.model.dispose();
  });

  it('shouldStop stops after the current batch and still returns a usable model', async () => {
    const start = tf.memory().numTensors;
    const r = await run({ strategy: 'full', hyperparameters: hp({ epochs: 5 }), shouldStop: () => true });
    expect([r.stopped, r.epochsRun, r.bestEpoch]).toEqual([true, 0, 0]);
    r.model.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('class weights and label smoothing change the optimised loss', async () => {
    const first = async (h: Parameters<typeof hp>[0]) => {
      const r = await run({ hyperparameters: hp({ epochs: 1, ...h }) });
      r.model.dispose();
      return r.history[0]!.trainLoss;
    };
    const plain = await first({});
    expect(Math.abs((await first({ classWeights: { red: 5 } })) - plain)).toBeGreaterThan(1e-3);
    expect(Math.abs((await first({ labelSmoothing: 0.3 })) - plain)).toBeGreaterThan(1e-4);
  });

  it('uses the frozenFeatures memo once per split and cut', async () => {
    const calls: string[] = [];
    const r = await run({
      strategy: 'fine_tune',
      hyperparameters: hp({ unfreeze: { fromLayer: 'top_conv' } }),
      frozenFeatures: async (key, compute) => {
        calls.push(`${key.cut}/${key.split}`);
        const f = await compute();
        expect(f.length).toBe((key.split === 'train' ? 24 : 8) * 6 * SIZE * SIZE);
        return f;
      },
    });
    expect(calls).toEqual(['b1_add/train', 'b1_add/val']);
    r.model.dispose();
  });

  it('exports a standard model that loads, predicts the same, and can be a base again', async () => {
    const r = await run({ strategy: 'fine_tune', hyperparameters: hp({ unfreeze: { fromLayer: 'top_conv' }, head: { hiddenUnits: [4], activation: 'relu', dropout: 0.2 } }) });
    const { modelJson, weights } = await serializeModel(r.model);
    const loaded = await loadModelFromFiles(modelJson, weights);
    const x = tf.randomUniform([3, SIZE, SIZE, 3], 0, 1, 'float32', 1);
    const [p1, p2] = [r.model, loaded].map((m) => m.predict(x) as tf.Tensor);
    expect(maxAbsDiff(p1!.dataSync(), p2!.dataSync())).toBeLessThan(1e-6);
    expect(modelJson.toString()).not.toContain('"Lambda"');

    // A trained model becomes an image → embedding base again: same embedding as the fine-tuned layers give.
    const again = baseFromTrainedModel(loaded, { id: 'job-1' });
    expect(again.info).toMatchObject({ inputSize: SIZE, embeddingSize: 8 });
    expect(again.model.layers.some((l) => l.name.startsWith('head_'))).toBe(false);
    const r2 = await trainClassifier({ strategy: 'fine_tune', base: again, inputSize: SIZE, train, val, labels: ['a', 'b'], hyperparameters: hp({ epochs: 1, unfreeze: { topLayers: 4 } }) });
    expect(r2.trainableLayers).toEqual(['top_conv', 'top_bn']);
    tf.dispose([x, p1!, p2!]);
    for (const m of [r.model, loaded, again.model, r2.model]) m.dispose();
  });
});
