import { describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/index.ts';
import { batchNormLayers, estimateBatchNormStatistics, readBatchNormStatistics, writeBatchNormStatistics } from '../../src/training/batch-norm-statistics.ts';

// AdaBN's statistics: the per-channel mean and (population) variance of each BatchNormalization
// layer's inputs over a domain's images, the model itself left as it was.

/** image (4×4×3) → BN (identity-ish start) → Dense: the BN's inputs are the pixels / 255. */
function tinyModel(): tf.LayersModel {
  const input = tf.input({ shape: [4, 4, 3] });
  const bn = tf.layers.batchNormalization({ name: 'bn', momentum: 0.99 }).apply(input) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: 2, name: 'out' }).apply(tf.layers.flatten().apply(bn) as tf.SymbolicTensor) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

function images(count: number, seed: number): Uint8Array[] {
  let s = seed;
  const next = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  // Channel c around 40 + 80c: three distinct means to recover.
  return Array.from({ length: count }, () => Uint8Array.from({ length: 48 }, (_, k) => Math.round(40 + 80 * (k % 3) + 30 * next())));
}

function channelMoments(imgs: Uint8Array[]): { mean: number[]; variance: number[] } {
  const mean = [0, 1, 2].map((c) => imgs.reduce((sum, img) => sum + img.filter((_, k) => k % 3 === c).reduce((a, v) => a + v / 255, 0), 0) / (imgs.length * 16));
  const variance = [0, 1, 2].map(
    (c) => imgs.reduce((sum, img) => sum + img.filter((_, k) => k % 3 === c).reduce((a, v) => a + (v / 255 - mean[c]!) ** 2, 0), 0) / (imgs.length * 16),
  );
  return { mean, variance };
}

describe('estimateBatchNormStatistics', () => {
  it('recovers the per-channel moments of the domain, and leaves the model unchanged', async () => {
    await initBackend('cpu');
    const model = tinyModel();
    const before = await readBatchNormStatistics(model);
    const domain = images(20, 7);
    // One batch: exactly the population moments.
    const whole = (await estimateBatchNormStatistics(model, domain, 4, { batchSize: 20 })).get('bn')!;
    const truth = channelMoments(domain);
    whole.mean.forEach((m, c) => expect(m).toBeCloseTo(truth.mean[c]!, 5));
    whole.variance.forEach((v, c) => expect(v).toBeCloseTo(truth.variance[c]!, 5));
    // Uneven batches (8, 8, 4): the mean is weighted by images, so it is the same.
    const batched = (await estimateBatchNormStatistics(model, domain, 4, { batchSize: 8 })).get('bn')!;
    batched.mean.forEach((m, c) => expect(m).toBeCloseTo(truth.mean[c]!, 5));
    // The variance is the batches' average: at most the between-batch spread of means below.
    batched.variance.forEach((v, c) => expect(v).toBeLessThanOrEqual(truth.variance[c]! + 1e-6));
    batched.variance.forEach((v, c) => expect(v).toBeGreaterThan(truth.variance[c]! * 0.8));

    // Deterministic: a resumed job estimates what its first run did, bit for bit.
    expect(await estimateBatchNormStatistics(model, domain, 4, { batchSize: 8 })).toEqual(new Map([['bn', batched]]));

    const after = await readBatchNormStatistics(model);
    expect(after).toEqual(before);
    expect((batchNormLayers(model)[0] as unknown as { momentum: number }).momentum).toBe(0.99);
    model.dispose();
  });

  it('writes statistics by layer name into a copy of the model, and refuses a mismatched shape', async () => {
    await initBackend('cpu');
    const source = tinyModel();
    const stats = await estimateBatchNormStatistics(source, images(6, 3), 4, { batchSize: 3 });
    const copy = tinyModel();
    writeBatchNormStatistics(copy, stats);
    expect(await readBatchNormStatistics(copy)).toEqual(stats);
    expect(() => writeBatchNormStatistics(copy, new Map([['bn', { mean: new Float32Array(2), variance: new Float32Array(2) }]]))).toThrow(/2 channels/);
    source.dispose();
    copy.dispose();
  });

  it('refuses a model without BatchNormalization', async () => {
    await initBackend('cpu');
    const input = tf.input({ shape: [4, 4, 3] });
    const model = tf.model({ inputs: input, outputs: tf.layers.flatten().apply(input) as tf.SymbolicTensor });
    await expect(estimateBatchNormStatistics(model, images(2, 1), 4)).rejects.toThrow(/no BatchNormalization/);
  });
});
