// A run served from cached frozen features: it decodes no image (deferred decoding), and its
// evaluation from the cached embeddings through the head equals running the whole model.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend.ts';
import { evaluateClassifier } from '../../src/evaluation.ts';
import { probabilitiesFromEmbeddings } from '../../src/head-probabilities.ts';
import { predictProbabilities } from '../../src/predict.ts';
import { trainClassifier, type TrainClassifierOptions } from '../../src/training/index.ts';
import { colourData, hp, maxAbsDiff, tinyResidualBase } from './helpers.ts';

const SIZE = 12;
const LABELS = ['red', 'green', 'blue'];
const train = colourData(30, SIZE, 1, 3);
const val = colourData(12, SIZE, 2, 3);
let base: ReturnType<typeof tinyResidualBase>;

beforeAll(async () => {
  await tf.setBackend('cpu');
  base = tinyResidualBase(SIZE);
});

/** A memo like the worker's embedding cache: computes on a miss, serves the stored copy after. */
function memoStore() {
  const stored = new Map<string, Float32Array>();
  let computed = 0;
  const memo: TrainClassifierOptions['frozenFeatures'] = async ({ cut, split }, compute) => {
    const key = `${cut}/${split}`;
    if (!stored.has(key)) {
      stored.set(key, await compute());
      computed++;
    }
    return stored.get(key)!;
  };
  return { memo, stored, computed: () => computed };
}

function options(strategy: 'feature_extraction' | 'prototype', over: Partial<TrainClassifierOptions> = {}): TrainClassifierOptions {
  return { strategy, base, inputSize: SIZE, train, val, labels: LABELS, hyperparameters: hp({ epochs: 3 }), ...over };
}

describe('a run on cached features', () => {
  for (const strategy of ['feature_extraction', 'prototype'] as const) {
    it(`${strategy}: decodes nothing when every feature is cached, and trains what an eager run trains`, async () => {
      const cache = memoStore();
      const eager = await trainClassifier(options(strategy, { frozenFeatures: cache.memo }));
      expect(cache.computed()).toBe(2);

      // The same splits with no pixels: only labels, and a loader that must not be needed.
      const deferred = { train: { images: [] as Uint8Array[], labels: train.labels }, val: { images: [] as Uint8Array[], labels: val.labels } };
      let loads = 0;
      const cached = await trainClassifier(
        options(strategy, {
          ...deferred,
          frozenFeatures: cache.memo,
          loadImages: async () => {
            loads++;
          },
        }),
      );
      try {
        expect(loads).toBe(0);
        expect(cache.computed()).toBe(2);
        expect(cached.history.map((h) => h.valAcc)).toEqual(eager.history.map((h) => h.valAcc));
        expect(cached.history.map((h) => h.trainLoss)).toEqual(eager.history.map((h) => h.trainLoss));
      } finally {
        cached.model.dispose();
        eager.model.dispose();
      }
    });
  }

  it('decodes once, on the first cache miss, and then trains on the loaded images', async () => {
    const eager = await trainClassifier(options('feature_extraction'));
    const deferred = { train: { images: [] as Uint8Array[], labels: train.labels }, val: { images: [] as Uint8Array[], labels: val.labels } };
    let loads = 0;
    const lazy = await trainClassifier(
      options('feature_extraction', {
        ...deferred,
        loadImages: async () => {
          loads++;
          deferred.train.images.push(...train.images);
          deferred.val.images.push(...val.images);
        },
      }),
    );
    try {
      expect(loads).toBe(1);
      expect(lazy.history.map((h) => h.valLoss)).toEqual(eager.history.map((h) => h.valLoss));
    } finally {
      lazy.model.dispose();
      eager.model.dispose();
    }
  });

  it('a loader that leaves images missing fails the run instead of training on nothing', async () => {
    const deferred = { train: { images: [] as Uint8Array[], labels: train.labels }, val: null };
    await expect(trainClassifier(options('feature_extraction', { ...deferred, loadImages: async () => undefined }))).rejects.toThrow(/0 images but 30 labels/);
  });
});

describe('evaluation from cached embeddings', () => {
  for (const strategy of ['feature_extraction', 'prototype'] as const) {
    it(`${strategy}: the head on the validation embeddings gives the whole model's probabilities and evaluation`, async () => {
      const cache = memoStore();
      const result = await trainClassifier(options(strategy, { frozenFeatures: cache.memo, hyperparameters: hp({ epochs: 15, learningRate: 0.05 }) }));
      try {
        const cut = base.model.outputs[0]!.sourceLayer.name;
        const embeddings = cache.stored.get(`${cut}/val`)!;
        expect(embeddings.length).toBe(val.labels.length * base.info.embeddingSize);

        const fromImages = await predictProbabilities(result.model, val.images, SIZE);
        const fromEmbeddings = await probabilitiesFromEmbeddings(result.model, embeddings, cut);
        expect(fromEmbeddings.length).toBe(val.labels.length * LABELS.length);
        expect(maxAbsDiff(fromEmbeddings, fromImages)).toBeLessThan(1e-5);

        const ids = val.images.map((_, i) => `val/${i}.png`);
        const evaluate = (probabilities: Float32Array) => evaluateClassifier({ probabilities, targets: val.labels, labels: LABELS, ids, topK: 2 });
        const a = evaluate(fromImages);
        const b = evaluate(fromEmbeddings);
        expect(b.confusionMatrix).toEqual(a.confusionMatrix);
        expect(b.accuracy).toBe(a.accuracy);
        expect(b.topKAccuracy).toBe(a.topKAccuracy);
        expect(b.mostConfidentErrors.map((e) => [e.id, e.predicted])).toEqual(a.mostConfidentErrors.map((e) => [e.id, e.predicted]));
        // Not vacuous: the model learned something and is not uniform.
        expect(a.accuracy).toBeGreaterThan(1 / 3);
      } finally {
        result.model.dispose();
      }
    });
  }

  it('refuses embeddings taken at a layer that does not feed the head', async () => {
    const result = await trainClassifier(options('feature_extraction'));
    try {
      await expect(probabilitiesFromEmbeddings(result.model, new Float32Array(12 * 8), 'top_relu')).rejects.toThrow(/takes pool, not top_relu/);
    } finally {
      result.model.dispose();
    }
  });
});
