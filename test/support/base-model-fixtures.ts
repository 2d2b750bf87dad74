// Small TensorFlow.js layers models built in the test, saved as tfjs writes them (model.json with a
// weightsManifest + weight shards), for the custom base-model routes.
import { initBackend, tf } from '@finetune/ml';
import { zipOf } from './mnist-fixtures.ts';

export interface SavedModel {
  /** model.json as tfjs' save handlers write it, naming `shards` in its manifest. */
  modelJson: string;
  /** Weight files by name, in manifest order. */
  shards: Record<string, Buffer>;
}

/**
 * Saves `model` in the layers format, its weights split into shards of at most `shardBytes` (as
 * tensorflowjs_converter splits them), so that loading must put them back together in order.
 */
export async function saveModel(model: tf.LayersModel, shardBytes = 32_768): Promise<SavedModel> {
  let saved: SavedModel | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const data = artifacts.weightData as ArrayBuffer;
      const all = Buffer.from(data);
      const shards: Record<string, Buffer> = {};
      for (let offset = 0, i = 1; offset < all.length; offset += shardBytes, i++) shards[`group1-shard${i}of${Math.ceil(all.length / shardBytes)}.bin`] = all.subarray(offset, offset + shardBytes);
      saved = {
        modelJson: JSON.stringify({
          format: 'layers-model',
          generatedBy: artifacts.generatedBy,
          convertedBy: null,
          modelTopology: artifacts.modelTopology,
          weightsManifest: [{ paths: Object.keys(shards), weights: artifacts.weightSpecs }],
        }),
        shards,
      };
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return saved!;
}

/** A zip of a saved model, optionally inside one folder (as zipping a converter's output folder gives). */
export function modelZip(saved: SavedModel, folder = ''): Buffer {
  const files: Record<string, Uint8Array | string> = { [`${folder}model.json`]: saved.modelJson };
  for (const [name, data] of Object.entries(saved.shards)) files[`${folder}${name}`] = data;
  return zipOf(files);
}

/**
 * A classifier for 28×28 RGB images, Keras-style: conv → pool → conv → pool → flatten → dense
 * `embedding` (32) → dense softmax head of its own (cut off by `embeddingLayer: "embedding"`).
 */
export async function smallClassifier(seed = 7): Promise<tf.LayersModel> {
  await initBackend('auto');
  const init = (k: number) => tf.initializers.glorotUniform({ seed: seed + k });
  const input = tf.input({ shape: [28, 28, 3], name: 'image' });
  let x = tf.layers.conv2d({ filters: 8, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init(1), name: 'conv1' }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2, name: 'pool1' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 16, kernelSize: 3, padding: 'same', activation: 'relu', kernelInitializer: init(2), name: 'conv2' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.maxPooling2d({ poolSize: 2, name: 'pool2' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.flatten({ name: 'flatten' }).apply(x) as tf.SymbolicTensor;
  const embedding = tf.layers.dense({ units: 32, activation: 'relu', kernelInitializer: init(3), name: 'embedding' }).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: init(4), name: 'predictions' }).apply(embedding) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out, name: 'digits_classifier' });
}

/**
 * A fully convolutional model with no fixed input size ([null, null, null, 3]) and a layer the
 * ONNX converter does not know (Cropping2D): its frozen layers must run on tfjs. Its last conv
 * layer outputs a feature map, which a custom base average-pools into the embedding.
 */
export async function convolutionalFeatures(seed = 11): Promise<tf.LayersModel> {
  await initBackend('auto');
  const init = (k: number) => tf.initializers.glorotUniform({ seed: seed + k });
  const input = tf.input({ shape: [null, null, 3], name: 'pixels' });
  let x = tf.layers.cropping2D({ cropping: [[1, 1], [1, 1]], name: 'crop' }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 8, kernelSize: 3, strides: 2, activation: 'relu', kernelInitializer: init(1), name: 'features_a' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 12, kernelSize: 3, activation: 'relu', kernelInitializer: init(2), name: 'features_b' }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: x, name: 'conv_features' });
}
