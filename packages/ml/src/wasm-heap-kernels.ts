// Memory-bound kernels for the tfjs wasm backend that work directly on its heap.
//
// A training step spends much of its time in operations that only move or combine values once
// each, which tfjs-backend-wasm 4.22 does in several passes or with per-element index arithmetic.
// Profiled in one full-network MobileNetV2 step at batch 8 on a 2-core machine (4.1 s, 2 threads):
//
//   ReLU6's gradient    ~1.0 s   tfjs differentiates clipByValue(x, 0, 6) as where(x ≥ 0 ∧ x ≤ 6,
//                                dy, 0): five kernels, four activation-sized temporaries. Here: one
//                                SIMD pass (FinetuneClipByValueGrad, wasm-simd.ts).
//   StridedSlice, Slice,  0.8 s  the convolution gradients' windows, crops, paddings and im2col
//   PadV2, Concat                (wasm-gradients.ts), at 4–190 ns per value. Here: copies of
//                                contiguous runs (memmove).
//   Transpose           0.2 s    the filter gradients' operands ([N·H·W, C] matrices), ~5–8 ns per
//                                value. Here: 4 × 4 SIMD blocks for 2-D transposes, run copies where
//                                the last axis stays last.
//   Identity            0.2 s    the engine clones every tensor it saves for the backward pass, and
//                                wasm's Identity copies it. Here: shared storage, as tfjs-backend-cpu
//                                does (wasm's Reshape already shares storage the same way).
//
// Outputs are allocated with the backend's own makeOutput; the heap is read through views taken
// after the last allocation (an allocation may grow the heap, which replaces its buffer). Every
// kernel gives exactly the values of the kernel it stands in for; the tests compare them. Cases a
// kernel does not take (other dtypes, masks, shapes) return null and run tfjs' own kernel.
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { instantiateSimdLoops, type SimdLoops } from './wasm-simd.ts';
import { wrapWasmKernel } from './wasm-kernel-wrap.ts';

type TensorInfo = tf.TensorInfo;

interface HeapKernelArgs {
  inputs: Record<string, TensorInfo> | TensorInfo[];
  backend: BackendWasm;
  attrs?: Record<string, unknown>;
}

type HeapKernel = (args: HeapKernelArgs) => TensorInfo | null;

/** The parts of the emscripten module the kernels use: its memory, in either of tfjs' builds. */
interface EmscriptenHeap {
  wasmMemory?: WebAssembly.Memory; // threaded build
  asm?: { memory?: WebAssembly.Memory }; // single-threaded build
  HEAPU8: Uint8Array;
}

function heapMemory(backend: BackendWasm): WebAssembly.Memory | null {
  const wasm = backend.wasm as unknown as EmscriptenHeap;
  return wasm.wasmMemory ?? wasm.asm?.memory ?? null;
}

const simdLoops = new WeakMap<BackendWasm, SimdLoops>();

/** Whether `backend`'s kernels run the SIMD loops (false: the JavaScript fallbacks). */
export function hasSimdLoops(backend: BackendWasm): boolean {
  return simdLoops.has(backend);
}

/** Runs `fn` with `backend`'s SIMD loops set aside, so the JavaScript fallbacks run (for tests). */
export function withoutSimdLoops<T>(backend: BackendWasm, fn: () => T): T {
  const loops = simdLoops.get(backend);
  simdLoops.delete(backend);
  try {
    return fn();
  } finally {
    if (loops) simdLoops.set(backend, loops);
  }
}

/** The whole heap as floats; element index = byte offset / 4 (tfjs aligns tensors to 4 bytes or more). */
function heapFloats(backend: BackendWasm): Float32Array {
  const memory = heapMemory(backend);
  return new Float32Array(memory ? memory.buffer : (backend.wasm as unknown as EmscriptenHeap).HEAPU8.buffer);
}

function offset(backend: BackendWasm, t: TensorInfo): number {
  return backend.getMemoryOffset(t.dataId) >>> 0;
}

/** The name of the fused ReLU6 / clipByValue gradient kernel. */
export const CLIP_BY_VALUE_GRAD = 'FinetuneClipByValueGrad';

/** dx = dy where min ≤ x ≤ max, else +0 (NaN x: +0): tfjs' composed gradient, bit for bit. */
const clipByValueGrad: HeapKernel = ({ inputs, backend, attrs }) => {
  const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
  const { clipValueMin: min, clipValueMax: max } = attrs as { clipValueMin: number; clipValueMax: number };
  const out = backend.makeOutput(x.shape, 'float32');
  const n = tf.util.sizeFromShape(x.shape);
  const simd = simdLoops.get(backend);
  if (simd) {
    simd.clip_grad(offset(backend, x), offset(backend, dy), offset(backend, out), n, min, max);
    return out;
  }
  const heap = heapFloats(backend);
  const [xi, di, oi] = [x, dy, out].map((t) => offset(backend, t) / 4) as [number, number, number];
  for (let i = 0; i < n; i++) {
    const v = heap[xi + i]!;
    heap[oi + i] = v >= min && v <= max ? heap[di + i]! : 0;
  }
  return out;
};

/** Identity without a copy: the output shares the input's storage (reference-counted). */
const sharedIdentity: HeapKernel = ({ inputs, backend }) => {
  const { x } = inputs as { x: TensorInfo };
  if (x.dtype === 'string') return null;
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
};

/**
 * Copies a strided block of a float32 tensor into `out`, row by row: for every index of the
 * block's leading axes (an odometer over `counts` without the last), `counts[last]` values taken
 * every `steps[last]` from `begin` in the source land contiguously in the output, `outRowStride`
 * apart, starting at `outStart` (element indices into `heap`).
 */
function copyBlock(
  heap: Float32Array,
  src: number,
  srcShape: number[],
  begin: number[],
  steps: number[],
  counts: number[],
  out: number,
  outRowStride: number,
): void {
  const rank = srcShape.length;
  const srcStrides = [...tf.util.computeStrides(srcShape), 1];
  const run = counts[rank - 1]!;
  const step = steps[rank - 1]!;
  const rows = counts.slice(0, -1).reduce((p, q) => p * q, 1);
  const index = new Array<number>(rank - 1).fill(0);
  for (let r = 0; r < rows; r++) {
    let from = src + begin[rank - 1]!;
    for (let d = 0; d < rank - 1; d++) from += (begin[d]! + index[d]! * steps[d]!) * srcStrides[d]!;
    const to = out + r * outRowStride;
    if (step === 1 && run >= 8) heap.copyWithin(to, from, from + run);
    else for (let i = 0; i < run; i++) heap[to + i] = heap[from + i * step]!;
    for (let d = rank - 2; d >= 0; d--) {
      if (++index[d]! < counts[d]!) break;
      index[d] = 0;
    }
  }
}

interface StridedSliceAttrs {
  begin: number[];
  end: number[];
  strides: number[];
  beginMask: number;
  endMask: number;
  ellipsisMask: number;
  newAxisMask: number;
  shrinkAxisMask: number;
}

/** A float32 strided slice given in full: in-bounds begin < end and a positive stride per axis, no masks. */
const stridedSlice: HeapKernel = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: TensorInfo };
  const a = attrs as unknown as StridedSliceAttrs;
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 1 || ![a.begin, a.end, a.strides].every((v) => v.length === rank)) return null;
  if (a.beginMask || a.endMask || a.ellipsisMask || a.newAxisMask || a.shrinkAxisMask) return null;
  const counts: number[] = [];
  for (let d = 0; d < rank; d++) {
    const [b, e, s] = [a.begin[d]!, a.end[d]!, a.strides[d]!];
    if (!Number.isInteger(s) || s < 1 || b < 0 || e > x.shape[d]! || e <= b) return null;
    counts.push(Math.ceil((e - b) / s));
  }
  const out = backend.makeOutput(counts, 'float32');
  copyBlock(heapFloats(backend), offset(backend, x) / 4, x.shape, a.begin, a.strides, counts, offset(backend, out) / 4, counts[rank - 1]!);
  return out;
};

/** A float32 slice. */
const slice: HeapKernel = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: TensorInfo };
  const raw = attrs as { begin: number | number[]; size?: number | number[] };
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 1) return null;
  // tfjs' own normalisation: a number for rank 1, missing trailing axes, size −1 (to the end).
  const [begin, counts] = tf.slice_util.parseSliceParams(x as tf.Tensor, raw.begin, raw.size) as [number[], number[]];
  if (counts.some((c, d) => c < 1 || begin[d]! < 0 || begin[d]! + c > x.shape[d]!)) return null;
  const out = backend.makeOutput(counts, 'float32');
  copyBlock(heapFloats(backend), offset(backend, x) / 4, x.shape, begin, new Array<number>(rank).fill(1), counts, offset(backend, out) / 4, counts[rank - 1]!);
  return out;
};

/** A float32 constant padding: the output filled with the constant, then the input copied in, row by row. */
const pad: HeapKernel = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: TensorInfo };
  const { paddings, constantValue } = attrs as { paddings: Array<[number, number]>; constantValue: number };
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 1 || paddings.length !== rank || tf.util.sizeFromShape(x.shape) === 0) return null;
  if (paddings.some(([p, q]) => p < 0 || q < 0)) return null;
  const outShape = x.shape.map((d, i) => paddings[i]![0] + d + paddings[i]![1]);
  const out = backend.makeOutput(outShape, 'float32');
  const heap = heapFloats(backend);
  const o = offset(backend, out) / 4;
  const size = tf.util.sizeFromShape(outShape);
  heap.fill(constantValue, o, o + size);
  // Each input row (the last axis) lands in the output at the padded position of its index.
  const outStrides = [...tf.util.computeStrides(outShape), 1];
  const run = x.shape[rank - 1]!;
  const rows = tf.util.sizeFromShape(x.shape) / run;
  const index = new Array<number>(rank - 1).fill(0);
  const src = offset(backend, x) / 4;
  for (let r = 0; r < rows; r++) {
    let to = o + paddings[rank - 1]![0];
    for (let d = 0; d < rank - 1; d++) to += (index[d]! + paddings[d]![0]) * outStrides[d]!;
    const from = src + r * run;
    if (run >= 8) heap.copyWithin(to, from, from + run);
    else for (let i = 0; i < run; i++) heap[to + i] = heap[from + i]!;
    for (let d = rank - 2; d >= 0; d--) {
      if (++index[d]! < x.shape[d]!) break;
      index[d] = 0;
    }
  }
  return out;
};

/** A float32 concatenation along any axis: per index of the axes before it, each input's block in turn. */
const concat: HeapKernel = ({ inputs, backend, attrs }) => {
  const parts = (Array.isArray(inputs) ? inputs : Object.values(inputs)).filter((t) => tf.util.sizeFromShape(t.shape) > 0);
  if (parts.length < 2 || parts.some((t) => t.dtype !== 'float32')) return null;
  const first = parts[0]!;
  const axis = tf.util.parseAxisParam((attrs as { axis: number | number[] }).axis, first.shape)[0]!;
  const outShape = tf.backend_util.computeOutShape(parts.map((t) => t.shape), axis);
  const outer = tf.util.sizeFromShape(first.shape.slice(0, axis));
  const blocks = parts.map((t) => tf.util.sizeFromShape(t.shape.slice(axis)));
  const outBlock = blocks.reduce((p, q) => p + q, 0);
  const out = backend.makeOutput(outShape, 'float32');
  const heap = heapFloats(backend);
  const o = offset(backend, out) / 4;
  const sources = parts.map((t) => offset(backend, t) / 4);
  for (let r = 0; r < outer; r++) {
    let to = o + r * outBlock;
    for (let p = 0; p < parts.length; p++) {
      const len = blocks[p]!;
      const from = sources[p]! + r * len;
      if (len >= 8) heap.copyWithin(to, from, from + len);
      else for (let i = 0; i < len; i++) heap[to + i] = heap[from + i]!;
      to += len;
    }
  }
  return out;
};

/**
 * A float32 transpose that is a 2-D one once adjacent axes are merged: a rotation of the axes
 * ([k, …, n−1, 0, …, k−1]: a [rows, cols] matrix, SIMD blocks), or a rotation of all but the last
 * axis, which stays last ([rows, cols] of vectors: copies of whole vectors).
 */
const transpose: HeapKernel = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: TensorInfo };
  const { perm } = attrs as { perm: number[] };
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 2 || perm.length !== rank) return null;
  const rotation = (p: number[]) => {
    const k = p[0]!;
    return k > 0 && p.every((axis, i) => axis === (k + i) % p.length) ? k : 0;
  };
  const whole = rotation(perm);
  const keepsLast = perm[rank - 1] === rank - 1 && rank > 2 ? rotation(perm.slice(0, -1)) : 0;
  if (!whole && !keepsLast) return null;
  const k = whole || keepsLast;
  const vector = whole ? 1 : x.shape[rank - 1]!;
  const rows = tf.util.sizeFromShape(x.shape.slice(0, k));
  const cols = tf.util.sizeFromShape(x.shape.slice(k, whole ? rank : rank - 1));
  const out = backend.makeOutput(perm.map((axis) => x.shape[axis]!), 'float32');
  const src = offset(backend, x);
  const dst = offset(backend, out);
  const simd = simdLoops.get(backend);
  const rows4 = simd && vector === 1 ? rows & ~3 : 0;
  const cols4 = simd && vector === 1 ? cols & ~3 : 0;
  if (rows4 && cols4) simd!.transpose_blocks(src, dst, rows, cols, rows4, cols4);
  const heap = heapFloats(backend);
  const [s, d] = [src / 4, dst / 4];
  // What the SIMD blocks did not cover: whole rows past rows4, and columns past cols4 above them.
  for (let r = 0; r < rows; r++) {
    for (let c = r < rows4 ? cols4 : 0; c < cols; c++) {
      const from = s + (r * cols + c) * vector;
      const to = d + (c * rows + r) * vector;
      if (vector >= 8) heap.copyWithin(to, from, from + vector);
      else for (let i = 0; i < vector; i++) heap[to + i] = heap[from + i]!;
    }
  }
  return out;
};

interface DepthwiseBackpropFilterAttrs {
  strides: number | [number, number];
  dilations?: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

/**
 * A depthwise convolution's filter gradient (depth multiplier 1, no dilation, channels a multiple
 * of 4) in one SIMD pass over dy, the padding skipped rather than materialised. The general case
 * (wasm-gradients.ts) runs XNNPACK's depthwise convolution with dy as a filter the size of the
 * image, which it is not made for: 440 ms of a MobileNetV2 step, against ~40 ms here.
 */
const depthwiseFilterGrad: HeapKernel = ({ inputs, backend, attrs }) => {
  const simd = simdLoops.get(backend);
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const a = attrs as unknown as DepthwiseBackpropFilterAttrs;
  if (!simd || x.dtype !== 'float32' || dy.dtype !== 'float32' || x.shape.length !== 4) return null;
  const info = tf.backend_util.computeConv2DInfo(x.shape as [number, number, number, number], a.filterShape, a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode, true);
  if (info.outChannels !== info.inChannels || info.dilationHeight !== 1 || info.dilationWidth !== 1 || info.inChannels % 4 !== 0) return null;
  const out = backend.makeOutput(a.filterShape, 'float32');
  const o = offset(backend, out);
  heapFloats(backend).fill(0, o / 4, o / 4 + tf.util.sizeFromShape(a.filterShape));
  simd.depthwise_filter_grad(
    offset(backend, x), offset(backend, dy), o,
    info.batchSize, info.inHeight, info.inWidth, info.inChannels, info.outHeight, info.outWidth,
    info.filterHeight, info.filterWidth, info.strideHeight, info.strideWidth, info.padInfo.top, info.padInfo.left,
  );
  return out;
};

const WRAPPED = Symbol.for('finetune.wasmHeapKernel');

/** Puts `fast` in front of wasm's kernel `name`; where it returns null, the original runs. */
function wrap(name: string, fast: HeapKernel): void {
  wrapWasmKernel(name, WRAPPED, (original) =>
    ((args: HeapKernelArgs) => fast(args) ?? original(args as unknown as Parameters<tf.KernelFunc>[0])) as unknown as tf.KernelFunc,
  );
}

/** Kernel names registerWasmHeapKernels wraps (for diagnostics and tests). */
export const WASM_HEAP_KERNELS = ['Identity', 'StridedSlice', 'Slice', 'PadV2', 'Concat', 'Transpose', 'DepthwiseConv2dNativeBackpropFilter'] as const;

/**
 * Registers the kernels above for the wasm backend (process-global; other backends untouched) and
 * gives the active wasm backend its SIMD loops; without them (they failed to assemble or load) the
 * same kernels run as JavaScript loops. Idempotent.
 */
export async function registerWasmHeapKernels(backend: BackendWasm): Promise<void> {
  if (tf.getKernel(CLIP_BY_VALUE_GRAD, 'wasm') == null) {
    tf.registerKernel({ kernelName: CLIP_BY_VALUE_GRAD, backendName: 'wasm', kernelFunc: clipByValueGrad as unknown as tf.KernelFunc });
  }
  wrap('Identity', sharedIdentity);
  wrap('StridedSlice', stridedSlice);
  wrap('Slice', slice);
  wrap('PadV2', pad);
  wrap('Concat', concat);
  wrap('Transpose', transpose);
  wrap('DepthwiseConv2dNativeBackpropFilter', depthwiseFilterGrad);
  const memory = heapMemory(backend);
  if (memory && !simdLoops.has(backend)) {
    try {
      simdLoops.set(backend, await instantiateSimdLoops(memory));
    } catch (error) {
      process.emitWarning(`tfjs wasm heap kernels run without SIMD: ${(error as Error).message}`);
    }
  }
}
