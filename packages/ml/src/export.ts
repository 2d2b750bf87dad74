// Serialization of a model as the standard tfjs layers format (model.json + one weights.bin)
// that tf.loadLayersModel reads in a browser or in Node.
import { tf } from './backend.ts';

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

