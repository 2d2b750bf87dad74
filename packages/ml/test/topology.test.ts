// A base built from model.json alone (topology.ts, customBaseFromTopology) plans exactly as the
// base built with its weights does: the micro-batch planner reads shapes and weight counts only.
// That is what lets the API plan a custom base or a trained model without downloading weights.
import { beforeAll, describe, expect, it } from 'vitest';
import type { Strategy } from '@finetune/core';
import { tf } from '../src/backend.ts';
import { buildCustomBase, customBaseFromTopology } from '../src/custom-base.ts';
import { modelFromTopology } from '../src/topology.ts';
import { planMicroBatch } from '../src/training/micro-batch.ts';
import { baseFromTrainedModel } from '../src/training/surgery.ts';
import { hp, tinyResidualBase } from './training/helpers.ts';

const STRATEGIES: Strategy[] = ['feature_extraction', 'fine_tune', 'progressive_unfreezing', 'full', 'scratch', 'domain_adaptation'];
const INFO = { id: 'planned', source: 'test' };

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** model.json (as tfjs writes it) and its weights, as one buffer. */
async function saved(model: tf.LayersModel): Promise<{ modelJson: Buffer; weights: Buffer }> {
  let out: { modelJson: Buffer; weights: Buffer } | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      out = {
        modelJson: Buffer.from(JSON.stringify({ modelTopology: artifacts.modelTopology, weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }] })),
        weights: Buffer.from(artifacts.weightData as ArrayBuffer),
      };
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  return out!;
}

/** Every strategy's plan at a budget where some fit whole, some micro-batch and some cannot fit. */
function plans(model: tf.LayersModel): unknown[] {
  const out: unknown[] = [];
  for (const budget of [40_000, 200_000, 10_000_000]) {
    for (const strategy of STRATEGIES) {
      out.push(planMicroBatch({ model, strategy, hyperparameters: hp({ batchSize: 64, optimizer: 'sgd' }), backend: 'cpu', budget: { bytes: budget, source: 'test' }, numClasses: 3 }));
    }
  }
  return out;
}

/** A fully convolutional model with no fixed input size, for the inputSize path. */
function convolutional(): tf.LayersModel {
  const input = tf.input({ shape: [null, null, 3], name: 'pixels' });
  let x = tf.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, activation: 'relu', name: 'features_a' }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization({ name: 'features_bn' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 6, kernelSize: 3, activation: 'relu', name: 'features_b' }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: x, name: 'conv_features' });
}

describe('planning from model.json alone', () => {
  it('builds a custom base with the same shapes and plans as the one built with its weights, and frees its zeros', async () => {
    const cases = [
      { model: tinyResidualBase(12).model, options: { embeddingLayer: 'pool', scale: '-1_1' as const } },
      { model: convolutional(), options: { embeddingLayer: 'features_b', inputSize: 20, scale: '0_1' as const } },
    ];
    for (const { model, options } of cases) {
      const { modelJson, weights } = await saved(model);
      const real = await buildCustomBase(modelJson, weights, options, INFO);
      const tensorsBefore = tf.memory().numTensors;
      const planned = await customBaseFromTopology(modelJson, options, INFO);
      expect(planned.facts).toEqual(real.facts);
      expect(planned.base.info).toEqual(real.base.info);
      expect(planned.base.model.countParams()).toBe(real.base.model.countParams());
      // Zeros, not the real weights: nothing of weights.bin was read.
      const values = planned.base.model.getWeights().map((w) => w.dataSync());
      expect(values.every((v) => v.every((x) => x === 0))).toBe(true);
      planned.dispose();
      expect(tf.memory().numTensors).toBe(tensorsBefore);
      // Released, the graph still answers everything the planner asks.
      expect(plans(planned.base.model)).toEqual(plans(real.base.model));
      real.dispose();
      model.dispose();
    }
  });

  it('cuts a trained model built from its topology back to the same base as the loaded one', async () => {
    const base = tinyResidualBase(12).model;
    const logits = tf.layers.dense({ units: 3, name: 'head_logits' }).apply(base.outputs[0]!) as tf.SymbolicTensor;
    const trained = tf.model({ inputs: base.inputs, outputs: tf.layers.softmax({ name: 'head_softmax' }).apply(logits) as tf.SymbolicTensor, name: 'classifier' });
    const { modelJson } = await saved(trained);

    const real = baseFromTrainedModel(trained, { id: 'model_real' });
    const fromJson = await modelFromTopology((JSON.parse(modelJson.toString('utf8')) as { modelTopology: object }).modelTopology);
    const planned = baseFromTrainedModel(fromJson, { id: 'model_planned' });
    expect(planned.info.embeddingSize).toBe(real.info.embeddingSize);
    planned.model.dispose();
    fromJson.dispose();
    expect(plans(planned.model)).toEqual(plans(real.model));
    real.model.dispose();
    trained.dispose();
  });
});
