// BatchNormalization under the tape, for two problems found training the zoo bases:
//
// - Keras' InceptionV3 has BatchNormalization(scale=False): no gamma, so tfjs-layers calls
//   tf.batchNorm without a `scale` and the op records an input map with `scale: undefined`.
//   The tape cannot differentiate through that (tfjs-core clones and walks every input: "Cannot
//   read properties of undefined (reading 'dtype' / 'id')"), so full, fine_tune, scratch and
//   progressive unfreezing all failed on inception_v3. supplyBatchNormScale gives such layers of
//   a trainable copy a constant gamma of ones: the same arithmetic, a complete input map.
// - Memory: tfjs' FusedBatchNorm gradient computes x − mean, dy·scale and friends eagerly for
//   every BN layer, and the input gradient tiles a [1, 1, 1, C] tensor up to the activation's
//   shape: several activation-sized temporaries per layer in the backward pass (~15% of a full
//   MobileNetV2 step's peak). Broadcasting does the same arithmetic without them, and each
//   derivative is only computed when the tape asks for it.
//
// Same formulas (per channel, over the reduced axes): with k = scale · rsqrt(variance + ε),
//   dx = dy·k,  dmean = −k·Σdy,  dvariance = −½·scale·rsqrt(variance + ε)³·Σ dy·(x − mean),
//   dscale = rsqrt(variance + ε)·Σ dy·(x − mean),  doffset = Σdy.
// Results equal the original's up to float rounding (the products are taken in another order).
import { tf } from '../backend.ts';
import { replaceGradient } from './replace-gradient.ts';

const REPLACED = Symbol.for('finetune.batchNormGradient');

/**
 * Registers the gradient above for FusedBatchNorm (process-global, every backend). Idempotent.
 * Inputs of other ranks than NHWC with per-channel statistics keep tfjs' own gradient.
 */
export function registerBatchNormGradient(): void {
  replaceGradient('FusedBatchNorm', REPLACED, (original) => ({
    inputsToSave: ['x', 'mean', 'variance', 'scale'],
    gradFunc: (dy, saved, attrs) => {
      const [x, mean, variance, scale] = saved as tf.Tensor[];
      const d = dy as tf.Tensor;
      if (!x || !mean || !variance || mean.rank !== 1 || d.rank < 2) return original.gradFunc(dy, saved, attrs);
      const eps = (attrs as { varianceEpsilon: number }).varianceEpsilon;
      const axes = Array.from({ length: d.rank - 1 }, (_, i) => i);
      const inv = tf.rsqrt(tf.add(variance, eps));
      const k = scale ? tf.mul(inv, scale) : inv;
      const dyDotCentred = () => tf.sum(tf.mul(d, tf.sub(x, mean)), axes);
      return {
        x: () => tf.mul(d, k),
        mean: () => tf.neg(tf.mul(tf.sum(d, axes), k)),
        variance: () => tf.mul(dyDotCentred(), tf.mul(tf.mul(tf.mul(inv, inv), k), -0.5)),
        scale: () => tf.mul(dyDotCentred(), inv),
        offset: () => tf.sum(d, axes),
      };
    },
  }));
}

type ScalelessBatchNorm = tf.layers.Layer & { scale: boolean; gamma: { read(): tf.Tensor } | null };

/**
 * Gives every BatchNormalization layer of `model` built without gamma (scale=false) a constant
 * gamma of ones, so that it can run under the tape. Not a weight: the layer's weights, config
 * and saved form are unchanged. Returns the constants, for the caller to dispose with the model.
 */
export function supplyBatchNormScale(model: tf.LayersModel): tf.Tensor[] {
  const constants: tf.Tensor[] = [];
  for (const layer of model.layers) {
    if (layer.getClassName() !== 'BatchNormalization') continue;
    const bn = layer as ScalelessBatchNorm;
    if (bn.scale) continue;
    const shape = layer.getWeights()[0]?.shape;
    if (!shape) continue;
    const ones = tf.keep(tf.ones(shape));
    constants.push(ones);
    bn.scale = true;
    bn.gamma = { read: () => ones };
  }
  return constants;
}
