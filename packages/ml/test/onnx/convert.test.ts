// The layer table, one small model per group of entries: ONNX Runtime (through the runner) must
// give what tfjs gives. Plus what happens with a model the converter does not know.
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { forwardImages, frozenEngine } from '../../src/inference/runner.ts';
import type { Tensor } from 'onnxruntime-node';
import { openSession } from '../../src/inference/onnxruntime.ts';
import { loadOrt, ortMaxBatch, runInPieces } from '../../src/inference/ort.ts';
import { convertToOnnx } from '../../src/onnx/convert.ts';
import { pads } from '../../src/onnx/layers.ts';
import { mulberry32 } from '../../src/random.ts';
import { agreement, RELATIVE_TOLERANCE } from './helpers.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

type Sym = tf.SymbolicTensor;
const L = tf.layers;
const apply = (layer: tf.layers.Layer, x: Sym | Sym[]) => layer.apply(x) as Sym;

/** Every weight random (seeded); BatchNorm variances in [0.5, 1.5] so the statistics matter. */
function randomise(model: tf.LayersModel, seed = 1): tf.LayersModel {
  const r = mulberry32(seed);
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const values = layer.weights.map((w) => {
      const variance = w.originalName.includes('moving_variance');
      return tf.tensor(Array.from({ length: w.shape.reduce((a, b) => a! * b!, 1)! }, () => (variance ? 0.5 + r() : r() - 0.5)), w.shape as number[]);
    });
    layer.setWeights(values);
    tf.dispose(values);
  }
  return model;
}

function inputs(shape: number[], n: number, seed = 2): Float32Array[] {
  const r = mulberry32(seed);
  const size = shape.reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, () => Float32Array.from({ length: size }, () => r()));
}

/** Builds a one-input model from `body`, runs both engines on 3 random samples, expects agreement. */
async function expectSameOnBothEngines(shape: number[], body: (x: Sym) => Sym) {
  const input = tf.input({ shape });
  const model = randomise(tf.model({ inputs: input, outputs: body(input) }));
  try {
    const xs = inputs(shape, 3);
    const ort = await forwardImages(model, xs, { batchSize: 2 });
    const ref = await forwardImages(model, xs, { batchSize: 2, engine: 'tfjs' });
    expect({ engine: ort.engine, fallback: ort.fallback }).toEqual({ engine: 'onnxruntime', fallback: null });
    expect(ort.shape).toEqual(ref.shape);
    const a = agreement(ort.output, ref.output);
    expect(a.relative).toBeLessThan(RELATIVE_TOLERANCE);
    expect(a.scale).toBeGreaterThan(0);
  } finally {
    model.dispose();
  }
}

describe('Keras "same" padding', () => {
  it('puts the odd pixel at the end (stride 2 on an even size pads bottom/right only)', () => {
    const x = (h: number, w: number) => ({ name: 'x', shape: [h, w, 3] });
    expect(pads('same', x(224, 224), [3, 3], [2, 2], [1, 1])).toEqual([0, 0, 1, 1]);
    expect(pads('same', x(225, 225), [3, 3], [2, 2], [1, 1])).toEqual([1, 1, 1, 1]);
    expect(pads('same', x(10, 9), [4, 1], [1, 1], [1, 1])).toEqual([1, 0, 2, 0]);
    expect(pads('same', x(8, 8), [3, 3], [1, 1], [2, 2])).toEqual([2, 2, 2, 2]);
    expect(pads('valid', x(8, 8), [3, 3], [2, 2], [1, 1])).toEqual([0, 0, 0, 0]);
  });
});

describe('layer table: ONNX Runtime equals tfjs', () => {
  it('Conv2D: same / valid, stride 2 on even and odd sizes, even kernels, dilation, bias, activations', async () => {
    await expectSameOnBothEngines([10, 9, 3], (x) => {
      const a = apply(L.conv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu6' }), x);
      const b = apply(L.conv2d({ filters: 4, kernelSize: [4, 2], strides: 2, padding: 'same', useBias: false }), x);
      const c = apply(L.conv2d({ filters: 4, kernelSize: 3, dilationRate: 2, padding: 'same', activation: 'tanh' }), x);
      const d = apply(L.conv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'valid', activation: 'sigmoid' }), c);
      return apply(L.concatenate(), [a, b, apply(L.zeroPadding2d({ padding: [[0, 1], [0, 1]] }), d)]);
    });
  });

  it('DepthwiseConv2D (depth multiplier 2) and SeparableConv2D, same padding at stride 2', async () => {
    await expectSameOnBothEngines([11, 11, 3], (x) => {
      const a = apply(L.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, strides: 2, padding: 'same', activation: 'swish' }), x);
      const b = apply(L.separableConv2d({ filters: 5, kernelSize: 3, depthMultiplier: 2, strides: 2, padding: 'same', activation: 'relu' }), x);
      return apply(L.concatenate({ axis: 3 }), [a, b]);
    });
  });

  it('BatchNormalization (with and without scale/centre, on images and vectors) and the activation layers', async () => {
    await expectSameOnBothEngines([6, 6, 4], (x) => {
      let y = apply(L.batchNormalization({ scale: false }), x);
      y = apply(L.reLU({ maxValue: 6 }), y);
      y = apply(L.batchNormalization({ center: false, epsilon: 0.01 }), y);
      y = apply(L.leakyReLU({ alpha: 0.1 }), y);
      y = apply(L.elu({}), y); // tfjs' ELU layer takes only alpha = 1
      y = apply(L.reLU(), y);
      const img = apply(L.softmax({ axis: -1 }), y);
      let v = apply(L.flatten(), img);
      v = apply(L.batchNormalization(), v);
      const acts = ['sigmoid', 'tanh', 'softmax', 'elu', 'selu', 'softplus', 'softsign', 'hardSigmoid', 'swish', 'linear', 'relu', 'relu6'] as const;
      return apply(L.concatenate(), acts.map((activation) => apply(L.activation({ activation }), v)));
    });
  });

  it('Add (2 and 3 inputs), Multiply, Average, Maximum, Minimum, Concatenate on the H axis', async () => {
    await expectSameOnBothEngines([5, 5, 3], (x) => {
      const a = apply(L.conv2d({ filters: 3, kernelSize: 1 }), x);
      const b = apply(L.conv2d({ filters: 3, kernelSize: 1 }), x);
      const merged = [L.add(), L.multiply(), L.average(), L.maximum(), L.minimum()].map((l) => apply(l, [x, a, b]));
      return apply(L.concatenate({ axis: 1 }), [...merged, apply(L.add(), [a, b])]);
    });
  });

  it('MaxPooling2D / AveragePooling2D (same and valid; same averages only cells inside), global pools', async () => {
    await expectSameOnBothEngines([9, 8, 3], (x) => {
      const a = apply(L.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }), x);
      const b = apply(L.averagePooling2d({ poolSize: 3, strides: 2, padding: 'same' }), x);
      const c = apply(L.averagePooling2d({ poolSize: 3, strides: 1, padding: 'same' }), x);
      const d = apply(L.maxPooling2d({ poolSize: 2, padding: 'valid' }), x);
      const flat = [a, b, c, d].map((t) => apply(L.flatten(), t));
      return apply(L.concatenate(), [...flat, apply(L.globalAveragePooling2d({}), x), apply(L.globalMaxPooling2d({}), x)]);
    });
  });

  it('Flatten in NHWC order, Reshape (vector → image → matrix), Dense with and without bias, Dropout, Rescaling, LayerNormalization', async () => {
    await expectSameOnBothEngines([4, 3, 2], (x) => {
      let v = apply(L.flatten(), x);
      v = apply(L.dense({ units: 20, activation: 'relu' }), v);
      v = apply(L.dropout({ rate: 0.5 }), v);
      let img = apply(L.reshape({ targetShape: [2, 5, 2] }), v);
      img = apply(L.conv2d({ filters: 3, kernelSize: 2, padding: 'same' }), img);
      const m = apply(L.reshape({ targetShape: [10, 3] }), img);
      v = apply(L.flatten(), m);
      v = apply(L.rescaling({ scale: -2, offset: 0.5 }), v);
      const n1 = apply(L.layerNormalization({ epsilon: 1e-5 }), v);
      const n2 = apply(L.layerNormalization({ center: false, scale: false }), v);
      return apply(L.dense({ units: 7, useBias: false, activation: 'softmax' }), apply(L.concatenate(), [n1, n2]));
    });
  });
});

describe('a model the converter does not know', () => {
  function withUpSampling(): tf.LayersModel {
    const input = tf.input({ shape: [4, 4, 3] });
    const x = apply(L.conv2d({ filters: 2, kernelSize: 3, padding: 'same', name: 'known_conv' }), input);
    const up = apply(L.upSampling2d({ size: [2, 2], name: 'mystery_upsampling' }), x);
    return randomise(tf.model({ inputs: input, outputs: apply(L.flatten(), up) }));
  }

  it('is reported as not convertible, naming the layer', () => {
    const model = withUpSampling();
    expect(convertToOnnx(model)).toEqual({
      convertible: false,
      reason: expect.stringMatching(/mystery_upsampling.*UpSampling2D/),
      layer: { name: 'mystery_upsampling', className: 'UpSampling2D' },
    });
    // Below the unknown layer the bottom converts.
    expect(convertToOnnx(model, { cut: 'known_conv' })).toMatchObject({ convertible: true, outputShape: [4, 4, 2] });
    // A known class with a configuration the table does not cover: Dense on an image.
    const input = tf.input({ shape: [3, 3, 2] });
    const dense = tf.model({ inputs: input, outputs: apply(L.dense({ units: 2, name: 'dense_on_image' }), input) });
    expect(convertToOnnx(dense)).toMatchObject({ convertible: false, reason: expect.stringMatching(/dense_on_image.*Dense on a rank-4 tensor/) });
    model.dispose();
    dense.dispose();
  });

  it('runs on tfjs through the runner, with the reason, and the same numbers as predict', async () => {
    const model = withUpSampling();
    const xs = inputs([4, 4, 3], 3);
    const before = tf.memory().numTensors;
    const result = await forwardImages(model, xs, { batchSize: 2 });
    expect(tf.memory().numTensors).toBe(before);
    expect(result.engine).toBe('tfjs-wasm');
    expect(result.fallback).toMatch(/UpSampling2D/);
    expect(await frozenEngine(model)).toBe('tfjs-wasm');
    expect(await frozenEngine(model, 'known_conv')).toBe('onnxruntime');
    const direct = tf.tidy(() => (model.predict(tf.tensor4d(Float32Array.from(xs.flatMap((x) => [...x])), [3, 4, 4, 3])) as tf.Tensor).dataSync());
    expect(Array.from(result.output)).toEqual(Array.from(direct));
    // The bottom below it runs on ORT.
    const bottom = await forwardImages(model, xs, { cut: 'known_conv' });
    expect(bottom).toMatchObject({ engine: 'onnxruntime', shape: [4, 4, 2] });
    model.dispose();
  });
});

describe('the runner', () => {
  it('converts again when the weights change (a session never serves stale weights); engine "tfjs" is honoured', async () => {
    const input = tf.input({ shape: [3, 3, 1] });
    const model = randomise(tf.model({ inputs: input, outputs: apply(L.flatten(), apply(L.conv2d({ filters: 2, kernelSize: 2 }), input)) }));
    const xs = inputs([3, 3, 1], 2);
    const first = await forwardImages(model, xs);
    randomise(model, 99);
    const second = await forwardImages(model, xs);
    const ref = await forwardImages(model, xs, { engine: 'tfjs' });
    expect([first.engine, second.engine, ref.engine]).toEqual(['onnxruntime', 'onnxruntime', 'tfjs-wasm']);
    expect(agreement(first.output, ref.output).relative).toBeGreaterThan(0.1);
    expect(agreement(second.output, ref.output).relative).toBeLessThan(RELATIVE_TOLERANCE);
    model.dispose();
  });

  it('an error thrown by onBatch (a cancellation) propagates: no second engine, no second pass', async () => {
    const input = tf.input({ shape: [2, 2, 1] });
    const model = tf.model({ inputs: input, outputs: apply(L.flatten(), input) });
    const calls: number[] = [];
    const cancel = forwardImages(model, inputs([2, 2, 1], 4), {
      batchSize: 2,
      onBatch: (done) => {
        calls.push(done);
        throw new Error('canceled');
      },
    });
    await expect(cancel).rejects.toThrow('canceled');
    expect(calls).toEqual([2]);
    model.dispose();
  });

  it('runs ONNX Runtime on the CPU at most ortMaxBatch() images at a time, the same outputs as one run', async () => {
    expect(ortMaxBatch()).toBe(4);
    expect(ortMaxBatch({ ML_BACKEND: 'tensorflow-gpu' })).toBe(Number.POSITIVE_INFINITY);
    const input = tf.input({ shape: [3, 3, 1] });
    const model = randomise(tf.model({ inputs: input, outputs: apply(L.flatten(), apply(L.conv2d({ filters: 2, kernelSize: 2 }), input)) }));
    const opened = await openSession(model, undefined);
    if ('reason' in opened) throw new Error(opened.reason);
    const ort = await loadOrt();
    if (ort instanceof Error) throw ort;
    const runs: number[] = [];
    const spied = { run: (feeds: Record<string, Tensor>) => (runs.push(feeds[opened.inputName]!.dims[0]!), opened.session.run(feeds)) };
    const xs = inputs([3, 3, 1], 10);
    const batch = new Float32Array(10 * 9);
    xs.forEach((x, i) => batch.set(x, i * 9));
    const names = { input: opened.inputName, output: opened.outputName };
    const pieces = await runInPieces(ort, spied, names, batch, [10, 3, 3, 1]);
    expect(runs).toEqual([4, 4, 2]);
    const whole = await runInPieces(ort, spied, names, batch, [10, 3, 3, 1], Number.POSITIVE_INFINITY);
    expect(runs).toEqual([4, 4, 2, 10]);
    expect(pieces).toEqual(whole);
    // And through the runner, whose batch (and progress) stays the caller's.
    const seen: number[] = [];
    const result = await forwardImages(model, xs, { batchSize: 16, onBatch: (done) => void seen.push(done) });
    expect(seen).toEqual([10]);
    expect(agreement(result.output, whole).relative).toBeLessThan(RELATIVE_TOLERANCE);
    await opened.session.release();
    model.dispose();
  });

  it('rejects images of the wrong size without trying another engine', async () => {
    const input = tf.input({ shape: [3, 3, 1] });
    const model = tf.model({ inputs: input, outputs: apply(L.flatten(), input) });
    await expect(forwardImages(model, [new Float32Array(4)])).rejects.toThrow(/image 0 has 4 values; expected 3×3×1 = 9/);
    model.dispose();
  });
});
