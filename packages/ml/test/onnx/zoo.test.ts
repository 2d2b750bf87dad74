// ONNX Runtime against tfjs (wasm) on real images: every zoo base, a cut bottom of MobileNetV2,
// and models trainClassifier trained. InceptionV3 on tfjs wasm takes seconds per image: one image.
import { BASE_MODELS } from '@finetune/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/backend.ts';
import { computeEmbeddings } from '../../src/embed.ts';
import { forwardImages, frozenEngine } from '../../src/inference/runner.ts';
import { predictProbabilities } from '../../src/predict.ts';
import { runFrozen } from '../../src/training/batches.ts';
import { layerGraph, rebuild, resolveUnfreeze, tensorShape } from '../../src/training/surgery.ts';
import { trainClassifier } from '../../src/training/train-classifier.ts';
import { loadBaseModel } from '../../src/zoo.ts';
import { hp } from '../training/helpers.ts';
import { agreement, asFloats, digits, RELATIVE_TOLERANCE } from './helpers.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

const IMAGES: Record<string, number> = { inception_v3: 1 };

describe('zoo bases: ONNX Runtime embeddings equal tfjs embeddings', () => {
  for (const info of BASE_MODELS.filter((m) => m.available)) {
    it(`${info.id} (${IMAGES[info.id] ?? 4} image(s) at ${info.inputSize})`, async () => {
      const base = await loadBaseModel(info.id);
      const images = asFloats(await digits(IMAGES[info.id] ?? 4, info.inputSize));
      expect(await frozenEngine(base.model)).toBe('onnxruntime');
      const before = tf.memory().numTensors;
      const ort = await computeEmbeddings(base, images, 2);
      expect(tf.memory().numTensors).toBe(before);
      const ref = await forwardImages(base.model, images, { batchSize: 2, engine: 'tfjs' });
      const a = agreement(ort, ref.output);
      console.log(`${info.id}: max |ORT − tfjs| ${a.maxDiff.toExponential(2)} at output scale ${a.scale.toFixed(3)} (relative ${a.relative.toExponential(2)})`);
      expect(a.relative).toBeLessThan(RELATIVE_TOLERANCE);
    });
  }
});

describe('a cut bottom', () => {
  it('MobileNetV2 below its last 30 layers: rebuilt bottom (runFrozen) and the base cut at the same layer, NHWC out', async () => {
    const base = await loadBaseModel('mobilenet_v2');
    const graph = layerGraph(base.model);
    const cut = resolveUnfreeze(graph, { topLayers: 30 });
    const shape = tensorShape(graph, cut.cutLayer);
    expect(shape).toHaveLength(3); // an image tensor: the output is transposed back to NHWC
    const width = shape.reduce((a, b) => a * b, 1);
    const bottom = rebuild(graph, { from: graph.inputName, to: cut.cutLayer, layers: graph.order.slice(0, cut.position), name: 'frozen_bottom' });
    try {
      const images = await digits(3, 224);
      const viaRunFrozen = await runFrozen(bottom, images, 224, width, 2);
      const viaCut = await forwardImages(base.model, images, { cut: cut.cutLayer });
      const ref = await forwardImages(bottom, images, { engine: 'tfjs' });
      expect(viaCut).toMatchObject({ engine: 'onnxruntime', shape });
      expect(await frozenEngine(bottom)).toBe('onnxruntime');
      const a = agreement(viaRunFrozen, ref.output);
      console.log(`mobilenet_v2 cut at ${cut.cutLayer} [${shape}]: max |ORT − tfjs| ${a.maxDiff.toExponential(2)} at scale ${a.scale.toFixed(3)}`);
      expect(a.relative).toBeLessThan(RELATIVE_TOLERANCE);
      expect(agreement(viaCut.output, ref.output).relative).toBeLessThan(RELATIVE_TOLERANCE);
    } finally {
      bottom.dispose();
    }
  });
});

describe('models trainClassifier trained (small_cnn on digits 0–2)', () => {
  const labels = ['zero', 'one', 'two'];
  let train: { images: Uint8Array[]; labels: Int32Array };
  beforeAll(async () => {
    const images = await digits(30, 28);
    train = { images: images.filter((_, i) => i % 10 < 3), labels: Int32Array.from(images.map((_, i) => i % 10).filter((d) => d < 3)) };
  });

  for (const setup of [
    { strategy: 'fine_tune' as const, hyperparameters: hp({ epochs: 1, unfreeze: { fromLayer: 'small_cnn_embedding' }, head: { hiddenUnits: [16], activation: 'relu', dropout: 0.2 } }) },
    { strategy: 'prototype' as const, hyperparameters: hp({ epochs: 1 }) },
  ]) {
    it(`${setup.strategy}: probabilities equal, same predicted classes`, async () => {
      const base = await loadBaseModel('small_cnn');
      const result = await trainClassifier({ ...setup, base, inputSize: 28, train, val: null, labels });
      try {
        expect(await frozenEngine(result.model)).toBe('onnxruntime');
        const ort = await predictProbabilities(result.model, train.images, 28);
        const ref = await forwardImages(result.model, train.images, { engine: 'tfjs' });
        const a = agreement(ort, ref.output);
        expect(a.relative).toBeLessThan(RELATIVE_TOLERANCE);
        const argmax = (p: Float32Array) => train.images.map((_, i) => [0, 1, 2].reduce((b, c) => (p[i * 3 + c]! > p[i * 3 + b]! ? c : b), 0));
        expect(argmax(ort)).toEqual(argmax(ref.output));
      } finally {
        result.model.dispose();
      }
    });
  }
});
