// Fast paths in front of kernels the tfjs wasm backend has but runs slowly in a training step.
// Each wraps the original kernel: the cases it takes are rewritten as ops wasm runs fast (XNNPACK
// products and pooling, broadcasting elementwise kernels), every other case still runs the original.
//
// - Conv2DBackpropInput, 1×1 stride 1 (most of MobileNetV2): a matmul instead of a scalar loop.
// - Tile that only broadcasts (tfjs-core's BatchNorm gradient): a broadcasting Add.
// - BatchMatMul with a transposed operand (every Dense layer's backward pass): XNNPACK, bit for bit.
// - Sum over every axis but the last (BatchNorm's and biases' gradients): wasm transposes the
//   channels to the front and sums rows (~3 ns per value); average pooling on XNNPACK is ~10×
//   faster (measured: 31 → 3 ms for an [8, 112, 112, 96] activation).
// - FusedBatchNorm (inference mode): wasm's kernel is a scalar loop (~4 ns per value); as
//   x·k + b with per-channel k = scale·rsqrt(variance + ε) and b = offset − mean·k it is two
//   broadcasting SIMD passes.
//
// Semantics follow tfjs-backend-cpu's kernels of the same names; the tests compare against cpu.
import * as tf from '@tensorflow/tfjs';
import { wrapWasmKernel } from './wasm-kernel-wrap.ts';

type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
type Rounding = 'floor' | 'round' | 'ceil' | undefined;
type Pair = number | [number, number];
type Tensor4D = tf.Tensor4D;

interface Conv2DBackpropInputAttrs {
  strides: Pair;
  pad: Pad;
  dataFormat?: 'NHWC' | 'NCHW';
  dimRoundingMode?: Rounding;
  inputShape: [number, number, number, number];
}

/**
 * The input gradient of an unpadded 1×1 stride-1 NHWC conv is dy [M, Cout] · Wᵀ [Cout, Cin]. wasm's
 * own Conv2DBackpropInput is a scalar loop (~400 ms for MobileNetV2's Conv_1 + block_16_project at
 * batch 8, vs ~20 ms as a matmul); returns null for the cases left to it.
 */
function conv2DBackpropInput1x1(dy: Tensor4D, filter: Tensor4D, attrs: Conv2DBackpropInputAttrs): tf.Tensor | null {
  const [kH, kW, cIn, cOut] = filter.shape;
  if (kH !== 1 || kW !== 1 || attrs.dataFormat === 'NCHW') return null;
  const info = tf.backend_util.computeConv2DInfo(attrs.inputShape, filter.shape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false);
  const { top, bottom, left, right } = info.padInfo;
  if (info.strideHeight !== 1 || info.strideWidth !== 1 || top || bottom || left || right) return null;
  const m = info.batchSize * info.outHeight * info.outWidth;
  const wT = tf.transpose(tf.reshape(filter, [cIn, cOut]));
  return tf.reshape(tf.matMul(tf.reshape(dy, [m, cOut]), wT), attrs.inputShape);
}

/**
 * Tile that only broadcasts (every repeated axis has size 1) is x + zeros(outShape), which wasm
 * does with a fast broadcasting Add; its own Tile is a per-element index loop. tfjs-core's
 * FusedBatchNorm gradient tiles a [1, 1, 1, C] tensor to the activation shape for every BN layer:
 * 4.2 s of a 12.8 s full-network MobileNetV2 step at batch 8. Returns null for other cases.
 */
function broadcastTile(x: tf.Tensor, reps: number[]): tf.Tensor | null {
  if (x.dtype !== 'float32' || reps.length !== x.rank) return null;
  if (!x.shape.every((d, i) => reps[i] === 1 || d === 1)) return null;
  const outShape = x.shape.map((d, i) => d * reps[i]!);
  return tf.add(x, tf.zeros(outShape));
}

/** The block along the shared dimension in which wasm's own BatchMatMul loop sums (tfjs-backend-wasm 4.22). */
const SLOW_MATMUL_BLOCK = 48;

/**
 * BatchMatMul with a transposed operand, as the same products summed in the same order by the
 * XNNPACK path. wasm's BatchMatMul runs XNNPACK only when neither operand is transposed (and
 * there is no batch); a transposed one takes a scalar loop — every Dense layer's backward pass
 * (x^T·dy for the kernel, dy·W^T for the input), measured at about 40 % of a dense head's
 * training step on 1,280-d embeddings. Here the transposes are done explicitly — of the operands, or of the other operands
 * and of the output (C = (op(B)^T·op(A)^T)^T), whichever moves fewer values — and the product runs
 * untransposed on XNNPACK. Up to the loop's block of 48 along the shared dimension both compute
 * each output as 0 + a0·b0 + a1·b1 + … in order, without fused multiply-adds, so the results are
 * bit for bit the same; a longer shared dimension (the loop then adds per-block sums) and batched
 * products are left to the original. Returns null for the cases left to it.
 */
function transposedMatMul(a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean): tf.Tensor | null {
  if (!transposeA && !transposeB) return null;
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.rank < 2 || b.rank < 2) return null;
  const outer = (t: tf.Tensor) => t.shape.slice(0, -2);
  if ([...outer(a), ...outer(b)].some((d) => d !== 1)) return null;
  const [aRows, aCols] = a.shape.slice(-2) as [number, number];
  const [bRows, bCols] = b.shape.slice(-2) as [number, number];
  const k = transposeA ? aRows : aCols;
  if (k > SLOW_MATMUL_BLOCK || k !== (transposeB ? bCols : bRows)) return null;
  const m = transposeA ? aCols : aRows;
  const n = transposeB ? bRows : bCols;
  const a2 = tf.reshape(a, [aRows, aCols]);
  const b2 = tf.reshape(b, [bRows, bCols]);
  // Values moved: transposes, plus XNNPACK packing its right operand (per call: it is a new
  // tensor every step), about twice a transpose per value (measured).
  const operandsMoved = (transposeA ? m * k : 0) + (transposeB ? k * n : 0) + 2 * k * n;
  const othersMoved = (transposeA ? 0 : m * k) + (transposeB ? 0 : k * n) + m * n + 2 * k * m;
  const c =
    operandsMoved <= othersMoved
      ? tf.matMul(transposeA ? tf.transpose(a2) : a2, transposeB ? tf.transpose(b2) : b2)
      : tf.transpose(tf.matMul(transposeB ? b2 : tf.transpose(b2), transposeA ? a2 : tf.transpose(a2)));
  const batch = outer(a).length >= outer(b).length ? outer(a) : outer(b);
  return tf.reshape(c, [...batch, m, n]);
}

/**
 * Σ of x over every axis but the last, by average pooling (XNNPACK) times the window's size:
 * rank 4 pools each image over H×W, then the N per-image sums are pooled the same way as a
 * [1, N, 1, C] tensor. Float32 rounding differs from the original's (relative ~1e-6).
 * Returns null for other reductions.
 */
function channelSum(x: tf.Tensor, axis: number | number[], keepDims: boolean): tf.Tensor | null {
  const rank = x.rank;
  if (x.dtype !== 'float32' || rank < 2 || x.size === 0) return null;
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
  if (axes.length !== rank - 1 || axes.some((d, i) => d !== i)) return null;
  const channels = x.shape[rank - 1]!;
  const poolRows = (t: tf.Tensor, rows: number) =>
    tf.mul(tf.avgPool(tf.reshape(t, [1, rows, 1, channels]) as Tensor4D, [rows, 1], 1, 'valid'), rows);
  let sum: tf.Tensor;
  if (rank === 4 && x.shape[1]! * x.shape[2]! > 1) {
    const [n, h, w] = x.shape as [number, number, number, number];
    const perImage = tf.mul(tf.avgPool(x as Tensor4D, [h, w], 1, 'valid'), h * w);
    sum = n === 1 ? perImage : poolRows(perImage, n);
  } else {
    sum = poolRows(x, x.size / channels);
  }
  return tf.reshape(sum, keepDims ? [...new Array<number>(rank - 1).fill(1), channels] : [channels]);
}

/**
 * FusedBatchNorm with per-channel ([C]) statistics over NHWC x, as x·k + b. Returns null for
 * other shapes.
 */
function batchNormMultiplyAdd(
  inputs: { x: tf.Tensor; mean: tf.Tensor; variance: tf.Tensor; offset?: tf.Tensor; scale?: tf.Tensor },
  varianceEpsilon: number,
): tf.Tensor | null {
  const { x, mean, variance, offset, scale } = inputs;
  const channels = x.shape[x.rank - 1];
  const perChannel = (t: tf.Tensor | undefined) => t === undefined || (t.rank === 1 && t.shape[0] === channels);
  if (x.dtype !== 'float32' || x.rank < 2 || ![mean, variance, offset, scale].every(perChannel)) return null;
  const inv = tf.rsqrt(tf.add(variance, varianceEpsilon));
  const k = scale ? tf.mul(inv, scale) : inv;
  const b = offset ? tf.sub(offset, tf.mul(mean, k)) : tf.neg(tf.mul(mean, k));
  return tf.add(tf.mul(x, k), b);
}

const FAST_PATH = Symbol.for('finetune.wasmFastPath');

/** Puts a fast path in front of an existing wasm kernel; cases where `fast` returns null still run the original kernel. */
function wrapKernel(kernelName: string, fast: (args: KernelArgs) => tf.Tensor | null): void {
  wrapWasmKernel(kernelName, FAST_PATH, (original) =>
    ((args: KernelArgs) => {
      // tidy passes a null result through; the cast only satisfies its TensorContainer type.
      const out = tf.tidy(() => fast(args) as tf.Tensor) as tf.Tensor | null;
      return out ?? original(args as unknown as Parameters<tf.KernelFunc>[0]);
    }) as unknown as tf.KernelFunc,
  );
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  attrs?: tf.NamedAttrMap;
}

/**
 * Puts the fast paths above in front of wasm's kernels (process-global; other backends untouched).
 * Idempotent: wrappers are not re-wrapped.
 */
export function registerWasmFastPaths(): void {
  wrapKernel('Conv2DBackpropInput', ({ inputs, attrs }) =>
    conv2DBackpropInput1x1(inputs['dy'] as Tensor4D, inputs['filter'] as Tensor4D, attrs as unknown as Conv2DBackpropInputAttrs),
  );
  wrapKernel('Tile', ({ inputs, attrs }) => broadcastTile(inputs['x'] as tf.Tensor, (attrs as { reps: number[] }).reps));
  wrapKernel('BatchMatMul', ({ inputs, attrs }) => {
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    return transposedMatMul(inputs['a'] as tf.Tensor, inputs['b'] as tf.Tensor, transposeA, transposeB);
  });
  wrapKernel('Sum', ({ inputs, attrs }) => {
    const { axis, keepDims } = attrs as { axis: number | number[]; keepDims: boolean };
    return channelSum(inputs['x'] as tf.Tensor, axis, keepDims);
  });
  wrapKernel('FusedBatchNorm', ({ inputs, attrs }) =>
    batchNormMultiplyAdd(inputs as unknown as Parameters<typeof batchNormMultiplyAdd>[0], (attrs as { varianceEpsilon: number }).varianceEpsilon),
  );
}

/** Kernel names registerWasmFastPaths wraps (for diagnostics and tests). */
export const WASM_FAST_PATH_KERNELS = ['Conv2DBackpropInput', 'Tile', 'BatchMatMul', 'Sum', 'FusedBatchNorm'] as const;
