import { describe, it, expect, beforeAll } from 'vitest';
import { DEFAULT_HYPERPARAMETERS, type Hyperparameters } from '@finetune/core';
import { initBackend, tf } from '../src/backend.ts';
import { buildHead, trainHead, mulberry32, type EpochResult } from '../src/train-head.ts';
import { serializeModel } from '../src/export.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

/** Gaussian blobs: class c centred on a random point, unit-ish noise. Linearly separable enough. */
function blobs(n: number, dim: number, classes: number, seed: number, noise = 0.6) {
  const rnd = mulberry32(seed);
  const centres = Array.from({ length: classes }, () => Array.from({ length: dim }, () => rnd() * 4 - 2));
  const cr = mulberry32(seed + 1);
  const gauss = () => Math.sqrt(-2 * Math.log(cr() + 1e-12)) * Math.cos(2 * Math.PI * cr());
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    y[i] = c;
    for (let k = 0; k < dim; k++) x[i * dim + k] = centres[c]![k]! + noise * gauss();
  }
  return { x, y };
}

const hp = (over: Partial<Hyperparameters> = {}): Hyperparameters => ({ ...DEFAULT_HYPERPARAMETERS, epochs: 8, batchSize: 32, learningRate: 0.01, ...over });

describe('trainHead', () => {
  it('learns separable data, reports epochs, keeps the best weights, leaks no tensors', async () => {
    const dim = 32;
    const classes = 4;
    const all = blobs(1000, dim, classes, 1);
    const train = { x: all.x.subarray(0, 800 * dim), y: all.y.subarray(0, 800) };
    const val = { x: all.x.subarray(800 * dim), y: all.y.subarray(800) };
    const start = tf.memory().numTensors;
    const epochs: Omit<EpochResult, 'head'>[] = [];
    let checkpointBytes = 0;
    const result = await trainHead({
      train,
      val,
      dim,
      numClasses: classes,
      hyperparameters: hp(),
      onEpochEnd: async ({ head, ...e }) => {
        epochs.push(e);
        if (e.isBest) checkpointBytes = (await serializeModel(head)).weights.length;
      },
    });
    expect(result.epochsRun).toBe(8);
    expect(result.stopped).toBe(false);
    expect(epochs.map((e) => e.epoch)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(epochs.at(-1)!.trainAcc).toBeGreaterThan(0.95);
    expect(result.bestValAcc).toBeGreaterThan(0.95);
    expect(epochs.at(-1)!.trainLoss).toBeLessThan(epochs[0]!.trainLoss);
    expect(checkpointBytes).toBe((dim * classes + classes) * 4);
    const best = epochs.find((e) => e.epoch === result.bestEpoch)!;
    expect(best.isBest).toBe(true);
    expect(best.valAcc).toBe(result.bestValAcc);
    expect(Math.max(...epochs.map((e) => e.valAcc!))).toBe(result.bestValAcc);
    for (const e of epochs) {
      expect(e.learningRate).toBe(0.01);
      expect(e.durationMs).toBeGreaterThan(0);
    }

    // The returned head carries the best epoch's weights: its val accuracy matches.
    const acc = tf.tidy(() => {
      const p = result.head.predict(tf.tensor2d(val.x, [200, dim])) as tf.Tensor;
      return p.argMax(-1).equal(tf.tensor1d(val.y, 'int32')).mean().dataSync()[0]!;
    });
    expect(acc).toBeCloseTo(result.bestValAcc!, 6);

    result.head.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('is reproducible for a seed (same losses twice), different for another seed', async () => {
    const data = blobs(300, 16, 3, 5, 1.5);
    const run = async (seed: number) => {
      const losses: number[] = [];
      const r = await trainHead({
        train: data,
        val: null,
        dim: 16,
        numClasses: 3,
        hyperparameters: hp({ epochs: 3, seed, optimizer: 'sgd', momentum: 0.9 }),
        onEpochEnd: async (e) => void losses.push(e.trainLoss),
      });
      r.head.dispose();
      return losses;
    };
    const a = await run(42);
    expect(await run(42)).toEqual(a);
    expect(await run(43)).not.toEqual(a);
  });

  it('without validation data picks the best epoch by training accuracy', async () => {
    const data = blobs(200, 8, 2, 9);
    const seen: EpochResult[] = [];
    const r = await trainHead({
      train: data,
      val: { x: new Float32Array(0), y: new Int32Array(0) },
      dim: 8,
      numClasses: 2,
      hyperparameters: hp({ epochs: 3 }),
      onEpochEnd: async (e) => void seen.push(e),
    });
    expect(r.bestValAcc).toBeNull();
    expect(seen.every((e) => e.valAcc === null && e.valLoss === null)).toBe(true);
    expect(seen.find((e) => e.epoch === r.bestEpoch)!.trainAcc).toBe(Math.max(...seen.map((e) => e.trainAcc)));
    r.head.dispose();
  });

  it('shouldStop stops after the current batch; the partial epoch is not reported', async () => {
    const data = blobs(640, 8, 2, 3);
    const start = tf.memory().numTensors;
    let batches = 0;
    const reported: number[] = [];
    const r = await trainHead({
      train: data,
      val: null,
      dim: 8,
      numClasses: 2,
      hyperparameters: hp({ epochs: 50, batchSize: 32 }), // 20 batches per epoch
      shouldStop: () => ++batches >= 25, // 5 batches into epoch 2
      onEpochEnd: async (e) => void reported.push(e.epoch),
    });
    expect(batches).toBe(25);
    expect(r.stopped).toBe(true);
    expect(r.epochsRun).toBe(1);
    expect(r.bestEpoch).toBe(1);
    expect(reported).toEqual([1]);
    r.head.dispose();

    // Stopping during the first epoch still returns a usable head.
    const early = await trainHead({ train: data, val: null, dim: 8, numClasses: 2, hyperparameters: hp(), shouldStop: async () => true });
    expect(early).toMatchObject({ stopped: true, epochsRun: 0, bestEpoch: 0 });
    expect(early.head.outputs[0]!.shape).toEqual([null, 2]);
    early.head.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('validates its inputs', async () => {
    await expect(
      trainHead({ train: { x: new Float32Array(6), y: new Int32Array([0, 5]) }, val: null, dim: 3, numClasses: 2, hyperparameters: hp() }),
    ).rejects.toThrow(/not a class id/);
    await expect(
      trainHead({ train: { x: new Float32Array(5), y: new Int32Array([0, 1]) }, val: null, dim: 3, numClasses: 2, hyperparameters: hp() }),
    ).rejects.toThrow(/expected 2 × 3/);
  });
});

describe('buildHead', () => {
  it('is a seeded dense softmax layer over [dim]', () => {
    const a = buildHead(5, 3, 1);
    const b = buildHead(5, 3, 1);
    const c = buildHead(5, 3, 2);
    expect(a.inputs[0]!.shape).toEqual([null, 5]);
    expect(a.outputs[0]!.shape).toEqual([null, 3]);
    const k = (m: tf.LayersModel) => Array.from(m.getWeights()[0]!.dataSync());
    expect(k(b)).toEqual(k(a));
    expect(k(c)).not.toEqual(k(a));
    [a, b, c].forEach((m) => m.dispose());
  });
});

describe('stratifiedSplit', () => {
  it('splits each class by the fraction, deterministically, keeping ≥ 1 train sample per class', async () => {
    const { stratifiedSplit } = await import('../src/split.ts');
    const labels = [...Array(50).fill(0), ...Array(10).fill(1), 2];
    const a = stratifiedSplit(labels, 0.2, 42);
    expect(a).toEqual(stratifiedSplit(labels, 0.2, 42));
    expect(a).not.toEqual(stratifiedSplit(labels, 0.2, 43));
    expect([...a.train, ...a.val].sort((x, y) => x - y)).toEqual(labels.map((_, i) => i));
    const count = (idx: number[], c: number) => idx.filter((i) => labels[i] === c).length;
    expect([count(a.val, 0), count(a.val, 1), count(a.val, 2)]).toEqual([10, 2, 0]);
    expect(count(a.train, 2)).toBe(1);
    expect(stratifiedSplit(labels, 0, 1).val).toEqual([]);
    expect(() => stratifiedSplit(labels, 1, 1)).toThrow();
  });
});
