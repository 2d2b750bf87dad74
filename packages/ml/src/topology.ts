// A layers model built from its topology alone (model.json's `modelTopology`), without reading its
// weight files: the same layers, output shapes and parameter counts, every weight zeros. For
// reading the graph — the micro-batch planner (training/micro-batch.ts) needs shapes and weight
// counts, not values — never for running. The API plans a job on a custom base or a trained
// model this way without downloading the base's weights.
import { tf } from './backend.ts';

/** A Keras / tfjs initializer entry (`kernel_initializer`, `gamma_initializer`, …, or camelCase). */
const INITIALIZER_KEY = /(_i|I)nitializer$/;
const ZEROS = { class_name: 'Zeros', config: {} };

/**
 * Every initializer in the topology replaced by Zeros, so that building draws no random numbers
 * (Glorot on a large kernel costs more than the build itself). Only speed depends on this: an
 * initializer it misses still builds, with its own initial values.
 */
function zeroInitializers(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(zeroInitializers);
  if (!value || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, v]) => [key, INITIALIZER_KEY.test(key) && v && typeof v === 'object' && !Array.isArray(v) ? ZEROS : zeroInitializers(v)]),
  );
}

/**
 * Builds the model `topology` describes (a Keras model config, as in model.json), weights zeros.
 * The caller owns it: dispose() frees the zeros; shapes and parameter counts stay readable.
 */
export async function modelFromTopology(topology: object): Promise<tf.LayersModel> {
  return tf.models.modelFromJSON({ modelTopology: zeroInitializers(topology) as tf.io.ModelJSON['modelTopology'] });
}
