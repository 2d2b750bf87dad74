// The wasm conv-gradient kernels (src/wasm-gradients.ts) against tfjs-backend-cpu's kernels of the
// same names: single kernels on random inputs, a small CNN training step, and a MobileNetV2
// fine-tuning step (top 20 layers + a dense head) — all in one process, switching backends with
// tf.setBackend (tensors migrate between backends on read).
import { beforeAll, describe, expect, it } from 'vitest';
import { tf, initBackend, loadBaseModel, buildSmallCnn } from '../src/index.ts';
import { registerWasmFastPaths, WASM_FAST_PATH_KERNELS } from '../src/wasm-fast-paths.ts';
import { registerWasmGradientKernels, WASM_GRADIENT_KERNELS } from '../src/wasm-gradients.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

/** max |a - b| / max |b|: a relative error that is robust to entries near zero. */
function relErr(a: Float32Array | Int32Array | Uint8Array, b: Float32Array | Int32Array | Uint8Array): number {
  expect(a.length).toBe(b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / (den || 1);
}

function random(shape: number[], seed: number): { values: Float32Array; shape: number[] } {
  const t = tf.randomUniform(shape, -1, 1, 'float32', seed);
  const values = t.dataSync() as Float32Array;
  t.dispose();
  return { values, shape };
}

/** Runs one kernel on a backend with fresh input tensors; returns its output values and shape. */
function runOn(
  backend: 'wasm' | 'cpu',
  kernel: string,
  inputs: Record<string, { values: Float32Array; shape: number[] }>,
  attrs: Record<string, unknown>,
): { values: Float32Array; shape: number[] } {
  const before = tf.getBackend();
  tf.setBackend(backend);
  try {
    const ins: Record<string, tf.Tensor> = {};
    for (const [k, v] of Object.entries(inputs)) ins[k] = tf.tensor(v.values, v.shape);
    const out = tf.engine().runKernel(kernel, ins, attrs as tf.NamedAttrMap) as tf.Tensor;
    const result = { values: out.dataSync() as Float32Array, shape: out.shape };
    tf.dispose([out, ...Object.values(ins)]);
    return result;
  } finally {
    tf.setBackend(before);
  }
}

type PadCase = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
const PADS: PadCase[] = ['same', 'valid', [[0, 0], [1, 2], [0, 1], [0, 0]]];

interface Case {
  batch: number;
  k: number;
  stride: number;
  pad: PadCase;
  mult: number;
  h: number;
}
const CASES: Case[] = [];
for (const batch of [1, 3])
  for (const k of [1, 3])
    for (const stride of [1, 2])
      for (const pad of PADS)
        for (const mult of [1, 2])
          for (const h of [7, 8]) CASES.push({ batch, k, stride, pad, mult, h });

const label = (c: Case) => `n${c.batch} k${c.k} s${c.stride} pad=${JSON.stringify(c.pad)} mult${c.mult} h${c.h}`;

describe('wasm gradient kernels', () => {
  it('are registered for wasm by initBackend, and registering again is a no-op', () => {
    for (const name of WASM_GRADIENT_KERNELS) expect(tf.getKernel(name, 'wasm'), name).toBeDefined();
    const before = WASM_GRADIENT_KERNELS.map((name) => tf.getKernel(name, 'wasm')?.kernelFunc);
    expect(() => registerWasmGradientKernels()).not.toThrow();
    expect(WASM_GRADIENT_KERNELS.map((name) => tf.getKernel(name, 'wasm')?.kernelFunc)).toEqual(before);
    const wrapped = WASM_FAST_PATH_KERNELS.map((name) => tf.getKernel(name, 'wasm')?.kernelFunc);
    registerWasmFastPaths();
    expect(WASM_FAST_PATH_KERNELS.map((name) => tf.getKernel(name, 'wasm')?.kernelFunc)).toEqual(wrapped);
  });

  it('match the cpu kernels across strides, paddings, kernel sizes, depth multipliers and batch sizes', () => {
    const failures: string[] = [];
    let worst = 0;
    for (const c of CASES) {
      const inC = 5;
      const outC = 4;
      const xShape = [c.batch, c.h, c.h + 1, inC] as [number, number, number, number];
      const x = random(xShape, 1);

      const convInfo = tf.backend_util.computeConv2DInfo(xShape, [c.k, c.k, inC, outC], c.stride, 1, c.pad, undefined, false);
      const dy = random([c.batch, convInfo.outHeight, convInfo.outWidth, outC], 2);
      const convAttrs = { strides: c.stride, pad: c.pad, dataFormat: 'NHWC', filterShape: [c.k, c.k, inC, outC] };
      const checks: Array<[string, { values: Float32Array; shape: number[] }, { values: Float32Array; shape: number[] }]> = [
        [
          'Conv2DBackpropFilter',
          runOn('wasm', 'Conv2DBackpropFilter', { x, dy }, convAttrs),
          runOn('cpu', 'Conv2DBackpropFilter', { x, dy }, convAttrs),
        ],
      ];
      // wasm has its own Conv2DBackpropInput; 1×1 stride-1 unpadded cases take our matmul path.
      const convFilter = random([c.k, c.k, inC, outC], 7);
      const inputAttrs2d = { strides: c.stride, pad: c.pad, dataFormat: 'NHWC', inputShape: xShape };
      checks.push([
        'Conv2DBackpropInput',
        runOn('wasm', 'Conv2DBackpropInput', { dy, filter: convFilter }, inputAttrs2d),
        runOn('cpu', 'Conv2DBackpropInput', { dy, filter: convFilter }, inputAttrs2d),
      ]);

      const dwShape = [c.k, c.k, inC, c.mult];
      const dwInfo = tf.backend_util.computeConv2DInfo(xShape, dwShape as [number, number, number, number], c.stride, 1, c.pad, undefined, true);
      const dwDy = random([c.batch, dwInfo.outHeight, dwInfo.outWidth, inC * c.mult], 3);
      const filter = random(dwShape, 4);
      const filterAttrs = { strides: c.stride, dilations: 1, pad: c.pad, filterShape: dwShape };
      const inputAttrs = { strides: c.stride, dilations: 1, pad: c.pad, inputShape: xShape };
      checks.push(
        [
          'DepthwiseConv2dNativeBackpropFilter',
          runOn('wasm', 'DepthwiseConv2dNativeBackpropFilter', { x, dy: dwDy }, filterAttrs),
          runOn('cpu', 'DepthwiseConv2dNativeBackpropFilter', { x, dy: dwDy }, filterAttrs),
        ],
        [
          'DepthwiseConv2dNativeBackpropInput',
          runOn('wasm', 'DepthwiseConv2dNativeBackpropInput', { dy: dwDy, filter }, inputAttrs),
          runOn('cpu', 'DepthwiseConv2dNativeBackpropInput', { dy: dwDy, filter }, inputAttrs),
        ],
      );
      for (const [name, got, want] of checks) {
        if (JSON.stringify(got.shape) !== JSON.stringify(want.shape)) {
          failures.push(`${name} ${label(c)}: shape ${got.shape} vs ${want.shape}`);
          continue;
        }
        const e = relErr(got.values, want.values);
        worst = Math.max(worst, e);
        if (!(e < 1e-4)) failures.push(`${name} ${label(c)}: rel err ${e}`);
      }
    }
    expect(failures).toEqual([]);
    expect(worst).toBeLessThan(1e-4);
  });

  it('Tile keeps its results with the broadcast fast path (and without it)', () => {
    for (const [shape, reps] of [
      [[1, 1, 1, 5], [2, 3, 4, 1]], // broadcast: the BatchNorm-gradient case
      [[2, 1, 3], [1, 4, 1]],
      [[2, 3], [2, 2]], // a real repeat: wasm's own Tile
    ] as Array<[number[], number[]]>) {
      const x = random(shape, 9);
      const got = runOn('wasm', 'Tile', { x }, { reps });
      const want = runOn('cpu', 'Tile', { x }, { reps });
      expect(got.shape).toEqual(want.shape);
      expect(Array.from(got.values)).toEqual(Array.from(want.values));
    }
  });

  it('Sum over the leading axes (average pooling) and FusedBatchNorm (a multiply-add) match cpu to float rounding', () => {
    const close = (got: { values: Float32Array; shape: number[] }, want: { values: Float32Array; shape: number[] }) => {
      expect(got.shape).toEqual(want.shape);
      expect(relErr(got.values, want.values)).toBeLessThan(1e-5);
    };
    for (const [shape, axis, keepDims] of [
      [[3, 7, 9, 12], [0, 1, 2], false],
      [[1, 7, 9, 12], [2, 0, 1], true],
      [[3, 1, 1, 5], [0, 1, 2], false],
      [[40, 6], 0, false],
      [[4, 5, 6], [0, 1], true],
      [[4, 5, 6], [1, 2], false], // not the leading axes: wasm's own Sum
    ] as Array<[number[], number | number[], boolean]>) {
      const x = random(shape, 10);
      close(runOn('wasm', 'Sum', { x }, { axis, keepDims }), runOn('cpu', 'Sum', { x }, { axis, keepDims }));
    }
    const x = random([2, 5, 6, 8], 11);
    const stats = { mean: random([8], 12), variance: { shape: [8], values: random([8], 13).values.map(Math.abs) } };
    const affine: Record<string, { values: Float32Array; shape: number[] }> = { offset: random([8], 14), scale: random([8], 15) };
    for (const extra of [affine, {}]) {
      const inputs = { x, ...stats, ...extra };
      close(runOn('wasm', 'FusedBatchNorm', inputs, { varianceEpsilon: 1e-3 }), runOn('cpu', 'FusedBatchNorm', inputs, { varianceEpsilon: 1e-3 }));
    }
  });

  it('Conv2DBackpropFilter handles NCHW like cpu', () => {
    const x = random([2, 3, 6, 7], 5); // N C H W
    const dy = random([2, 4, 3, 4], 6); // 3x3, stride 2, same → 3x4
    const attrs = { strides: 2, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 3, 4] };
    const got = runOn('wasm', 'Conv2DBackpropFilter', { x, dy }, attrs);
    const want = runOn('cpu', 'Conv2DBackpropFilter', { x, dy }, attrs);
    expect(got.shape).toEqual(want.shape);
    expect(relErr(got.values, want.values)).toBeLessThan(1e-4);
  });
});

/** Gradients of a softmax cross-entropy loss with respect to `vars`, on one backend. */
function gradsOn(backend: 'wasm' | 'cpu', vars: tf.Variable[], loss: () => tf.Scalar): { loss: number; grads: Float32Array[] } {
  tf.setBackend(backend);
  try {
    const { value, grads } = tf.variableGrads(loss, vars);
    const result = { loss: value.dataSync()[0]!, grads: vars.map((v) => grads[v.name]!.dataSync() as Float32Array) };
    tf.dispose([value, ...Object.values(grads)]);
    return result;
  } finally {
    tf.setBackend('wasm');
  }
}

function layerVars(layers: tf.layers.Layer[]): Array<{ name: string; v: tf.Variable }> {
  return layers.flatMap((l) =>
    l.trainableWeights.map((w) => ({ name: w.name, v: (w as unknown as { read(): tf.Variable }).read() })),
  );
}

describe('training steps on wasm give the cpu gradients', () => {
  it('small CNN (conv, maxPool, dropout, dense), every layer trainable', () => {
    const base = buildSmallCnn(28, 32, 99);
    const dropout = tf.layers.dropout({ rate: 0.5, seed: 3 });
    const head = tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 5 }) });
    head.build([null, 32]);
    const x = tf.randomUniform([4, 28, 28, 3], 0, 1, 'float32', 8);
    const y = tf.oneHot(tf.tensor1d([0, 3, 7, 9], 'int32'), 10);
    const vars = layerVars([...base.layers, head]);
    const loss = () =>
      tf.tidy(() => {
        const emb = base.apply(x, { training: true }) as tf.Tensor;
        // Dropout draws its mask from a seeded generator only when told to; rate applies in training.
        const dropped = dropout.apply(emb, { training: false }) as tf.Tensor;
        const probs = head.apply(dropped) as tf.Tensor;
        return tf.losses.softmaxCrossEntropy(y, tf.log(tf.clipByValue(probs, 1e-7, 1))) as tf.Scalar;
      });
    const wasm = gradsOn('wasm', vars.map((e) => e.v), loss);
    const cpu = gradsOn('cpu', vars.map((e) => e.v), loss);
    expect(Math.abs(wasm.loss - cpu.loss)).toBeLessThan(1e-4);
    vars.forEach((e, i) => expect(relErr(wasm.grads[i]!, cpu.grads[i]!), e.name).toBeLessThan(1e-3));
    tf.dispose([x, y]);
    base.dispose();
    for (const w of head.weights) w.dispose(); // applied eagerly only: Layer.dispose refuses
  });

  it('MobileNetV2, top 20 layers + dense head trainable, batch 1 at 224 px', async () => {
    const base = (await loadBaseModel('mobilenet_v2')).model;
    const top = base.layers.slice(-20);
    expect(top.map((l) => l.name)).toContain('block_15_depthwise');
    for (const layer of top) layer.trainable = true; // the loaded base is frozen
    const head = tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 11 }) });
    head.build([null, 1280]);
    const vars = layerVars([...top, head]);
    const x = tf.randomUniform([1, 224, 224, 3], 0, 1, 'float32', 12);
    const y = tf.oneHot(tf.tensor1d([4], 'int32'), 10);
    const loss = () =>
      tf.tidy(() => {
        // BN in inference mode (moving statistics), as when fine-tuning with frozen statistics.
        const emb = base.apply(x, { training: false }) as tf.Tensor;
        const probs = head.apply(emb) as tf.Tensor;
        return tf.losses.softmaxCrossEntropy(y, tf.log(tf.clipByValue(probs, 1e-7, 1))) as tf.Scalar;
      });
    const wasm = gradsOn('wasm', vars.map((e) => e.v), loss);
    const cpu = gradsOn('cpu', vars.map((e) => e.v), loss);
    expect(Math.abs(wasm.loss - cpu.loss) / Math.abs(cpu.loss)).toBeLessThan(1e-3);
    // Every trainable tensor: conv / depthwise kernels (which need all three new kernels), BN, head.
    const checked = vars.map((e, i) => ({ name: e.name, err: relErr(wasm.grads[i]!, cpu.grads[i]!) }));
    expect(checked.map((c) => c.name)).toEqual(
      expect.arrayContaining([expect.stringMatching(/Conv_1\/kernel/), expect.stringMatching(/block_16_expand\/kernel/), expect.stringMatching(/block_15_depthwise\/depthwise_kernel/)]),
    );
    for (const c of checked) expect(c.err, c.name).toBeLessThan(2e-3);
    tf.dispose([x, y]);
    for (const w of head.weights) w.dispose(); // applied eagerly only: Layer.dispose refuses
  });
});
