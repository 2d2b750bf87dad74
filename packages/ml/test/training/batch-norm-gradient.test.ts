import { describe, expect, it } from 'vitest';
import { registerTrainingGradients, tf } from '../../src/index.ts';

// training/batch-norm-gradient.ts replaces tfjs-core's FusedBatchNorm gradient with one that
// makes no activation-sized temporaries. Here both run on the same inputs in one process: tfjs'
// first (nothing has replaced it yet in this test file's process), then the replacement.
describe("BatchNorm's replacement gradient", () => {
  it("gives tfjs-core's gradients for x, mean, variance, offset and scale, to float rounding", async () => {
    await tf.setBackend('cpu');
    const channels = 5;
    const x = tf.randomNormal([2, 3, 4, channels], 0.5, 2, 'float32', 1);
    const mean = tf.randomNormal([channels], 0.2, 1, 'float32', 2);
    const variance = tf.randomUniform([channels], 0.5, 3, 'float32', 3);
    const offset = tf.randomNormal([channels], 0, 1, 'float32', 4);
    const scale = tf.randomUniform([channels], 0.5, 2, 'float32', 5);
    const dy = tf.randomNormal([2, 3, 4, channels], 0, 1, 'float32', 6);
    const gradients = () => {
      const gs = tf.grads((a: tf.Tensor, m: tf.Tensor, v: tf.Tensor, o: tf.Tensor, s: tf.Tensor) =>
        tf.batchNorm(a as tf.Tensor4D, m as tf.Tensor1D, v as tf.Tensor1D, o as tf.Tensor1D, s as tf.Tensor1D, 1e-3),
      )([x, mean, variance, offset, scale], dy);
      const values = gs.map((g) => Array.from(g.dataSync()));
      tf.dispose(gs);
      return values;
    };

    const original = tf.getGradient('FusedBatchNorm');
    const want = gradients();
    registerTrainingGradients();
    expect(tf.getGradient('FusedBatchNorm')).not.toBe(original);
    const got = gradients();

    for (const [i, name] of ['x', 'mean', 'variance', 'offset', 'scale'].entries()) {
      const scaleOf = Math.max(...want[i]!.map(Math.abs));
      expect(scaleOf, name).toBeGreaterThan(0);
      const worst = Math.max(...got[i]!.map((g, k) => Math.abs(g - want[i]![k]!)));
      expect(worst / scaleOf, name).toBeLessThan(1e-5);
    }
    tf.dispose([x, mean, variance, offset, scale, dy]);
  });
});
