// The wasm heap kernels and SIMD loops (src/wasm-heap-kernels.ts, src/wasm-simd.ts) against
// tfjs-backend-cpu's kernels of the same names, on random inputs whose shapes leave remainders
// (rows and columns that are not multiples of 4, short and long runs), with the SIMD loops and
// with their JavaScript fallbacks. Values must be identical, except the depthwise filter gradient,
// which sums in another order.
import { beforeAll, describe, expect, it } from 'vitest';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { tf, initBackend, registerTrainingGradients } from '../src/index.ts';
import { CLIP_BY_VALUE_GRAD, WASM_HEAP_KERNELS, hasSimdLoops, registerWasmHeapKernels, withoutSimdLoops } from '../src/wasm-heap-kernels.ts';

let wasmBackend: BackendWasm;

beforeAll(async () => {
  await initBackend('wasm');
  registerTrainingGradients();
  wasmBackend = tf.backend() as BackendWasm;
});

type Values = { values: Float32Array; shape: number[] };

function random(shape: number[], seed: number, low = -1, high = 1): Values {
  const t = tf.randomUniform(shape, low, high, 'float32', seed);
  const values = t.dataSync() as Float32Array;
  t.dispose();
  return { values, shape };
}

/** Runs one kernel on a backend with fresh input tensors (an array for Concat); returns its output. */
function runOn(backend: 'wasm' | 'cpu', kernel: string, inputs: Record<string, Values> | Values[], attrs: Record<string, unknown>): Values {
  const before = tf.getBackend();
  tf.setBackend(backend);
  try {
    const make = (v: Values) => tf.tensor(v.values, v.shape);
    const ins = Array.isArray(inputs) ? inputs.map(make) : Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, make(v)]));
    const out = tf.engine().runKernel(kernel, ins as unknown as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as tf.Tensor;
    const result = { values: out.dataSync() as Float32Array, shape: out.shape };
    tf.dispose([out, ...Object.values(ins)]);
    return result;
  } finally {
    tf.setBackend(before);
  }
}

/** The wasm kernel's output, with the SIMD loops and without them, each identical to cpu's. */
function expectSameAsCpu(kernel: string, inputs: Record<string, Values> | Values[], attrs: Record<string, unknown>): void {
  const want = runOn('cpu', kernel, inputs, attrs);
  for (const got of [runOn('wasm', kernel, inputs, attrs), withoutSimdLoops(wasmBackend, () => runOn('wasm', kernel, inputs, attrs))]) {
    expect(got.shape).toEqual(want.shape);
    expect(Buffer.from(got.values.buffer, got.values.byteOffset, got.values.byteLength).equals(Buffer.from(want.values.buffer, want.values.byteOffset, want.values.byteLength))).toBe(true);
  }
}

describe('wasm heap kernels', () => {
  it('have their SIMD loops on the active backend, and registering again is a no-op', async () => {
    expect(hasSimdLoops(wasmBackend)).toBe(true);
    const before = [CLIP_BY_VALUE_GRAD, ...WASM_HEAP_KERNELS].map((name) => tf.getKernel(name, 'wasm')?.kernelFunc);
    expect(before.every((f) => f !== undefined)).toBe(true);
    await registerWasmHeapKernels(wasmBackend);
    expect([CLIP_BY_VALUE_GRAD, ...WASM_HEAP_KERNELS].map((name) => tf.getKernel(name, 'wasm')?.kernelFunc)).toEqual(before);
  });

  it('Transpose: 2-D, axis rotations and rotations that keep the last axis', () => {
    const cases: Array<[number[], number[]]> = [
      [[4, 8], [1, 0]],
      [[7, 10], [1, 0]],
      [[101, 27], [1, 0]],
      [[3, 5, 6], [1, 2, 0]],
      [[3, 5, 6], [2, 0, 1]],
      [[2, 7, 5, 12], [1, 2, 0, 3]], // [N, H, W, C] → [H, W, N, C] (depthwise filter gradient)
      [[2, 7, 5, 3], [2, 0, 1, 3]],
      [[2, 3, 4], [0, 2, 1]], // not a rotation: wasm's own kernel
    ];
    for (const [shape, perm] of cases) expectSameAsCpu('Transpose', { x: random(shape, 1) }, { perm });
  });

  it('StridedSlice and Slice: strides, crops and short runs', () => {
    const x = random([3, 9, 11, 5], 2);
    for (const [begin, end, strides] of [
      [[0, 0, 0, 0], [3, 9, 11, 5], [1, 2, 2, 1]],
      [[1, 1, 2, 0], [3, 8, 11, 5], [1, 2, 3, 1]],
      [[0, 2, 1, 1], [2, 9, 10, 4], [1, 1, 1, 1]],
      [[0, 0, 0, 0], [3, 9, 11, 5], [1, 1, 1, 2]], // a strided last axis: copied value by value
    ]) {
      expectSameAsCpu('StridedSlice', { x }, { begin, end, strides, beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0 });
    }
    const wide = random([2, 6, 7, 40], 3);
    for (const [begin, size] of [
      [[0, 1, 1, 0], [2, 4, 5, 40]],
      [[1, 0, 2, 3], [-1, -1, 3, 20]],
    ]) {
      expectSameAsCpu('Slice', { x: wide }, { begin, size });
    }
  });

  it('PadV2 and Concat', () => {
    for (const [shape, paddings] of [
      [[2, 5, 6, 3], [[0, 0], [1, 2], [0, 1], [0, 0]]],
      [[2, 5, 6, 24], [[0, 0], [1, 1], [1, 1], [0, 0]]],
      [[4, 9], [[1, 0], [2, 3]]],
    ] as Array<[number[], Array<[number, number]>]>) {
      expectSameAsCpu('PadV2', { x: random(shape, 4) }, { paddings, constantValue: 0.5 });
    }
    const parts = [random([2, 3, 4, 3], 5), random([2, 3, 4, 3], 6), random([2, 3, 4, 3], 7)];
    for (const axis of [0, 1, 2, 3, -1]) expectSameAsCpu('Concat', parts, { axis });
    expectSameAsCpu('Concat', [random([5, 20], 8), random([5, 3], 9)], { axis: 1 });
  });

  it('Identity shares storage and survives its input', () => {
    const x = tf.tensor([1, 2, 3]);
    const y = tf.engine().runKernel('Identity', { x }) as tf.Tensor;
    x.dispose();
    expect(Array.from(y.dataSync())).toEqual([1, 2, 3]);
    y.dispose();
  });

  it("ReLU6's gradient is tfjs' own, bit for bit, including the ends of the range and NaN", () => {
    const base = random([3, 7, 9, 13], 10, -3, 9); // 819 values: not a multiple of 4
    base.values.set([0, 6, -0, NaN, 6.000001, -1e-9], 0);
    const dy = random([3, 7, 9, 13], 11);
    const grad = (backend: 'wasm' | 'cpu') => {
      const before = tf.getBackend();
      tf.setBackend(backend);
      try {
        const x = tf.tensor(base.values, base.shape);
        const d = tf.tensor(dy.values, dy.shape);
        const g = tf.grad((t: tf.Tensor) => tf.clipByValue(t, 0, 6))(x, d);
        const values = g.dataSync() as Float32Array;
        tf.dispose([x, d, g]);
        return values;
      } finally {
        tf.setBackend(before);
      }
    };
    expect(tf.getKernel(CLIP_BY_VALUE_GRAD, 'wasm')).toBeDefined();
    const want = grad('cpu');
    for (const got of [grad('wasm'), withoutSimdLoops(wasmBackend, () => grad('wasm'))]) {
      // Values equal as numbers (outside the range the gradient is +0 on both).
      expect(Array.from(got)).toEqual(Array.from(want));
    }
  });

  it('the depthwise filter gradient matches cpu across strides, paddings and channel counts', () => {
    let worst = 0;
    for (const channels of [4, 12])
      for (const stride of [1, 2])
        for (const pad of ['same', 'valid', [[0, 0], [1, 0], [0, 2], [0, 0]]] as const)
          for (const batch of [1, 3]) {
            const xShape: [number, number, number, number] = [batch, 9, 8, channels];
            const info = tf.backend_util.computeConv2DInfo(xShape, [3, 3, channels, 1], stride, 1, pad as 'same', undefined, true);
            const inputs = { x: random(xShape, 12), dy: random([batch, info.outHeight, info.outWidth, channels], 13) };
            const attrs = { strides: stride, pad, dilations: 1, filterShape: [3, 3, channels, 1] };
            const want = runOn('cpu', 'DepthwiseConv2dNativeBackpropFilter', inputs, attrs);
            const got = runOn('wasm', 'DepthwiseConv2dNativeBackpropFilter', inputs, attrs);
            expect(got.shape).toEqual(want.shape);
            let num = 0;
            let den = 0;
            got.values.forEach((v, i) => {
              num = Math.max(num, Math.abs(v - want.values[i]!));
              den = Math.max(den, Math.abs(want.values[i]!));
            });
            worst = Math.max(worst, num / den);
          }
    expect(worst).toBeLessThan(1e-5);
  });

  it('leave no tensor behind', () => {
    const before = tf.memory().numTensors;
    runOn('wasm', 'Transpose', { x: random([9, 10], 14) }, { perm: [1, 0] });
    runOn('wasm', 'PadV2', { x: random([2, 3], 15) }, { paddings: [[1, 1], [0, 2]], constantValue: 0 });
    expect(tf.memory().numTensors).toBe(before);
  });
});
