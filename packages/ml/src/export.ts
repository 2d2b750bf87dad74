// One deployable model (image → class probabilities) from the frozen base and the trained head,
// and its serialization as the standard tfjs layers format (model.json + one weights.bin) that
// tf.loadLayersModel reads in a browser or in Node.
import { tf } from './backend.ts';

type LayerClass = { fromConfig(cls: unknown, config: unknown, customObjects?: unknown, fastWeightInit?: boolean): unknown };

/**
 * Composes base and head into one functional model: image → class probabilities. The head's
 * layers are re-applied to the base's output (the head is not nested as a sub-model), so the
 * topology holds only stock Keras layers and loads with tf.loadLayersModel anywhere.
 *
 * Ownership: the result is built from *copies* of both models' layers (made from their configs,
 * with weights assigned from the originals; tfjs shares the weight buffers by reference count,
 * so no weight memory is duplicated). Disposing the result therefore never breaks the cached
 * base or the caller's head, and disposing those never breaks the result. Dispose all three
 * independently. (Sharing the layers instead would let `composed.dispose()` free the cached
 * base's weights: tfjs counts layer references per symbolic call, not per model.)
 */
export function composeModel(base: tf.LayersModel, head: tf.LayersModel): tf.LayersModel {
  if (base.outputs.length !== 1 || base.inputs.length !== 1) throw new Error('composeModel: base must have one input and one output');
  const baseOut = base.outputs[0]!.shape;
  const headIn = head.inputs[0]!.shape;
  if (baseOut[baseOut.length - 1] !== headIn[headIn.length - 1]) {
    throw new Error(`composeModel: base emits ${baseOut[baseOut.length - 1]} features, head expects ${headIn[headIn.length - 1]}`);
  }
  const headLayers = head.layers.filter((l) => l.getClassName() !== 'InputLayer');
  for (const layer of headLayers) {
    if (layer.inboundNodes.some((n) => n.inboundLayers.length > 1)) {
      throw new Error(`composeModel: head layer ${layer.name} has several inputs; only a linear stack of layers is supported`);
    }
  }

  const cls = base.constructor as unknown as LayerClass;
  // fastWeightInit: build with zeros instead of random init; the weights are assigned next.
  const baseCopy = cls.fromConfig(cls, base.getConfig(), {}, true) as tf.LayersModel;
  for (const layer of baseCopy.layers) layer.setWeights(base.getLayer(layer.name).getWeights());

  let x = baseCopy.outputs[0]!;
  for (const layer of headLayers) {
    const layerCls = layer.constructor as unknown as LayerClass;
    const copy = layerCls.fromConfig(layerCls, layer.getConfig()) as tf.layers.Layer;
    x = copy.apply(x) as tf.SymbolicTensor;
    copy.setWeights(layer.getWeights());
  }
  return tf.model({ inputs: baseCopy.inputs, outputs: x, name: 'classifier' });
}

export interface SerializedModel {
  /** model.json: topology + weightsManifest with paths ['weights.bin']. */
  modelJson: Buffer;
  /** weights.bin: all weights, float32, concatenated in manifest order. */
  weights: Buffer;
}

/** Serializes a layers model to model.json + weights.bin bytes. `metadata` lands in
 * model.json's userDefinedMetadata (e.g. labels), readable via model.getUserDefinedMetadata(). */
export async function serializeModel(model: tf.LayersModel, opts: { metadata?: Record<string, unknown> } = {}): Promise<SerializedModel> {
  let result: SerializedModel | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const data = artifacts.weightData;
      const weights =
        data === undefined
          ? Buffer.alloc(0)
          : Array.isArray(data)
            ? Buffer.concat(data.map((b) => Buffer.from(b)))
            : Buffer.from(data as ArrayBuffer);
      const json: Record<string, unknown> = {
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs ?? [] }],
      };
      if (artifacts.trainingConfig) json.trainingConfig = artifacts.trainingConfig;
      if (opts.metadata) json.userDefinedMetadata = opts.metadata;
      result = { modelJson: Buffer.from(JSON.stringify(json)), weights };
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON', weightDataBytes: weights.length } };
    }),
  );
  if (!result) throw new Error('serializeModel: save handler was not called');
  return result;
}

/** Loads what serializeModel produced (model.json must reference a single weights file). */
export async function loadModelFromFiles(modelJson: Buffer, weights: Buffer): Promise<tf.LayersModel> {
  const json = JSON.parse(modelJson.toString('utf8')) as {
    modelTopology: object;
    weightsManifest?: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
    trainingConfig?: tf.io.TrainingConfig;
    userDefinedMetadata?: object;
  };
  if (!json.modelTopology) throw new Error('model.json has no modelTopology');
  const weightSpecs = (json.weightsManifest ?? []).flatMap((group) => group.weights);
  // Copy into a fresh ArrayBuffer: a Buffer may be a view into a larger shared pool.
  const weightData = weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer;
  const model = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs,
      weightData,
      trainingConfig: json.trainingConfig,
      userDefinedMetadata: json.userDefinedMetadata,
    }),
  );
  return model;
}

export const serializeHead = serializeModel;
export const loadHead = loadModelFromFiles;
