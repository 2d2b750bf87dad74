import { describe, it, expect, beforeAll } from 'vitest';
import sharp from 'sharp';
import { initBackend, tf } from '../src/backend.ts';
import { loadBaseModel } from '../src/zoo.ts';
import { serializeModel, loadModelFromFiles } from '../src/export.ts';
import { predictImages } from '../src/predict.ts';
import { decodeImage } from '../src/images.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

async function solid(r: number, g: number, b: number, size: number): Promise<Float32Array> {
  const png = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r, g, b } } }).png().toBuffer();
  return decodeImage(png, size);
}

type Topology = { class_name: string; config: { layers: { class_name: string }[] } };
function classNames(json: { modelTopology: Topology & { model_config?: Topology } }): string[] {
  const top = json.modelTopology.model_config ?? json.modelTopology;
  expect(top.class_name).toBe('Model');
  return top.config.layers.map((l) => l.class_name);
}

/** A small classifier over 28×28×3 images: flatten → dense softmax (seeded). */
function tinyClassifier(classes: number, seed: number): tf.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.flatten({ inputShape: [28, 28, 3] }),
      tf.layers.dense({ units: classes, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
    ],
  });
}

describe('serializeModel + loadModelFromFiles + predictImages', () => {
  it('mobilenet_v2 round-trips through model.json + weights.bin as stock layers with identical outputs', async () => {
    const base = await loadBaseModel('mobilenet_v2');
    const images = [await solid(200, 30, 30, 224), await solid(30, 200, 30, 224)];
    const x = tf.tensor4d(Float32Array.from(images.flatMap((i) => Array.from(i))), [2, 224, 224, 3]);
    const original = tf.tidy(() => (base.model.predict(x) as tf.Tensor).dataSync());

    const t0 = performance.now();
    const { modelJson, weights } = await serializeModel(base.model, { metadata: { labels: ['a', 'b'] } });
    const json = JSON.parse(modelJson.toString());
    expect(json.format).toBe('layers-model');
    expect(json.weightsManifest).toHaveLength(1);
    expect(json.weightsManifest[0].paths).toEqual(['weights.bin']);
    const manifestBytes = (json.weightsManifest[0].weights as { shape: number[]; dtype: string }[]).reduce(
      (sum, w) => sum + w.shape.reduce((a, b) => a * b, 1) * 4,
      0,
    );
    expect(weights.length).toBe(manifestBytes);
    // Flat functional graph of stock Keras layers: no nested Model/Sequential, no custom layers.
    const names = new Set(classNames(json));
    expect([...names].every((n) =>
      ['InputLayer', 'ZeroPadding2D', 'Conv2D', 'BatchNormalization', 'ReLU', 'DepthwiseConv2D', 'Add', 'AveragePooling2D', 'GlobalAveragePooling2D', 'Flatten'].includes(n),
    )).toBe(true);

    const loaded = await loadModelFromFiles(modelJson, weights);
    const ms = performance.now() - t0;
    expect(loaded.getUserDefinedMetadata()).toEqual({ labels: ['a', 'b'] });
    const again = tf.tidy(() => (loaded.predict(x) as tf.Tensor).dataSync());
    expect(Array.from(again)).toEqual(Array.from(original));
    console.log(`mobilenet_v2 base: model.json ${(modelJson.length / 1024).toFixed(0)} KiB, weights ${(weights.length / 1e6).toFixed(1)} MB, save+load ${ms.toFixed(0)} ms`);
    x.dispose();
    loaded.dispose();
  });

  it('predictImages returns labels in score order, leaks no tensors and validates its inputs', async () => {
    const clf = tinyClassifier(3, 7);
    const { modelJson, weights } = await serializeModel(clf);
    const loaded = await loadModelFromFiles(modelJson, weights);
    const images = [await solid(200, 30, 30, 28), await solid(30, 200, 30, 28), await solid(30, 30, 200, 28)];
    const x = tf.tensor4d(Float32Array.from(images.flatMap((i) => Array.from(i))), [3, 28, 28, 3]);
    const expected = tf.tidy(() => (clf.predict(x) as tf.Tensor).dataSync());
    x.dispose();

    const before = tf.memory().numTensors;
    const preds = await predictImages(loaded, images, 28, ['a', 'b', 'c'], 2);
    expect(tf.memory().numTensors).toBe(before);
    expect(preds).toHaveLength(3);
    for (const [i, p] of preds.entries()) {
      expect(p.top).toHaveLength(2);
      expect(p.top[0]).toEqual({ label: p.label, score: p.score });
      expect(p.top[0]!.score).toBeGreaterThanOrEqual(p.top[1]!.score);
      const row = Array.from(expected.subarray(i * 3, i * 3 + 3));
      expect(p.score).toBeCloseTo(Math.max(...row), 6);
      expect(p.label).toBe(['a', 'b', 'c'][row.indexOf(Math.max(...row))]);
    }

    // Calibrated: softmax(log p / T) per row, the same ranking; a threshold above the top score
    // makes the label "unknown" and keeps the scores.
    const temperature = 2.5;
    const calibrated = await predictImages(loaded, images, 28, ['a', 'b', 'c'], 3, 16, { temperature, threshold: 0.99 });
    for (const [i, p] of calibrated.entries()) {
      const row = Array.from(expected.subarray(i * 3, i * 3 + 3), (v) => Math.pow(v, 1 / temperature));
      const sum = row.reduce((a, b) => a + b, 0);
      expect(p.score).toBeCloseTo(Math.max(...row) / sum, 5);
      expect(p.top[0]!.label).toBe(preds[i]!.label);
      expect(p.label).toBe('unknown');
    }
    const unthresholded = await predictImages(loaded, images, 28, ['a', 'b', 'c'], 3, 16, { temperature, threshold: 0 });
    expect(unthresholded.map((p) => p.label)).toEqual(preds.map((p) => p.label));
    expect(tf.memory().numTensors).toBe(before);
    await expect(predictImages(loaded, [images[0]!], 28, ['x', 'y'])).rejects.toThrow(/2 labels/);
    await expect(predictImages(loaded, [new Float32Array(3)], 28, ['x', 'y', 'z'])).rejects.toThrow(/expected/);
    [clf, loaded].forEach((m) => m.dispose());
  });
});
