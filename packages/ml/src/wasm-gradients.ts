// Convolution gradient kernels for the tfjs wasm backend.
//
// @tensorflow/tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter, DepthwiseConv2dNativeBackpropFilter
// or DepthwiseConv2dNativeBackpropInput kernel, so any training step that trains a convolution
// (fine-tuning the top of MobileNetV2, training a small CNN) throws "Kernel ... not registered"
// on wasm. The cpu backend has them but is ~350x slower than PyTorch (measured here: 113 s for one
// MobileNetV2 step, 79 s of it in Conv2DBackpropFilter). These kernels are built from kernels
// wasm does have (BatchMatMul via XNNPACK, DepthwiseConv2dNative, Slice/StridedSlice, Pad,
// Reshape, Transpose, Mul, Sum, Concat), called as ordinary ops from inside the kernel function:
// nested ops run on the active backend and are never recorded on the gradient tape (the engine
// only records at kernel depth 0), and each kernel body runs in a tidy so only its output survives.
//
// Semantics follow tfjs-backend-cpu's kernels of the same names (NHWC, strides, 'same' / 'valid' /
// explicit padding, depthMultiplier); the tests compare against cpu on random inputs.
//
// Fast paths in front of kernels wasm does have are in wasm-fast-paths.ts.
import * as tf from '@tensorflow/tfjs';

type Pad = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
type Rounding = 'floor' | 'round' | 'ceil' | undefined;
type Pair = number | [number, number];

interface Conv2DBackpropFilterAttrs {
  strides: Pair;
  pad: Pad;
  dataFormat?: 'NHWC' | 'NCHW';
  dimRoundingMode?: Rounding;
  filterShape: [number, number, number, number];
}

interface DepthwiseBackpropFilterAttrs {
  strides: Pair;
  dilations?: Pair;
  pad: Pad;
  dimRoundingMode?: Rounding;
  filterShape: [number, number, number, number];
}

interface DepthwiseBackpropInputAttrs {
  strides: Pair;
  dilations?: Pair;
  pad: Pad;
  dimRoundingMode?: Rounding;
  inputShape: [number, number, number, number];
}

type Tensor4D = tf.Tensor4D;

/**
 * Pads (positive amounts) or crops (negative amounts) the H and W axes of an NHWC tensor.
 */
function padOrCrop(x: Tensor4D, top: number, bottom: number, left: number, right: number): Tensor4D {
  let t = x;
  if (top < 0 || bottom < 0 || left < 0 || right < 0) {
    const [n, h, w, c] = t.shape;
    const t0 = Math.max(0, -top);
    const l0 = Math.max(0, -left);
    const hSize = h - t0 - Math.max(0, -bottom);
    const wSize = w - l0 - Math.max(0, -right);
    t = tf.slice(t, [0, t0, l0, 0], [n, hSize, wSize, c]);
  }
  const pt = Math.max(0, top);
  const pb = Math.max(0, bottom);
  const pl = Math.max(0, left);
  const pr = Math.max(0, right);
  if (pt || pb || pl || pr) {
    t = tf.pad(t, [
      [0, 0],
      [pt, pb],
      [pl, pr],
      [0, 0],
    ]);
  }
  return t;
}

/**
 * The input window that a filter tap (i, j) sees at every output position: for a conv whose
 * (already padded) input is `xp`, returns xp[:, i*dH + oh*sH, j*dW + ow*sW, :] for all oh < outH,
 * ow < outW — shape [N, outH, outW, C].
 */
function tapWindow(
  xp: Tensor4D,
  rowStart: number,
  colStart: number,
  outH: number,
  outW: number,
  sH: number,
  sW: number,
): Tensor4D {
  const [n, h, w, c] = xp.shape;
  if (rowStart === 0 && colStart === 0 && outH === h && outW === w && sH === 1 && sW === 1) return xp;
  if (sH === 1 && sW === 1) return tf.slice(xp, [0, rowStart, colStart, 0], [n, outH, outW, c]);
  return tf.stridedSlice(
    xp,
    [0, rowStart, colStart, 0],
    [n, rowStart + (outH - 1) * sH + 1, colStart + (outW - 1) * sW + 1, c],
    [1, sH, sW, 1],
  ) as Tensor4D;
}

/** Pads x (NHWC) so every tap window of the conv described by `info` lies inside it. */
function padForTaps(x: Tensor4D, info: tf.backend_util.Conv2DInfo): Tensor4D {
  const needH = (info.outHeight - 1) * info.strideHeight + (info.filterHeight - 1) * info.dilationHeight + 1;
  const needW = (info.outWidth - 1) * info.strideWidth + (info.filterWidth - 1) * info.dilationWidth + 1;
  const { top, left } = info.padInfo;
  return padOrCrop(x, top, needH - top - info.inHeight, left, needW - left - info.inWidth);
}

/**
 * Conv2DBackpropFilter: dW[i, j] = Σ_{n, oh, ow} window_ij(x)ᵀ · dy, i.e. one matrix product
 * im2col(x)ᵀ [K, M] · dy [M, Cout] with M = N·outH·outW and K = kH·kW·Cin. For a 1×1 conv
 * im2col(x) is x itself (strided when the conv is), which is most of MobileNetV2.
 */
function conv2DBackpropFilter(x4: Tensor4D, dy4: Tensor4D, attrs: Conv2DBackpropFilterAttrs): tf.Tensor {
  const nchw = attrs.dataFormat === 'NCHW';
  const x = nchw ? tf.transpose(x4, [0, 2, 3, 1]) : x4;
  const dy = nchw ? tf.transpose(dy4, [0, 2, 3, 1]) : dy4;
  const info = tf.backend_util.computeConv2DInfo(
    x.shape,
    attrs.filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
  const { filterHeight: kH, filterWidth: kW, inChannels: cIn, outChannels: cOut } = info;
  const m = info.batchSize * info.outHeight * info.outWidth;
  const xp = padForTaps(x, info);
  const windows: Tensor4D[] = [];
  for (let i = 0; i < kH; i++) {
    for (let j = 0; j < kW; j++) {
      windows.push(
        tapWindow(xp, i * info.dilationHeight, j * info.dilationWidth, info.outHeight, info.outWidth, info.strideHeight, info.strideWidth),
      );
    }
  }
  // im2col: channel index k = (i·kW + j)·Cin + c, the same order as the filter [kH, kW, Cin, Cout].
  const cols = windows.length === 1 ? windows[0]! : tf.concat(windows, 3);
  const cols2d = tf.reshape(cols, [m, kH * kW * cIn]) as tf.Tensor2D;
  const dy2d = tf.reshape(dy, [m, cOut]) as tf.Tensor2D;
  const dw = matMulTransposeA(cols2d, dy2d);
  return tf.reshape(dw, attrs.filterShape);
}

/**
 * aᵀ·b for a [M, K], b [M, N] with M large. wasm's BatchMatMul is only fast (XNNPACK) with
 * neither operand transposed — transposeA / transposeB take a scalar loop ~12× slower — so one
 * operand is transposed explicitly. XNNPACK packs its right operand on every call with a new
 * tensor (every step), and packing an [M, N] matrix slows down sharply as N grows (measured: an
 * [25088, 144] operand 68–76 ms, an [25088, 24] one 6 ms, while the product itself takes 4 ms),
 * so the narrower operand goes on the right: aᵀ·b when N ≤ K, else (bᵀ·a)ᵀ. The transposes
 * cost about 1 ns per value.
 */
function matMulTransposeA(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  if (b.shape[1] <= a.shape[1]) return tf.matMul(tf.transpose(a), b);
  return tf.transpose(tf.matMul(tf.transpose(b), a)) as tf.Tensor2D;
}

/**
 * DepthwiseConv2dNativeBackpropFilter: dW[i, j, c, q] = Σ_{n, oh, ow} window_ij(x)[.., c] ·
 * dy[.., c·mult + q]. Depth multiplier 1 (MobileNet): one depthwise conv, see below; otherwise one
 * elementwise product and one reduction per filter tap.
 */
function depthwiseBackpropFilter(x: Tensor4D, dy: Tensor4D, attrs: DepthwiseBackpropFilterAttrs): tf.Tensor {
  const info = tf.backend_util.computeConv2DInfo(
    x.shape,
    attrs.filterShape,
    attrs.strides,
    attrs.dilations ?? 1,
    attrs.pad,
    attrs.dimRoundingMode,
    true,
  );
  const { filterHeight: kH, filterWidth: kW, inChannels: cIn } = info;
  const mult = info.outChannels / cIn;
  const xp = padForTaps(x, info);
  if (mult === 1 && info.dilationHeight === 1 && info.dilationWidth === 1) {
    // Fast path: the filter gradient is itself a depthwise conv — of x, with dy as the filter
    // (dilated by the forward stride) — once the batch is folded into the channels:
    // out[i, j, (n, c)] = Σ_{oh, ow} xp[n, i + oh·sH, j + ow·sW, c] · dy[n, oh, ow, c].
    // One XNNPACK call instead of kH·kW slice + mul + reduce passes (~3× faster).
    const [n, hp, wp] = xp.shape;
    const xT = tf.reshape(tf.transpose(xp, [1, 2, 0, 3]), [1, hp, wp, n * cIn]) as Tensor4D;
    const dyT = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [info.outHeight, info.outWidth, n * cIn, 1]) as Tensor4D;
    const out = tf.depthwiseConv2d(xT, dyT, 1, 'valid', 'NHWC', [info.strideHeight, info.strideWidth]);
    return tf.reshape(tf.sum(tf.reshape(out, [kH, kW, n, cIn]), 2), attrs.filterShape);
  }
  const dyM = mult === 1 ? dy : tf.reshape(dy, [info.batchSize, info.outHeight, info.outWidth, cIn, mult]);
  const taps: tf.Tensor[] = [];
  for (let i = 0; i < kH; i++) {
    for (let j = 0; j < kW; j++) {
      const win = tapWindow(xp, i * info.dilationHeight, j * info.dilationWidth, info.outHeight, info.outWidth, info.strideHeight, info.strideWidth);
      const prod = mult === 1 ? tf.mul(win, dyM) : tf.mul(tf.expandDims(win, 4), dyM);
      taps.push(tf.sum(prod, [0, 1, 2])); // [Cin] or [Cin, mult]
    }
  }
  return tf.reshape(tf.stack(taps), attrs.filterShape);
}

/**
 * DepthwiseConv2dNativeBackpropInput: the input gradient of a depthwise conv is a stride-1
 * depthwise *correlation* of dy — zero-dilated by the forward stride and padded by
 * (k-1)·dilation - pad — with the spatially flipped filter. With a channel multiplier the
 * C·mult gradient channels are summed back into C.
 */
function depthwiseBackpropInput(dy: Tensor4D, filter: Tensor4D, attrs: DepthwiseBackpropInputAttrs): tf.Tensor {
  const info = tf.backend_util.computeConv2DInfo(
    attrs.inputShape,
    filter.shape,
    attrs.strides,
    attrs.dilations ?? 1,
    attrs.pad,
    attrs.dimRoundingMode,
    true,
  );
  const { batchSize: n, filterHeight: kH, filterWidth: kW, inChannels: cIn, outChannels: cOutAll } = info;
  const { strideHeight: sH, strideWidth: sW, dilationHeight: dH, dilationWidth: dW } = info;
  const mult = cOutAll / cIn;

  // Insert sH-1 / sW-1 zeros between dy's rows / columns.
  let d: Tensor4D = dy;
  const dilH = (info.outHeight - 1) * sH + 1;
  const dilW = (info.outWidth - 1) * sW + 1;
  if (sH > 1 || sW > 1) {
    const d6 = tf.reshape(dy, [n, info.outHeight, 1, info.outWidth, 1, cOutAll]);
    const padded = tf.pad(d6, [
      [0, 0],
      [0, 0],
      [0, sH - 1],
      [0, 0],
      [0, sW - 1],
      [0, 0],
    ]);
    d = tf.reshape(padded, [n, info.outHeight * sH, info.outWidth * sW, cOutAll]);
    d = tf.slice(d, [0, 0, 0, 0], [n, dilH, dilW, cOutAll]);
  }
  // Full-correlation padding so output row h reads dy rows h + top - i·dH (i = kH-1 .. 0).
  const spanH = (kH - 1) * dH;
  const spanW = (kW - 1) * dW;
  const top = spanH - info.padInfo.top;
  const left = spanW - info.padInfo.left;
  d = padOrCrop(d, top, info.inHeight + spanH - top - dilH, left, info.inWidth + spanW - left - dilW);

  const flipped = tf.reverse(filter, [0, 1]);
  const f = tf.reshape(flipped, [kH, kW, cOutAll, 1]) as Tensor4D;
  const dil: [number, number] = [dH, dW];
  let dx = tf.depthwiseConv2d(d, f, 1, 'valid', 'NHWC', dil);
  if (mult > 1) {
    dx = tf.sum(tf.reshape(dx, [n, info.inHeight, info.inWidth, cIn, mult]), 4);
  }
  return dx;
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  attrs?: tf.NamedAttrMap;
}

function register(kernelName: string, impl: (args: KernelArgs) => tf.Tensor): void {
  if (tf.getKernel(kernelName, 'wasm') != null) return; // a real kernel (or ours) is already there
  tf.registerKernel({
    kernelName,
    backendName: 'wasm',
    // The engine hands kernels the op's input Tensors; intermediates die with the tidy.
    kernelFunc: ((args: KernelArgs) => tf.tidy(() => impl(args))) as unknown as tf.KernelFunc,
  });
}

/**
 * Registers the convolution gradient kernels the wasm backend lacks. Idempotent: kernels that
 * already exist for 'wasm' (from a newer tfjs-backend-wasm or an earlier call) are left alone.
 * Process-global, like all tfjs kernel registration; the cpu and other backends are untouched.
 */
export function registerWasmGradientKernels(): void {
  register('Conv2DBackpropFilter', ({ inputs, attrs }) =>
    conv2DBackpropFilter(inputs['x'] as Tensor4D, inputs['dy'] as Tensor4D, attrs as unknown as Conv2DBackpropFilterAttrs),
  );
  register('DepthwiseConv2dNativeBackpropFilter', ({ inputs, attrs }) =>
    depthwiseBackpropFilter(inputs['x'] as Tensor4D, inputs['dy'] as Tensor4D, attrs as unknown as DepthwiseBackpropFilterAttrs),
  );
  register('DepthwiseConv2dNativeBackpropInput', ({ inputs, attrs }) =>
    depthwiseBackpropInput(inputs['dy'] as Tensor4D, inputs['filter'] as Tensor4D, attrs as unknown as DepthwiseBackpropInputAttrs),
  );
}

/** Kernel names registerWasmGradientKernels provides (for diagnostics and tests). */
export const WASM_GRADIENT_KERNELS = [
  'Conv2DBackpropFilter',
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
] as const;
