import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { digitPng, mnistFolderZip } from './support/mnist-fixtures.ts';

// Strategies through the whole service, on real MNIST digits: the Keras transfer example
// (a small CNN trained from scratch on digits 0–4, reused with its conv layers frozen for
// 5–9, compared with scratch on the same split), prototypes with a reused embedding cache,
// and fine-tuning the top of MobileNetV2 on the wasm backend.

let t: TestApp;
let worker: RunningWorker;

async function upload(zip: Buffer): Promise<string> {
  const res = await t.http.post('/v1/datasets').attach('file', zip, 'digits.zip');
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id;
}

async function runJob(spec: object) {
  const created = await t.http.post('/v1/jobs').send(spec);
  expect(created.status, JSON.stringify(created.body)).toBe(202);
  const job = await waitFor(
    `job ${created.body.id}`,
    async () => {
      const res = await t.http.get(`/v1/jobs/${created.body.id}`).expect(200);
      return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
    },
    400_000,
  );
  return job;
}

async function model(id: string) {
  return (await t.http.get(`/v1/models/${id}`).expect(200)).body;
}

beforeAll(async () => {
  t = await buildTestApp();
  worker = startWorker(t.config, pino({ level: 'warn' }));
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
});

describe('transfer between MNIST tasks (the Keras mnist_transfer_cnn recipe)', () => {
  it('pretrains small_cnn on 0–4 from scratch, then transfers to 5–9 with frozen convs and reports the gain', { timeout: 600_000 }, async () => {
    const source = await upload(await mnistFolderZip([0, 1, 2, 3, 4], 60));
    const pretrain = await runJob({
      datasetId: source,
      baseModel: 'small_cnn',
      strategy: 'scratch',
      hyperparameters: { epochs: 8, batchSize: 32, learningRate: 0.002, validationSplit: 0.2, seed: 1 },
    });
    expect(pretrain.error).toBeNull();
    expect(pretrain.status).toBe('succeeded');
    const pretrained = await model(pretrain.modelId);
    expect(pretrained.strategy).toBe('scratch');
    console.log(`small_cnn scratch on digits 0–4 (48/class): val accuracy ${pretrained.evaluation.accuracy.toFixed(3)}`);
    expect(pretrained.evaluation.accuracy).toBeGreaterThan(0.6);

    // The scarce task: 10 labelled images per digit.
    const target = await upload(await mnistFolderZip([5, 6, 7, 8, 9], 16));
    const transfer = await runJob({
      datasetId: target,
      baseModel: { modelId: pretrain.modelId },
      strategy: 'fine_tune',
      compareWithScratch: true,
      hyperparameters: {
        epochs: 12,
        batchSize: 16,
        learningRate: 0.002,
        unfreeze: { fromLayer: 'small_cnn_embedding' },
        baseLearningRateMultiplier: 1,
        validationSplit: 0.375,
        seed: 2,
      },
    });
    expect(transfer.error).toBeNull();
    expect(transfer.status).toBe('succeeded');
    const transferred = await model(transfer.modelId);
    expect(transferred.baseModel).toBe(`model:${pretrain.modelId}`);
    // Convs frozen, the dense embedding layer trained: exactly what was asked.
    expect(transferred.metrics.trainableLayers).toEqual(['small_cnn_embedding']);
    expect(typeof transferred.transferGain).toBe('number');
    expect(transferred.transferGain).toBeCloseTo(transferred.evaluation.accuracy - transferred.scratchAccuracy, 10);
    expect(transferred.negativeTransfer).toBe(transferred.transferGain < 0);
    console.log(
      `digits 5–9, 10 labels/class: transfer ${transferred.evaluation.accuracy.toFixed(3)} vs scratch ${transferred.scratchAccuracy.toFixed(3)} → gain ${transferred.transferGain.toFixed(3)}`,
    );

    // The evaluation report: per-class figures, confusion matrix, top-k, confident errors.
    const evaluation = transferred.evaluation;
    expect(evaluation.labels).toEqual(['5', '6', '7', '8', '9']);
    expect(evaluation.perClass).toHaveLength(5);
    expect(evaluation.perClass.reduce((n: number, c: { support: number }) => n + c.support, 0)).toBe(evaluation.samples);
    expect(evaluation.confusionMatrix.flat().reduce((a: number, b: number) => a + b, 0)).toBe(evaluation.samples);
    expect(evaluation.topK).toBe(3);
    expect(evaluation.topKAccuracy).toBeGreaterThanOrEqual(evaluation.accuracy);
    for (const error of evaluation.mostConfidentErrors) {
      expect(error.id).toMatch(/^digits\/[5-9]\/\d+\.png$/);
      expect(error.predicted).not.toBe(error.label);
    }
    expect(transferred.metrics.reproducibility).toMatchObject({ seed: 2, backend: transfer.backend });
    expect(transferred.metrics.reproducibility.dataset.sha256).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('prototypes and the embedding cache', () => {
  it('builds a prototype model with no training loop, reusing the embeddings a previous job cached', { timeout: 400_000 }, async () => {
    const datasetId = await upload(await mnistFolderZip([0, 1, 7], 10));
    const first = await runJob({ datasetId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', hyperparameters: { epochs: 3, seed: 5 } });
    expect(first.status).toBe('succeeded');
    expect(first.embeddingCache).toBe('computed');
    expect(first.timings.decode).toBeGreaterThan(0);

    // The same job again: every embedding is cached, so no image is decoded and the evaluation
    // runs the head on the cached validation embeddings — the numbers the first job got by
    // running the whole model over the images.
    const again = await runJob({ datasetId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', hyperparameters: { epochs: 3, seed: 5 } });
    expect(again.status).toBe('succeeded');
    expect(again.embeddingCache).toBe('reused');
    expect(again.timings.decode).toBeUndefined();
    expect(again.skippedImages).toBe(first.skippedImages);
    const [byImages, byEmbeddings] = [(await model(first.modelId)).evaluation, (await model(again.modelId)).evaluation];
    expect(byEmbeddings.samples).toBe(byImages.samples);
    expect(byEmbeddings.confusionMatrix).toEqual(byImages.confusionMatrix);
    expect(byEmbeddings.mostConfidentErrors.map((e: { id: string }) => e.id)).toEqual(byImages.mostConfidentErrors.map((e: { id: string }) => e.id));
    byEmbeddings.mostConfidentErrors.forEach((e: { confidence: number }, i: number) => expect(e.confidence).toBeCloseTo(byImages.mostConfidentErrors[i].confidence, 4));

    const proto = await runJob({ datasetId, baseModel: 'mobilenet_v2', strategy: 'prototype', hyperparameters: { seed: 5 } });
    expect(proto.error).toBeNull();
    expect(proto.status).toBe('succeeded');
    expect(proto.embeddingCache).toBe('reused');
    const m = await model(proto.modelId);
    expect(m.strategy).toBe('prototype');
    expect(m.evaluation.samples).toBeGreaterThan(0);
    console.log(`prototype (mobilenet_v2, 8 train images/class, 3 classes): val accuracy ${m.evaluation.accuracy.toFixed(3)}`);
    // It serves like any other model.
    const res = await t.http.post(`/v1/models/${proto.modelId}/predict`).attach('file', await digitPng(1, 700), 'one.png').expect(200);
    expect(['0', '1', '7']).toContain(res.body.predictions[0].label);

    // Deleting the dataset removes its cached embeddings too.
    expect((await t.deps.store.list(`cache/embeddings/${t.tenantId}/mobilenet_v2/${datasetId}/`)).length).toBeGreaterThan(0);
    await t.http.delete(`/v1/datasets/${datasetId}`).expect(204);
    expect(await t.deps.store.list(`cache/embeddings/${t.tenantId}/mobilenet_v2/${datasetId}/`)).toEqual([]);
  });
});

describe('fine-tuning MobileNetV2 on wasm', () => {
  it('trains the top layers (conv gradients on wasm) at a lower rate than the head', { timeout: 400_000 }, async () => {
    const datasetId = await upload(await mnistFolderZip([3, 8], 6));
    const job = await runJob({
      datasetId,
      baseModel: 'mobilenet_v2',
      strategy: 'fine_tune',
      hyperparameters: { epochs: 2, batchSize: 8, learningRate: 0.01, optimizer: 'sgd', unfreeze: { topLayers: 10 }, baseLearningRateMultiplier: 0.1, seed: 3 },
    });
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    expect(job.backend).toBe('wasm');
    const m = await model(job.modelId);
    expect(m.metrics.trainableLayers.length).toBeGreaterThan(0);
    expect(m.metrics.trainableLayers.every((name: string) => name.startsWith('block_16') || name.startsWith('Conv_1'))).toBe(true);
    const metrics = await t.http.get(`/v1/jobs/${job.id}/metrics`).expect(200);
    expect(metrics.body.items.map((r: { learningRate: number }) => r.learningRate)).toEqual([0.01, 0.01]);

    // A layer the base does not have is refused when the job is submitted (the API plans the
    // spec's stages against the base, as the worker would), saying why; no job is created.
    const jobsBefore = await t.deps.db.job.count();
    const bad = await t.http.post('/v1/jobs').send({ datasetId, baseModel: 'mobilenet_v2', strategy: 'fine_tune', hyperparameters: { unfreeze: { fromLayer: 'no_such_layer' } } });
    expect(bad.status, JSON.stringify(bad.body)).toBe(422);
    expect(bad.body.code).toBe('unknown_layer');
    expect(bad.body.detail).toContain('no_such_layer');
    expect(await t.deps.db.job.count()).toBe(jobsBefore);
  });
});
