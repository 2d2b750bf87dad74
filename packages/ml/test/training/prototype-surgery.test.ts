// Prototype heads on synthetic embeddings, and cut selection / rebuild on MobileNetV2 (no
// training: wasm runs the forward passes).
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { loadModelFromFiles, serializeModel } from '../../src/export.ts';
import { loadBaseModel } from '../../src/zoo.ts';
import { mulberry32 } from '../../src/random.ts';
import {
  buildPrototypeHead,
  classPrototypes,
  layerGraph,
  PROTOTYPE_SCALE,
  rebuild,
  resolveUnfreeze,
  trainClassifier,
  validCuts,
} from '../../src/training/index.ts';
import { colourData, hp, maxAbsDiff, tinyResidualBase } from './helpers.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

const cos = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) (d += a[i]! * b[i]!), (na += a[i]! ** 2), (nb += b[i]! ** 2);
  return d / Math.sqrt(na * nb);
};

describe('prototype', () => {
  it('predicts the class whose mean embedding is nearest by cosine, with softmax(scale·cos) probabilities', () => {
    const dim = 16, k = 4, r = mulberry32(9);
    const centres = Array.from({ length: k }, () => Array.from({ length: dim }, () => r() * 2 - 1));
    const n = 40;
    const labels = Int32Array.from({ length: n }, (_, i) => i % k);
    const x = new Float32Array(n * dim);
    labels.forEach((c, i) => centres[c]!.forEach((v, j) => (x[i * dim + j] = (v + (r() - 0.5) * 0.8) * (0.5 + r() * 3))));
    const protos = classPrototypes(x, labels, k, dim);
    const head = buildPrototypeHead(protos, k, dim);
    const queries = Float32Array.from({ length: 25 * dim }, () => r() * 2 - 1);
    const probs = tf.tidy(() => (head.predict(tf.tensor2d(queries, [25, dim])) as tf.Tensor).arraySync() as number[][]);
    for (let q = 0; q < 25; q++) {
      const row = queries.subarray(q * dim, (q + 1) * dim);
      const sims = Array.from({ length: k }, (_, c) => cos(row, protos.subarray(c * dim, (c + 1) * dim)));
      const z = sims.map((s) => Math.exp(PROTOTYPE_SCALE * s));
      const sum = z.reduce((a, b) => a + b);
      z.forEach((v, c) => expect(probs[q]![c]!).toBeCloseTo(v / sum, 4));
    }
    // Prototypes are normalised means of normalised embeddings.
    const c0 = Array.from({ length: dim }, (_, j) => labels.reduce((s, c, i) => (c === 0 ? s + x[i * dim + j]! / Math.hypot(...x.subarray(i * dim, (i + 1) * dim)) : s), 0));
    expect(cos(c0, protos.subarray(0, dim))).toBeCloseTo(1, 5);
    head.dispose();
  });

  it('trainClassifier prototype: no training loop, a standard model that round-trips through serializeModel', async () => {
    const base = tinyResidualBase(12);
    const train = colourData(12, 12, 1, 3);
    const start = tf.memory().numTensors;
    const r = await trainClassifier({ strategy: 'prototype', base, inputSize: 12, train, val: null, labels: ['r', 'g', 'b'], hyperparameters: hp() });
    expect([r.epochsRun, r.bestEpoch, r.trainableLayers]).toEqual([1, 1, []]);
    expect(r.history[0]!.learningRate).toBe(0);
    const { modelJson, weights } = await serializeModel(r.model);
    const loaded = await loadModelFromFiles(modelJson, weights);
    const x = tf.randomUniform([4, 12, 12, 3], 0, 1, 'float32', 2);
    const [a, b] = [r.model, loaded].map((m) => m.predict(x) as tf.Tensor);
    expect(maxAbsDiff(a!.dataSync(), b!.dataSync())).toBeLessThan(1e-5);
    expect(loaded.layers.map((l) => l.getClassName()).filter((c) => !['InputLayer', 'Conv2D', 'BatchNormalization', 'ReLU', 'Add', 'GlobalAveragePooling2D'].includes(c))).toEqual([
      'Rescaling',
      'Concatenate',
      'LayerNormalization',
      'Dense',
      'Activation',
    ]);
    tf.dispose([x, a!, b!]);
    r.model.dispose();
    loaded.dispose();
    expect(tf.memory().numTensors).toBe(start);
    base.model.dispose();
  });
});

describe('MobileNetV2 surgery', () => {
  it('cuts at a block boundary, and bottom + top rebuilt from copies equal the original base (1e-4)', async () => {
    const base = await loadBaseModel('mobilenet_v2');
    const graph = layerGraph(base.model);
    expect(graph.outputName).toBe('flatten_1');
    // Block boundaries are where exactly one tensor crosses: never inside a residual block.
    const cut = resolveUnfreeze(graph, { topLayers: 20 });
    expect(cut.topLayers.length).toBeGreaterThanOrEqual(20);
    expect(cut.cutLayer).toMatch(/^block_\d+_(add|project_BN)$/);
    expect(cut.trainableLayers).toContain('Conv_1');
    // Asking for a layer inside block 15 (which has a residual add) moves to block 14's output.
    expect(resolveUnfreeze(graph, { fromLayer: 'block_15_depthwise' }).cutLayer).toBe('block_14_add');
    expect(validCuts(graph).some((c) => c.cutLayer === 'block_15_expand')).toBe(false);

    const bottom = rebuild(graph, { from: graph.inputName, to: cut.cutLayer, layers: graph.order.slice(0, cut.position), name: 'bottom' });
    const top = rebuild(graph, { from: cut.cutLayer, to: graph.outputName, layers: cut.topLayers, name: 'top' });
    const x = tf.randomUniform([2, 224, 224, 3], 0, 1, 'float32', 4);
    const want = base.model.predict(x) as tf.Tensor;
    const got = tf.tidy(() => top.apply(bottom.predict(x) as tf.Tensor, { training: false }) as tf.Tensor);
    expect(got.shape).toEqual([2, 1280]);
    expect(maxAbsDiff(want.dataSync(), got.dataSync())).toBeLessThan(1e-4);
    tf.dispose([x, want, got]);
    bottom.dispose();
    top.dispose();
    // The shared base still works after disposing the copies.
    const again = tf.tidy(() => (base.model.predict(tf.zeros([1, 224, 224, 3])) as tf.Tensor).sum().dataSync()[0]);
    expect(Number.isFinite(again)).toBe(true);
  });
});
