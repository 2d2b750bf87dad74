// Model surgery: reading a base model as a layer graph, finding where it can be cut into a
// frozen bottom and a trainable top, and rebuilding sub-graphs as standalone models.
//
// Why rebuild instead of slicing: tfjs cannot make a model whose input is an intermediate
// symbolic tensor, so a top part is re-created by applying *copies* of its layers to a fresh
// tf.input in topological order. Copies are made from each layer's config and get the
// original's weights by reference (tfjs shares the buffer and counts references), so they cost
// no weight memory, training a copy never touches the cached zoo base, and each rebuilt model
// can be disposed on its own.
import { DomainError } from '@finetune/core';
import { tf } from '../backend.ts';

/** Prefix of every classifier-head layer we create; what `baseFromTrainedModel` cuts off. */
export const HEAD_PREFIX = 'head_';

export interface LayerGraph {
  model: tf.LayersModel;
  /** The model's input layer name (the image tensor). */
  inputName: string;
  /** Input shape without the batch dimension. */
  inputShape: number[];
  /** Every non-input layer, topologically sorted (inputs before consumers). */
  order: string[];
  /** Layer name → names of the layers whose outputs it consumes (in call order). */
  producers: Map<string, string[]>;
  /** The layer producing the model's output. */
  outputName: string;
}

interface FunctionalConfig {
  layers: { name: string; className: string; inboundNodes: [string, number, number, unknown][][] }[];
  inputLayers?: [string, number, number][];
  outputLayers?: [string, number, number][];
}

/** Reads a single-input, single-output layers model (functional or Sequential) as a graph. */
export function layerGraph(model: tf.LayersModel): LayerGraph {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) {
    throw new Error(`model ${model.name} must have one input and one output (has ${model.inputs.length} / ${model.outputs.length})`);
  }
  const inputShape = model.inputs[0]!.shape.slice(1).map((d) => {
    if (d == null) throw new Error(`model ${model.name} has an input with an unknown dimension`);
    return d;
  });
  const config = model.getConfig() as unknown as FunctionalConfig;
  if (!config.inputLayers || !config.outputLayers) {
    // Sequential: a linear stack. Its implicit input layer is named after the model's input.
    const inputName = model.inputs[0]!.sourceLayer.name;
    const order = model.layers.map((l) => l.name).filter((n) => n !== inputName);
    const producers = new Map(order.map((n, i) => [n, [i === 0 ? inputName : order[i - 1]!]]));
    return { model, inputName, inputShape, order, producers, outputName: order[order.length - 1] ?? inputName };
  }
  const inputName = config.inputLayers[0]![0];
  const outputName = config.outputLayers[0]![0];
  if (config.outputLayers[0]![2] !== 0) throw new Error(`model ${model.name}: multi-output layers are not supported`);
  const producers = new Map<string, string[]>();
  for (const layer of config.layers) {
    if (layer.name === inputName) continue;
    if (layer.inboundNodes.length !== 1) {
      throw new Error(`model ${model.name}: layer ${layer.name} is called ${layer.inboundNodes.length} times; shared layers are not supported`);
    }
    producers.set(
      layer.name,
      layer.inboundNodes[0]!.map(([name, , tensorIndex]) => {
        if (tensorIndex !== 0) throw new Error(`model ${model.name}: layer ${layer.name} consumes output ${tensorIndex} of ${name}; multi-output layers are not supported`);
        return name;
      }),
    );
  }
  // Kahn's algorithm, stable in config order (which tfjs already keeps topological).
  const order: string[] = [];
  const done = new Set([inputName]);
  const pending = config.layers.map((l) => l.name).filter((n) => n !== inputName);
  while (pending.length > 0) {
    const i = pending.findIndex((n) => producers.get(n)!.every((p) => done.has(p)));
    if (i < 0) throw new Error(`model ${model.name}: layer graph has a cycle or a dangling input`);
    const [name] = pending.splice(i, 1);
    order.push(name!);
    done.add(name!);
  }
  return { model, inputName, inputShape, order, producers, outputName };
}

/** The output shape (without batch) of a layer, or of the input when `name` is the input. */
export function tensorShape(graph: LayerGraph, name: string): number[] {
  if (name === graph.inputName) return graph.inputShape;
  const shape = graph.model.getLayer(name).outputShape as (number | null)[];
  if (!Array.isArray(shape) || Array.isArray(shape[0])) throw new Error(`layer ${name} has several outputs`);
  return shape.slice(1).map((d) => {
    if (d == null) throw new Error(`layer ${name} has an unknown output dimension`);
    return d;
  });
}

/**
 * A cut position p splits `order` into a frozen bottom order[0..p) and a trainable top
 * order[p..). It is valid when exactly one tensor crosses from bottom (or the input) to top
 * (or the model output) — a block boundary; residual connections make most positions inside a
 * block invalid. Returns the name of the layer producing the crossing tensor (the input
 * layer's name for p = 0), or null when the cut is invalid.
 */
export function cutTensorAt(graph: LayerGraph, p: number): string | null {
  const pos = new Map<string, number>([[graph.inputName, -1]]);
  graph.order.forEach((n, i) => pos.set(n, i));
  const crossing = new Set<string>();
  for (let j = p; j < graph.order.length; j++) {
    for (const producer of graph.producers.get(graph.order[j]!)!) if (pos.get(producer)! < p) crossing.add(producer);
  }
  if (pos.get(graph.outputName)! < p) crossing.add(graph.outputName);
  return crossing.size === 1 ? [...crossing][0]! : null;
}

function hasWeights(graph: LayerGraph, name: string): boolean {
  return graph.model.getLayer(name).weights.length > 0;
}

export interface Cut {
  /** Position in graph.order of the first trainable layer (order.length: nothing trains). */
  position: number;
  /** The layer whose output is the top's input (graph.inputName when everything trains). */
  cutLayer: string;
  /** Layers above the cut, topological order (all of them, weighted or not). */
  topLayers: string[];
  /** The top layers that carry weights: what actually trains. */
  trainableLayers: string[];
}

function cutAt(graph: LayerGraph, position: number): Cut {
  const cutLayer = cutTensorAt(graph, position);
  if (cutLayer === null) throw new Error(`no valid cut at position ${position}`);
  const topLayers = graph.order.slice(position);
  return { position, cutLayer, topLayers, trainableLayers: topLayers.filter((n) => hasWeights(graph, n)) };
}

/** The cut that freezes the whole base (feature extraction). */
export function frozenCut(graph: LayerGraph): Cut {
  return { position: graph.order.length, cutLayer: graph.outputName, topLayers: [], trainableLayers: [] };
}

/** The cut that trains the whole base (full, scratch). */
export function inputCut(graph: LayerGraph): Cut {
  return cutAt(graph, 0);
}

/**
 * Resolves an `unfreeze` request to a valid cut: the requested first trainable layer (top N
 * layers counted Keras-style over all layers, `base.layers[-N:]`, or `fromLayer`), moved down
 * to the nearest block boundary at or below it, and further down until at least one layer with
 * weights trains. Never moves up: at least what was asked for trains.
 */
export function resolveUnfreeze(graph: LayerGraph, unfreeze: { topLayers: number } | { fromLayer: string }): Cut {
  let requested: number;
  if ('topLayers' in unfreeze) {
    requested = Math.max(0, graph.order.length - unfreeze.topLayers);
  } else {
    requested = graph.order.indexOf(unfreeze.fromLayer);
    if (requested < 0) {
      throw new DomainError(
        'unknown_layer',
        `unfreeze.fromLayer '${unfreeze.fromLayer}' is not a layer of the base model (${graph.order.length} layers, e.g. ${validCuts(graph)
          .slice(-4)
          .map((c) => graph.order[c.position])
          .filter(Boolean)
          .join(', ')})`,
        422,
      );
    }
  }
  for (let p = requested; p >= 0; p--) {
    if (cutTensorAt(graph, p) === null) continue;
    const cut = cutAt(graph, p);
    if (cut.trainableLayers.length > 0) return cut;
  }
  return cutAt(graph, 0);
}

/** Every valid cut with at least one trainable layer, from the top of the base downwards. */
export function validCuts(graph: LayerGraph): Cut[] {
  const cuts: Cut[] = [];
  for (let p = graph.order.length - 1; p >= 0; p--) {
    if (cutTensorAt(graph, p) === null) continue;
    const cut = cutAt(graph, p);
    if (cut.trainableLayers.length > 0) cuts.push(cut);
  }
  return cuts;
}

type LayerClass = { fromConfig(cls: unknown, config: unknown, customObjects?: unknown, fastWeightInit?: boolean): unknown };

/** A fresh, unbuilt copy of a layer (same class, same config, same name). */
export function cloneLayer(layer: tf.layers.Layer): tf.layers.Layer {
  const cls = layer.constructor as unknown as LayerClass;
  return cls.fromConfig(cls, layer.getConfig(), {}, true) as tf.layers.Layer;
}

/** Where a rebuilt layer's weights come from: the source layer's (default), or given tensors
 * (not taken over: the caller still owns and disposes them). */
export type WeightSource = (name: string, source: tf.layers.Layer) => tf.Tensor[] | undefined;

/**
 * Rebuilds the part of `graph` between the tensor produced by `from` (graph.inputName for the
 * image) and `to` as a new standalone model of layer copies. `layers` must be the layers in
 * between, topological order. With `continueFrom` the copies are applied to an existing
 * symbolic tensor instead of a new input (to chain parts into one model).
 */
export function rebuild(
  graph: LayerGraph,
  opts: { from: string; to: string; layers: string[]; weights?: WeightSource; name: string; inputName?: string; trainable?: boolean },
): tf.LayersModel {
  const input = tf.input({ shape: tensorShape(graph, opts.from), name: opts.inputName ?? (opts.from === graph.inputName ? graph.inputName : `${opts.from}_features`) });
  const out = applyCopies(graph, input, opts);
  return tf.model({ inputs: input, outputs: out, name: opts.name });
}

/** Applies copies of `layers` to `input` (which stands for `from`'s output); returns `to`'s output. */
export function applyCopies(
  graph: LayerGraph,
  input: tf.SymbolicTensor,
  opts: { from: string; to: string; layers: string[]; weights?: WeightSource; trainable?: boolean },
): tf.SymbolicTensor {
  const tensors = new Map<string, tf.SymbolicTensor>([[opts.from, input]]);
  for (const name of opts.layers) {
    const source = graph.model.getLayer(name);
    const copy = cloneLayer(source);
    const inputs = graph.producers.get(name)!.map((p) => {
      const t = tensors.get(p);
      if (!t) throw new Error(`rebuild: layer ${name} needs ${p}, which is not below it in this part`);
      return t;
    });
    tensors.set(name, copy.apply(inputs.length === 1 ? inputs[0]! : inputs) as tf.SymbolicTensor);
    copy.setWeights(opts.weights?.(name, source) ?? source.getWeights());
    if (opts.trainable !== undefined) copy.trainable = opts.trainable;
  }
  const out = tensors.get(opts.to);
  if (!out) throw new Error(`rebuild: ${opts.to} is not among the rebuilt layers`);
  return out;
}

/**
 * Fresh seeded weights for a layer in the Keras defaults: kernels Glorot-uniform, biases and
 * BatchNorm beta / moving mean zeros, gamma / moving variance ones. For `scratch`.
 */
export function initialWeights(layer: tf.layers.Layer, seed: number): tf.Tensor[] {
  return layer.weights.map((w, k) => {
    const kind = w.originalName.split('/').pop() ?? '';
    const shape = w.shape as number[];
    if (/^(gamma|moving_variance)/.test(kind)) return tf.ones(shape);
    if (/^(bias|beta|moving_mean)/.test(kind) || shape.length < 2) return tf.zeros(shape);
    return tf.initializers.glorotUniform({ seed: seed + k }).apply(shape);
  });
}

/** String hash (FNV-1a) for deriving per-layer seeds. */
export function hashSeed(seed: number, text: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h % 2 ** 31;
}

/**
 * Turns a model an earlier job trained (base layers + our `head_*` layers, as exported) back
 * into an image → embedding base: everything up to the single tensor that feeds the first head
 * layer. The result is made of layer copies sharing the model's weight buffers: dispose the
 * loaded model and the returned base independently.
 */
export function baseFromTrainedModel(
  model: tf.LayersModel,
  info: { id: string; source?: string; licence?: string; description?: string } = { id: 'trained_model' },
): { info: import('@finetune/core').BaseModelInfo; model: tf.LayersModel } {
  const graph = layerGraph(model);
  const firstHead = graph.order.findIndex((n) => n.startsWith(HEAD_PREFIX));
  if (firstHead < 0) throw new DomainError('not_a_trained_model', `model ${model.name} has no ${HEAD_PREFIX}* layers to cut off`, 422);
  if (graph.order.slice(firstHead).some((n) => !n.startsWith(HEAD_PREFIX))) {
    throw new DomainError('not_a_trained_model', `model ${model.name} has base layers above its head`, 422);
  }
  const cut = cutTensorAt(graph, firstHead);
  if (cut === null) throw new DomainError('not_a_trained_model', `model ${model.name}: its head is fed by several tensors`, 422);
  const layers = graph.order.slice(0, firstHead);
  const base = rebuild(graph, { from: graph.inputName, to: cut, layers, name: `${info.id}_base` });
  const embedding = base.outputs[0]!.shape;
  if (embedding.length !== 2 || graph.inputShape.length !== 3 || graph.inputShape[0] !== graph.inputShape[1]) {
    base.dispose();
    throw new DomainError('not_a_trained_model', `model ${model.name}: expected square images in and a flat embedding out`, 422);
  }
  return {
    info: {
      id: info.id,
      inputSize: graph.inputShape[0]!,
      embeddingSize: embedding[1]!,
      source: info.source ?? 'a model trained by this service',
      licence: info.licence ?? 'as its base model',
      available: true,
      pretrained: true,
      description: info.description ?? `base layers of ${model.name}`,
    },
    model: base,
  };
}
