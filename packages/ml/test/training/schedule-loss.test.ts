// Pure pieces of the engine: learning-rate schedules, the loss (label smoothing, class
// weights), optimizers' per-epoch rates and AdamW decay, seeded augmentation.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend.ts';
import {
  applyDecoupledWeightDecay,
  augmentBatch,
  classificationLoss,
  classWeightVector,
  defaultStageEpochs,
  disposeOptimizer,
  learningRateForEpoch,
  makeOptimizer,
  setLearningRate,
} from '../../src/training/index.ts';
import { hp } from './helpers.ts';
import { mulberry32 } from '../../src/random.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const rates = (h: Parameters<typeof learningRateForEpoch>[0] & { learningRate: number | 'auto' }, lr = h.learningRate as number) =>
  Array.from({ length: h.epochs }, (_, i) => learningRateForEpoch(h, i + 1, lr));

describe('learningRateForEpoch', () => {
  it('step 7 / 0.1 behaves like PyTorch StepLR: epochs 1–7, 8–14, 15–20', () => {
    const r = rates(hp({ epochs: 20, learningRate: 0.1, lrSchedule: { type: 'step', stepSize: 7, gamma: 0.1 } }));
    expect(r.slice(0, 7).every((x) => x === 0.1)).toBe(true);
    r.slice(7, 14).forEach((x) => expect(x).toBeCloseTo(0.01, 12));
    r.slice(14).forEach((x) => expect(x).toBeCloseTo(0.001, 12));
  });
  it('cosine anneals from the base rate towards minLearningRate (T_max = epochs)', () => {
    const r = rates(hp({ epochs: 4, learningRate: 1, lrSchedule: { type: 'cosine', minLearningRate: 0.2 } }));
    const expected = [0, 1, 2, 3].map((t) => 0.2 + 0.8 * (1 + Math.cos((Math.PI * t) / 4)) / 2);
    r.forEach((x, i) => expect(x).toBeCloseTo(expected[i]!, 12));
    expect(r[0]).toBe(1);
  });
  it('exponential multiplies by gamma each epoch; constant stays', () => {
    expect(rates(hp({ epochs: 3, learningRate: 1, lrSchedule: { type: 'exponential', gamma: 0.5 } }))).toEqual([1, 0.5, 0.25]);
    expect(rates(hp({ epochs: 3, learningRate: 0.3, lrSchedule: { type: 'constant' } }))).toEqual([0.3, 0.3, 0.3]);
  });
  it('linear warmup ramps to the base rate, then the schedule starts at epoch warmup+1', () => {
    const r = rates(hp({ epochs: 6, learningRate: 0.3, warmupEpochs: 2, lrSchedule: { type: 'step', stepSize: 2, gamma: 0.1 } }));
    [0.1, 0.2, 0.3, 0.3, 0.03, 0.03].forEach((x, i) => expect(r[i]).toBeCloseTo(x, 12));
  });
  it('takes an explicit base rate (a stage or a parameter group)', () => {
    expect(learningRateForEpoch(hp({ epochs: 2, lrSchedule: { type: 'exponential', gamma: 0.5 } }), 2, 4)).toBe(2);
  });
  it('splits epochs into default progressive stages', () => {
    expect(defaultStageEpochs(10)).toEqual([4, 3, 3]);
    expect(defaultStageEpochs(2)).toEqual([1, 1]);
    expect(defaultStageEpochs(1)).toEqual([1]);
  });
});

describe('classificationLoss', () => {
  const logits = () => tf.tensor2d([[2, 0, -1], [0.5, 1.5, 0], [0, 0, 3]]);
  const labels = () => tf.tensor1d([0, 1, 1], 'int32');
  const value = (f: () => tf.Scalar) => tf.tidy(() => f().dataSync()[0]!);
  const ce = (row: number[], target: number[]) => {
    const lse = Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
    return -row.reduce((s, v, i) => s + target[i]! * (v - lse), 0);
  };
  const rows = [[2, 0, -1], [0.5, 1.5, 0], [0, 0, 3]];

  it('is the mean cross-entropy', () => {
    const expected = (ce(rows[0]!, [1, 0, 0]) + ce(rows[1]!, [0, 1, 0]) + ce(rows[2]!, [0, 1, 0])) / 3;
    expect(value(() => classificationLoss(logits(), labels(), { numClasses: 3 }))).toBeCloseTo(expected, 5);
  });
  it('label smoothing changes it to the loss against y(1−ε)+ε/K', () => {
    const eps = 0.1;
    const t = (c: number) => [0, 1, 2].map((i) => (i === c ? 1 - eps : 0) + eps / 3);
    const expected = (ce(rows[0]!, t(0)) + ce(rows[1]!, t(1)) + ce(rows[2]!, t(1))) / 3;
    const plain = value(() => classificationLoss(logits(), labels(), { numClasses: 3 }));
    const smoothed = value(() => classificationLoss(logits(), labels(), { numClasses: 3, labelSmoothing: eps }));
    expect(smoothed).toBeCloseTo(expected, 5);
    expect(Math.abs(smoothed - plain)).toBeGreaterThan(1e-3);
  });
  it('class weights weight each sample (Keras: mean of w_i·loss_i)', () => {
    const w = classWeightVector({ b: 3 }, ['a', 'b', 'c'], [0, 1, 1])!;
    expect(Array.from(w)).toEqual([1, 3, 1]);
    const expected = (ce(rows[0]!, [1, 0, 0]) + 3 * ce(rows[1]!, [0, 1, 0]) + 3 * ce(rows[2]!, [0, 1, 0])) / 3;
    const weighted = value(() => classificationLoss(logits(), labels(), { numClasses: 3, sampleWeights: tf.tensor1d([1, 3, 3]) }));
    expect(weighted).toBeCloseTo(expected, 5);
  });
  it("'balanced' is n / (k · n_c); unknown labels are refused", () => {
    expect(Array.from(classWeightVector('balanced', ['a', 'b'], [0, 0, 0, 1])!)).toEqual([Math.fround(4 / 6), 2]);
    expect(classWeightVector(null, ['a'], [0])).toBeNull();
    expect(() => classWeightVector({ zebra: 2 }, ['a', 'b'], [0, 1])).toThrow(/zebra/);
  });
});

describe('optimizers', () => {
  /** One step on f(v) = Σv (gradient 1) from v = 1, at rate `lr` set after creation. */
  const stepWith = (name: 'sgd' | 'adam' | 'adamw' | 'rmsprop', lr: number, momentum = 0) => {
    const init = tf.ones([2]);
    const v = tf.variable(init, true, `opt_test_${name}_${lr}_${Math.random()}`);
    init.dispose();
    const opt = makeOptimizer({ optimizer: name, momentum, nesterov: false }, 123);
    setLearningRate(opt, lr);
    opt.minimize(() => tf.sum(v) as tf.Scalar, false, [v]);
    const out = v.dataSync()[0]!;
    disposeOptimizer(opt);
    v.dispose();
    return 1 - out;
  };
  it('setLearningRate changes the step of every optimizer, keeping no stale rate', () => {
    expect(stepWith('sgd', 0.5)).toBeCloseTo(0.5, 6);
    expect(stepWith('sgd', 0.5, 0.9)).toBeCloseTo(0.5, 6); // momentum: first step = lr·g
    expect(stepWith('adam', 0.01)).toBeCloseTo(0.01, 4); // Adam's first step ≈ lr
    expect(stepWith('rmsprop', 0.01)).toBeCloseTo(0.01 / Math.sqrt(0.1), 3);
  });
  it('does not leak (MomentumOptimizer leaves SGD’s scalar behind unless disposeOptimizer)', () => {
    const before = tf.memory().numTensors;
    stepWith('sgd', 0.1, 0.9);
    stepWith('adam', 0.1);
    expect(tf.memory().numTensors).toBe(before);
  });
  it('AdamW decay is decoupled: p ← p − lr·wd·p', () => {
    const v = tf.tidy(() => tf.variable(tf.tensor1d([2, -4])));
    applyDecoupledWeightDecay([v], 0.1, 0.5);
    expect(Array.from(v.dataSync())).toEqual([2 * 0.95, -4 * 0.95].map((x) => Math.fround(x)));
    v.dispose();
  });
});

describe('augmentBatch', () => {
  const img = () => tf.tidy(() => tf.randomUniform([3, 6, 6, 3], 0, 1, 'float32', 5) as tf.Tensor4D);
  const aug = { flipHorizontal: true, rotationDegrees: 15, zoom: 0.1, brightness: 0.2, randomCrop: 0.1 };
  it('is reproducible from the seed and changes the images', () => {
    const x = img();
    const a = augmentBatch(x, aug, mulberry32(1));
    const b = augmentBatch(x, aug, mulberry32(1));
    const c = augmentBatch(x, aug, mulberry32(2));
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    expect(Array.from(a.dataSync())).not.toEqual(Array.from(c.dataSync()));
    expect(a.shape).toEqual([3, 6, 6, 3]);
    expect(a.min().dataSync()[0]).toBeGreaterThanOrEqual(0);
    expect(a.max().dataSync()[0]).toBeLessThanOrEqual(1);
    tf.dispose([x, a, b, c]);
  });
  it('a flip-only augmentation mirrors some images exactly and leaves the others', () => {
    const x = img();
    const flipOnly = { flipHorizontal: true, rotationDegrees: 0, zoom: 0, brightness: 0, randomCrop: 0 };
    const y = augmentBatch(x, flipOnly, mulberry32(3));
    const mirrored = tf.reverse(x, 2);
    for (let i = 0; i < 3; i++) {
      const yi = y.slice(i, 1).dataSync();
      const same = Array.from(yi).every((v, k) => Math.abs(v - x.slice(i, 1).dataSync()[k]!) < 1e-6);
      const flipped = Array.from(yi).every((v, k) => Math.abs(v - mirrored.slice(i, 1).dataSync()[k]!) < 1e-5);
      expect(same || flipped).toBe(true);
    }
    tf.dispose([x, y, mirrored]);
  });
});
