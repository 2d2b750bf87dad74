// Keras layer → ONNX operators, one entry per layer class, in the words of the ONNX operator
// docs. Layout: Keras tensors are NHWC, ONNX convolutions and pools are NCHW, so every image
// tensor (rank 3 without the batch) is kept NCHW inside the graph and the converter transposes
// at the boundaries; rank-2 tensors ([N, features]) are the same in both. Shapes in `Value` are
// the Keras ones (without batch), whatever the stored layout.
//
// A class missing here, or a configuration an entry cannot express (channels-first data,
// dilated pools, Dense on images), makes the model not convertible: it then runs on tfjs.
import type { tf } from '../backend.ts';
import { NotConvertible, type OnnxGraph } from './graph.ts';

export interface Value {
  name: string;
  /** Keras shape without the batch dimension (rank 3 = [H, W, C], stored NCHW in the graph). */
  shape: number[];
}

export interface LayerInput {
  g: OnnxGraph;
  layer: tf.layers.Layer;
  config: Record<string, unknown>;
  inputs: Value[];
  /** Keras output shape without the batch dimension. */
  outputShape: number[];
  /** The layer's weights in tfjs order, with their shapes. */
  weights: { data: Float32Array; shape: number[] }[];
}

/** Emits the nodes for one layer; returns the name of its output tensor. */
export type LayerMapping = (p: LayerInput) => string;

/** Keras NHWC axis (batch = 0) → the NCHW axis of the stored tensor. */
const NCHW_AXIS = [0, 2, 3, 1];

export const LAYER_MAPPINGS: Record<string, LayerMapping> = {
  /** Conv — kernel HWIO → OIHW, explicit pads (Keras 'same' puts the odd pixel at the end), then the activation. */
  Conv2D: (p) => {
    const [x] = image(p);
    const { kernel, bias } = convWeights(p, 1);
    const [kh, kw, ci, co] = kernel.shape as [number, number, number, number];
    const w = p.g.floats(`${p.layer.name}_W`, transpose(kernel.data, kernel.shape, [3, 2, 0, 1]), [co, ci, kh, kw]);
    const b = bias ? p.g.floats(`${p.layer.name}_B`, bias.data, [co]) : '';
    const y = p.g.node('Conv', b ? [x.name, w, b] : [x.name, w], convAttributes(p, x, [kh, kw]), p.layer.name);
    return activation(p.g, y, str(p.config.activation ?? 'linear'), 3, p.layer.name);
  },

  /** Conv with group = C — depthwise kernel [kh, kw, C, m] → [C·m, 1, kh, kw]; output channel c·m + j as in tfjs. */
  DepthwiseConv2D: (p) => {
    const [x] = image(p);
    const { kernel, bias } = convWeights(p, 1);
    const [kh, kw, c, m] = kernel.shape as [number, number, number, number];
    const w = p.g.floats(`${p.layer.name}_W`, transpose(kernel.data, kernel.shape, [2, 3, 0, 1]), [c * m, 1, kh, kw]);
    const b = bias ? p.g.floats(`${p.layer.name}_B`, bias.data, [c * m]) : '';
    const y = p.g.node('Conv', b ? [x.name, w, b] : [x.name, w], { ...convAttributes(p, x, [kh, kw]), group: c }, p.layer.name);
    return activation(p.g, y, str(p.config.activation ?? 'linear'), 3, p.layer.name);
  },

  /** Conv (depthwise, group = C) then Conv 1×1 (pointwise, with the bias), then the activation. */
  SeparableConv2D: (p) => {
    const [x] = image(p);
    const { kernel: depthwise, bias } = convWeights(p, 2);
    const pointwise = p.weights[1]!;
    const [kh, kw, c, m] = depthwise.shape as [number, number, number, number];
    const co = pointwise.shape[3]!;
    const dw = p.g.floats(`${p.layer.name}_depthwise_W`, transpose(depthwise.data, depthwise.shape, [2, 3, 0, 1]), [c * m, 1, kh, kw]);
    const mid = p.g.node('Conv', [x.name, dw], { ...convAttributes(p, x, [kh, kw]), group: c }, `${p.layer.name}_depthwise`);
    const pw = p.g.floats(`${p.layer.name}_pointwise_W`, transpose(pointwise.data, pointwise.shape, [3, 2, 0, 1]), [co, c * m, 1, 1]);
    const b = bias ? p.g.floats(`${p.layer.name}_B`, bias.data, [co]) : '';
    const y = p.g.node('Conv', b ? [mid, pw, b] : [mid, pw], { kernel_shape: [1, 1] }, p.layer.name);
    return activation(p.g, y, str(p.config.activation ?? 'linear'), 3, p.layer.name);
  },

  /** BatchNormalization (inference form: scale·(x − mean)/√(var + ε) + B) over the channel axis. */
  BatchNormalization: (p) => {
    const [x] = one(p);
    const rank = x.shape.length;
    const axis = num(p.config.axis ?? -1);
    if (axis !== -1 && axis !== rank) throw new NotConvertible(`BatchNormalization over axis ${axis} of a rank-${rank + 1} tensor (only the channel axis)`);
    const c = x.shape[rank - 1]!;
    const w = [...p.weights];
    const take = (on: boolean, fill: number) => (on ? w.shift()!.data : new Float32Array(c).fill(fill));
    const gamma = take(p.config.scale !== false, 1);
    const beta = take(p.config.center !== false, 0);
    const [mean, variance] = [w.shift()!.data, w.shift()!.data];
    const n = p.layer.name;
    const inputs = [x.name, p.g.floats(`${n}_scale`, gamma, [c]), p.g.floats(`${n}_B`, beta, [c]), p.g.floats(`${n}_mean`, mean, [c]), p.g.floats(`${n}_var`, variance, [c])];
    return p.g.node('BatchNormalization', inputs, { epsilon: num(p.config.epsilon ?? 1e-3) }, n);
  },

  /** Relu, or Clip(0, maxValue) when the layer caps it (MobileNetV2's ReLU6). */
  ReLU: (p) => {
    const [x] = one(p);
    const max = p.config.maxValue;
    if (max == null) return p.g.node('Relu', [x.name], {}, p.layer.name);
    return p.g.node('Clip', [x.name, p.g.floats(`${p.layer.name}_min`, new Float32Array([0]), []), p.g.floats(`${p.layer.name}_max`, new Float32Array([num(max)]), [])], {}, p.layer.name);
  },

  /** LeakyRelu (alpha). */
  LeakyReLU: (p) => p.g.node('LeakyRelu', [one(p)[0].name], { alpha: num(p.config.alpha ?? 0.3) }, p.layer.name),

  /** Elu (alpha). */
  ELU: (p) => p.g.node('Elu', [one(p)[0].name], { alpha: num(p.config.alpha ?? 1) }, p.layer.name),

  /** Softmax over the layer's axis (the channel axis of an image is NCHW axis 1). */
  Softmax: (p) => {
    const [x] = one(p);
    return p.g.node('Softmax', [x.name], { axis: storedAxis(num(p.config.axis ?? -1), x.shape.length) }, p.layer.name);
  },

  /** The named activation (see ACTIVATIONS). */
  Activation: (p) => {
    const [x] = one(p);
    return activation(p.g, x.name, str(p.config.activation), x.shape.length, p.layer.name);
  },

  /** Add (Sum for more than two inputs). */
  Add: (p) => p.g.node(p.inputs.length === 2 ? 'Add' : 'Sum', names(p), {}, p.layer.name),
  /** Mul, chained for more than two inputs. */
  Multiply: (p) => chain(p, 'Mul'),
  /** Mean of the inputs. */
  Average: (p) => p.g.node('Mean', names(p), {}, p.layer.name),
  /** Max of the inputs. */
  Maximum: (p) => p.g.node('Max', names(p), {}, p.layer.name),
  /** Min of the inputs. */
  Minimum: (p) => p.g.node('Min', names(p), {}, p.layer.name),

  /** Concat along the layer's axis, mapped to the stored layout (channels → axis 1). */
  Concatenate: (p) => {
    const rank = p.inputs[0]!.shape.length;
    if (p.inputs.some((v) => v.shape.length !== rank)) throw new NotConvertible('Concatenate of tensors of different ranks');
    return p.g.node('Concat', names(p), { axis: storedAxis(num(p.config.axis ?? -1), rank) }, p.layer.name);
  },

  /** Pad with zeros: [[top, bottom], [left, right]] → pads [0, 0, top, left, 0, 0, bottom, right]. */
  ZeroPadding2D: (p) => {
    const [x] = image(p);
    const [[top, bottom], [left, right]] = pairs(p.config.padding);
    const pads = p.g.int64s(`${p.layer.name}_pads`, [0, 0, top, left, 0, 0, bottom, right]);
    return p.g.node('Pad', [x.name, pads], { mode: 'constant' }, p.layer.name);
  },

  /** MaxPool (padding cells never win, as in Keras 'same'). */
  MaxPooling2D: (p) => pool(p, 'MaxPool', {}),
  /** AveragePool with count_include_pad = 0: Keras 'same' averages over the cells inside the image. */
  AveragePooling2D: (p) => pool(p, 'AveragePool', { count_include_pad: 0 }),
  /** GlobalAveragePool → [N, C, 1, 1], then Flatten → [N, C]. */
  GlobalAveragePooling2D: (p) => globalPool(p, 'GlobalAveragePool'),
  /** GlobalMaxPool → [N, C, 1, 1], then Flatten → [N, C]. */
  GlobalMaxPooling2D: (p) => globalPool(p, 'GlobalMaxPool'),

  /** Flatten in Keras (NHWC) order: an image goes back to NHWC first. */
  Flatten: (p) => {
    const [x] = one(p);
    const nhwc = x.shape.length === 3 ? p.g.node('Transpose', [x.name], { perm: [0, 2, 3, 1] }, `${p.layer.name}_nhwc`) : x.name;
    return p.g.node('Flatten', [nhwc], { axis: 1 }, p.layer.name);
  },

  /** Reshape in Keras order ([0, ...targetShape], 0 = keep the batch), transposing images on the way in and out. */
  Reshape: (p) => {
    const [x] = one(p);
    const nhwc = x.shape.length === 3 ? p.g.node('Transpose', [x.name], { perm: [0, 2, 3, 1] }, `${p.layer.name}_nhwc`) : x.name;
    const shape = p.g.int64s(`${p.layer.name}_shape`, [0, ...p.outputShape]);
    const y = p.g.node('Reshape', [nhwc, shape], {}, p.layer.name);
    return p.outputShape.length === 3 ? p.g.node('Transpose', [y], { perm: [0, 3, 1, 2] }, `${p.layer.name}_nchw`) : y;
  },

  /** Gemm (A · kernel + bias; MatMul when there is no bias), then the activation. Rank-2 inputs only. */
  Dense: (p) => {
    const [x] = one(p);
    if (x.shape.length !== 1) throw new NotConvertible(`Dense on a rank-${x.shape.length + 1} tensor`);
    const [kernel, bias] = p.weights as [{ data: Float32Array; shape: number[] }, { data: Float32Array; shape: number[] } | undefined];
    const w = p.g.floats(`${p.layer.name}_W`, kernel.data, kernel.shape);
    const y = bias ? p.g.node('Gemm', [x.name, w, p.g.floats(`${p.layer.name}_B`, bias.data, bias.shape)], {}, p.layer.name) : p.g.node('MatMul', [x.name, w], {}, p.layer.name);
    return activation(p.g, y, str(p.config.activation ?? 'linear'), 1, p.layer.name);
  },

  /** Identity at inference: no node. */
  Dropout: (p) => one(p)[0].name,
  SpatialDropout2D: (p) => one(p)[0].name,
  GaussianNoise: (p) => one(p)[0].name,
  GaussianDropout: (p) => one(p)[0].name,
  AlphaDropout: (p) => one(p)[0].name,

  /** Mul by scale, Add offset. */
  Rescaling: (p) => {
    const [x] = one(p);
    const scale = p.g.floats(`${p.layer.name}_scale`, new Float32Array([num(p.config.scale)]), []);
    const offset = p.g.floats(`${p.layer.name}_offset`, new Float32Array([num(p.config.offset ?? 0)]), []);
    return p.g.node('Add', [p.g.node('Mul', [x.name, scale], {}, `${p.layer.name}_mul`), offset], {}, p.layer.name);
  },

  /** LayerNormalization over the last axis (Scale = gamma or ones, B = beta or none). Rank-2 inputs only. */
  LayerNormalization: (p) => {
    const [x] = one(p);
    const axis = p.config.axis;
    const axes = Array.isArray(axis) ? axis : [axis];
    if (x.shape.length !== 1 || axes.length !== 1 || (axes[0] !== -1 && axes[0] !== 1)) throw new NotConvertible('LayerNormalization other than over the last axis of [N, D]');
    const d = x.shape[0]!;
    const w = [...p.weights];
    const gamma = p.config.scale !== false ? w.shift()!.data : new Float32Array(d).fill(1);
    const beta = p.config.center !== false ? w.shift()!.data : null;
    const inputs = [x.name, p.g.floats(`${p.layer.name}_scale`, gamma, [d]), ...(beta ? [p.g.floats(`${p.layer.name}_B`, beta, [d])] : [])];
    return p.g.node('LayerNormalization', inputs, { axis: -1, epsilon: num(p.config.epsilon ?? 1e-3) }, p.layer.name);
  },
};

/** Keras activation names (tfjs spelling) → nodes; a name missing here makes the model not convertible. */
const ACTIVATIONS: Record<string, (g: OnnxGraph, x: string, rank: number, hint: string) => string> = {
  linear: (_g, x) => x,
  relu: (g, x, _r, h) => g.node('Relu', [x], {}, h),
  relu6: (g, x, _r, h) => g.node('Clip', [x, g.floats(`${h}_min`, new Float32Array([0]), []), g.floats(`${h}_max`, new Float32Array([6]), [])], {}, h),
  sigmoid: (g, x, _r, h) => g.node('Sigmoid', [x], {}, h),
  tanh: (g, x, _r, h) => g.node('Tanh', [x], {}, h),
  // Keras' softmax activation is over the last axis: channels, axis 1 of a stored image.
  softmax: (g, x, rank, h) => g.node('Softmax', [x], { axis: rank === 3 ? 1 : -1 }, h),
  elu: (g, x, _r, h) => g.node('Elu', [x], { alpha: 1 }, h),
  // Keras' selu constants.
  selu: (g, x, _r, h) => g.node('Selu', [x], { alpha: 1.6732632423543772, gamma: 1.0507009873554805 }, h),
  softplus: (g, x, _r, h) => g.node('Softplus', [x], {}, h),
  softsign: (g, x, _r, h) => g.node('Softsign', [x], {}, h),
  // tfjs: clip(0.2·x + 0.5, 0, 1).
  hardSigmoid: (g, x, _r, h) => g.node('HardSigmoid', [x], { alpha: 0.2, beta: 0.5 }, h),
  swish: (g, x, _r, h) => g.node('Mul', [x, g.node('Sigmoid', [x], {}, `${h}_sigmoid`)], {}, h),
};

function activation(g: OnnxGraph, x: string, name: string, rank: number, hint: string): string {
  const f = ACTIVATIONS[name];
  if (!f) throw new NotConvertible(`activation '${name}'`);
  return f(g, x, rank, `${hint}_${name}`);
}

function one(p: LayerInput): [Value] {
  if (p.inputs.length !== 1) throw new NotConvertible(`${p.layer.getClassName()} with ${p.inputs.length} inputs`);
  return [p.inputs[0]!];
}

function image(p: LayerInput): [Value] {
  const [x] = one(p);
  if (x.shape.length !== 3) throw new NotConvertible(`${p.layer.getClassName()} on a rank-${x.shape.length + 1} tensor (expects images)`);
  if ((p.config.dataFormat ?? 'channelsLast') !== 'channelsLast') throw new NotConvertible(`dataFormat ${String(p.config.dataFormat)}`);
  return [x];
}

function names(p: LayerInput): string[] {
  return p.inputs.map((v) => v.name);
}

function chain(p: LayerInput, op: string): string {
  let y = p.inputs[0]!.name;
  for (const [i, v] of p.inputs.slice(1).entries()) y = p.g.node(op, [y, v.name], {}, i === p.inputs.length - 2 ? p.layer.name : `${p.layer.name}_${i}`);
  return y;
}

function convWeights(p: LayerInput, kernels: number) {
  const useBias = p.config.useBias !== false;
  if (p.weights.length !== kernels + (useBias ? 1 : 0)) throw new NotConvertible(`${p.layer.getClassName()} with ${p.weights.length} weights`);
  return { kernel: p.weights[0]!, bias: useBias ? p.weights[kernels]! : null };
}

function convAttributes(p: LayerInput, x: Value, kernel: [number, number]) {
  const strides = pair(p.config.strides ?? 1);
  const dilations = pair(p.config.dilationRate ?? 1);
  return { kernel_shape: kernel, strides, dilations, pads: pads(str(p.config.padding), x, kernel, strides, dilations) };
}

function pool(p: LayerInput, op: string, extra: Record<string, number>): string {
  const [x] = image(p);
  const kernel = pair(p.config.poolSize ?? 2);
  const strides = pair(p.config.strides ?? kernel);
  return p.g.node(op, [x.name], { kernel_shape: kernel, strides, pads: pads(str(p.config.padding ?? 'valid'), x, kernel, strides, [1, 1]), ...extra }, p.layer.name);
}

function globalPool(p: LayerInput, op: string): string {
  const [x] = image(p);
  if (p.config.keepDims) throw new NotConvertible(`${p.layer.getClassName()} with keepDims`);
  return p.g.node('Flatten', [p.g.node(op, [x.name], {}, `${p.layer.name}_pool`)], { axis: 1 }, p.layer.name);
}

/**
 * ONNX pads [top, left, bottom, right]. 'same' is TensorFlow's: output ⌈in / stride⌉, total
 * padding max((out − 1)·stride + (k − 1)·dilation + 1 − in, 0), the smaller half before — so a
 * stride-2 conv on an even size pads one pixel at the bottom/right only.
 */
export function pads(padding: string, x: Value, kernel: [number, number], strides: [number, number], dilations: [number, number]): number[] {
  if (padding === 'valid') return [0, 0, 0, 0];
  if (padding !== 'same') throw new NotConvertible(`padding '${padding}'`);
  const before: number[] = [];
  const after: number[] = [];
  for (let i = 0; i < 2; i++) {
    const size = x.shape[i]!;
    const out = Math.ceil(size / strides[i]!);
    const total = Math.max((out - 1) * strides[i]! + (kernel[i]! - 1) * dilations[i]! + 1 - size, 0);
    before.push(Math.floor(total / 2));
    after.push(total - Math.floor(total / 2));
  }
  return [...before, ...after];
}

/** A Keras axis (batch = 0, negative from the end) → the axis in the stored layout. */
function storedAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank + 1 : axis;
  if (a <= 0 || a > rank) throw new NotConvertible(`axis ${axis} of a rank-${rank + 1} tensor`);
  return rank === 3 ? NCHW_AXIS[a]! : a;
}

/** Row-major transpose: the result has shape perm.map((p) => shape[p]). */
export function transpose(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  const outStrides = strides(perm.map((p) => shape[p]!));
  // How far one step along input axis d moves in the output.
  const step = shape.map((_, d) => outStrides[perm.indexOf(d)]!);
  const out = new Float32Array(data.length);
  const index = new Array<number>(shape.length).fill(0);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    out[o] = data[i]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      o += step[d]!;
      if (++index[d]! < shape[d]!) break;
      o -= step[d]! * shape[d]!;
      index[d] = 0;
    }
  }
  return out;
}

function strides(shape: number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1]! * shape[d + 1]!;
  return s;
}

function num(v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new NotConvertible(`expected a number, got ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown): string {
  if (typeof v !== 'string') throw new NotConvertible(`expected a name, got ${JSON.stringify(v)}`);
  return v;
}

function pair(v: unknown): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((n) => typeof n === 'number')) return [v[0] as number, v[1] as number];
  throw new NotConvertible(`expected one or two numbers, got ${JSON.stringify(v)}`);
}

function pairs(v: unknown): [[number, number], [number, number]] {
  if (typeof v === 'number') return [[v, v], [v, v]];
  if (Array.isArray(v) && v.length === 2) {
    const [a, b] = v as unknown[];
    if (typeof a === 'number' && typeof b === 'number') return [[a, a], [b, b]];
    return [pair(a), pair(b)];
  }
  throw new NotConvertible(`ZeroPadding2D padding ${JSON.stringify(v)}`);
}
