// Custom bases: a tenant's own TensorFlow.js layers model (as tensorflowjs_converter writes it from
// Keras, or tf.io save handlers from tfjs) turned into an image → embedding base like the zoo's.
// The files are user input: every refusal is a DomainError (422) that says what is wrong.
//
// The base is rebuilt, not sliced: a fresh [S, S, 3] input, a Rescaling layer that maps the [0, 1]
// pixels every base receives to the range the model was trained on, copies of the model's layers
// up to `embeddingLayer` (sharing its weights, see surgery.ts), and — when that layer outputs a
// feature map [h, w, c] rather than a vector — a global average pool, as Keras' `pooling="avg"`.
import { DomainError, PIXEL_SCALES, type BaseModelInfo, type PixelScale } from '@finetune/core';
import { tf } from './backend.ts';
import { applyCopies, HEAD_PREFIX, layerGraph, tensorShape } from './training/surgery.ts';
import { modelFromTopology } from './topology.ts';

export interface CustomBaseOptions {
  embeddingLayer: string;
  /** Required when the model's input has no fixed height and width; else must match it. */
  inputSize?: number | null | undefined;
  scale: PixelScale;
}

/** What validation learned about a custom base (stored on its row). */
export interface CustomBaseFacts {
  inputSize: number;
  embeddingSize: number;
  /** The embedding layer outputs a feature map that is average-pooled into the embedding. */
  pooled: boolean;
  /** Layers from the input up to the embedding layer (the input layer not counted). */
  layerCount: number;
}

export interface CustomBase {
  base: { info: BaseModelInfo; model: tf.LayersModel };
  facts: CustomBaseFacts;
  dispose(): void;
}

interface ModelJson {
  modelTopology: Record<string, unknown>;
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
}

/** The parsed model.json of a layers model: its topology and its weight files, in loading order. */
export interface ParsedModelJson {
  json: ModelJson;
  weightSpecs: tf.io.WeightsManifestEntry[];
  /** Manifest paths, group by group: the order tfjs concatenates their bytes in. */
  weightPaths: string[];
  /** Bytes the weight files must add up to, from the manifest's shapes and dtypes. */
  weightBytes: number;
}

function invalid(code: string, message: string): DomainError {
  return new DomainError(code, message, 422);
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2 };

/**
 * Reads model.json as tensorflowjs_converter and tfjs write it: `modelTopology` (a Keras model
 * config) and `weightsManifest` (groups of shard paths with the weights they hold). Refuses a
 * graph model, a missing manifest, and paths that are not plain relative file names.
 */
export function parseModelJson(bytes: Buffer): ParsedModelJson {
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw invalid('invalid_model_json', `model.json is not valid JSON: ${(error as Error).message}`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw invalid('invalid_model_json', 'model.json must be a JSON object');
  const record = json as Record<string, unknown>;
  if (record.format === 'graph-model') {
    throw invalid('unsupported_model_format', 'model.json is a TensorFlow.js graph model; a layers model is needed (tensorflowjs_converter --output_format tfjs_layers_model)');
  }
  const topology = record.modelTopology;
  if (!topology || typeof topology !== 'object' || Array.isArray(topology)) throw invalid('invalid_model_json', 'model.json has no modelTopology object');
  const manifest = record.weightsManifest;
  if (!Array.isArray(manifest)) throw invalid('invalid_model_json', 'model.json has no weightsManifest array');
  const weightSpecs: tf.io.WeightsManifestEntry[] = [];
  const weightPaths: string[] = [];
  let weightBytes = 0;
  for (const group of manifest as unknown[]) {
    const g = group as { paths?: unknown; weights?: unknown } | null;
    if (!g || !Array.isArray(g.paths) || !Array.isArray(g.weights)) throw invalid('invalid_model_json', 'every weightsManifest group needs paths and weights arrays');
    for (const path of g.paths) {
      if (typeof path !== 'string' || !/^[A-Za-z0-9._-][A-Za-z0-9._/-]{0,199}$/.test(path) || path.split('/').some((s) => s === '..' || s === '.' || s === '')) {
        throw invalid('unsafe_weight_path', `weightsManifest path ${JSON.stringify(path).slice(0, 100)} is not a plain relative file name`);
      }
      weightPaths.push(path);
    }
    for (const spec of g.weights as tf.io.WeightsManifestEntry[]) {
      if (!spec || typeof spec.name !== 'string' || !Array.isArray(spec.shape) || !spec.shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw invalid('invalid_model_json', 'a weightsManifest entry needs a name and a shape of non-negative integers');
      }
      const stored = spec.quantization?.dtype ?? spec.dtype;
      const bytesPer = DTYPE_BYTES[stored];
      if (bytesPer === undefined) throw invalid('invalid_model_json', `weight ${spec.name} has dtype ${String(stored)}, which is not supported`);
      weightBytes += spec.shape.reduce((a, b) => a * b, 1) * bytesPer;
      weightSpecs.push(spec);
    }
  }
  if (new Set(weightPaths).size !== weightPaths.length) throw invalid('invalid_model_json', 'weightsManifest names a file twice');
  return { json: json as ModelJson, weightSpecs, weightPaths, weightBytes };
}

/** Refuses weight bytes that do not match the manifest (a missing, short or padded shard). */
export function checkWeightBytes(parsed: ParsedModelJson, weights: Buffer): void {
  if (weights.length !== parsed.weightBytes) {
    throw invalid('weights_mismatch', `the weight files hold ${weights.length} bytes; model.json's weightsManifest describes ${parsed.weightBytes}`);
  }
}

async function load(parsed: ParsedModelJson, weights: Buffer, topology: object): Promise<tf.LayersModel> {
  const weightData = weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer;
  try {
    return await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: topology, weightSpecs: parsed.weightSpecs, weightData }));
  } catch (error) {
    throw invalid('invalid_model', `the model does not load in TensorFlow.js: ${(error as Error).message}`);
  }
}

/**
 * A model with no fixed input height and width (Keras' `input_shape=(None, None, 3)`) gets one:
 * its InputLayer's batch shape is set to [null, size, size, channels] before loading.
 */
function withInputSize(topology: Record<string, unknown>, size: number): object {
  const copy = structuredClone(topology);
  const config = ((copy.model_config ?? copy) as { config?: unknown }).config;
  const layers = (Array.isArray(config) ? config : (config as { layers?: unknown[] } | undefined)?.layers) as
    | { class_name?: string; config?: Record<string, unknown> }[]
    | undefined;
  const first = layers?.find((l) => l.class_name === 'InputLayer') ?? layers?.[0];
  const layerConfig = first?.config;
  if (!layerConfig) throw invalid('invalid_model', 'the model config has no input layer to size');
  for (const key of ['batch_input_shape', 'batch_shape']) {
    const shape = layerConfig[key];
    if (Array.isArray(shape) && shape.length === 4) layerConfig[key] = [null, size, size, shape[3]];
  }
  return copy;
}

function uniqueName(model: tf.LayersModel, wanted: string): string {
  const taken = new Set(model.layers.map((l) => l.name));
  let name = wanted;
  for (let i = 1; taken.has(name); i++) name = `${wanted}_${i}`;
  return name;
}

/**
 * Loads model.json + its weights (the shards concatenated in manifest order) and builds the base.
 * Throws DomainError (422) with the reason for anything that cannot serve as an image base.
 */
export async function buildCustomBase(modelJson: Buffer, weights: Buffer, options: CustomBaseOptions, info: { id: string; source: string }): Promise<CustomBase> {
  const parsed = parseModelJson(modelJson);
  checkWeightBytes(parsed, weights);
  return buildFrom(parsed, (topology) => load(parsed, weights, topology), options, info);
}

/**
 * The base buildCustomBase builds, from model.json alone (no weight file): the same layers and
 * shapes, every weight zeros (topology.ts). For planning a job's memory, never for running.
 */
export async function customBaseFromTopology(modelJson: Buffer, options: CustomBaseOptions, info: { id: string; source: string }): Promise<CustomBase> {
  const parsed = parseModelJson(modelJson);
  const fromTopology = async (topology: object) => {
    try {
      return await modelFromTopology(topology);
    } catch (error) {
      throw invalid('invalid_model', `the model does not load in TensorFlow.js: ${(error as Error).message}`);
    }
  };
  return buildFrom(parsed, fromTopology, options, info);
}

async function buildFrom(
  parsed: ParsedModelJson,
  loadTopology: (topology: object) => Promise<tf.LayersModel>,
  options: CustomBaseOptions,
  info: { id: string; source: string },
): Promise<CustomBase> {
  let model = await loadTopology(parsed.json.modelTopology);
  try {
    if (model.inputs.length !== 1 || model.outputs.length !== 1) throw invalid('unsupported_model', `the model has ${model.inputs.length} inputs and ${model.outputs.length} outputs; one image input is needed`);
    const shape = model.inputs[0]!.shape;
    if (shape.length !== 4 || shape[3] !== 3) throw invalid('unsupported_model', `the model's input is ${JSON.stringify(shape)}; an RGB image input [null, height, width, 3] is needed`);
    if (shape[1] == null || shape[2] == null) {
      if (!options.inputSize) throw invalid('input_size_required', "the model's input has no fixed height and width: give inputSize");
      model.dispose();
      model = await loadTopology(withInputSize(parsed.json.modelTopology, options.inputSize));
    } else if (shape[1] !== shape[2]) {
      throw invalid('unsupported_model', `the model's input is ${shape[1]}×${shape[2]}; a square input is needed`);
    } else if (options.inputSize && options.inputSize !== shape[1]) {
      throw invalid('input_size_mismatch', `inputSize ${options.inputSize} does not match the model's input size ${shape[1]}`);
    }
    const inputSize = model.inputs[0]!.shape[1]!;
    const reserved = model.layers.find((l) => l.name.startsWith(HEAD_PREFIX));
    if (reserved) throw invalid('reserved_layer_name', `layer ${reserved.name}: names starting with "${HEAD_PREFIX}" are reserved for the classifier head jobs add`);
    return build(model, inputSize, options, info);
  } catch (error) {
    model.dispose();
    throw error;
  }
}

function build(model: tf.LayersModel, inputSize: number, options: CustomBaseOptions, info: { id: string; source: string }): CustomBase {
  let layer: tf.layers.Layer;
  try {
    layer = model.getLayer(options.embeddingLayer);
  } catch {
    const names = model.layers.map((l) => l.name);
    throw invalid('unknown_embedding_layer', `embeddingLayer "${options.embeddingLayer}" is not a layer of the model (its last layers: ${names.slice(-5).join(', ')})`);
  }
  let truncated: tf.LayersModel;
  let graph: ReturnType<typeof layerGraph>;
  try {
    truncated = tf.model({ inputs: model.inputs, outputs: layer.output as tf.SymbolicTensor, name: `${model.name}_truncated` });
    graph = layerGraph(truncated);
  } catch (error) {
    throw invalid('unsupported_model', `the model cannot be cut at ${options.embeddingLayer}: ${(error as Error).message}`);
  }
  const featureShape = tensorShape(graph, graph.outputName);
  if (featureShape.length !== 1 && featureShape.length !== 3) {
    throw invalid(
      'embedding_not_vector',
      `embeddingLayer "${options.embeddingLayer}" outputs ${JSON.stringify([null, ...featureShape])}; a vector [null, n] or a feature map [null, h, w, c] (average-pooled) is needed`,
    );
  }
  const pooled = featureShape.length === 3;
  const input = tf.input({ shape: [inputSize, inputSize, 3], name: graph.inputName });
  const { scale, offset } = PIXEL_SCALES[options.scale];
  const scaled =
    scale === 1 && offset === 0
      ? input
      : (tf.layers.rescaling({ scale, offset, name: uniqueName(model, 'pixel_scaling') }).apply(input) as tf.SymbolicTensor);
  let out = applyCopies(graph, scaled, { from: graph.inputName, to: graph.outputName, layers: graph.order });
  if (pooled) out = tf.layers.globalAveragePooling2d({ name: uniqueName(model, `${options.embeddingLayer}_pool`) }).apply(out) as tf.SymbolicTensor;
  const base = tf.model({ inputs: input, outputs: out, name: `${info.id.replace(/[^A-Za-z0-9_]/g, '_')}_base` });
  base.trainable = false;
  const embeddingSize = out.shape[1]!;
  return {
    base: {
      info: {
        id: info.id,
        inputSize,
        embeddingSize,
        source: info.source,
        licence: 'as its uploader holds it',
        available: true,
        pretrained: true,
        description: `a custom base cut at ${options.embeddingLayer}`,
      },
      model: base,
    },
    facts: { inputSize, embeddingSize, pooled, layerCount: graph.order.length },
    dispose: () => {
      base.dispose();
      model.dispose();
    },
  };
}

/** model.json as stored for a custom base: the same model, its weights in one `weights.bin`
 * (the shards concatenated in manifest order), so the pair loads like any model we export. */
export function singleShardModelJson(parsed: ParsedModelJson): Buffer {
  return Buffer.from(JSON.stringify({ ...parsed.json, weightsManifest: [{ paths: ['weights.bin'], weights: parsed.weightSpecs }] }));
}
