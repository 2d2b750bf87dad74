// The model zoo: each BASE_MODELS entry from @finetune/core mapped to a loader that returns a
// frozen, truncated feature extractor  images [N, S, S, 3] in [0, 1] → embeddings [N, D].
import { DomainError, findBaseModel, type BaseModelInfo } from '@finetune/core';
import { tf } from './backend.ts';

export interface BaseModel {
  info: BaseModelInfo;
  /** images [N, S, S, 3] float32 in [0, 1] → embeddings [N, info.embeddingSize]. */
  model: tf.LayersModel;
}

const cache = new Map<string, Promise<BaseModel>>();
/** The bases `cache` has finished loading. */
const loaded = new Map<string, BaseModel>();

/**
 * Loads (once per process) the frozen base model for a zoo id. The promise is cached, so
 * concurrent callers share one load; a failed load is evicted so it can be retried.
 * Callers must not dispose the returned model: it is shared.
 */
export function loadBaseModel(id: string): Promise<BaseModel> {
  const info = findBaseModel(id);
  if (!info) {
    return Promise.reject(new DomainError('unknown_base_model', `Unknown base model '${id}'`, 422));
  }
  let entry = cache.get(id);
  if (!entry) {
    entry = buildBaseModel(info);
    cache.set(id, entry);
    entry.then(
      (base) => loaded.set(id, base),
      () => cache.delete(id),
    );
  }
  return entry;
}

/**
 * The tensors the loaded zoo bases hold (one per weight): what a process keeps between jobs by
 * design. Every other live tensor belongs to a run.
 */
export function zooTensorCount(): number {
  let count = 0;
  for (const base of loaded.values()) count += base.model.weights.length;
  return count;
}

async function buildBaseModel(info: BaseModelInfo): Promise<BaseModel> {
  switch (info.id) {
    case 'mobilenet_v2':
      return { info, model: await loadNsfwjsTruncated('MobileNetV2', info) };
    case 'inception_v3':
      return { info, model: await loadNsfwjsTruncated('InceptionV3', info) };
    case 'small_cnn':
      return { info, model: buildSmallCnn(info.inputSize, info.embeddingSize, 1234) };
    default:
      throw new DomainError('unknown_base_model', `Base model '${info.id}' has no loader`, 422);
  }
}

/**
 * nsfwjs bundles Keras MobileNetV2 / InceptionV3 (as tfjs layers models, weights base64-encoded
 * in JS files) with its own 5-class NSFW head on top. Its preprocessing is only `x / 255`, so
 * the network takes [0, 1] RGB directly. We cut at `flatten_1` (the pooled embedding, right
 * after average_pooling2d_1) and drop nsfwjs' Dense/Dropout head.
 */
async function loadNsfwjsTruncated(name: 'MobileNetV2' | 'InceptionV3', info: BaseModelInfo): Promise<tf.LayersModel> {
  const nsfwjs = await import('nsfwjs');
  // nsfwjs logs a console.info banner on every load; keep worker logs clean.
  const info0 = console.info;
  console.info = () => {};
  let full: tf.LayersModel;
  let wrapper: Awaited<ReturnType<typeof nsfwjs.load>>;
  try {
    wrapper = await nsfwjs.load(name, { size: info.inputSize });
  } finally {
    console.info = info0;
  }
  full = wrapper.model as tf.LayersModel;
  // The wrapper owns one scalar (its /255 constant); we never use the wrapper again.
  (wrapper as unknown as { normalizationOffset?: tf.Tensor }).normalizationOffset?.dispose();

  const cut = full.getLayer('flatten_1');
  const output = cut.output as tf.SymbolicTensor;
  if (output.shape[1] !== info.embeddingSize) {
    throw new Error(`${name}: flatten_1 has width ${output.shape[1]}, expected ${info.embeddingSize}`);
  }
  const truncated = tf.model({ inputs: full.inputs, outputs: output, name: `${info.id}_base` });
  truncated.trainable = false;
  // nsfwjs' head layers (dense_1..3) are not part of `truncated`; free their weights.
  for (const layer of full.layers.slice(full.layers.indexOf(cut) + 1)) layer.dispose();
  return truncated;
}

/**
 * A small conv net (28×28×3 → 128) with seeded Glorot initialisation, for training from scratch
 * or as a cheap random-feature base in tests.
 */
export function buildSmallCnn(inputSize = 28, embeddingSize = 128, seed = 1234): tf.LayersModel {
  const init = (k: number) => tf.initializers.glorotUniform({ seed: seed + k });
  const input = tf.input({ shape: [inputSize, inputSize, 3], name: 'small_cnn_input' });
  let x = tf.layers
    .conv2d({ filters: 16, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init(1), name: 'small_cnn_conv1' })
    .apply(input) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2, name: 'small_cnn_pool1' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers
    .conv2d({ filters: 32, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init(2), name: 'small_cnn_conv2' })
    .apply(x) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2, name: 'small_cnn_pool2' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten({ name: 'small_cnn_flatten' }).apply(x) as tf.SymbolicTensor;
  const out = tf.layers
    .dense({ units: embeddingSize, activation: 'relu', kernelInitializer: init(3), name: 'small_cnn_embedding' })
    .apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out, name: 'small_cnn_base' });
}

/**
 * Loads a tfjs layers model (model.json + weight shards) over http(s) — the path for bases
 * hosted on a hub or object storage. Only http: and https: URLs are accepted.
 */
export async function loadModelFromUrl(url: string, options?: tf.io.LoadOptions): Promise<tf.LayersModel> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DomainError('invalid_model_url', `Not a URL: ${url}`, 422);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new DomainError('invalid_model_url', `Model URL must be http(s), got ${parsed.protocol}`, 422);
  }
  return tf.loadLayersModel(tf.io.http(parsed.href, options));
}
