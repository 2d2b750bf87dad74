import { describe, it, expect, beforeAll } from 'vitest';
import sharp from 'sharp';
import { initBackend, tf } from '../src/backend.ts';
import { loadBaseModel } from '../src/zoo.ts';
import { buildHead } from '../src/train-head.ts';
import { composeModel, serializeModel, loadModelFromFiles } from '../src/export.ts';
import { predictImages } from '../src/predict.ts';
import { decodeImage } from '../src/images.ts';
import { computeEmbeddings } from '../src/embed.ts';

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

describe('composeModel + serializeModel + loadModelFromFiles', () => {
  it('mobilenet_v2 + head → one standard-layers model that round-trips with identical predictions', async () => {
    const base = await loadBaseModel('mobilenet_v2');
    const head = buildHead(1280, 3, 7);
    const model = composeModel(base.model, head);
    expect(model.inputs[0]!.shape).toEqual([null, 224, 224, 3]);
    expect(model.outputs[0]!.shape).toEqual([null, 3]);

    const images = [await solid(200, 30, 30, 224), await solid(30, 200, 30, 224), await solid(30, 30, 200, 224)];
    const x = tf.tensor4d(Float32Array.from(images.flatMap((i) => Array.from(i))), [3, 224, 224, 3]);

    // The composition equals head(base(x)).
    const emb = await computeEmbeddings(base, images, 3);
    const viaParts = tf.tidy(() => (head.predict(tf.tensor2d(emb, [3, 1280])) as tf.Tensor).dataSync());
    const composed = tf.tidy(() => (model.predict(x) as tf.Tensor).dataSync());
    for (let i = 0; i < 9; i++) expect(composed[i]).toBeCloseTo(viaParts[i]!, 5);

    const t0 = performance.now();
    const { modelJson, weights } = await serializeModel(model, { metadata: { labels: ['a', 'b', 'c'] } });
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
    expect(names.has('Model') || names.has('Functional') || names.has('Sequential')).toBe(false);
    expect([...names].every((n) =>
      ['InputLayer', 'ZeroPadding2D', 'Conv2D', 'BatchNormalization', 'ReLU', 'DepthwiseConv2D', 'Add', 'AveragePooling2D', 'GlobalAveragePooling2D', 'Flatten', 'Dense', 'Activation'].includes(n),
    )).toBe(true);

    const loaded = await loadModelFromFiles(modelJson, weights);
    const ms = performance.now() - t0;
    expect(loaded.getUserDefinedMetadata()).toEqual({ labels: ['a', 'b', 'c'] });
    const again = tf.tidy(() => (loaded.predict(x) as tf.Tensor).dataSync());
    expect(Array.from(again)).toEqual(Array.from(composed));
    console.log(`mobilenet_v2 classifier: model.json ${(modelJson.length / 1024).toFixed(0)} KiB, weights ${(weights.length / 1e6).toFixed(1)} MB, save+load ${ms.toFixed(0)} ms`);

    // predictImages on the loaded model: no tensor leaks, labels in score order.
    const before = tf.memory().numTensors;
    const preds = await predictImages(loaded, images, 224, ['a', 'b', 'c'], 2);
    expect(tf.memory().numTensors).toBe(before);
    expect(preds).toHaveLength(3);
    for (const [i, p] of preds.entries()) {
      expect(p.top).toHaveLength(2);
      expect(p.top[0]).toEqual({ label: p.label, score: p.score });
      expect(p.top[0]!.score).toBeGreaterThanOrEqual(p.top[1]!.score);
      const row = Array.from(composed.subarray(i * 3, i * 3 + 3));
      expect(p.score).toBeCloseTo(Math.max(...row), 6);
      expect(p.label).toBe(['a', 'b', 'c'][row.indexOf(Math.max(...row))]);
    }
    x.dispose();
    loaded.dispose();
    model.dispose();
    head.dispose();
  });

  it('the composed model owns its layers: disposing it leaves the cached base and the head intact, and frees everything', async () => {
    const base = await loadBaseModel('small_cnn');
    const img = await solid(10, 200, 30, 28);
    const emb0 = await computeEmbeddings(base, [img], 1);
    const start = tf.memory().numTensors;
    const head = buildHead(128, 2, 5);
    const clf = composeModel(base.model, head);
    const [before] = await predictImages(clf, [img], 28, ['x', 'y']);
    clf.dispose();
    // Base (cached, shared by every job in the process) and head still work after that.
    expect(Array.from(await computeEmbeddings(base, [img], 1))).toEqual(Array.from(emb0));
    const viaHead = tf.tidy(() => (head.predict(tf.tensor2d(emb0, [1, 128])) as tf.Tensor).dataSync());
    expect(viaHead[0]).toBeCloseTo(before!.label === 'x' ? before!.score : 1 - before!.score, 5);
    // …and disposing the head first does not break a composed model either.
    const clf2 = composeModel(base.model, head);
    head.dispose();
    const [after] = await predictImages(clf2, [img], 28, ['x', 'y']);
    expect(after).toEqual(before);
    clf2.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('a head alone round-trips (checkpoints) and predictImages validates its inputs', async () => {
    const head = buildHead(16, 4, 3);
    const { modelJson, weights } = await serializeModel(head);
    const loaded = await loadModelFromFiles(modelJson, weights);
    const x = tf.randomNormal([5, 16], 0, 1, 'float32', 1);
    const [a, b] = [head.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor];
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([x, a, b]);

    const small = await loadBaseModel('small_cnn');
    const clf = composeModel(small.model, buildHead(128, 2, 1));
    const img = await solid(10, 20, 30, 28);
    const [p] = await predictImages(clf, [img], 28, ['x', 'y'], 5);
    expect(p!.top).toHaveLength(2);
    expect(p!.top[0]!.score + p!.top[1]!.score).toBeCloseTo(1, 5);
    await expect(predictImages(clf, [img], 28, ['x', 'y', 'z'])).rejects.toThrow(/3 labels/);
    await expect(predictImages(clf, [new Float32Array(3)], 28, ['x', 'y'])).rejects.toThrow(/expected/);
    expect(() => composeModel(small.model, buildHead(64, 2, 1))).toThrow(/expects 64/);
    [head, loaded].forEach((m) => m.dispose());
  });
});
